//! Routes and handlers. Handlers check the token, parse, and hand commands to the
//! executor; they never run a command themselves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use ferric_shared::command::{
    AgentRoot, AgentStatus, AgentV1, CommandList, CommandRequest, CommandResult,
};
use tracing::Instrument;

use super::error::ApiError;
use super::serve::Scheme;
use super::MAX_BODY_BYTES;
use crate::commands::Mode;
use crate::executor::Executor;
use crate::session::Session;

/// A body over the limit is still read (and discarded) up to this size, so the client
/// gets its 413 instead of a reset connection; beyond it the connection is given up.
const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub executor: Executor,
    pub session: Arc<Session>,
    pub version: String,
}

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(crate) fn router(state: AppState) -> Router {
    let mut router =
        Router::new().route("/", get(root)).route("/v1", get(v1)).route("/v1/", get(v1));
    // ironic-python-agent serves every route with and without the `/v1` prefix, and
    // Ironic uses the trailing slash on collections.
    for prefix in ["", "/v1"] {
        router = router
            .route(&format!("{prefix}/status"), get(status))
            .route(&format!("{prefix}/status/"), get(status))
            .route(&format!("{prefix}/commands"), get(list_commands).post(run_command))
            .route(&format!("{prefix}/commands/"), get(list_commands).post(run_command))
            .route(&format!("{prefix}/commands/{{id}}"), get(get_command));
    }
    router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    async move {
        let response = next.run(req).await;
        tracing::debug!(status = response.status().as_u16(), "handled");
        response
    }
    .instrument(span)
    .await
}

/// `scheme://host` as the client addressed us, for the links in `/` and `/v1/`.
fn base_url(scheme: Option<Extension<Scheme>>, headers: &HeaderMap) -> String {
    let scheme = scheme.map_or(Scheme::Http, |Extension(s)| s);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ']))
        .unwrap_or("localhost");
    format!("{}://{host}", scheme.as_str())
}

async fn root(scheme: Option<Extension<Scheme>>, headers: HeaderMap) -> Json<AgentRoot> {
    Json(AgentRoot::new(&base_url(scheme, &headers)))
}

async fn v1(scheme: Option<Extension<Scheme>>, headers: HeaderMap) -> Json<AgentV1> {
    Json(AgentV1::new(&base_url(scheme, &headers)))
}

async fn status(State(state): State<AppState>) -> Json<AgentStatus> {
    Json(AgentStatus { started_at: state.session.started_at, version: state.version.clone() })
}

/// The query parameters, with the token checked.
fn authorize(state: &AppState, query: QueryParams) -> Result<HashMap<String, String>, ApiError> {
    // A query string that cannot be parsed cannot carry a valid token either.
    let Query(params) = query.map_err(|_| ApiError::Unauthorized)?;
    if !state.session.token_matches(params.get("agent_token").map(String::as_str)) {
        return Err(ApiError::Unauthorized);
    }
    Ok(params)
}

/// `wait=true` (any case) blocks until the command is done; anything else does not.
fn wants_wait(params: &HashMap<String, String>) -> bool {
    params.get("wait").is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

async fn list_commands(
    State(state): State<AppState>,
    query: QueryParams,
) -> Result<Json<CommandList>, ApiError> {
    authorize(&state, query)?;
    Ok(Json(CommandList { commands: state.executor.list() }))
}

async fn get_command(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: QueryParams,
) -> Result<Json<CommandResult>, ApiError> {
    let params = authorize(&state, query)?;
    // An id that is not even valid text cannot name a recorded command.
    let Path(id) = id.map_err(|_| ApiError::NoRoute)?;
    let result =
        if wants_wait(&params) { state.executor.wait(&id).await } else { state.executor.get(&id) };
    result.map(Json).ok_or(ApiError::UnknownCommandId(id))
}

async fn run_command(
    State(state): State<AppState>,
    query: QueryParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CommandResult>, ApiError> {
    let params = authorize(&state, query)?;
    let bytes = read_body(&headers, body).await?;
    // Parsed as JSON whatever the Content-Type says, as ironic-python-agent does.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let request: CommandRequest =
        serde_json::from_value(value).map_err(|_| ApiError::InvalidContent)?;
    let submitted = state.executor.submit(&request.name, request.params)?;
    let result = if submitted.mode == Mode::Sync || wants_wait(&params) {
        state.executor.wait(&submitted.id).await
    } else {
        state.executor.get(&submitted.id)
    };
    // The record was just made and is never removed.
    result.map(Json).ok_or(ApiError::UnknownCommandId(submitted.id))
}

/// Reads the body up to [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|_| ApiError::BodyRead)?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > MAX_DRAIN_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        if total <= MAX_BODY_BYTES {
            buf.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(Bytes::from(buf))
}
