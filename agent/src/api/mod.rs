//! The agent's command API: ironic-python-agent's REST API (port 9999), spoken exactly as
//! Ironic expects it.
//!
//! Start-up, in `main`, inside a Tokio runtime:
//!
//! ```no_run
//! # async fn run(deps: ferric_agent::api::ApiDeps, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> std::io::Result<()> {
//! use ferric_agent::api;
//! let (app, handle) = api::build(deps);
//! let listener = tokio::net::TcpListener::bind(("::", 9999)).await?;
//! api::serve(listener, tls, app, handle.stopped()).await?;
//! if handle.lockdown_requested() {
//!     // The reply to `system.lockdown` has been sent: now take the network down.
//!     if let Err(e) = handle.lock_down_host() {
//!         tracing::error!(error = %ferric_agent::executor::error_chain(&e), "lockdown");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`build`] starts the command executor's worker and returns the router plus an
//! [`ApiHandle`]; [`serve`] runs the HTTP or HTTPS accept loop until the shutdown future
//! resolves, then drains in-flight requests. [`ApiHandle::stopped`] resolves when
//! `system.lockdown` (or [`ApiHandle::begin_lockdown`], e.g. after a fatal lookup reply,
//! or [`ApiHandle::stop`]) asks the server to stop; callers may combine it with their own
//! signals.

pub mod error;
mod routes;
mod serve;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use error::ApiError;
pub use serve::serve;

use crate::commands::CommandContext;
use crate::executor::{Executor, StopSwitch};
use crate::inventory::InventorySources;
use crate::logbuf::LogBuffer;
use crate::power::{PowerControl, PowerError};
use crate::session::Session;

/// Largest accepted request body. Command parameters are small JSON; images are never
/// uploaded, only referenced by URL.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the API and its commands need.
#[derive(Debug, Clone)]
pub struct ApiDeps {
    pub session: Arc<Session>,
    pub inventory: InventorySources,
    pub power: Arc<dyn PowerControl>,
    /// The agent's own log, for `log.collect_system_logs`.
    pub logs: Arc<LogBuffer>,
    /// Reported as `version` by `GET /v1/status`.
    pub version: String,
    /// Download settings for image writes (the agent's CA, `ipa-insecure`, retry flags).
    pub image_http: crate::image::source::HttpOptions,
    /// The agent's erase settings.
    pub erase: crate::erase::run::EraseConfig,
}

/// Control of a running API after [`build`].
#[derive(Debug, Clone)]
pub struct ApiHandle {
    executor: Executor,
    stop: StopSwitch,
    power: Arc<dyn PowerControl>,
    #[cfg(test)]
    test_gate: Arc<tokio::sync::Semaphore>,
}

impl ApiHandle {
    /// Resolves when the server has been asked to stop; pass it to [`serve`].
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.stop.stopped()
    }

    /// Asks the server to stop, without a lockdown.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Asks the server to stop and marks that the network must go down afterwards.
    pub fn begin_lockdown(&self) {
        self.stop.lockdown();
    }

    pub fn lockdown_requested(&self) -> bool {
        self.stop.lockdown_requested()
    }

    /// Takes the host's network down. Call after [`serve`] has returned, so the reply
    /// to `system.lockdown` has reached Ironic first.
    pub fn lock_down_host(&self) -> Result<(), PowerError> {
        self.power.lockdown()
    }

    /// The command record and worker, e.g. to read the last command's status.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Lets one running `system.test_block` command finish.
    #[cfg(test)]
    pub(crate) fn release_test_block(&self) {
        self.test_gate.add_permits(1);
    }
}

/// Builds the router and starts the command executor. Must be called within a Tokio
/// runtime.
pub fn build(deps: ApiDeps) -> (axum::Router, ApiHandle) {
    let stop = StopSwitch::new();
    #[cfg(test)]
    let test_gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ctx = CommandContext {
        session: deps.session.clone(),
        inventory: deps.inventory,
        power: deps.power.clone(),
        logs: deps.logs,
        deploy: crate::commands::deploy::DeployContext::new(deps.image_http),
        erase: deps.erase,
        #[cfg(test)]
        test_gate: test_gate.clone(),
    };
    let executor = Executor::start(ctx, stop.clone());
    let router = routes::router(routes::AppState {
        executor: executor.clone(),
        session: deps.session,
        version: deps.version,
    });
    let handle = ApiHandle {
        executor,
        stop,
        power: deps.power,
        #[cfg(test)]
        test_gate,
    };
    (router, handle)
}
