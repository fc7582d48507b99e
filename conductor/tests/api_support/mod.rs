//! The API under test: the real router on `127.0.0.1:<free port>` over a real SQLite store
//! in a temporary directory, the conductor's own `fake-hardware` driver (kept so that tests
//! can inject BMC failures and read the simulated state), and the task channel's receiving
//! end so that tests see what the API handed to the orchestrator.

#![allow(dead_code)]

use std::sync::Arc;

use axum::http::HeaderMap;
use ferric_conductor::api::{router, ApiState, ConductorTask};
use ferric_conductor::bmc::fake::{FakeDriver, FAKE_DRIVER_NAME};
use ferric_conductor::bmc::DriverRegistry;
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::store::{Store, Transition};
use ferric_shared::error_body::IronicErrorBody;
use ferric_shared::states::Event;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const DRIVER: &str = FAKE_DRIVER_NAME;
pub const LATEST: &str = "1.110";

/// A reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// The faultstring of an Ironic error body, checking the body's shape on the way.
    pub fn fault(&self) -> String {
        let body: IronicErrorBody = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not an Ironic error body ({e}): {}", self.text));
        body.fault().expect("error_message holds a JSON fault").faultstring
    }

    /// Asserts the status and that the faultstring contains `fragment`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, fragment: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let fault = self.fault();
        assert!(fault.contains(fragment), "faultstring {fault:?} lacks {fragment:?}");
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Api {
    pub base: String,
    pub store: Store,
    pub tasks: mpsc::Receiver<ConductorTask>,
    pub http: reqwest::Client,
    pub bmc: Arc<FakeDriver>,
    pub dir: tempfile::TempDir,
    server: JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

pub async fn start() -> Api {
    start_with(|_| {}, 64).await
}

pub async fn start_with(tweak: impl FnOnce(&mut ConductorConfig), queue: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
    let (tx, rx) = mpsc::channel(queue);
    let mut config = ConductorConfig::default();
    config.conductor.name = "test-conductor".into();
    tweak(&mut config);
    let bmc = Arc::new(FakeDriver::new());
    let mut drivers = DriverRegistry::new();
    drivers.register(bmc.clone());
    let state = ApiState {
        store: store.clone(),
        drivers: Arc::new(drivers),
        tasks: tx,
        config: Arc::new(config),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Api { base: format!("http://{addr}"), store, tasks: rx, http: http_client(), bmc, dir, server }
}

impl Api {
    /// A request at `version` (`None`: no version header).
    pub async fn call_v(
        &self,
        method: Method,
        path: &str,
        version: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(v) = version {
            req = req.header("X-OpenStack-Ironic-API-Version", v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        read(resp).await
    }

    /// A request with a raw body.
    pub async fn call_raw(&self, method: Method, path: &str, body: &str) -> Reply {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-OpenStack-Ironic-API-Version", LATEST)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call_v(Method::GET, path, Some(LATEST), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call_v(Method::POST, path, Some(LATEST), Some(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call_v(Method::PUT, path, Some(LATEST), Some(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call_v(Method::PATCH, path, Some(LATEST), Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call_v(Method::DELETE, path, Some(LATEST), None).await
    }

    /// Creates a node of the fake driver (its `test_*` keys are ignored by it); returns its UUID.
    pub async fn create_node(&self, name: &str) -> String {
        let reply = self
            .post(
                "/v1/nodes",
                json!({"name": name, "driver": DRIVER,
                       "driver_info": {"test_address": "10.1.1.1", "test_password": "s3cret"}}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["uuid"].as_str().unwrap().to_owned()
    }

    pub async fn create_port(&self, node: &str, mac: &str) -> String {
        let reply = self.post("/v1/ports", json!({"node_uuid": node, "address": mac})).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["uuid"].as_str().unwrap().to_owned()
    }

    /// Drives the node through `events` directly in the store (as the orchestrator would).
    pub async fn force(&self, node: &str, events: &[Event]) {
        let uuid = node.parse().unwrap();
        for event in events {
            self.store.transition(uuid, &Transition::new(*event)).await.unwrap();
        }
    }

    pub async fn state_of(&self, node: &str) -> String {
        let reply = self.get(&format!("/v1/nodes/{node}/states")).await;
        reply.body["provision_state"].as_str().unwrap().to_owned()
    }

    /// Asserts that no task was queued.
    #[track_caller]
    pub fn assert_no_task(&mut self) {
        assert!(self.tasks.try_recv().is_err(), "a task was queued");
    }

    pub fn next_task(&mut self) -> ConductorTask {
        self.tasks.try_recv().expect("a task was queued")
    }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, text, body }
}
