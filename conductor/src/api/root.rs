//! `GET /` and `GET /v1`: the version documents. Clients read the served range from them
//! (`default_version.version` is the maximum), so they carry it in the body as well as in
//! the headers.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::version::{MAX_VERSION, MIN_VERSION};
use super::ApiState;

/// The version object shared by both documents.
fn version_object(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": MIN_VERSION.to_string(),
        "version": MAX_VERSION.to_string(),
    })
}

/// `GET /`.
pub async fn root(State(state): State<ApiState>, headers: HeaderMap) -> Json<Value> {
    let base = state.base_url(&headers);
    let v1 = version_object(&base);
    Json(json!({
        "name": "OpenStack Ironic API",
        "description": "Ferric is a bare-metal provisioning service that speaks the \
            OpenStack Ironic API.",
        "default_version": v1,
        "versions": [v1],
    }))
}

/// `GET /v1` (and `/v1/`).
pub async fn v1(State(state): State<ApiState>, headers: HeaderMap) -> Json<Value> {
    let base = state.base_url(&headers);
    let pair = |path: &str| {
        json!([
            {"href": format!("{base}/v1/{path}/"), "rel": "self"},
            {"href": format!("{base}/{path}/"), "rel": "bookmark"},
        ])
    };
    Json(json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "media_types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.ironic.v1+json",
        }],
        "nodes": pair("nodes"),
        "ports": pair("ports"),
        "lookup": pair("lookup"),
        "heartbeat": pair("heartbeat"),
        "continue_inspection": pair("continue_inspection"),
        "version": version_object(&base),
    }))
}
