//! A small working fake of the operator half of the Ironic v1 API (nodes, ports, states,
//! power, maintenance, boot device, validate) on `127.0.0.1:<port picked at run time>`,
//! for testing API clients — the `ferric` CLI and the real `baremetal` CLI — before the
//! conductor exists, and for recording exactly what those clients send.
//!
//! Behaviour follows Ironic where clients can see it: microversion negotiation (missing
//! header = 1.1, `latest`, 406 outside `[1.1, max]`, version headers on every reply),
//! `{"error_message": "<JSON string>"}` errors, `201` on create, `202` + `Location` on state
//! changes, `204` on delete, `next` links for paging, and the provision state machine of
//! `ferric_shared::states`. Work is simulated: after a provisioning verb, each read of the
//! node moves it one step further (`deploying` → `wait call-back` → `deploying` →
//! `active`), and a failure can be injected per node. The API version does not change the
//! node representation (Ironic hides newer fields from older versions; this fake does not).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ferric_shared::api_version::{
    ApiVersion, MAX_VERSION_HEADER, MIN_VERSION_HEADER, VERSION_HEADER,
};
use ferric_shared::error_body::IronicErrorBody;
use ferric_shared::states::{advance, verb_event, Event, ProvisionState, ProvisionVerb};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `X-OpenStack-Ironic-API-Version` as sent (`None` when absent).
    pub version: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: Vec<Value>,
    ports: Vec<Value>,
    boot_devices: HashMap<String, Value>,
    /// Events still to happen to a node (applied one per read).
    pending: HashMap<String, VecDeque<PendingStep>>,
    /// `last_error` to fail the next provisioning operation of a node with.
    fail_next: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
    /// How many pending events one read of a node applies (0 is treated as 1).
    steps_per_read: usize,
    /// No new simulated work is scheduled (operations never finish).
    frozen: bool,
    /// Ironic's `[api]max_limit`: the page size when a list request names no `limit`.
    max_limit: Option<usize>,
    next_id: u64,
    clock: u64,
}

#[derive(Debug, Clone)]
struct PendingStep {
    event: Event,
    last_error: Option<String>,
}

/// A running fake; stopped when dropped.
#[derive(Debug)]
pub struct FakeIronicApi {
    addr: SocketAddr,
    max_version: ApiVersion,
    inner: Arc<Mutex<Inner>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    max_version: ApiVersion,
    base: String,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeIronicApi {
    /// Starts the fake, advertising `max_version` as its newest microversion.
    pub async fn start(max_version: ApiVersion) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared { inner: inner.clone(), max_version, base: format!("http://{addr}") };
        let app = Router::new().fallback(move |method, uri, headers, body| {
            let shared = shared.clone();
            async move { handle(shared, method, uri, headers, body) }
        });
        let (shutdown, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self { addr, max_version, inner, shutdown, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn max_version(&self) -> ApiVersion {
        self.max_version
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner).requests.clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner).requests.clear();
    }

    /// The stored node (by UUID or name), as `GET` would show it.
    pub fn node(&self, ident: &str) -> Option<Value> {
        let inner = lock(&self.inner);
        inner.nodes.iter().find(|n| matches_ident(n, ident)).cloned()
    }

    pub fn ports(&self) -> Vec<Value> {
        lock(&self.inner).ports.clone()
    }

    pub fn boot_device(&self, node_uuid: &str) -> Option<Value> {
        lock(&self.inner).boot_devices.get(node_uuid).cloned()
    }

    /// Makes the next provisioning operation of `node` (UUID or name) fail with
    /// `last_error`, the way a conductor would report it.
    pub fn fail_next_operation(&self, node: &str, last_error: &str) {
        lock(&self.inner).fail_next.insert(node.to_owned(), last_error.to_owned());
    }

    /// How many simulated steps each read of a node applies: 1 (the default) shows every
    /// intermediate state; `usize::MAX` finishes work on the first read, for clients that
    /// poll slowly (the `baremetal` CLI's `--wait` polls every 10 s).
    pub fn set_steps_per_read(&self, steps: usize) {
        lock(&self.inner).steps_per_read = steps;
    }

    /// Pages node lists by `max_limit` when the request gives no `limit`, as Ironic's
    /// `[api]max_limit` does.
    pub fn set_max_limit(&self, max_limit: usize) {
        lock(&self.inner).max_limit = Some(max_limit);
    }

    /// Stops simulated work: every pending step of every node is dropped.
    pub fn freeze(&self) {
        let mut inner = lock(&self.inner);
        inner.pending.clear();
        inner.frozen = true;
    }

    /// Sets `driver_internal_info.agent_last_heartbeat` of a node.
    pub fn set_last_heartbeat(&self, node: &str, at: &str) {
        let mut inner = lock(&self.inner);
        if let Some(n) = inner.nodes.iter_mut().find(|n| matches_ident(n, node)) {
            n["driver_internal_info"]["agent_last_heartbeat"] = json!(at);
        }
    }
}

impl Drop for FakeIronicApi {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

fn matches_ident(node: &Value, ident: &str) -> bool {
    node["uuid"] == ident || (node["name"].is_string() && node["name"] == ident)
}

/// An error reply as Ironic writes it.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

type Reply = Result<(StatusCode, Option<String>, Option<Value>), ApiError>;

fn handle(shared: Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let version_text = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let generic = headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("baremetal "))
        .map(|v| v.trim().to_owned());
    let body_json: Option<Value> =
        if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let path = uri.path().trim_end_matches('/').to_owned();
    let query = uri.query().map(str::to_owned);

    let result = negotiate(shared.max_version, version_text.as_deref().or(generic.as_deref()))
        .and_then(|_| {
            if !body.is_empty() && body_json.is_none() {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid JSON in request body"));
            }
            route(&shared, &method, &path, query.as_deref(), body_json.clone())
        });
    let (status, location, reply) = match result {
        Ok(ok) => ok,
        Err(ApiError(status, message)) => {
            let body = serde_json::to_value(IronicErrorBody::new(status.as_u16(), message))
                .unwrap_or(Value::Null);
            (status, None, Some(body))
        }
    };
    lock(&shared.inner).requests.push(RecordedRequest {
        method: method.to_string(),
        path: if path.is_empty() { "/".into() } else { path },
        query,
        version: version_text,
        body: body_json,
        status: status.as_u16(),
    });
    let mut response = match reply {
        Some(value) => (status, axum::Json(value)).into_response(),
        None => status.into_response(),
    };
    let h = response.headers_mut();
    h.insert(MIN_VERSION_HEADER, HeaderValue::from_static("1.1"));
    if let Ok(v) = HeaderValue::from_str(&shared.max_version.to_string()) {
        h.insert(MAX_VERSION_HEADER, v);
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert("Location", location);
    }
    response
}

fn negotiate(max: ApiVersion, requested: Option<&str>) -> Result<ApiVersion, ApiError> {
    let version = match requested {
        None => ApiVersion::MINIMUM,
        Some("latest") => max,
        Some(text) => text.parse::<ApiVersion>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid value for {VERSION_HEADER}"))
        })?,
    };
    if version < ApiVersion::MINIMUM || version > max {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {version} was requested but the minor version is not supported by \
                 this service. The supported version range is: [1.1, {max}]."
            ),
        ));
    }
    Ok(version)
}

fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let segments: Vec<String> =
        path.split('/').filter(|s| !s.is_empty()).filter_map(decode).collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let q = query_pairs(query);
    let mut inner = lock(&shared.inner);
    let inner = &mut *inner;
    let ok = |v: Value| Ok((StatusCode::OK, None, Some(v)));
    match (method.as_str(), seg.as_slice()) {
        ("GET", []) => ok(root_document(shared)),
        ("GET", ["v1"]) => ok(v1_document(shared)),
        ("POST", ["v1", "nodes"]) => create_node(shared, inner, body),
        ("GET", ["v1", "nodes"]) => list_nodes(shared, inner, &q, false),
        ("GET", ["v1", "nodes", "detail"]) => list_nodes(shared, inner, &q, true),
        ("GET", ["v1", "nodes", id]) => {
            let node = read_node(inner, id)?;
            ok(select_fields(&node, q.get("fields")))
        }
        ("PATCH", ["v1", "nodes", id]) => patch_node(inner, id, body),
        ("DELETE", ["v1", "nodes", id]) => delete_node(inner, id),
        ("GET", ["v1", "nodes", id, "states"]) => {
            let node = read_node(inner, id)?;
            ok(states_of(&node))
        }
        ("PUT", ["v1", "nodes", id, "states", "provision"]) => provision(shared, inner, id, body),
        ("PUT", ["v1", "nodes", id, "states", "power"]) => power(shared, inner, id, body),
        ("PUT", ["v1", "nodes", id, "maintenance"]) => {
            let reason =
                body.as_ref().and_then(|b| b.get("reason")).cloned().unwrap_or(Value::Null);
            let node = node_mut(inner, id)?;
            node["maintenance"] = json!(true);
            node["maintenance_reason"] = reason;
            Ok((StatusCode::ACCEPTED, None, None))
        }
        ("DELETE", ["v1", "nodes", id, "maintenance"]) => {
            let node = node_mut(inner, id)?;
            node["maintenance"] = json!(false);
            node["maintenance_reason"] = Value::Null;
            Ok((StatusCode::ACCEPTED, None, None))
        }
        ("PUT", ["v1", "nodes", id, "management", "boot_device"]) => {
            let body = body.unwrap_or(Value::Null);
            let device = body.get("boot_device").and_then(Value::as_str).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "Missing mandatory field: boot_device")
            })?;
            if !["pxe", "disk", "cdrom", "bios", "safe"].contains(&device) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid boot device {device}"),
                ));
            }
            let persistent = body.get("persistent").and_then(Value::as_bool).unwrap_or(false);
            let uuid = node_mut(inner, id)?["uuid"].as_str().unwrap_or_default().to_owned();
            inner
                .boot_devices
                .insert(uuid, json!({"boot_device": device, "persistent": persistent}));
            Ok((StatusCode::NO_CONTENT, None, None))
        }
        ("GET", ["v1", "nodes", id, "management", "boot_device"]) => {
            let uuid = read_node(inner, id)?["uuid"].as_str().unwrap_or_default().to_owned();
            ok(inner
                .boot_devices
                .get(&uuid)
                .cloned()
                .unwrap_or(json!({"boot_device": null, "persistent": null})))
        }
        ("GET", ["v1", "nodes", id, "validate"]) => {
            let node = read_node(inner, id)?;
            ok(validate(&node))
        }
        ("GET", ["v1", "nodes", id, "ports"]) => {
            let uuid = read_node(inner, id)?["uuid"].clone();
            list_ports(shared, inner, Some(uuid), &q, false)
        }
        ("GET", ["v1", "nodes", id, "ports", "detail"]) => {
            let uuid = read_node(inner, id)?["uuid"].clone();
            list_ports(shared, inner, Some(uuid), &q, true)
        }
        ("POST", ["v1", "ports"]) => create_port(shared, inner, body),
        ("GET", ["v1", "ports"]) => list_ports(shared, inner, None, &q, false),
        ("GET", ["v1", "ports", "detail"]) => list_ports(shared, inner, None, &q, true),
        ("GET", ["v1", "ports", id]) => {
            let port = inner.ports.iter().find(|p| p["uuid"] == *id).cloned().ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("Port {id} could not be found."))
            })?;
            ok(select_fields(&port, q.get("fields")))
        }
        ("DELETE", ["v1", "ports", id]) => {
            let before = inner.ports.len();
            inner.ports.retain(|p| p["uuid"] != *id);
            if inner.ports.len() == before {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("Port {id} could not be found."),
                ));
            }
            Ok((StatusCode::NO_CONTENT, None, None))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("The resource could not be found: {method} {path}"),
        )),
    }
}

fn version_object(shared: &Shared) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{}/v1/", shared.base), "rel": "self"}],
        "status": "CURRENT",
        "min_version": "1.1",
        "version": shared.max_version.to_string(),
    })
}

fn root_document(shared: &Shared) -> Value {
    json!({
        "name": "OpenStack Ironic API",
        "description": "Ironic is an OpenStack project which enables the provision and management of baremetal machines.",
        "default_version": version_object(shared),
        "versions": [version_object(shared)],
    })
}

fn v1_document(shared: &Shared) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{}/v1/", shared.base), "rel": "self"}],
        "media_types": [{"base": "application/json",
                         "type": "application/vnd.openstack.ironic.v1+json"}],
        "version": version_object(shared),
        "nodes": [{"href": format!("{}/v1/nodes/", shared.base), "rel": "self"}],
        "ports": [{"href": format!("{}/v1/ports/", shared.base), "rel": "self"}],
    })
}

fn next_uuid(inner: &mut Inner) -> String {
    inner.next_id += 1;
    format!("{:08x}-7c3a-4f56-9a11-{:012x}", 0x0c8b_9ad4_u32, inner.next_id)
}

fn now(inner: &mut Inner) -> String {
    inner.clock += 1;
    let t = inner.clock;
    format!("2026-11-21T10:{:02}:{:02}+00:00", (t / 60) % 60, t % 60)
}

const NODE_FIELDS_ACCEPTED: &[&str] = &[
    "uuid",
    "name",
    "driver",
    "driver_info",
    "properties",
    "instance_info",
    "extra",
    "resource_class",
    "description",
    "boot_interface",
    "deploy_interface",
    "management_interface",
    "power_interface",
    "inspect_interface",
    "network_interface",
    "chassis_uuid",
    "instance_uuid",
    "owner",
    "lessee",
    "conductor_group",
    "automated_clean",
];

fn mask(object: &Value) -> Value {
    match object {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = k.contains("password") || k.contains("token");
                    (k.clone(), if secret && v.is_string() { json!("******") } else { mask(v) })
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn create_node(shared: &Shared, inner: &mut Inner, body: Option<Value>) -> Reply {
    let Some(Value::Object(body)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object",
        ));
    };
    if let Some(unknown) = body.keys().find(|k| !NODE_FIELDS_ACCEPTED.contains(&k.as_str())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Unknown attribute for argument node: {unknown}"),
        ));
    }
    let driver = body
        .get("driver")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "Mandatory field missing: driver"))?;
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        if inner.nodes.iter().any(|n| n["name"] == name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("A node with name {name} already exists."),
            ));
        }
    }
    let uuid = match body.get("uuid").and_then(Value::as_str) {
        Some(u) => u.to_owned(),
        None => next_uuid(inner),
    };
    if inner.nodes.iter().any(|n| n["uuid"] == uuid) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("A node with UUID {uuid} already exists."),
        ));
    }
    let at = now(inner);
    let object_or_empty = |k: &str| body.get(k).cloned().unwrap_or_else(|| json!({}));
    let node = json!({
        "uuid": uuid,
        "name": body.get("name").cloned().unwrap_or(Value::Null),
        "driver": driver,
        "driver_info": object_or_empty("driver_info"),
        "properties": object_or_empty("properties"),
        "instance_info": object_or_empty("instance_info"),
        "extra": object_or_empty("extra"),
        "driver_internal_info": {},
        "resource_class": body.get("resource_class").cloned().unwrap_or(Value::Null),
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "instance_uuid": body.get("instance_uuid").cloned().unwrap_or(Value::Null),
        "boot_interface": body.get("boot_interface").cloned().unwrap_or(json!("fake")),
        "deploy_interface": body.get("deploy_interface").cloned().unwrap_or(json!("direct")),
        "management_interface": body.get("management_interface").cloned().unwrap_or(json!("fake")),
        "power_interface": body.get("power_interface").cloned().unwrap_or(json!("fake")),
        "provision_state": "enroll",
        "target_provision_state": null,
        "provision_updated_at": null,
        "power_state": null,
        "target_power_state": null,
        "maintenance": false,
        "maintenance_reason": null,
        "last_error": null,
        "reservation": null,
        "console_enabled": false,
        "clean_step": {},
        "deploy_step": {},
        "created_at": at,
        "updated_at": null,
        "links": [{"href": format!("{}/v1/nodes/{uuid}", shared.base), "rel": "self"},
                  {"href": format!("{}/nodes/{uuid}", shared.base), "rel": "bookmark"}],
    });
    inner.nodes.push(node.clone());
    Ok((StatusCode::CREATED, None, Some(mask(&node))))
}

fn select_fields(object: &Value, fields: Option<&String>) -> Value {
    let masked = mask(object);
    let Some(fields) = fields else { return masked };
    let mut out = Map::new();
    for field in fields.split(',').map(str::trim).chain(["links"]) {
        if let Some(v) = masked.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

const NODE_LIST_FIELDS: &[&str] =
    &["uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance", "links"];

fn list_nodes(
    shared: &Shared,
    inner: &mut Inner,
    q: &HashMap<String, String>,
    detail: bool,
) -> Reply {
    for key in
        inner.nodes.iter().filter_map(|n| n["uuid"].as_str().map(str::to_owned)).collect::<Vec<_>>()
    {
        step_node(inner, &key);
    }
    let mut nodes: Vec<Value> = inner
        .nodes
        .iter()
        .filter(|n| q.get("provision_state").is_none_or(|s| n["provision_state"] == s.as_str()))
        .filter(|n| q.get("driver").is_none_or(|s| n["driver"] == s.as_str()))
        .filter(|n| q.get("resource_class").is_none_or(|s| n["resource_class"] == s.as_str()))
        .filter(|n| {
            q.get("maintenance").is_none_or(|s| n["maintenance"] == s.eq_ignore_ascii_case("true"))
        })
        .cloned()
        .collect();
    let sort_key = q.get("sort_key").map(String::as_str).unwrap_or("uuid").to_owned();
    nodes.sort_by(|a, b| a[&sort_key].to_string().cmp(&b[&sort_key].to_string()));
    if q.get("sort_dir").is_some_and(|d| d == "desc") {
        nodes.reverse();
    }
    if let Some(marker) = q.get("marker") {
        let pos = nodes.iter().position(|n| n["uuid"] == marker.as_str()).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("Node {marker} could not be found."))
        })?;
        nodes.drain(..=pos);
    }
    let limit = match q.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid limit"))?,
        ),
        None => inner.max_limit,
    };
    let mut next = None;
    // Like Ironic, a full page gets a `next` link even when nothing follows it.
    if let Some(limit) = limit.filter(|l| *l > 0 && nodes.len() >= *l) {
        nodes.truncate(limit);
        if let Some(last) = nodes.last().and_then(|n| n["uuid"].as_str()) {
            let path = if detail { "nodes/detail" } else { "nodes" };
            next = Some(format!("{}/v1/{path}?limit={limit}&marker={last}", shared.base));
        }
    }
    let fields = q.get("fields").cloned().or_else(|| (!detail).then(|| NODE_LIST_FIELDS.join(",")));
    let items: Vec<Value> = nodes.iter().map(|n| select_fields(n, fields.as_ref())).collect();
    let mut reply = json!({"nodes": items});
    if let Some(next) = next {
        reply["next"] = json!(next);
    }
    Ok((StatusCode::OK, None, Some(reply)))
}

fn node_index(inner: &Inner, ident: &str) -> Result<usize, ApiError> {
    inner.nodes.iter().position(|n| matches_ident(n, ident)).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("Node {ident} could not be found."))
    })
}

fn node_mut<'a>(inner: &'a mut Inner, ident: &str) -> Result<&'a mut Value, ApiError> {
    let i = node_index(inner, ident)?;
    Ok(&mut inner.nodes[i])
}

/// Reading a node is what moves simulated work forward.
fn read_node(inner: &mut Inner, ident: &str) -> Result<Value, ApiError> {
    let i = node_index(inner, ident)?;
    let uuid = inner.nodes[i]["uuid"].as_str().unwrap_or_default().to_owned();
    step_node(inner, &uuid);
    Ok(inner.nodes[i].clone())
}

fn state_of(node: &Value, key: &str) -> Option<ProvisionState> {
    node[key].as_str().and_then(|s| s.parse().ok())
}

fn step_node(inner: &mut Inner, uuid: &str) {
    for _ in 0..inner.steps_per_read.max(1) {
        if !step_once(inner, uuid) {
            return;
        }
    }
}

/// Applies one pending event; false when there was none left.
fn step_once(inner: &mut Inner, uuid: &str) -> bool {
    let Some(step) = inner.pending.get_mut(uuid).and_then(VecDeque::pop_front) else {
        return false;
    };
    let at = now(inner);
    let Ok(i) = node_index(inner, uuid) else { return false };
    let node = &mut inner.nodes[i];
    let (Some(from), target) =
        (state_of(node, "provision_state"), state_of(node, "target_provision_state"))
    else {
        return false;
    };
    let Ok(change) = advance(from, step.event, target, None) else { return false };
    node["provision_state"] = json!(change.provision_state.as_str());
    node["target_provision_state"] =
        json!(change.target_provision_state.map(ProvisionState::as_str));
    node["provision_updated_at"] = json!(at);
    if let Some(error) = step.last_error {
        node["last_error"] = json!(error);
        inner.pending.remove(uuid);
        return false;
    }
    match change.provision_state {
        ProvisionState::Active => node["power_state"] = json!("power on"),
        ProvisionState::Available | ProvisionState::Manageable => {
            node["power_state"] = json!("power off")
        }
        _ => {}
    }
    true
}

fn states_of(node: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "console_enabled",
        "last_error",
        "power_state",
        "provision_state",
        "target_power_state",
        "target_provision_state",
        "provision_updated_at",
    ] {
        out.insert(key.to_owned(), node.get(key).cloned().unwrap_or(Value::Null));
    }
    out.insert("raid_config".into(), json!({}));
    out.insert("target_raid_config".into(), json!({}));
    out.insert("boot_mode".into(), Value::Null);
    out.insert("secure_boot".into(), Value::Null);
    Value::Object(out)
}

const PATCHABLE_ROOTS: &[&str] = &[
    "name",
    "driver",
    "driver_info",
    "properties",
    "instance_info",
    "extra",
    "resource_class",
    "description",
    "instance_uuid",
    "maintenance",
    "boot_interface",
    "deploy_interface",
    "management_interface",
    "power_interface",
];

fn patch_node(inner: &mut Inner, ident: &str, body: Option<Value>) -> Reply {
    let Some(Value::Array(ops)) = body else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid patch: expected a JSON list"));
    };
    let i = node_index(inner, ident)?;
    let mut node = inner.nodes[i].clone();
    for op in &ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let parts: Vec<String> =
            path.split('/').skip(1).map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
        let Some(root) = parts.first() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid patch path {path:?}"),
            ));
        };
        if !PATCHABLE_ROOTS.contains(&root.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("'{path}' is an internal attribute and can not be updated"),
            ));
        }
        let (last, parents) = parts.split_last().unwrap_or((root, &[]));
        let mut target = &mut node;
        for part in parents {
            if target.get(part).is_none_or(|v| !v.is_object()) {
                if kind == "remove" {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("can't remove non-existent object '{part}'"),
                    ));
                }
                target[part.as_str()] = json!({});
            }
            target = &mut target[part.as_str()];
        }
        let Some(map) = target.as_object_mut() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid patch path {path:?}"),
            ));
        };
        match kind {
            "add" | "replace" => {
                let value = op.get("value").cloned().ok_or_else(|| {
                    ApiError::new(StatusCode::BAD_REQUEST, "Patch operation without a value")
                })?;
                map.insert(last.clone(), value);
            }
            "remove" => {
                if parts.len() == 1 {
                    map.insert(last.clone(), Value::Null);
                } else if map.remove(last).is_none() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("can't remove non-existent object '{last}'"),
                    ));
                }
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid patch operation {other:?}"),
                ));
            }
        }
    }
    let at = now(inner);
    node["updated_at"] = json!(at);
    inner.nodes[i] = node.clone();
    Ok((StatusCode::OK, None, Some(mask(&node))))
}

fn delete_node(inner: &mut Inner, ident: &str) -> Reply {
    let i = node_index(inner, ident)?;
    let state = inner.nodes[i]["provision_state"].as_str().unwrap_or_default().to_owned();
    let deletable =
        ["enroll", "manageable", "available", "inspect failed", "clean failed", "adopt failed"];
    if !deletable.contains(&state.as_str()) && inner.nodes[i]["maintenance"] != true {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Node {ident} can not be deleted while in provision state {state}"),
        ));
    }
    let node = inner.nodes.remove(i);
    inner.ports.retain(|p| p["node_uuid"] != node["uuid"]);
    Ok((StatusCode::NO_CONTENT, None, None))
}

/// The events that follow a verb's first transition, when the work succeeds.
fn follow_up(verb: ProvisionVerb) -> Vec<Event> {
    use Event as E;
    use ProvisionVerb as V;
    match verb {
        V::Manage => vec![E::Done],
        V::Provide => vec![E::Wait, E::Resume, E::Done],
        V::Clean => vec![E::Wait, E::Resume, E::Manage],
        V::Active | V::Deploy | V::Rebuild => vec![E::Wait, E::Resume, E::Done],
        V::Deleted | V::Undeploy => vec![E::Clean, E::Wait, E::Resume, E::Done],
        V::Inspect => vec![E::Wait, E::Done],
        _ => vec![],
    }
}

fn provision(shared: &Shared, inner: &mut Inner, ident: &str, body: Option<Value>) -> Reply {
    let body = body.unwrap_or(Value::Null);
    let target = body
        .get("target")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "Missing mandatory field: target"))?;
    let verb: ProvisionVerb = target.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid provision state target {target:?}"))
    })?;
    if verb == ProvisionVerb::Clean && body.get("clean_steps").is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "\"clean_steps\" is required when setting target provision state to clean",
        ));
    }
    let i = node_index(inner, ident)?;
    let uuid = inner.nodes[i]["uuid"].as_str().unwrap_or_default().to_owned();
    let from = state_of(&inner.nodes[i], "provision_state")
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "node has no state"))?;
    let current_target = state_of(&inner.nodes[i], "target_provision_state");
    let requested = (verb == ProvisionVerb::Clean).then_some(ProvisionState::Manageable);
    let change = advance(from, verb_event(verb), current_target, requested).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The requested action \"{target}\" can not be performed on node \"{uuid}\" while it is in state \"{from}\"."),
        )
    })?;
    let at = now(inner);
    let node = &mut inner.nodes[i];
    node["provision_state"] = json!(change.provision_state.as_str());
    node["target_provision_state"] =
        json!(change.target_provision_state.map(ProvisionState::as_str));
    node["provision_updated_at"] = json!(at);
    if verb != ProvisionVerb::Abort {
        node["last_error"] = Value::Null;
    }
    if let Some(configdrive) = body.get("configdrive") {
        node["instance_info"]["configdrive"] = configdrive.clone();
    }
    let name = node["name"].as_str().map(str::to_owned);
    let failure =
        inner.fail_next.remove(&uuid).or_else(|| name.and_then(|n| inner.fail_next.remove(&n)));
    let mut steps: VecDeque<PendingStep> =
        follow_up(verb).into_iter().map(|event| PendingStep { event, last_error: None }).collect();
    if let Some(error) = failure {
        // Fail where the real work would: in the wait state, or at once for `manage`.
        let keep = steps.iter().position(|s| s.event == Event::Wait).map_or(0, |p| p + 1);
        steps.truncate(keep);
        steps.push_back(PendingStep { event: Event::Fail, last_error: Some(error) });
    }
    if !inner.frozen {
        inner.pending.insert(uuid.clone(), steps);
    }
    Ok((StatusCode::ACCEPTED, Some(format!("{}/v1/nodes/{uuid}/states", shared.base)), None))
}

fn power(shared: &Shared, inner: &mut Inner, ident: &str, body: Option<Value>) -> Reply {
    let body = body.unwrap_or(Value::Null);
    let target = body.get("target").and_then(Value::as_str).unwrap_or_default();
    let state = match target {
        "power on" | "rebooting" | "soft rebooting" => "power on",
        "power off" | "soft power off" => "power off",
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid power state target {other:?}"),
            ));
        }
    };
    if let Some(timeout) = body.get("timeout") {
        if timeout.as_u64().is_none_or(|t| t < 1) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "timeout must be a positive integer",
            ));
        }
    }
    let node = node_mut(inner, ident)?;
    node["power_state"] = json!(state);
    let uuid = node["uuid"].as_str().unwrap_or_default().to_owned();
    Ok((StatusCode::ACCEPTED, Some(format!("{}/v1/nodes/{uuid}/states", shared.base)), None))
}

fn validate(node: &Value) -> Value {
    let has_image = node["instance_info"].get("image_source").is_some();
    let deploy = if has_image {
        json!({"result": true, "reason": null})
    } else {
        json!({"result": false, "reason": "Missing instance_info/image_source"})
    };
    json!({
        "boot": {"result": true, "reason": null},
        "console": {"result": null, "reason": "not supported"},
        "deploy": deploy,
        "inspect": {"result": true, "reason": null},
        "management": {"result": true, "reason": null},
        "network": {"result": true, "reason": null},
        "power": {"result": true, "reason": null},
        "raid": {"result": null, "reason": "not supported"},
        "rescue": {"result": null, "reason": "not supported"},
        "storage": {"result": true, "reason": null},
    })
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn create_port(shared: &Shared, inner: &mut Inner, body: Option<Value>) -> Reply {
    let Some(Value::Object(body)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object",
        ));
    };
    let address = body.get("address").and_then(Value::as_str).unwrap_or_default().to_lowercase();
    if !valid_mac(&address) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Expected a MAC address but received {address}."),
        ));
    }
    if inner.ports.iter().any(|p| p["address"] == address.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("A port with MAC address {address} already exists."),
        ));
    }
    let node_uuid = body.get("node_uuid").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !inner.nodes.iter().any(|n| n["uuid"] == node_uuid.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Node {node_uuid} could not be found."),
        ));
    }
    let uuid = next_uuid(inner);
    let at = now(inner);
    let port = json!({
        "uuid": uuid,
        "address": address,
        "node_uuid": node_uuid,
        "extra": body.get("extra").cloned().unwrap_or_else(|| json!({})),
        "pxe_enabled": body.get("pxe_enabled").cloned().unwrap_or(json!(true)),
        "local_link_connection": body.get("local_link_connection").cloned().unwrap_or_else(|| json!({})),
        "physical_network": body.get("physical_network").cloned().unwrap_or(Value::Null),
        "portgroup_uuid": null,
        "internal_info": {},
        "is_smartnic": false,
        "name": body.get("name").cloned().unwrap_or(Value::Null),
        "created_at": at,
        "updated_at": null,
        "links": [{"href": format!("{}/v1/ports/{uuid}", shared.base), "rel": "self"}],
    });
    inner.ports.push(port.clone());
    Ok((StatusCode::CREATED, None, Some(port)))
}

fn list_ports(
    _shared: &Shared,
    inner: &mut Inner,
    node_uuid: Option<Value>,
    q: &HashMap<String, String>,
    detail: bool,
) -> Reply {
    let by_node = q.get("node").map(|ident| {
        inner
            .nodes
            .iter()
            .find(|n| matches_ident(n, ident))
            .map_or(json!(ident), |n| n["uuid"].clone())
    });
    let filter_node = node_uuid.or(by_node).or_else(|| q.get("node_uuid").map(|u| json!(u)));
    let default_fields = (!detail).then(|| "uuid,address".to_owned());
    let fields = q.get("fields").cloned().or(default_fields);
    let ports: Vec<Value> = inner
        .ports
        .iter()
        .filter(|p| filter_node.as_ref().is_none_or(|u| p["node_uuid"] == *u))
        .filter(|p| q.get("address").is_none_or(|a| p["address"] == a.to_lowercase()))
        .map(|p| select_fields(p, fields.as_ref()))
        .collect();
    Ok((StatusCode::OK, None, Some(json!({"ports": ports}))))
}
