//! The `redfish` driver against a small in-process Redfish BMC for what sushy-tools does
//! not do: sessions, ETags with `If-Match` (and a 412 retry), task monitors, error
//! replies with `@Message.ExtendedInfo`, privilege and busy answers, reset types a BMC
//! does not allow, one request in flight per BMC, and a self-signed `CA:TRUE` TLS
//! certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferric_conductor::bmc::redfish::{
    BootMode as RedfishMode, BootTarget, RedfishDriver, RedfishOptions,
};
use ferric_conductor::bmc::{
    Bmc, BmcError, BootDevice, BootMode, Driver, DriverRegistry, PowerAction, PowerState,
};
use ferric_conductor::config::ConductorConfig;
use serde_json::{json, Map, Value};

const USER: &str = "root";
const PASSWORD: &str = "calvin";
const SYSTEM: &str = "/redfish/v1/Systems/1";
const MONITOR: &str = "/redfish/v1/TaskService/TaskMonitors/7";
const MANAGER: &str = "/redfish/v1/Managers/BMC";
const CD: &str = "/redfish/v1/Managers/BMC/VirtualMedia/CD1";

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    if_match: Option<String>,
    token: Option<String>,
    basic: bool,
}

/// The fake BMC's behaviour and state.
#[derive(Debug)]
struct Fake {
    sessions_offered: bool,
    require_etag: bool,
    /// PATCHes answered 412 although their ETag matched (someone else wrote meanwhile).
    spurious_412: AtomicU32,
    /// Requests answered 503 before serving.
    busy: AtomicU32,
    busy_retry_after: Option<&'static str>,
    reset_types: Vec<&'static str>,
    reset_forbidden: bool,
    reset_via_task: bool,
    task_fails: bool,
    task_polls: AtomicU32,
    patch_rejected: bool,
    request_delay: Duration,
    power: Mutex<String>,
    boot: Mutex<(String, String)>,
    etag: AtomicU32,
    resets: Mutex<Vec<String>>,
    tokens: Mutex<Vec<String>>,
    logins: AtomicU32,
    logouts: AtomicU32,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// The manager's CD device (image, inserted), changed by PATCH only, with its ETag.
    cd: Mutex<(Option<String>, bool)>,
    cd_etag: AtomicU32,
    bios_resets: AtomicU32,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            sessions_offered: true,
            require_etag: false,
            spurious_412: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            busy_retry_after: None,
            reset_types: vec!["On", "ForceOff", "GracefulShutdown", "ForceRestart"],
            reset_forbidden: false,
            reset_via_task: false,
            task_fails: false,
            task_polls: AtomicU32::new(0),
            patch_rejected: false,
            request_delay: Duration::ZERO,
            power: Mutex::new("Off".to_owned()),
            boot: Mutex::new(("None".to_owned(), "Disabled".to_owned())),
            etag: AtomicU32::new(1),
            resets: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            logins: AtomicU32::new(0),
            logouts: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            cd: Mutex::new((None, false)),
            cd_etag: AtomicU32::new(1),
            bios_resets: AtomicU32::new(0),
        }
    }
}

fn error_reply(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": "Base.1.8.GeneralError",
        "message": "A general error has occurred. See ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.Generic", "Message": message}]}});
    (status, axum::Json(body)).into_response()
}

impl Fake {
    fn etag(&self) -> String {
        format!("\"{}\"", self.etag.load(Ordering::SeqCst))
    }

    fn authorized(&self, headers: &HeaderMap) -> (bool, Option<String>, bool) {
        let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let basic = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let token_ok = token.as_ref().is_some_and(|t| self.tokens.lock().unwrap().contains(t));
        let basic_ok = basic.as_deref() == Some(expected.as_str());
        (token_ok || basic_ok, token, basic.is_some())
    }

    fn system(&self) -> Value {
        let (target, enabled) = self.boot.lock().unwrap().clone();
        json!({
            "@odata.id": SYSTEM,
            "PowerState": *self.power.lock().unwrap(),
            "Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": enabled,
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd", "BiosSetup"],
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": self.reset_types,
            }},
            "Links": {"ManagedBy": [{"@odata.id": MANAGER}]},
            "Manufacturer": "Fabrikam", "Model": "R-1", "SerialNumber": "SN-42",
            "MemorySummary": {"TotalSystemMemoryGiB": 4},
            "Processors": {"@odata.id": format!("{SYSTEM}/Processors")},
            "Storage": {"@odata.id": format!("{SYSTEM}/Storage")},
            "Bios": {"@odata.id": format!("{SYSTEM}/Bios")},
        })
    }

    fn handle(&self, method: Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        if method == Method::GET && path == "/redfish/v1/" {
            let mut root = json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}});
            if self.sessions_offered {
                root["SessionService"] = json!({"@odata.id": "/redfish/v1/SessionService"});
                root["Links"] =
                    json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}});
            }
            return axum::Json(root).into_response();
        }
        if method == Method::POST && path == "/redfish/v1/SessionService/Sessions" {
            if !self.sessions_offered {
                return error_reply(StatusCode::NOT_FOUND, "no sessions here");
            }
            let creds: Value = serde_json::from_slice(body).unwrap_or_default();
            if creds["UserName"] != USER || creds["Password"] != PASSWORD {
                return error_reply(StatusCode::UNAUTHORIZED, "bad credentials");
            }
            let n = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("token-{n}");
            self.tokens.lock().unwrap().push(token.clone());
            let location = format!("/redfish/v1/SessionService/Sessions/{n}");
            return (
                StatusCode::CREATED,
                [("x-auth-token", token), ("location", location)],
                axum::Json(json!({"Id": n.to_string()})),
            )
                .into_response();
        }
        let (authorized, token, _) = self.authorized(headers);
        if !authorized {
            return error_reply(StatusCode::UNAUTHORIZED, "authentication required");
        }
        if self.busy.load(Ordering::SeqCst) > 0 {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            let mut reply = error_reply(StatusCode::SERVICE_UNAVAILABLE, "the BMC is busy");
            if let Some(after) = self.busy_retry_after {
                reply.headers_mut().insert("retry-after", after.parse().unwrap());
            }
            return reply;
        }
        if method == Method::DELETE && path.starts_with("/redfish/v1/SessionService/Sessions/") {
            let token = token.unwrap_or_default();
            self.tokens.lock().unwrap().retain(|t| *t != token);
            self.logouts.fetch_add(1, Ordering::SeqCst);
            return StatusCode::NO_CONTENT.into_response();
        }
        match (method, path) {
            (Method::GET, "/redfish/v1/Systems") => {
                axum::Json(json!({"Members": [{"@odata.id": SYSTEM}]})).into_response()
            }
            (Method::GET, SYSTEM) => {
                ([("etag", self.etag())], axum::Json(self.system())).into_response()
            }
            (Method::PATCH, SYSTEM) => {
                let if_match = headers.get("if-match").and_then(|v| v.to_str().ok());
                if self.require_etag {
                    match if_match {
                        None => {
                            return error_reply(
                                StatusCode::PRECONDITION_REQUIRED,
                                "If-Match required",
                            )
                        }
                        Some(tag) if tag != self.etag() => {
                            return error_reply(StatusCode::PRECONDITION_FAILED, "stale ETag")
                        }
                        Some(_) => {}
                    }
                    if self.spurious_412.load(Ordering::SeqCst) > 0 {
                        self.spurious_412.fetch_sub(1, Ordering::SeqCst);
                        self.etag.fetch_add(1, Ordering::SeqCst);
                        return error_reply(StatusCode::PRECONDITION_FAILED, "resource changed");
                    }
                }
                if self.patch_rejected {
                    return error_reply(
                        StatusCode::BAD_REQUEST,
                        "The value Pxe for the property BootSourceOverrideTarget is not in the list of acceptable values.",
                    );
                }
                let patch: Value = serde_json::from_slice(body).unwrap_or_default();
                let mut boot = self.boot.lock().unwrap();
                if let Some(t) = patch["Boot"]["BootSourceOverrideTarget"].as_str() {
                    boot.0 = t.to_owned();
                }
                if let Some(e) = patch["Boot"]["BootSourceOverrideEnabled"].as_str() {
                    boot.1 = e.to_owned();
                }
                self.etag.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT.into_response()
            }
            (Method::POST, p) if p == format!("{SYSTEM}/Actions/ComputerSystem.Reset") => {
                if self.reset_forbidden {
                    return error_reply(
                        StatusCode::FORBIDDEN,
                        "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
                    );
                }
                let request: Value = serde_json::from_slice(body).unwrap_or_default();
                let reset = request["ResetType"].as_str().unwrap_or_default().to_owned();
                if !self.reset_types.contains(&reset.as_str()) {
                    return error_reply(StatusCode::BAD_REQUEST, "reset type not allowed");
                }
                let mut power = self.power.lock().unwrap();
                match reset.as_str() {
                    "On" | "ForceOn" | "ForceRestart" | "PowerCycle" | "GracefulRestart" => {
                        *power = "On".into()
                    }
                    _ => *power = "Off".into(),
                }
                self.resets.lock().unwrap().push(reset);
                if self.reset_via_task {
                    return (StatusCode::ACCEPTED, [("location", MONITOR)]).into_response();
                }
                StatusCode::NO_CONTENT.into_response()
            }
            (Method::GET, p) if p == format!("{SYSTEM}/Processors") => axum::Json(json!({
                "Members": [{"@odata.id": format!("{SYSTEM}/Processors/CPU0")},
                            {"@odata.id": format!("{SYSTEM}/Processors/Gone")}]
            }))
            .into_response(),
            (Method::GET, p) if p == format!("{SYSTEM}/Processors/CPU0") => axum::Json(json!({
                "ProcessorType": "CPU", "ProcessorArchitecture": "ARM", "InstructionSet": "ARM-A64",
                "Model": "Neoverse-N1", "TotalThreads": 80
            }))
            .into_response(),
            (Method::GET, p) if p == format!("{SYSTEM}/Storage") => axum::Json(json!({
                "Members": [{"@odata.id": format!("{SYSTEM}/Storage/RAID")}]
            }))
            .into_response(),
            (Method::GET, p) if p == format!("{SYSTEM}/Storage/RAID") => axum::Json(json!({
                "Drives": [{"@odata.id": format!("{SYSTEM}/Storage/RAID/Drives/0")}]
            }))
            .into_response(),
            (Method::GET, p) if p == format!("{SYSTEM}/Storage/RAID/Drives/0") => axum::Json(
                json!({"Id": "0", "CapacityBytes": 480103981056u64, "MediaType": "SSD"}),
            )
            .into_response(),
            (Method::GET, p) if p == format!("{SYSTEM}/Bios") => axum::Json(json!({
                "Attributes": {"BootMode": "Uefi"},
                "Actions": {"#Bios.ResetBios": {"target": format!("{SYSTEM}/Bios/Actions/Bios.ResetBios")}}
            }))
            .into_response(),
            (Method::POST, p) if p == format!("{SYSTEM}/Bios/Actions/Bios.ResetBios") => {
                self.bios_resets.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT.into_response()
            }
            (Method::GET, MANAGER) => axum::Json(
                json!({"VirtualMedia": {"@odata.id": format!("{MANAGER}/VirtualMedia")}}),
            )
            .into_response(),
            (Method::GET, p) if p == format!("{MANAGER}/VirtualMedia") => axum::Json(json!({
                "Members": [{"@odata.id": format!("{MANAGER}/VirtualMedia/Floppy1")}, {"@odata.id": CD}]
            }))
            .into_response(),
            (Method::GET, p) if p == format!("{MANAGER}/VirtualMedia/Floppy1") => {
                axum::Json(json!({"MediaTypes": ["Floppy", "USBStick"], "Inserted": false}))
                    .into_response()
            }
            (Method::GET, CD) => {
                let (image, inserted) = self.cd.lock().unwrap().clone();
                let etag = format!("\"cd-{}\"", self.cd_etag.load(Ordering::SeqCst));
                (
                    [("etag", etag)],
                    axum::Json(json!({"MediaTypes": ["CD", "DVD"], "Image": image, "Inserted": inserted})),
                )
                    .into_response()
            }
            (Method::PATCH, CD) => {
                let etag = format!("\"cd-{}\"", self.cd_etag.load(Ordering::SeqCst));
                if headers.get("if-match").and_then(|v| v.to_str().ok()) != Some(etag.as_str()) {
                    return error_reply(StatusCode::PRECONDITION_FAILED, "stale ETag");
                }
                let patch: Value = serde_json::from_slice(body).unwrap_or_default();
                let mut cd = self.cd.lock().unwrap();
                cd.0 = patch["Image"].as_str().map(str::to_owned);
                cd.1 = patch["Inserted"].as_bool().unwrap_or(cd.0.is_some());
                self.cd_etag.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT.into_response()
            }
            (Method::GET, MONITOR) => {
                let polls = self.task_polls.fetch_add(1, Ordering::SeqCst) + 1;
                if polls < 3 {
                    return (
                        StatusCode::ACCEPTED,
                        [("location", MONITOR)],
                        axum::Json(json!({"TaskState": "Running"})),
                    )
                        .into_response();
                }
                if self.task_fails {
                    return axum::Json(json!({"TaskState": "Exception", "TaskStatus": "Critical",
                        "Messages": [{"Message": "Unable to complete the reset: PSU fault."}]}))
                    .into_response();
                }
                axum::Json(json!({"TaskState": "Completed", "TaskStatus": "OK"})).into_response()
            }
            _ => error_reply(StatusCode::NOT_FOUND, "no such resource"),
        }
    }
}

async fn serve(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if !fake.request_delay.is_zero() {
        tokio::time::sleep(fake.request_delay).await;
    }
    let (_, token, basic) = fake.authorized(&headers);
    fake.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        if_match: headers.get("if-match").and_then(|v| v.to_str().ok()).map(str::to_owned),
        token,
        basic,
    });
    let reply = fake.handle(method, uri.path(), &headers, &body);
    fake.in_flight.fetch_sub(1, Ordering::SeqCst);
    reply
}

fn router(fake: Arc<Fake>) -> axum::Router {
    axum::Router::new().fallback(serve).with_state(fake)
}

/// Serves `fake` over plain HTTP; returns the address.
async fn start(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(fake)).await;
    });
    format!("http://127.0.0.1:{port}")
}

fn options() -> RedfishOptions {
    RedfishOptions {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        power_timeout: Duration::from_secs(5),
        soft_power_off_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        task_timeout: Duration::from_secs(5),
        transient_retries: 2,
        backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
    }
}

fn info(address: &str, extra: Value) -> Map<String, Value> {
    let mut info = json!({"redfish_address": address, "redfish_username": USER,
        "redfish_password": PASSWORD, "redfish_system_id": "1"})
    .as_object()
    .unwrap()
    .clone();
    info.extend(extra.as_object().unwrap().clone());
    info
}

async fn bmc_for(fake: &Arc<Fake>, extra: Value) -> (RedfishDriver, Arc<dyn Bmc>) {
    let address = start(Arc::clone(fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect("node", &info(&address, extra)).unwrap();
    (driver, bmc)
}

#[tokio::test]
async fn if_match_carries_the_etag_and_a_412_is_retried_once() {
    let fake =
        Arc::new(Fake { require_etag: true, spurious_412: AtomicU32::new(1), ..Fake::default() });
    let (_driver, bmc) = bmc_for(&fake, json!({"redfish_auth_type": "basic"})).await;
    bmc.set_boot_device(BootDevice::Pxe, false, None).await.unwrap();
    let read = bmc.boot_device().await.unwrap();
    assert_eq!((read.device, read.persistent), (Some(BootDevice::Pxe), Some(false)));
    let patches: Vec<Seen> =
        fake.seen.lock().unwrap().iter().filter(|s| s.method == Method::PATCH).cloned().collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[0].if_match.as_deref(), Some("\"1\""));
    // The retry re-read the system and sent its new ETag.
    assert_eq!(patches[1].if_match.as_deref(), Some("\"2\""));

    // Two conflicts in a row: the driver gives up with the BMC's message.
    fake.spurious_412.store(2, Ordering::SeqCst);
    let err = bmc.set_boot_device(BootDevice::Disk, true, None).await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("412") && text.contains("resource changed"), "{text}");
}

#[tokio::test]
async fn a_202_task_monitor_is_followed_to_its_end() {
    let fake = Arc::new(Fake { reset_via_task: true, ..Fake::default() });
    let (_driver, bmc) = bmc_for(&fake, json!({})).await;
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(fake.task_polls.load(Ordering::SeqCst), 3);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    let failing = Arc::new(Fake { reset_via_task: true, task_fails: true, ..Fake::default() });
    let (_driver, bmc) = bmc_for(&failing, json!({})).await;
    let err = bmc.set_power(PowerAction::On, None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Unable to complete the reset: PSU fault."), "{text}");
    assert!(text.contains("Exception"), "{text}");
}

#[tokio::test]
async fn error_replies_carry_extended_info_and_map_to_types() {
    let fake = Arc::new(Fake { patch_rejected: true, reset_forbidden: true, ..Fake::default() });
    let (_driver, bmc) = bmc_for(&fake, json!({})).await;
    let err = bmc.set_boot_device(BootDevice::Pxe, true, None).await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains("The value Pxe for the property BootSourceOverrideTarget is not in the list of acceptable values."),
        "{err}"
    );
    let err = bmc.set_power(PowerAction::On, None).await.unwrap_err();
    assert!(matches!(err, BmcError::InsufficientPrivilege { .. }), "{err}");
    assert!(err.to_string().contains("insufficient privileges"), "{err}");
    assert!(!err.is_transient());

    // A system that does not exist.
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect("n", &info(&address, json!({"redfish_system_id": "9"}))).unwrap();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("no such resource"), "{err}");
}

#[tokio::test]
async fn a_busy_bmc_is_retried_with_backoff_then_reported_busy() {
    let fake =
        Arc::new(Fake { busy: AtomicU32::new(2), busy_retry_after: Some("0"), ..Fake::default() });
    let (_driver, bmc) = bmc_for(&fake, json!({"redfish_auth_type": "basic"})).await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(fake.busy.load(Ordering::SeqCst), 0);

    fake.busy.store(10, Ordering::SeqCst);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Busy { .. }), "{err}");
    assert!(err.is_transient());
    // One attempt and `transient_retries` more.
    assert_eq!(fake.busy.load(Ordering::SeqCst), 7);

    // A Retry-After longer than the driver waits ends the call at once.
    let slow = Arc::new(Fake {
        busy: AtomicU32::new(5),
        busy_retry_after: Some("3600"),
        ..Fake::default()
    });
    let (_driver, bmc) = bmc_for(&slow, json!({"redfish_auth_type": "basic"})).await;
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        matches!(err, BmcError::Busy { retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
    assert_eq!(slow.busy.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn sessions_are_reused_renewed_on_401_and_closed() {
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    for auth in ["session", "auto"] {
        fake.logins.store(0, Ordering::SeqCst);
        fake.logouts.store(0, Ordering::SeqCst);
        let info = info(&address, json!({"redfish_auth_type": auth}));
        // Several handles (as the conductor connects per operation) share one session.
        for _ in 0..3 {
            let bmc = driver.connect("node", &info).unwrap();
            assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        }
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1, "{auth}");
        // The BMC forgets the session: the driver logs in again, once.
        fake.tokens.lock().unwrap().clear();
        let bmc = driver.connect_redfish("node", &info).unwrap();
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        assert_eq!(fake.logins.load(Ordering::SeqCst), 2, "{auth}");
        assert!(bmc.has_session().await);
        bmc.close().await;
        assert!(!bmc.has_session().await);
        assert_eq!(fake.logouts.load(Ordering::SeqCst), 1, "{auth}");
        assert!(fake.tokens.lock().unwrap().is_empty());
        driver.close().await;
    }
    // Every request past the login used the token, none sent the password.
    let seen = fake.seen.lock().unwrap();
    let authed: Vec<&Seen> = seen.iter().filter(|s| s.path.starts_with(SYSTEM)).collect();
    assert!(!authed.is_empty());
    assert!(authed.iter().all(|s| !s.basic && s.token.is_some()), "{authed:?}");
}

#[tokio::test]
async fn auto_falls_back_to_basic_without_a_session_service_and_bad_passwords_fail() {
    let fake = Arc::new(Fake { sessions_offered: false, ..Fake::default() });
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect("n", &info(&address, json!({"redfish_auth_type": "auto"}))).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 0);
    assert!(fake.seen.lock().unwrap().iter().any(|s| s.path == SYSTEM && s.basic));

    let with_sessions = Arc::new(Fake::default());
    let address = start(Arc::clone(&with_sessions)).await;
    for auth in ["auto", "session", "basic"] {
        let mut info = info(&address, json!({"redfish_auth_type": auth}));
        info.insert("redfish_password".into(), json!("wrong"));
        let bmc = driver.connect("n", &info).unwrap();
        let err = bmc.power_state().await.unwrap_err();
        assert!(matches!(err, BmcError::AuthFailed { .. }), "{auth}: {err}");
    }
}

#[tokio::test]
async fn reset_types_fall_back_to_what_the_bmc_allows() {
    // PowerCycle instead of ForceRestart.
    let fake =
        Arc::new(Fake { reset_types: vec!["On", "ForceOff", "PowerCycle"], ..Fake::default() });
    *fake.power.lock().unwrap() = "On".into();
    let (_driver, bmc) = bmc_for(&fake, json!({})).await;
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(*fake.resets.lock().unwrap(), ["PowerCycle"]);
    // No graceful shutdown: unsupported, naming what is allowed.
    let err = bmc.set_power(PowerAction::SoftOff, None).await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("On, ForceOff, PowerCycle"), "{err}");

    // No restart at all: off, then on.
    let fake = Arc::new(Fake { reset_types: vec!["ForceOn", "ForceOff"], ..Fake::default() });
    *fake.power.lock().unwrap() = "On".into();
    let (_driver, bmc) = bmc_for(&fake, json!({})).await;
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(*fake.resets.lock().unwrap(), ["ForceOff", "ForceOn"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    // Already on: nothing is sent.
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(fake.resets.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_in_flight_per_bmc() {
    let fake = Arc::new(Fake { request_delay: Duration::from_millis(30), ..Fake::default() });
    let address = start(Arc::clone(&fake)).await;
    let driver = Arc::new(RedfishDriver::with_options(options()));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let driver = Arc::clone(&driver);
        let info = info(&address, json!({}));
        calls.spawn(async move {
            let bmc = driver.connect(&format!("node-{i}"), &info).unwrap();
            bmc.power_state().await
        });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().unwrap(), PowerState::Off);
    }
    assert!(fake.seen.lock().unwrap().len() >= 8);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
}

/// A self-signed certificate with `CA:TRUE`, as many BMCs ship, and its key.
fn bmc_certificate() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

async fn start_tls(fake: Arc<Fake>, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> String {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(fake);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_self_signed_ca_true_certificate_is_trusted_when_given_as_verify_ca() {
    let (cert, key) = bmc_certificate();
    let fake = Arc::new(Fake::default());
    let address = start_tls(Arc::clone(&fake), &cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let pinned = dir.path().join("bmc.pem");
    std::fs::write(&pinned, cert.pem()).unwrap();
    let (other, _) = bmc_certificate();
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other.pem()).unwrap();

    let driver = RedfishDriver::with_options(options());
    let power = |verify: Value| {
        let bmc =
            driver.connect("n", &info(&address, json!({"redfish_verify_ca": verify}))).unwrap();
        async move { bmc.power_state().await }
    };
    assert_eq!(power(json!(pinned.to_str().unwrap())).await.unwrap(), PowerState::Off);
    // The directory form finds the same certificate.
    std::fs::remove_file(&wrong).unwrap();
    assert_eq!(power(json!(dir.path().to_str().unwrap())).await.unwrap(), PowerState::Off);
    assert_eq!(power(json!(false)).await.unwrap(), PowerState::Off);
    // The system CAs do not know it; another certificate does not match it.
    std::fs::write(&wrong, other.pem()).unwrap();
    for verify in [json!(true), json!(wrong.to_str().unwrap())] {
        let err = power(verify.clone()).await.unwrap_err();
        assert!(matches!(err, BmcError::Protocol { .. }), "{verify}: {err}");
        assert!(err.to_string().contains("TLS"), "{verify}: {err}");
        assert!(!err.is_transient());
    }
}

#[test]
fn validate_speaks_ironic() {
    let driver = RedfishDriver::new();
    let cases = [
        (json!({}), Some("driver_info: Missing 'redfish_address' parameter in node's driver_info")),
        (json!({"redfish_address": "https://10.1.2.3"}), None),
        (
            json!({"redfish_address": "10.1.2.3", "redfish_verify_ca": "/nonexistent/ca.pem"}),
            Some("driver_info: Invalid value type set in driver_info/redfish_verify_ca. The value should be a Boolean or the path to a file/directory, not \"/nonexistent/ca.pem\""),
        ),
        (
            json!({"redfish_address": "10.1.2.3", "redfish_auth_type": "token"}),
            Some("driver_info: Invalid value \"token\" set in driver_info/redfish_auth_type. The value should be one of \"basic, session, auto\""),
        ),
    ];
    for (info, want) in cases {
        let got = driver.validate(info.as_object().unwrap()).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "{info}");
    }
    assert_eq!(driver.name(), "redfish");
    let registry = ferric_conductor::service::default_drivers();
    assert!(registry.get("redfish").is_some());
}

#[tokio::test]
async fn dropping_the_driver_logs_out() {
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc =
        driver.connect("n", &info(&address, json!({"redfish_auth_type": "session"}))).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(fake.tokens.lock().unwrap().len(), 1);
    drop(bmc);
    drop(driver);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.logouts.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no logout after the driver was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fake.tokens.lock().unwrap().is_empty());
}

#[tokio::test]
async fn virtual_media_of_the_manager_by_patch_with_etags() {
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect_redfish("n", &info(&address, json!({}))).unwrap();
    let url = "http://10.0.0.1/deploy.iso";
    bmc.boot_from_virtual_media(url).await.unwrap();
    let status = bmc.virtual_media().await.unwrap();
    assert_eq!(status.device, CD, "the CD, not the floppy");
    assert_eq!(status.image.as_deref(), Some(url));
    assert!(status.inserted);
    assert_eq!(*fake.boot.lock().unwrap(), ("Cd".to_owned(), "Once".to_owned()));

    // Replacing the media ejects first, each PATCH with the device's current ETag.
    bmc.insert_virtual_media("http://10.0.0.1/other.iso").await.unwrap();
    let patches: Vec<Option<String>> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::PATCH && s.path == CD)
        .map(|s| s.if_match.clone())
        .collect();
    assert_eq!(
        patches,
        [Some("\"cd-1\"".into()), Some("\"cd-2\"".into()), Some("\"cd-3\"".into())]
    );
    assert_eq!(fake.cd.lock().unwrap().0.as_deref(), Some("http://10.0.0.1/other.iso"));

    bmc.eject_virtual_media().await.unwrap();
    assert_eq!(*fake.cd.lock().unwrap(), (None, false));
    assert!(!bmc.virtual_media().await.unwrap().inserted);
}

#[tokio::test]
async fn inspection_reads_processors_drives_and_bios_and_bios_resets() {
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect_redfish("n", &info(&address, json!({}))).unwrap();
    let found = bmc.inspect().await.unwrap();
    let inventory = &found.inventory;
    // A processor link that answers 404 is skipped, not fatal.
    assert_eq!((inventory.cpu.count, inventory.cpu.socket_count), (80, 1));
    assert_eq!(inventory.cpu.architecture, "aarch64");
    assert_eq!(inventory.cpu.model_name.as_deref(), Some("Neoverse-N1"));
    assert_eq!(inventory.disks.len(), 1);
    assert_eq!((inventory.disks[0].size, inventory.disks[0].rotational), (480103981056, false));
    assert_eq!(inventory.memory.physical_mb, Some(4096));
    assert_eq!(inventory.system_vendor.serial_number, "SN-42");
    assert_eq!(found.bios_attributes["BootMode"], "Uefi");
    // This BMC has no SecureBoot resource.
    assert_eq!(found.secure_boot, None);
    let err = bmc.set_secure_boot(true).await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");

    bmc.reset_bios_to_default().await.unwrap();
    assert_eq!(fake.bios_resets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_boot_mode_is_set_only_where_the_system_reports_one() {
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect_redfish("n", &info(&address, json!({}))).unwrap();
    // This system reports no BootSourceOverrideMode: the device changes, the mode is left.
    Bmc::set_boot_device(&bmc, BootDevice::Pxe, true, Some(BootMode::Uefi)).await.unwrap();
    assert_eq!(*fake.boot.lock().unwrap(), ("Pxe".to_owned(), "Continuous".to_owned()));
    Bmc::boot_from_virtual_media(&bmc, "http://10.0.0.1/d.iso", Some(BootMode::Bios))
        .await
        .unwrap();
    assert_eq!(*fake.boot.lock().unwrap(), ("Cd".to_owned(), "Once".to_owned()));
    assert_eq!(fake.cd.lock().unwrap().0.as_deref(), Some("http://10.0.0.1/d.iso"));
    Bmc::eject_virtual_media(&bmc).await.unwrap();
    assert_eq!(*fake.cd.lock().unwrap(), (None, false));
    // Asked for explicitly, the mode is refused as unsupported.
    let err = bmc.set_boot_override(BootTarget::Pxe, false, Some(RedfishMode::Uefi)).await;
    assert!(matches!(err, Err(BmcError::Unsupported { .. })), "{err:?}");
}

/// The conductor logs out of its Redfish sessions when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_shutdown_logs_out_of_redfish_sessions() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = Arc::new(Fake::default());
    let address = start(Arc::clone(&fake)).await;
    // Kept here too, so that only an explicit logout (not dropping the driver) can end
    // the session.
    let driver = Arc::new(RedfishDriver::with_options(options()));
    let mut drivers = DriverRegistry::new();
    drivers.register(driver.clone());
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ConductorConfig {
        data_dir: data.path().to_owned(),
        listen: listener.local_addr().unwrap(),
        ..ConductorConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        ferric_conductor::service::run_on(config, listener, drivers, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let node: Value = http
        .post(format!("{url}/v1/nodes"))
        .header("X-OpenStack-Ironic-API-Version", "1.110")
        .json(&json!({"driver": "redfish",
            "driver_info": info(&address, json!({"redfish_auth_type": "session"}))}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let reply = http
        .put(format!("{url}/v1/nodes/{uuid}/states/provision"))
        .header("X-OpenStack-Ironic-API-Version", "1.110")
        .json(&json!({"target": "manage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 202);
    // Verification reads the power state, in a session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.logins.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the conductor never logged in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.logouts.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    service.await.unwrap();
    // The logout happened before the service returned.
    assert_eq!(fake.logouts.load(Ordering::SeqCst), 1);
    assert!(fake.tokens.lock().unwrap().is_empty());
    drop(driver);
}
