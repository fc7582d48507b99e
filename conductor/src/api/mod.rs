//! The Ironic-compatible REST API (`/v1`): nodes, ports, node states and actions, and the
//! ramdisk endpoints the agent calls (`lookup`, `heartbeat`, `continue_inspection`).
//!
//! Handlers only parse, check and record: a state change is one conditional update in the
//! store, and the work it starts (power, cleaning, deployment, heartbeat processing) is
//! handed to the orchestrator as a [`ConductorTask`] on a channel. Every response carries
//! the microversion headers ([`version`]) and every error has Ironic's body ([`error`]).
//! Secrets are masked in every response ([`ferric_shared::node::mask_node`]) and never
//! logged: request spans carry the method, path and node, not bodies or query strings.

pub mod body;
pub mod error;
pub mod inspection;
mod inventory;
mod node_actions;
mod nodes;
pub mod patch;
mod ports;
mod ramdisk;
mod root;
pub mod version;
pub(crate) mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use ferric_shared::node::ProvisionRequest;
use ferric_shared::states::{Event, PowerTarget, ProvisionVerb};
use tokio::sync::mpsc;
use tower::ServiceExt;
use tracing::Instrument;
use uuid::Uuid;

use crate::bmc::DriverRegistry;
use crate::config::ConductorConfig;
use crate::store::Store;
use error::ApiError;

/// The largest request body accepted, except on `continue_inspection`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest inspection report accepted: room for compressed system logs, while a
/// runaway or hostile ramdisk cannot make the conductor hold much.
pub const MAX_INSPECTION_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Work the API hands to the orchestrator once the request has been accepted and its
/// state change recorded.
#[derive(Debug, Clone)]
pub enum ConductorTask {
    /// A provision verb was accepted: the node has moved (`from` → `to`) by `event`.
    /// `request` is the whole body (clean steps, config drive, …); its `Debug` masks the
    /// config drive and rescue password.
    Provision { node: Uuid, verb: ProvisionVerb, event: Event, request: Box<ProvisionRequest> },
    /// A power change was requested; `timeout` bounds soft power actions.
    Power { node: Uuid, target: PowerTarget, timeout: Option<Duration> },
    /// The node's agent heartbeated and the node is in a state that expects it; the
    /// heartbeat's facts are already in `driver_internal_info`.
    Heartbeat { node: Uuid },
    /// Inspection data was posted for the node and stored.
    InspectionData { node: Uuid },
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub drivers: Arc<DriverRegistry>,
    pub tasks: mpsc::Sender<ConductorTask>,
    pub config: Arc<ConductorConfig>,
}

impl ApiState {
    /// The base URL for links: the configured public URL, else the scheme-less `Host` the
    /// client used (so links work behind port forwarding), else the listen address.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.config.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
        match host {
            Some(host) => format!("http://{host}"),
            None => self.config.public_url(),
        }
    }

    /// The name this conductor shows in `conductor` and writes into `reservation`.
    pub fn conductor_name(&self) -> &str {
        &self.config.conductor.name
    }

    /// Reserves room for one task before anything is changed, so that an accepted
    /// request never loses its task; a full queue is `503` with nothing written.
    pub fn task_slot(&self) -> Result<mpsc::Permit<'_, ConductorTask>, ApiError> {
        self.tasks.try_reserve().map_err(|err| match err {
            mpsc::error::TrySendError::Full(()) => {
                ApiError::Unavailable("The conductor is busy; retry the request shortly.".into())
            }
            mpsc::error::TrySendError::Closed(()) => {
                ApiError::Unavailable("The conductor is shutting down.".into())
            }
        })
    }
}

/// The API's router: every `/v1` route, `GET /`, the microversion layer, request spans,
/// body limits and Ironic-shaped `404`/`405`s.
pub fn router(state: ApiState) -> Router {
    let inspection = Router::new()
        .route("/v1/continue_inspection", post(inspection::continue_inspection))
        .route("/v1/continue", post(inspection::inspector_continue))
        .layer(DefaultBodyLimit::max(MAX_INSPECTION_BODY_BYTES));
    let main = Router::new()
        .route("/", get(root::root))
        .route("/v1", get(root::v1))
        .route("/v1/", get(root::v1))
        .route("/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/detail", get(nodes::list_detail))
        .route("/v1/nodes/{node}", get(nodes::show).patch(nodes::update).delete(nodes::delete))
        .route("/v1/nodes/{node}/ports", get(ports::list_for_node))
        .route("/v1/nodes/{node}/ports/detail", get(ports::list_for_node_detail))
        .route("/v1/nodes/{node}/inventory", get(inventory::show))
        .route("/v1/nodes/{node}/states", get(node_actions::states))
        .route("/v1/nodes/{node}/states/provision", put(node_actions::provision))
        .route("/v1/nodes/{node}/states/power", put(node_actions::power))
        .route(
            "/v1/nodes/{node}/maintenance",
            put(node_actions::maintenance_on).delete(node_actions::maintenance_off),
        )
        .route(
            "/v1/nodes/{node}/management/boot_device",
            get(node_actions::boot_device).put(node_actions::set_boot_device),
        )
        .route(
            "/v1/nodes/{node}/management/boot_device/supported",
            get(node_actions::supported_boot_devices),
        )
        .route("/v1/nodes/{node}/validate", get(node_actions::validate))
        .route("/v1/ports", get(ports::list).post(ports::create))
        .route("/v1/ports/detail", get(ports::list_detail))
        .route("/v1/ports/{port}", get(ports::show).patch(ports::update).delete(ports::delete))
        .route("/v1/lookup", get(ramdisk::lookup))
        .route("/v1/heartbeat/{node}", post(ramdisk::heartbeat))
        .route(
            "/v1/introspection/{node}",
            post(inspection::start_introspection).get(inspection::introspection_status),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let routes = main
        .merge(inspection)
        .fallback(|| async { ApiError::NotFound("The resource could not be found.".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(version::version_layer))
        .layer(middleware::from_fn(request_span))
        .with_state(state);
    // Ironic answers `/v1/nodes/` like `/v1/nodes`, and python-ironicclient uses the
    // slash form whenever it sends a query string; the path is normalised before routing.
    Router::new().fallback_service(routes.map_request(strip_trailing_slash))
}

/// `/v1/nodes/?limit=1` → `/v1/nodes?limit=1`; `/` stays.
fn strip_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return request;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The response header naming the request, as Ironic sends it (`req-<uuid>`).
pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// One span per request with a request id, the method, the path (no query string: it may
/// carry a token) and the node it concerns, and one log line with the outcome. The id is
/// returned in `X-OpenStack-Request-Id` so that a client's report can be matched to logs.
async fn request_span(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let node = node_in_path(&path).unwrap_or("");
    let request_id = format!("req-{}", Uuid::new_v4());
    let span = tracing::info_span!("request", id = %request_id, %method, %path, node = %node);
    async move {
        let started = std::time::Instant::now();
        let mut response = next.run(request).await;
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
}

/// The node identifier in `/v1/nodes/{node}/…` and `/v1/heartbeat/{node}`.
fn node_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/nodes/").or_else(|| path.strip_prefix("/v1/heartbeat/"))?;
    let ident = rest.split('/').next()?;
    (!ident.is_empty() && ident != "detail").then_some(ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_in_path_table() {
        for (path, want) in [
            ("/v1/nodes/abc", Some("abc")),
            ("/v1/nodes/abc/states/provision", Some("abc")),
            ("/v1/heartbeat/n1", Some("n1")),
            ("/v1/nodes/detail", None),
            ("/v1/nodes", None),
            ("/v1/nodes/", None),
            ("/v1/ports/x", None),
        ] {
            assert_eq!(node_in_path(path), want, "{path}");
        }
    }
}
