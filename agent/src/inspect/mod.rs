//! Inspection mode: with `ipa-inspection-callback-url` set, the agent first reports the
//! machine (inventory, default root disk, PXE MAC, logs, LLDP) to that URL, as
//! ironic-python-agent does, and learns its node UUID from the reply for the lookup that
//! follows.
//!
//! Inspection never stops the agent: a failure is logged, and the lookup (if
//! `ipa-api-url` is set) goes ahead without a UUID, the way IPA proceeds.

pub mod collect;
pub mod lldp;
pub mod post;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::AgentConfig;
use crate::executor::error_chain;
use crate::host::HostRoot;
use crate::inventory::InventorySources;
use crate::logbuf::LogBuffer;
use collect::ReportInputs;
use lldp::LldpCapture;
pub use post::{InspectionReply, PostError, PostRetry};

/// Why inspection produced no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("collecting the inspection data stopped unexpectedly")]
    Collect(#[source] tokio::task::JoinError),
    #[error("posting the inspection data")]
    Post(#[from] PostError),
}

/// Collects the report for `config` on `host`. Blocking: reads sysfs and may listen for
/// LLDP for `ipa-lldp-timeout`.
pub fn collect_report(config: &AgentConfig, host: &HostRoot, logs: &LogBuffer) -> Value {
    let sources = InventorySources::for_host(host.clone(), config.bootif.clone());
    let agent_log = logs.contents();
    let inputs = ReportInputs::from_config(config, &sources, &agent_log);
    let real = host.is_real_root();
    collect::build_report(&inputs, |nics, timeout| listen(real, nics, timeout))
}

/// LLDP is heard on the machine's own NICs only: a fake host tree names interfaces that
/// are not this machine's, and listening on the machine running it would report its
/// switches instead.
fn listen(real_root: bool, nics: &[String], timeout: Duration) -> LldpCapture {
    if !real_root {
        tracing::info!("fake host tree: not listening for LLDP");
        return LldpCapture::default();
    }
    tracing::info!(?nics, ?timeout, "listening for LLDP");
    lldp::capture(nics, timeout)
}

/// Collects and posts the report, retrying per `retry`.
pub async fn inspect(
    config: &AgentConfig,
    host: &HostRoot,
    logs: Arc<LogBuffer>,
    tls: Option<Arc<rustls::ClientConfig>>,
    retry: &PostRetry,
) -> Result<InspectionReply, InspectError> {
    let http = post::http_client(config, tls)?;
    let report = {
        let config = config.clone();
        let host = host.clone();
        tokio::task::spawn_blocking(move || collect_report(&config, &host, &logs))
            .await
            .map_err(InspectError::Collect)?
    };
    if let Some(error) = report.get("error").and_then(Value::as_str) {
        tracing::warn!(%error, "inspection data is incomplete; posting it anyway");
    }
    let reply = post::post_report(&http, &config.inspection_callback_urls, &report, retry).await?;
    tracing::info!(node = ?reply.node_uuid, status = reply.status, "inspection data accepted");
    Ok(reply)
}

/// [`inspect`], with failures logged rather than returned: what the agent's start-up
/// needs, since inspection failing must not keep the lookup from happening.
pub async fn inspect_and_log(
    config: &AgentConfig,
    host: &HostRoot,
    logs: Arc<LogBuffer>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Option<InspectionReply> {
    match inspect(config, host, logs, tls, &PostRetry::default()).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "inspection failed; proceeding");
            None
        }
    }
}
