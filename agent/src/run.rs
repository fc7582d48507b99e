//! The agent's life from start-up to shutdown: report the machine to the inspection
//! callback when one is configured, detect the conductor's API version, pick the
//! advertised address, bring up the command API (over auto-TLS when the
//! conductor can pin the certificate), look the node up, then heartbeat until stopped.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferric_shared::api_version::ApiVersion;
use tokio::net::TcpListener;

use crate::api::{self, ApiDeps};
use crate::config::AgentConfig;
use crate::host::HostRoot;
use crate::inspect;
use crate::inventory::{self, InventorySources};
use crate::ironic::advertise::{self, AddressRetry, AdvertiseError};
use crate::ironic::client::{ConductorClient, ConductorClientError};
use crate::ironic::heartbeat::{HeartbeatTiming, Heartbeater};
use crate::ironic::lookup::{self, LookupBackoff, LookupError, LookupQuery};
use crate::logbuf::LogBuffer;
use crate::power::{HostPower, PowerControl, ProcessPower};
use crate::session::Session;
use crate::tls::{self, TlsError};

pub use crate::ironic::heartbeat::AGENT_VERSION;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("setting up TLS")]
    Tls(#[from] TlsError),
    #[error("setting up the conductor client")]
    Client(#[from] ConductorClientError),
    #[error("finding the address to advertise")]
    Advertise(#[from] AdvertiseError),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("command API server failed")]
    Serve(#[source] std::io::Error),
    #[error("lookup failed")]
    Lookup(#[from] LookupError),
}

/// Runs the agent until it is stopped (a signal, `system.lockdown`, or a fatal error).
pub async fn run(config: AgentConfig, logs: Arc<LogBuffer>) -> Result<(), RunError> {
    let host = HostRoot::new(config.host_root.clone());
    let session = Arc::new(Session::new(config.agent_token.clone()));

    let client_tls = tls::client_config(config.ca_file.as_deref(), config.insecure)?;
    let mut inspected_uuid = None;
    if !config.inspection_callback_urls.is_empty() {
        let inspection = inspect::inspect_and_log(&config, &host, logs.clone(), client_tls.clone());
        let reply = tokio::select! {
            reply = inspection => reply,
            () = shutdown_signal() => return Ok(()),
        };
        if let Some(reply) = reply {
            // A versioned `continue_inspection` issues the token there; the lookup
            // that follows then shows it masked, so it must be kept now.
            if let Some(token) = reply.agent_token {
                session.set_token(token);
            }
            inspected_uuid = reply.node_uuid;
        }
    }
    if config.api_urls.is_empty() {
        // As ironic-python-agent does: with nowhere to look up or heartbeat, the ramdisk
        // stays up (for debugging through the console) until it is powered off.
        tracing::info!("no ipa-api-url: inspection done, idling until stopped");
        shutdown_signal().await;
        return Ok(());
    }
    let client = Arc::new(ConductorClient::new(&config, client_tls)?);
    let version = settle_api_version(&client, &config).await;

    let advertise_ip = advertise::advertise_address(
        &config,
        |ifname| inventory::interface_ipv4(&host, ifname).map(IpAddr::V4),
        &AddressRetry::default(),
    )
    .await?;
    // The conductor can only pin our certificate when it accepts `agent_verify_ca`.
    let certificate = if config.enable_auto_tls && version >= ApiVersion::AGENT_VERIFY_CA {
        Some(tls::generate_self_signed(advertise_ip, &hostname(&host))?)
    } else {
        None
    };
    let server_tls = certificate.as_ref().map(|c| c.server_config()).transpose()?;
    let callback_url =
        advertise::callback_url(certificate.is_some(), advertise_ip, config.advertise_port);

    let (listener, addr) = bind(config.listen_host, config.listen_port).await?;
    tracing::info!(%addr, %callback_url, tls = certificate.is_some(), "command API listening");

    let power: Arc<dyn PowerControl> = if host.is_real_root() {
        Arc::new(HostPower::new(host.clone()))
    } else {
        // A fake host tree stands for a simulated machine: powering it off or rebooting
        // it ends this process, never the machine running it.
        Arc::new(ProcessPower)
    };
    let (app, handle) = api::build(ApiDeps {
        session: session.clone(),
        inventory: InventorySources::for_host(host.clone(), config.bootif.clone()),
        power,
        logs,
        version: AGENT_VERSION.to_owned(),
        image_http: config.image_http_options(),
        erase: config.erase_config(),
    });
    let server = tokio::spawn(api::serve(listener, server_tls, app, handle.stopped()));

    let query = LookupQuery { addresses: inventory::lookup_macs(&host), node_uuid: inspected_uuid };
    tracing::info!(addresses = ?query.addresses, node_uuid = ?query.node_uuid, "looking up the node");
    let backoff = LookupBackoff::from_config(&config);
    let stopped = handle.stopped();
    let outcome = tokio::select! {
        found = lookup::lookup_node(&client, &session, &query, &backoff) => found,
        // `system.lockdown` can arrive during lookup when the token was pre-shared.
        () = stopped => return finish(server, &handle).await,
        () = shutdown_signal() => {
            handle.stop();
            return finish(server, &handle).await;
        }
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            if matches!(e, LookupError::TokenWithheld { .. }) {
                // Someone else holds this node's token: nobody may ever drive this agent,
                // so close the API and take the network down, as ironic-python-agent does.
                handle.begin_lockdown();
            } else {
                // Not found in time: exit so the service restarts and looks up afresh.
                handle.stop();
            }
            let _ = finish(server, &handle).await;
            return Err(e.into());
        }
    };
    tracing::info!(node = %outcome.node_uuid, heartbeat_timeout = ?outcome.heartbeat_timeout, "node found");

    let heartbeater = Heartbeater {
        client,
        session,
        node_uuid: outcome.node_uuid,
        callback_url,
        agent_version: AGENT_VERSION.to_owned(),
        agent_verify_ca: certificate.map(|c| c.cert_pem),
        heartbeat_timeout: outcome.heartbeat_timeout,
        timing: HeartbeatTiming::default(),
    };
    let stopped = handle.stopped();
    heartbeater
        .run(async move {
            tokio::select! {
                () = stopped => {}
                () = shutdown_signal() => {}
            }
        })
        .await;
    handle.stop();
    finish(server, &handle).await
}

/// Waits for the API server to drain, then performs a requested lockdown.
async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    handle: &api::ApiHandle,
) -> Result<(), RunError> {
    let served = match server.await {
        Ok(result) => result.map_err(RunError::Serve),
        Err(join) => Err(RunError::Serve(std::io::Error::other(join))),
    };
    if handle.lockdown_requested() {
        if let Err(e) = handle.lock_down_host() {
            tracing::error!(error = %crate::executor::error_chain(&e), "lockdown incomplete");
        }
    }
    served
}

/// The API version to build on. The TLS decision depends on it and cannot be revisited
/// once the callback URL is advertised, so a detection that fails because the conductor
/// is not reachable yet is retried (with the lookup's backoff, within its time budget)
/// before falling back to the oldest version the agent supports.
async fn settle_api_version(client: &ConductorClient, config: &AgentConfig) -> ApiVersion {
    if let Some(v) = config.ironic_api_version {
        return v;
    }
    let backoff = LookupBackoff::from_config(config);
    let start = tokio::time::Instant::now();
    let mut attempt = 1;
    loop {
        if let Some(v) = client.detected_api_version().await {
            return v;
        }
        let wait = backoff.wait_after(attempt);
        if start.elapsed() + wait >= config.lookup_timeout {
            let v = client.api_version().await;
            tracing::warn!(version = %v, "conductor API version not detected; using the fallback");
            return v;
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Binds the command API. The default wildcard `::` needs IPv6; on a kernel booted
/// without it, fall back to `0.0.0.0` as ironic-python-agent's wildcard choice does.
async fn bind(host: IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), RunError> {
    let addr = SocketAddr::new(host, port);
    match TcpListener::bind(addr).await {
        Ok(l) => Ok((l, addr)),
        Err(e)
            if host == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            let v4 = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
            tracing::warn!(%addr, fallback = %v4, "IPv6 unavailable; listening on IPv4 only");
            let l = TcpListener::bind(v4)
                .await
                .map_err(|source| RunError::Listen { addr: v4, source })?;
            Ok((l, v4))
        }
        Err(source) => Err(RunError::Listen { addr, source }),
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}

/// The certificate's common name: the host's name, as the kernel knows it.
fn hostname(host: &HostRoot) -> String {
    host.read_attr("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".to_owned())
}
