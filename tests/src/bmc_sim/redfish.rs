//! A Redfish service simulating many `ComputerSystem`s, over plain HTTP on `127.0.0.1`
//! with basic authentication.
//!
//! Systems `0..systems` are spread over `listeners` loopback listeners (system `i` on
//! listener `i % listeners`), like a few chassis managers each fronting many servers.
//! Each listener serves what the conductor's `redfish` driver reads: the service root
//! (with no session service, so the driver settles on basic authentication), the systems
//! collection of that listener, and per system `PowerState`, the `Boot` override with
//! its allowable targets and the `#ComputerSystem.Reset` action with its allowable reset
//! types. Power changes land at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{Counter, Gauge, SimStats};

const RESET_TYPES: [&str; 6] =
    ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "PowerCycle"];
const BOOT_TARGETS: [&str; 5] = ["None", "Pxe", "Hdd", "Cd", "BiosSetup"];

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct RedfishSimOptions {
    pub systems: usize,
    /// Listeners (ports) the systems are spread over.
    pub listeners: usize,
    pub username: String,
    pub password: String,
    /// How long each request takes to answer.
    pub latency: Duration,
}

impl Default for RedfishSimOptions {
    fn default() -> Self {
        RedfishSimOptions {
            systems: 1,
            listeners: 1,
            username: "admin".to_owned(),
            password: "password".to_owned(),
            latency: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
struct SystemState {
    power_on: bool,
    boot_target: String,
    boot_enabled: String,
    boot_mode: String,
}

struct SimSystem {
    state: Mutex<SystemState>,
    in_flight: Gauge,
}

struct Shared {
    options: RedfishSimOptions,
    systems: Vec<SimSystem>,
    total: Gauge,
    requests: Counter,
    auth_failures: Counter,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy)]
struct ListenerIndex(usize);

/// The running service; its listeners close when it is dropped.
pub struct RedfishSim {
    base_urls: Vec<String>,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for RedfishSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishSim")
            .field("systems", &self.shared.systems.len())
            .field("base_urls", &self.base_urls)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedfishSim {
    /// Binds the listeners on `127.0.0.1` (ports picked by the kernel) and serves.
    pub async fn start(options: RedfishSimOptions) -> std::io::Result<RedfishSim> {
        let listeners = options.listeners.max(1);
        let systems = (0..options.systems)
            .map(|_| SimSystem {
                state: Mutex::new(SystemState {
                    power_on: false,
                    boot_target: "None".to_owned(),
                    boot_enabled: "Disabled".to_owned(),
                    boot_mode: "UEFI".to_owned(),
                }),
                in_flight: Gauge::default(),
            })
            .collect();
        let shared = Arc::new(Shared {
            options,
            systems,
            total: Gauge::default(),
            requests: Counter::default(),
            auth_failures: Counter::default(),
        });
        let router = Router::new()
            .route("/redfish/v1", get(service_root))
            .route("/redfish/v1/", get(service_root))
            .route("/redfish/v1/Systems", get(systems_collection))
            .route("/redfish/v1/Systems/{id}", get(get_system).patch(patch_system))
            .route("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset", post(reset))
            .with_state(Arc::clone(&shared));
        let mut base_urls = Vec::with_capacity(listeners);
        let mut tasks = JoinSet::new();
        for index in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            base_urls.push(format!("http://127.0.0.1:{}", listener.local_addr()?.port()));
            let app = router.clone().layer(Extension(ListenerIndex(index)));
            tasks.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Ok(RedfishSim { base_urls, shared, tasks })
    }

    /// `http://127.0.0.1:PORT` of each listener.
    pub fn base_urls(&self) -> &[String] {
        &self.base_urls
    }

    /// The base URL and the `redfish_system_id` of system `index`.
    pub fn system(&self, index: usize) -> Option<(&str, String)> {
        if index >= self.shared.systems.len() {
            return None;
        }
        let url = self.base_urls.get(index % self.base_urls.len())?;
        Some((url.as_str(), system_id(index)))
    }

    pub fn power(&self, index: usize) -> Option<bool> {
        Some(lock(&self.shared.systems.get(index)?.state).power_on)
    }

    pub fn set_power(&self, index: usize, on: bool) {
        if let Some(system) = self.shared.systems.get(index) {
            lock(&system.state).power_on = on;
        }
    }

    /// The boot override of system `index`: (target, enabled).
    pub fn boot_override(&self, index: usize) -> Option<(String, String)> {
        let state = lock(&self.shared.systems.get(index)?.state).clone();
        Some((state.boot_target, state.boot_enabled))
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: self.shared.requests.get(),
            sessions_opened: 0,
            auth_failures: self.shared.auth_failures.get(),
            max_in_flight_per_bmc: self
                .shared
                .systems
                .iter()
                .map(|s| s.in_flight.max())
                .max()
                .unwrap_or(0),
            max_in_flight_total: self.shared.total.max(),
        }
    }

    pub fn reset_stats(&self) {
        self.shared.requests.reset();
        self.shared.auth_failures.reset();
        self.shared.total.reset();
        for system in &self.shared.systems {
            system.in_flight.reset();
        }
    }

    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

fn system_id(index: usize) -> String {
    format!("system-{index}")
}

fn system_index(id: &str) -> Option<usize> {
    id.strip_prefix("system-")?.parse().ok()
}

/// Counts one request (for `system`, if it names one) while it is being answered.
struct InFlight<'a> {
    shared: &'a Shared,
    system: Option<&'a SimSystem>,
}

impl<'a> InFlight<'a> {
    async fn enter(shared: &'a Shared, system: Option<&'a SimSystem>) -> InFlight<'a> {
        shared.total.enter(1);
        if let Some(system) = system {
            system.in_flight.enter(1);
        }
        if !shared.options.latency.is_zero() {
            tokio::time::sleep(shared.options.latency).await;
        }
        InFlight { shared, system }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.requests.add(1);
        self.shared.total.leave(1);
        if let Some(system) = self.system {
            system.in_flight.leave(1);
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": "Base.1.0.GeneralError", "message": message,
        "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError", "Message": message}]}});
    (status, Json(body)).into_response()
}

/// `None` when the request carries the right basic credentials; else the 401 answer.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", shared.options.username, shared.options.password));
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if given == Some(expected.as_str()) {
        return None;
    }
    shared.auth_failures.add(1);
    let mut response = error(StatusCode::UNAUTHORIZED, "authentication required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"bmc\""));
    Some(response)
}

/// The system `id` if it lives behind `listener`.
fn find<'a>(shared: &'a Shared, listener: ListenerIndex, id: &str) -> Option<&'a SimSystem> {
    let index = system_index(id)?;
    let listeners = shared.options.listeners.max(1);
    (index % listeners == listener.0).then(|| shared.systems.get(index)).flatten()
}

async fn service_root(State(shared): State<Arc<Shared>>) -> Response {
    let _counted = InFlight::enter(&shared, None).await;
    Json(json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Ferric simulated Redfish service",
        "RedfishVersion": "1.6.0",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
    }))
    .into_response()
}

async fn systems_collection(
    State(shared): State<Arc<Shared>>,
    Extension(listener): Extension<ListenerIndex>,
    headers: HeaderMap,
) -> Response {
    let _counted = InFlight::enter(&shared, None).await;
    if let Some(denied) = unauthorized(&shared, &headers) {
        return denied;
    }
    let listeners = shared.options.listeners.max(1);
    let members: Vec<Value> = (listener.0..shared.systems.len())
        .step_by(listeners)
        .map(|i| json!({"@odata.id": format!("/redfish/v1/Systems/{}", system_id(i))}))
        .collect();
    Json(json!({
        "@odata.id": "/redfish/v1/Systems",
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "Name": "Computer System Collection",
        "Members@odata.count": members.len(),
        "Members": members,
    }))
    .into_response()
}

fn system_body(id: &str, state: &SystemState) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": id,
        "Name": id,
        "PowerState": if state.power_on { "On" } else { "Off" },
        "Boot": {
            "BootSourceOverrideEnabled": state.boot_enabled,
            "BootSourceOverrideTarget": state.boot_target,
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
            "BootSourceOverrideMode": state.boot_mode,
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": RESET_TYPES,
            }
        },
    })
}

async fn get_system(
    State(shared): State<Arc<Shared>>,
    Extension(listener): Extension<ListenerIndex>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let system = find(&shared, listener, &id);
    let _counted = InFlight::enter(&shared, system).await;
    if let Some(denied) = unauthorized(&shared, &headers) {
        return denied;
    }
    let Some(system) = system else {
        return error(StatusCode::NOT_FOUND, &format!("no system {id}"));
    };
    let state = lock(&system.state).clone();
    Json(system_body(&id, &state)).into_response()
}

async fn patch_system(
    State(shared): State<Arc<Shared>>,
    Extension(listener): Extension<ListenerIndex>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let system = find(&shared, listener, &id);
    let _counted = InFlight::enter(&shared, system).await;
    if let Some(denied) = unauthorized(&shared, &headers) {
        return denied;
    }
    let Some(system) = system else {
        return error(StatusCode::NOT_FOUND, &format!("no system {id}"));
    };
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(boot) = patch.get("Boot").and_then(Value::as_object) else {
        return error(StatusCode::BAD_REQUEST, "only Boot may be changed");
    };
    let mut state = lock(&system.state);
    let mut next = state.clone();
    for (key, value) in boot {
        let Some(value) = value.as_str() else {
            return error(StatusCode::BAD_REQUEST, &format!("Boot/{key} is not a string"));
        };
        match key.as_str() {
            "BootSourceOverrideTarget" if BOOT_TARGETS.contains(&value) => {
                next.boot_target = value.to_owned()
            }
            "BootSourceOverrideEnabled" if ["Disabled", "Once", "Continuous"].contains(&value) => {
                next.boot_enabled = value.to_owned()
            }
            "BootSourceOverrideMode" if ["UEFI", "Legacy"].contains(&value) => {
                next.boot_mode = value.to_owned()
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unsupported value {value:?} for Boot/{key}"),
                )
            }
        }
    }
    *state = next;
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(
    State(shared): State<Arc<Shared>>,
    Extension(listener): Extension<ListenerIndex>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let system = find(&shared, listener, &id);
    let _counted = InFlight::enter(&shared, system).await;
    if let Some(denied) = unauthorized(&shared, &headers) {
        return denied;
    }
    let Some(system) = system else {
        return error(StatusCode::NOT_FOUND, &format!("no system {id}"));
    };
    let reset_type = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("ResetType").and_then(Value::as_str).map(str::to_owned));
    let power_on = match reset_type.as_deref() {
        Some("On" | "ForceRestart" | "GracefulRestart" | "PowerCycle") => true,
        Some("ForceOff" | "GracefulShutdown") => false,
        Some(other) => {
            return error(StatusCode::BAD_REQUEST, &format!("ResetType {other} is not allowed"))
        }
        None => return error(StatusCode::BAD_REQUEST, "ResetType is missing"),
    };
    lock(&system.state).power_on = power_on;
    StatusCode::NO_CONTENT.into_response()
}
