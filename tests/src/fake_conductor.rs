//! An in-process stand-in for the Ironic API as the agent sees it: `GET /` (version
//! document), `GET /v1/lookup`, `POST /v1/heartbeat/{node}` and
//! `POST /v1/continue_inspection`, on plain HTTP at `127.0.0.1:<port picked at run time>`.
//!
//! It behaves like Ironic — microversion negotiation, token issue-once-then-mask, the
//! heartbeat checks and their `400`s — and can be scripted to misbehave: lookup replies
//! can be queued (`404`s, `409`s, a masked token), heartbeat statuses can be forced, and
//! the API root can be broken, inspection replies can be queued or forced into either
//! dialect. Every request is recorded with its arrival time, headers,
//! query and body.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferric_shared::api_version::{
    ApiVersion, MAX_VERSION_HEADER, MIN_VERSION_HEADER, VERSION_HEADER,
};
use ferric_shared::heartbeat::HeartbeatRequest;
use ferric_shared::lookup::MASKED_TOKEN;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the fake is set up. [`Default`] gives a node in a lookup-able state with one MAC.
#[derive(Debug, Clone)]
pub struct FakeConductorConfig {
    pub node_uuid: String,
    /// MACs registered as the node's ports (compared case-insensitively).
    pub macs: Vec<String>,
    /// The newest microversion served (and advertised by `GET /`).
    pub max_version: ApiVersion,
    /// When set, `GET /` answers with this status instead of the version document.
    pub root_status: Option<u16>,
    /// `config.heartbeat_timeout` in lookup replies (seconds).
    pub heartbeat_timeout: u64,
    /// Ironic's `[agent]require_tls`: refuse `http://` callback URLs.
    pub require_tls: bool,
    /// A token already stored for the node (as for virtual-media boots).
    pub pregenerated_token: Option<String>,
    /// `node.properties` and `node.instance_info` in lookup replies.
    pub properties: Value,
    pub instance_info: Value,
    /// How `POST /v1/continue_inspection` answers a report it accepts.
    pub inspection_reply: InspectionDialect,
}

/// The shape of an accepted inspection report's `202` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectionDialect {
    /// Ironic's rule: no microversion header (what IPA sends) gets `{"uuid": …}`; 1.84 or
    /// newer gets the lookup reply, with a token; anything else `404`.
    ByVersion,
    /// Always `{"uuid": …}`, as ironic-inspector's `/v1/continue` answers.
    Uuid,
    /// Always the lookup reply (`{"node": {...}, "config": {...}}`), with a token.
    Lookup,
}

impl Default for FakeConductorConfig {
    fn default() -> Self {
        Self {
            node_uuid: "0c8b9ad4-7c3a-4f56-9a11-6bd5b9d1f0e2".into(),
            macs: vec!["52:54:00:12:34:56".into()],
            max_version: ApiVersion::new(1, 115),
            root_status: None,
            heartbeat_timeout: 300,
            require_tls: false,
            pregenerated_token: None,
            properties: json!({}),
            instance_info: json!({}),
            inspection_reply: InspectionDialect::ByVersion,
        }
    }
}

/// One scripted lookup reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupStep {
    /// Answer with this status and an Ironic-shaped error body.
    Status(u16),
    /// Answer like Ironic does when the node is found, with this token behaviour.
    Found(TokenReply),
}

/// What a successful lookup puts in `config.agent_token` (at version >= 1.62).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenReply {
    /// Ironic's rule: generate and reveal a token the first time, `"******"` afterwards.
    Ironic,
    /// `"******"` without storing anything.
    Masked,
    /// This exact value (stored as the node's token when at least 32 characters long).
    Literal(String),
    /// `null`.
    Null,
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// The status the fake answered with.
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `X-OpenStack-Ironic-API-Version` header as sent.
    pub fn api_version(&self) -> Option<&str> {
        self.header(VERSION_HEADER)
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Where the agent said it can be reached, from its last accepted heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCallback {
    pub callback_url: String,
    /// PEM of the agent's certificate, when it serves HTTPS.
    pub agent_verify_ca: Option<String>,
}

#[derive(Debug)]
struct NodeState {
    token: Option<String>,
    agent_url: Option<String>,
    agent_verify_ca: Option<String>,
    agent_version: Option<String>,
}

#[derive(Debug)]
struct Inner {
    config: FakeConductorConfig,
    node: NodeState,
    lookup_script: VecDeque<LookupStep>,
    heartbeat_script: VecDeque<u16>,
    inspection_script: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    heartbeats: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeConductor {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeConductor {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeConductor {
    /// Starts serving on `127.0.0.1` at a free port. Needs a Tokio runtime.
    pub async fn start(config: FakeConductorConfig) -> std::io::Result<Self> {
        Self::start_at(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on `addr` (port 0 picks a free one). Needs a Tokio runtime.
    pub async fn start_at(config: FakeConductorConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let node = NodeState {
            token: config.pregenerated_token.clone(),
            agent_url: None,
            agent_verify_ca: None,
            agent_version: None,
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                config,
                node,
                lookup_script: VecDeque::new(),
                heartbeat_script: VecDeque::new(),
                inspection_script: VecDeque::new(),
                requests: Vec::new(),
            }),
            heartbeats: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/", get(root))
            .route("/v1/lookup", get(lookup))
            .route("/v1/heartbeat/{node}", post(heartbeat))
            .route("/v1/continue_inspection", post(continue_inspection))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = &e as &dyn std::error::Error, "fake conductor stopped");
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// `http://127.0.0.1:<port>` — what goes into `ipa-api-url`.
    pub fn url(&self) -> reqwest::Url {
        let text = format!("http://{}", self.addr);
        text.parse().unwrap_or_else(|e| panic!("{text} is not a URL: {e}"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node_uuid(&self) -> String {
        self.shared.lock().config.node_uuid.clone()
    }

    /// Queues lookup replies, used in order before the fake answers normally.
    pub fn script_lookups(&self, steps: impl IntoIterator<Item = LookupStep>) {
        self.shared.lock().lookup_script.extend(steps);
    }

    /// Queues heartbeat statuses (e.g. `409`), answered in order before the fake checks
    /// heartbeats normally.
    pub fn script_heartbeats(&self, statuses: impl IntoIterator<Item = u16>) {
        self.shared.lock().heartbeat_script.extend(statuses);
    }

    /// Queues statuses (`503`, `400`, …) that inspection reports get, in order, before
    /// the fake processes reports normally.
    pub fn script_inspections(&self, statuses: impl IntoIterator<Item = u16>) {
        self.shared.lock().inspection_script.extend(statuses);
    }

    /// The token the node holds, as the conductor would compare it.
    pub fn token(&self) -> Option<String> {
        self.shared.lock().node.token.clone()
    }

    /// Forgets the recorded agent URL and certificate, as Ironic does on power off.
    pub fn forget_agent(&self) {
        let mut inner = self.shared.lock();
        inner.node.agent_url = None;
        inner.node.agent_verify_ca = None;
        inner.node.token = inner.config.pregenerated_token.clone();
    }

    /// The `agent_version` of the last accepted heartbeat.
    pub fn agent_version(&self) -> Option<String> {
        self.shared.lock().node.agent_version.clone()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn lookups(&self) -> Vec<RecordedRequest> {
        self.requests_to(|p| p == "/v1/lookup")
    }

    pub fn heartbeats(&self) -> Vec<RecordedRequest> {
        self.requests_to(|p| p.starts_with("/v1/heartbeat/"))
    }

    /// Every `POST /v1/continue_inspection`, answered or not, with its parsed body.
    pub fn inspections(&self) -> Vec<RecordedRequest> {
        self.requests_to(|p| p == "/v1/continue_inspection")
    }

    pub fn root_requests(&self) -> Vec<RecordedRequest> {
        self.requests_to(|p| p == "/")
    }

    fn requests_to(&self, want: impl Fn(&str) -> bool) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().filter(|r| want(&r.path)).cloned().collect()
    }

    /// The callback URL and certificate from the last accepted heartbeat.
    pub fn last_callback(&self) -> Option<AgentCallback> {
        let inner = self.shared.lock();
        inner.node.agent_url.as_ref().map(|url| AgentCallback {
            callback_url: url.clone(),
            agent_verify_ca: inner.node.agent_verify_ca.clone(),
        })
    }

    /// Waits until `count` heartbeats (accepted or not) have arrived in total; returns
    /// them all, or `None` on timeout.
    pub async fn wait_for_heartbeats(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<RecordedRequest>> {
        let mut seen = self.shared.heartbeats.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|n| *n >= count)).await.ok()?.ok()?;
        Some(self.heartbeats())
    }

    /// Waits for the next heartbeat after the ones already received.
    pub async fn next_heartbeat(&self, timeout: Duration) -> Option<RecordedRequest> {
        let now = *self.shared.heartbeats.borrow();
        self.wait_for_heartbeats(now + 1, timeout).await?.into_iter().nth(now)
    }
}

/// An Ironic error reply: the fault wrapped as a JSON string in `error_message`.
fn ironic_error(status: StatusCode, message: &str) -> Response {
    let fault = json!({
        "faultcode": if status.is_server_error() { "Server" } else { "Client" },
        "faultstring": message,
        "debuginfo": null,
    });
    (status, axum::Json(json!({ "error_message": fault.to_string() }))).into_response()
}

/// The version a request asked for: none means 1.1, `latest` the maximum; anything
/// unparsable or outside the served range is refused with `406`.
fn negotiate(headers: &HeaderMap, max: ApiVersion) -> Result<ApiVersion, Box<Response>> {
    let Some(raw) = headers.get(VERSION_HEADER) else {
        return Ok(ApiVersion::MINIMUM);
    };
    let text = raw.to_str().unwrap_or("").trim();
    if text.eq_ignore_ascii_case("latest") {
        return Ok(max);
    }
    match text.parse::<ApiVersion>() {
        Ok(v) if v >= ApiVersion::MINIMUM && v <= max => Ok(v),
        _ => Err(Box::new(ironic_error(
            StatusCode::NOT_ACCEPTABLE,
            &format!("Version {text} was requested but is not supported (1.1 to {max})"),
        ))),
    }
}

fn with_version_headers(mut resp: Response, max: ApiVersion, used: Option<ApiVersion>) -> Response {
    let headers = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, v: ApiVersion| {
        if let Ok(value) = HeaderValue::from_str(&v.to_string()) {
            h.insert(name, value);
        }
    };
    set(headers, MIN_VERSION_HEADER, ApiVersion::MINIMUM);
    set(headers, MAX_VERSION_HEADER, max);
    if let Some(v) = used {
        set(headers, VERSION_HEADER, v);
    }
    resp
}

fn record(shared: &Shared, request: RecordedRequest) {
    shared.lock().requests.push(request);
}

async fn root(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let at = Instant::now();
    let (max, broken) = {
        let inner = shared.lock();
        (inner.config.max_version, inner.config.root_status)
    };
    let resp = match broken.and_then(|s| StatusCode::from_u16(s).ok()) {
        Some(status) => ironic_error(status, "API root is unavailable"),
        None => {
            let v1 = json!({
                "id": "v1",
                "links": [{"href": "/v1/", "rel": "self"}],
                "status": "CURRENT",
                "min_version": ApiVersion::MINIMUM.to_string(),
                "version": max.to_string(),
            });
            axum::Json(json!({
                "name": "OpenStack Ironic API",
                "description": "Ironic is an OpenStack project which enables the provision and \
                                management of baremetal machines.",
                "default_version": v1,
                "versions": [v1],
            }))
            .into_response()
        }
    };
    let resp = with_version_headers(resp, max, None);
    let status = resp.status().as_u16();
    let method = "GET".into();
    let path = "/".into();
    record(
        &shared,
        RecordedRequest { at, method, path, headers, query: vec![], body: None, status },
    );
    resp
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let at = Instant::now();
    let (resp, max, used) = {
        let mut inner = shared.lock();
        let max = inner.config.max_version;
        match negotiate(&headers, max) {
            Err(resp) => (*resp, max, None),
            Ok(v) => (answer_lookup(&mut inner, v, &query), max, Some(v)),
        }
    };
    let resp = with_version_headers(resp, max, used);
    let status = resp.status().as_u16();
    let method = "GET".into();
    let path = "/v1/lookup".into();
    record(&shared, RecordedRequest { at, method, path, headers, query, body: None, status });
    resp
}

fn answer_lookup(inner: &mut Inner, version: ApiVersion, query: &[(String, String)]) -> Response {
    if version < ApiVersion::RAMDISK_ENDPOINTS {
        return ironic_error(StatusCode::NOT_FOUND, "The resource could not be found.");
    }
    let step = inner.lookup_script.pop_front().unwrap_or(LookupStep::Found(TokenReply::Ironic));
    let token_reply = match step {
        LookupStep::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match status {
                StatusCode::CONFLICT => "Node is locked by host fake-conductor, please retry \
                                         after the current operation is completed."
                    .to_owned(),
                StatusCode::NOT_FOUND => "Node could not be found.".to_owned(),
                _ => format!("scripted failure {code}"),
            };
            return ironic_error(status, &message);
        }
        LookupStep::Found(token_reply) => token_reply,
    };
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let macs: Vec<&str> = param("addresses")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let uuid = param("node_uuid").filter(|u| !u.is_empty());
    if macs.is_empty() && uuid.is_none() {
        return ironic_error(
            StatusCode::BAD_REQUEST,
            "Incomplete lookup request: at least one of addresses or node_uuid must be given",
        );
    }
    let config = &inner.config;
    let matches = match uuid {
        Some(u) => u == config.node_uuid,
        None => macs.iter().any(|m| config.macs.iter().any(|own| own.eq_ignore_ascii_case(m))),
    };
    if !matches {
        return ironic_error(StatusCode::NOT_FOUND, "Node could not be found.");
    }
    let token = (version >= ApiVersion::AGENT_TOKEN).then(|| match token_reply {
        TokenReply::Ironic => match &inner.node.token {
            Some(_) => json!(MASKED_TOKEN),
            None => {
                let fresh = fresh_token();
                inner.node.token = Some(fresh.clone());
                json!(fresh)
            }
        },
        TokenReply::Masked => json!(MASKED_TOKEN),
        TokenReply::Literal(value) => {
            if value.len() >= 32 {
                inner.node.token = Some(value.clone());
            }
            json!(value)
        }
        TokenReply::Null => Value::Null,
    });
    axum::Json(lookup_body(&inner.config, token)).into_response()
}

/// A lookup reply for the node, with `token` (when given) as `config.agent_token`.
fn lookup_body(config: &FakeConductorConfig, token: Option<Value>) -> Value {
    let mut agent_config = json!({
        "metrics": {"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                    "prepend_host_reverse": true, "global_prefix": null},
        "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
        "heartbeat_timeout": config.heartbeat_timeout,
        "agent_containers": {"allow_arbitrary_containers": false, "allowed_containers": []},
        "agent_token_required": true,
        "agent_md5_checksum_enable": false,
        "disable_deep_image_inspection": false,
        "permitted_image_formats": ["raw", "qcow2", "iso"],
        "agent_skip_bmc_detect": false,
        "enable_bios_bootloader_install": false,
        "tls_min_version": null,
        "tls_cipher_suites": null,
    });
    if let (Some(token), Some(obj)) = (token, agent_config.as_object_mut()) {
        obj.insert("agent_token".into(), token);
    }
    let uuid = &config.node_uuid;
    json!({
        "node": {
            "uuid": uuid,
            "properties": config.properties,
            "instance_info": config.instance_info,
            "driver_internal_info": {"agent_secret_token": MASKED_TOKEN},
            "links": [
                {"href": format!("http://fake-conductor/v1/nodes/{uuid}"), "rel": "self"},
                {"href": format!("http://fake-conductor/nodes/{uuid}"), "rel": "bookmark"},
            ],
        },
        "config": agent_config,
    })
}

async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let parsed_body = serde_json::from_slice::<Value>(&body).ok();
    let (resp, max, used) = {
        let mut inner = shared.lock();
        let max = inner.config.max_version;
        match negotiate(&headers, max) {
            Err(resp) => (*resp, max, None),
            Ok(v) => (answer_heartbeat(&mut inner, v, &node, &body), max, Some(v)),
        }
    };
    let resp = with_version_headers(resp, max, used);
    let status = resp.status().as_u16();
    let method = "POST".into();
    let path = format!("/v1/heartbeat/{node}");
    let body = parsed_body;
    record(&shared, RecordedRequest { at, method, path, headers, query: vec![], body, status });
    shared.heartbeats.send_modify(|n| *n += 1);
    resp
}

fn answer_heartbeat(inner: &mut Inner, version: ApiVersion, node: &str, body: &[u8]) -> Response {
    let bad = |message: &str| ironic_error(StatusCode::BAD_REQUEST, message);
    if version < ApiVersion::RAMDISK_ENDPOINTS {
        return ironic_error(StatusCode::NOT_FOUND, "The resource could not be found.");
    }
    if let Some(code) = inner.heartbeat_script.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return match status {
            StatusCode::ACCEPTED => StatusCode::ACCEPTED.into_response(),
            StatusCode::CONFLICT => ironic_error(
                status,
                "Node is locked by host fake-conductor, please retry after the current \
                 operation is completed.",
            ),
            _ => ironic_error(status, &format!("scripted failure {code}")),
        };
    }
    let request: HeartbeatRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("Invalid heartbeat body: {e}")),
    };
    if let Err(e) = request.check_version(version) {
        return bad(&format!("Field \"{}\" not recognised", e.field));
    }
    let url = &request.callback_url;
    if !url.contains("http") {
        return bad(&format!("Invalid callback URL {url}: the scheme must be http or https"));
    }
    if inner.config.require_tls && !url.starts_with("https://") {
        return bad(&format!("Agent is required to use TLS, but callback URL {url} is not"));
    }
    if inner.node.agent_url.as_deref().is_some_and(|known| known != url) {
        return bad(&format!("Detected change in ramdisk provided callback_url {url}"));
    }
    if request.agent_token.as_deref().is_none_or(str::is_empty) {
        return bad("Invalid or missing agent token received.");
    }
    if node != inner.config.node_uuid {
        return ironic_error(StatusCode::NOT_FOUND, &format!("Node {node} could not be found."));
    }
    if inner.node.token.is_none() || request.agent_token != inner.node.token {
        return bad("Invalid or missing agent token received.");
    }
    if let (Some(stored), Some(sent)) = (&inner.node.agent_verify_ca, &request.agent_verify_ca) {
        if stored != sent {
            return bad("Detected change in the agent's verify_ca certificate");
        }
    }
    if request.agent_version.is_none() && request.agent_status.is_none() {
        return bad("Heartbeat carries neither agent_version nor agent_status");
    }
    inner.node.agent_url = Some(request.callback_url);
    inner.node.agent_version = request.agent_version;
    if request.agent_verify_ca.is_some() {
        inner.node.agent_verify_ca = request.agent_verify_ca;
    }
    StatusCode::ACCEPTED.into_response()
}

async fn continue_inspection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let parsed_body = serde_json::from_slice::<Value>(&body).ok();
    let (resp, max, used) = {
        let mut inner = shared.lock();
        let max = inner.config.max_version;
        match negotiate(&headers, max) {
            Err(resp) => (*resp, max, None),
            Ok(v) => (answer_inspection(&mut inner, v, &query, parsed_body.as_ref()), max, Some(v)),
        }
    };
    let resp = with_version_headers(resp, max, used);
    let status = resp.status().as_u16();
    let method = "POST".into();
    let path = "/v1/continue_inspection".into();
    let body = parsed_body;
    record(&shared, RecordedRequest { at, method, path, headers, query, body, status });
    resp
}

/// Ironic's checks, in its order: version, body shape, node matching; then the reply in
/// the configured dialect.
fn answer_inspection(
    inner: &mut Inner,
    version: ApiVersion,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Response {
    let bad = |message: &str| ironic_error(StatusCode::BAD_REQUEST, message);
    if let Some(code) = inner.inspection_script.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ironic_error(status, &format!("scripted failure {code}"));
    }
    let dialect = match inner.config.inspection_reply {
        InspectionDialect::ByVersion if version == ApiVersion::MINIMUM => InspectionDialect::Uuid,
        InspectionDialect::ByVersion if version >= ApiVersion::new(1, 84) => {
            InspectionDialect::Lookup
        }
        InspectionDialect::ByVersion => {
            return ironic_error(StatusCode::NOT_FOUND, "API version 1.84 or newer is required");
        }
        fixed => fixed,
    };
    let Some(body) = body.filter(|b| b.is_object()) else {
        return bad("Inspection data must be a JSON object");
    };
    let Some(interfaces) = body.pointer("/inventory/interfaces").and_then(Value::as_array) else {
        return bad("The inventory with its interfaces is required");
    };
    let mut macs = Vec::new();
    for iface in interfaces {
        match iface.get("mac_address").and_then(Value::as_str) {
            Some(mac) => macs.push(mac.to_owned()),
            None => return bad("Every interface needs a string mac_address"),
        }
    }
    if macs.is_empty() {
        return bad("The inventory has no interfaces");
    }
    let config = &inner.config;
    let uuid = query.iter().find(|(k, _)| k == "node_uuid").map(|(_, v)| v.as_str());
    let matches = match uuid {
        Some(u) => u == config.node_uuid,
        None => macs.iter().any(|m| config.macs.iter().any(|own| own.eq_ignore_ascii_case(m))),
    };
    if !matches {
        return ironic_error(StatusCode::NOT_FOUND, "Node could not be found.");
    }
    let reply = match dialect {
        InspectionDialect::Lookup => {
            let token = match &inner.node.token {
                Some(_) => json!(MASKED_TOKEN),
                None => {
                    let fresh = fresh_token();
                    inner.node.token = Some(fresh.clone());
                    json!(fresh)
                }
            };
            lookup_body(&inner.config, Some(token))
        }
        _ => json!({ "uuid": inner.config.node_uuid }),
    };
    (StatusCode::ACCEPTED, axum::Json(reply)).into_response()
}

/// 43 URL-safe characters, the shape of Ironic's `secrets.token_urlsafe()`.
fn fresh_token() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let state = std::collections::hash_map::RandomState::new();
    (0..43u32).map(|i| char::from(ALPHABET[(state.hash_one(i) % 64) as usize])).collect()
}
