//! The real conductor, in-process on `127.0.0.1:<free port>` over a SQLite store in a
//! temporary directory, with the `fake-hardware` driver kept at hand so that tests can read
//! a node's simulated BMC and inject failures.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferric_conductor::bmc::fake::FakeDriver;
use ferric_conductor::bmc::DriverRegistry;
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The newest microversion the conductor speaks, used by [`InProcessConductor::node`].
const LATEST: &str = "1.110";

/// A running conductor; dropping it stops the service task.
pub struct InProcessConductor {
    pub url: String,
    pub driver: Arc<FakeDriver>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl InProcessConductor {
    /// Starts the conductor with a plain [`FakeDriver`]; `tweak` adjusts the configuration
    /// after the data directory and listen address are set.
    pub async fn start(tweak: impl FnOnce(&mut ConductorConfig)) -> anyhow::Result<Self> {
        Self::start_with_driver(FakeDriver::new(), tweak).await
    }

    /// Starts the conductor with `driver` as its only BMC driver.
    pub async fn start_with_driver(
        driver: FakeDriver,
        tweak: impl FnOnce(&mut ConductorConfig),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the conductor's data directory")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config =
            ConductorConfig { data_dir: dir.path().to_owned(), listen: addr, ..Default::default() };
        tweak(&mut config);
        let driver = Arc::new(driver);
        let mut drivers = DriverRegistry::new();
        drivers.register(driver.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = service::run_on(config, listener, drivers, shutdown).await {
                tracing::error!("in-process conductor stopped: {e}");
            }
        });
        Ok(InProcessConductor {
            url: format!("http://{addr}"),
            driver,
            http: http_client()?,
            stop: Some(stop),
            task,
            _dir: dir,
        })
    }

    /// The node as the API shows it, or `None` on a 404.
    pub async fn node(&self, ident: &str) -> anyhow::Result<Option<Value>> {
        let resp = self
            .http
            .get(format!("{}/v1/nodes/{ident}", self.url))
            .header("X-OpenStack-Ironic-API-Version", LATEST)
            .send()
            .await?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.json().await?)),
            404 => Ok(None),
            other => anyhow::bail!("GET node {ident}: HTTP {other}: {}", resp.text().await?),
        }
    }

    /// Creates a node through the API; returns its body.
    pub async fn create_node(&self, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/v1/nodes", self.url))
            .header("X-OpenStack-Ironic-API-Version", LATEST)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        anyhow::ensure!(status == 201, "POST node: HTTP {status}: {}", resp.text().await?);
        Ok(resp.json().await?)
    }

    /// The ports as the API lists them.
    pub async fn ports(&self) -> anyhow::Result<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}/v1/ports", self.url))
            .header("X-OpenStack-Ironic-API-Version", LATEST)
            .send()
            .await?
            .error_for_status()?;
        let body: Value = resp.json().await?;
        Ok(body["ports"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the node's `field` equals `want` (power changes finish after the 202),
    /// returning the last value seen.
    pub async fn wait_for(
        &self,
        ident: &str,
        field: &str,
        want: &Value,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.node(ident).await?.map(|n| n[field].clone()).unwrap_or(Value::Null);
            if &seen == want || tokio::time::Instant::now() >= deadline {
                return Ok(seen);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops the service and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl std::fmt::Debug for InProcessConductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessConductor").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Drop for InProcessConductor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder().use_preconfigured_tls(tls).build()?)
}
