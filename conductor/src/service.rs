//! `ferric conductor`: opens the store, takes over nodes a previous run left in transient
//! states, and serves the Ironic API, the iPXE scripts and the image directory on one
//! listener until SIGTERM or SIGINT. The periodic reconcilers (power sync, wait-state
//! timeouts) run beside it and write their last runs to `<data_dir>/status.json`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::api::{self, ApiState};
use crate::bmc::fake::FakeDriver;
use crate::bmc::limit::RequestLimiter;
use crate::bmc::{BootDevice, DriverRegistry};
use crate::boot::{self, BootConfig, BootLookupError, BootParams, BootParamsSource, MacAddress};
use crate::config::ConductorConfig;
use crate::images;
use crate::orchestrate::worker::Orchestrator;
use crate::periodic::power_sync::PowerSync;
use crate::periodic::timeouts::Timeouts;
use crate::periodic::{self, Reconciler, ReconcilerStatus};
use crate::store::{Store, StoreError};

/// How many accepted-but-unprocessed tasks may wait; beyond that the API answers 503.
const TASK_QUEUE: usize = 4096;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("creating the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store")]
    Store(#[from] StoreError),
    #[error("listening on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the API")]
    Serve(#[source] std::io::Error),
}

/// The drivers this build offers, sharing the default cap on BMC requests in flight.
pub fn default_drivers() -> DriverRegistry {
    drivers_with_limiter(RequestLimiter::default())
}

/// The drivers this build offers; every BMC request of every driver takes a permit of
/// `limiter` (`[bmc] max_concurrent_requests`).
pub fn drivers_with_limiter(limiter: RequestLimiter) -> DriverRegistry {
    let mut drivers = DriverRegistry::new();
    drivers.register(Arc::new(FakeDriver::new()));
    drivers.register(Arc::new(crate::bmc::ipmi::IpmiDriver::new().with_limiter(limiter.clone())));
    drivers.register(Arc::new(crate::bmc::redfish::RedfishDriver::new().with_limiter(limiter)));
    drivers
}

/// Runs the conductor until a signal stops it.
pub async fn run(config: ConductorConfig) -> Result<(), ServiceError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServiceError::Listen { addr: config.listen, source })?;
    let drivers = drivers_with_limiter(RequestLimiter::new(config.bmc.max_concurrent_requests));
    run_on(config, listener, drivers, shutdown_signal()).await
}

/// Runs the conductor on an already bound listener until `shutdown` resolves (tests
/// bind port 0 and pass their own drivers and shutdown).
pub async fn run_on(
    config: ConductorConfig,
    listener: TcpListener,
    drivers: DriverRegistry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    for dir in [config.data_dir.clone(), config.image_dir()] {
        std::fs::create_dir_all(&dir)
            .map_err(|source| ServiceError::DataDir { path: dir.display().to_string(), source })?;
    }
    let store = Store::open(&config.database_path()).await?;
    let holder = config.conductor.name.clone();
    for moved in store.takeover(&holder).await? {
        tracing::warn!(node = %moved.uuid, from = %moved.from, to = %moved.to,
            "node was in a transient state when the conductor stopped; moved to its failed state");
    }

    let config = Arc::new(config);
    let drivers = Arc::new(drivers);
    let (tasks, task_rx) = mpsc::channel(TASK_QUEUE);
    let orchestrator =
        Orchestrator { store: store.clone(), drivers: drivers.clone(), config: config.clone() };
    tokio::spawn(orchestrator.run(task_rx));

    let boot_config = BootConfig {
        api_url: config.public_url(),
        http_url: config.public_url(),
        deploy_kernel: config.deploy.deploy_kernel.clone(),
        deploy_ramdisk: config.deploy.deploy_ramdisk.clone(),
        kernel_append_params: config.deploy.kernel_append_params.clone(),
        inspection_kernel_params: config.inspector.extra_kernel_params.clone(),
    };
    let app = api::router(ApiState {
        store: store.clone(),
        drivers: drivers.clone(),
        tasks,
        config: config.clone(),
    })
    .merge(boot::router(boot_config, Arc::new(StoreBootSource { store: store.clone() })))
    .merge(images::router(config.image_dir()));

    // One shutdown signal, fanned out to the server and every reconciler.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            // An error means the sender is gone, which only happens after it sent.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let status = ReconcilerStatus::with_file(
        periodic::status_file_path(&config.data_dir),
        config.conductor.name.clone(),
    );
    let reconcilers: [Arc<dyn Reconciler>; 2] = [
        Arc::new(
            PowerSync::new(
                store.clone(),
                drivers.clone(),
                Duration::from_secs(config.power.sync_interval),
                config.power.sync_max_retries,
            )
            .with_concurrency(config.power.sync_concurrency),
        ),
        Arc::new(Timeouts::from_config(store.clone(), &config)),
    ];
    let mut periodic_tasks = Vec::new();
    for reconciler in reconcilers {
        periodic_tasks.push(tokio::spawn(periodic::run_periodically(
            reconciler,
            status.clone(),
            stopped(),
        )));
    }

    let addr = listener.local_addr().map_err(ServiceError::Serve)?;
    tracing::info!(%addr, public_url = %config.public_url(), conductor = %holder, "conductor serving");
    let served = axum::serve(listener, app).with_graceful_shutdown(stopped()).await;
    for task in periodic_tasks {
        if served.is_err() {
            // The server failed without a shutdown signal: stop the reconcilers too.
            task.abort();
        }
        match task.await {
            Ok(()) => {}
            Err(error) if error.is_cancelled() => {}
            Err(error) => tracing::warn!(%error, "a periodic reconciler ended abnormally"),
        }
    }
    // Nothing talks to BMCs any more but tasks still finishing: end the BMC sessions so
    // that BMCs with few session slots do not keep them until they time out.
    drivers.close_all().await;
    served.map_err(ServiceError::Serve)?;
    tracing::info!("conductor stopped");
    store.close().await;
    Ok(())
}

/// Boot scripts come from the node that owns the MAC as a port.
struct StoreBootSource {
    store: Store,
}

#[async_trait::async_trait]
impl BootParamsSource for StoreBootSource {
    async fn boot_params(&self, mac: &MacAddress) -> Result<Option<BootParams>, BootLookupError> {
        let lookup = |e: StoreError| BootLookupError(crate::error_chain(&e));
        let nodes = self.store.find_node_by_macs(&[mac.to_string()]).await.map_err(lookup)?;
        let Some(uuid) = nodes.first() else { return Ok(None) };
        let node = self.store.get_node(&uuid.to_string()).await.map_err(lookup)?;
        let boot_device = node
            .driver_internal_info
            .get("boot_device")
            .and_then(|d| d.as_str())
            .and_then(BootDevice::from_api);
        Ok(Some(BootParams {
            node_uuid: node.uuid.to_string(),
            provision_state: node.provision_state,
            boot_device,
            driver_info: node.driver_info,
        }))
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
