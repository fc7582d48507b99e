//! The agent's control-plane client (lookup, heartbeat, version negotiation, URL failover)
//! against the fake conductor. Waits are scaled down from ironic-python-agent's seconds to
//! milliseconds; each timing assertion checks a lower bound exactly and an upper bound
//! with slack for a loaded machine.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferric_agent::config::AgentConfig;
use ferric_agent::ironic::heartbeat::AGENT_VERSION;
use ferric_agent::ironic::{
    callback_url, lookup_node, ConductorClient, HeartbeatError, HeartbeatTiming, Heartbeater,
    LookupBackoff, LookupError, LookupQuery,
};
use ferric_agent::session::Session;
use ferric_shared::api_version::ApiVersion;
use ferric_tests::fake_conductor::{
    FakeConductor, FakeConductorConfig, LookupStep, RecordedRequest, TokenReply,
};
use serde_json::Value;

const MAC: &str = "52:54:00:12:34:56";
const OTHER_MAC: &str = "52:54:00:aa:bb:cc";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
const WAIT: Duration = Duration::from_secs(5);

fn agent_config(urls: Vec<reqwest::Url>) -> AgentConfig {
    AgentConfig {
        api_urls: urls,
        inspection_callback_urls: vec![],
        bootif: None,
        insecure: false,
        lookup_timeout: Duration::from_secs(600),
        lookup_interval: Duration::from_secs(1),
        listen_host: Ipv6Addr::UNSPECIFIED.into(),
        listen_port: 9999,
        advertise_host: None,
        advertise_port: 9999,
        network_interface: None,
        agent_token: None,
        ironic_api_version: None,
        global_request_id: None,
        debug: false,
        http_request_timeout: Duration::from_secs(10),
        enable_auto_tls: false,
        ca_file: None,
        host_root: PathBuf::from("/nonexistent"),
        ..AgentConfig::default()
    }
}

fn quick_backoff() -> LookupBackoff {
    LookupBackoff {
        min_wait: Duration::from_millis(5),
        unit: Duration::from_millis(5),
        max_wait: Duration::from_millis(40),
        budget: Duration::from_secs(20),
        conflict_waits: [100, 200, 400].map(Duration::from_millis).to_vec(),
    }
}

fn query() -> LookupQuery {
    LookupQuery { addresses: vec![OTHER_MAC.into(), MAC.into()], node_uuid: None }
}

async fn fake(config: FakeConductorConfig) -> FakeConductor {
    FakeConductor::start(config).await.unwrap()
}

fn client(config: &AgentConfig) -> Arc<ConductorClient> {
    Arc::new(ConductorClient::new(config, None).unwrap())
}

fn statuses(requests: &[RecordedRequest]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

fn gaps(requests: &[RecordedRequest]) -> Vec<Duration> {
    requests.windows(2).map(|w| w[1].at.duration_since(w[0].at)).collect()
}

fn heartbeater(client: Arc<ConductorClient>, session: Arc<Session>, node: String) -> Heartbeater {
    Heartbeater {
        client,
        session,
        node_uuid: node,
        callback_url: callback_url(false, "127.0.0.1".parse().unwrap(), 9999),
        agent_version: AGENT_VERSION.into(),
        agent_verify_ca: None,
        heartbeat_timeout: Duration::from_secs(60),
        timing: HeartbeatTiming::default(),
    }
}

fn body_keys(r: &RecordedRequest) -> Vec<String> {
    let mut keys: Vec<String> =
        r.body.as_ref().and_then(Value::as_object).unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn lookup_retries_404s_then_adopts_token_and_node() {
    let conductor = fake(FakeConductorConfig::default()).await;
    conductor.script_lookups(std::iter::repeat_n(LookupStep::Status(404), 3));
    let config = agent_config(vec![conductor.url()]);
    let session = Session::new(None);

    let outcome =
        lookup_node(&client(&config), &session, &query(), &quick_backoff()).await.unwrap();

    let lookups = conductor.lookups();
    assert_eq!(statuses(&lookups), [404, 404, 404, 200]);
    assert_eq!(lookups[0].query_param("addresses"), Some(format!("{OTHER_MAC},{MAC}").as_str()));
    assert_eq!(lookups[0].query_param("node_uuid"), None);
    assert_eq!(outcome.node_uuid, conductor.node_uuid());
    assert_eq!(outcome.heartbeat_timeout, Duration::from_secs(300));
    assert_eq!(outcome.api_version, ApiVersion::LOOKUP_CAP);
    let issued = conductor.token().expect("conductor issued a token");
    assert_eq!(issued.len(), 43);
    assert_eq!(session.token(), Some(issued));
    assert_eq!(session.node().unwrap()["uuid"], Value::String(conductor.node_uuid()));
    // Ironic hands the plain token out once; a second lookup sees it masked, which is
    // fine because the agent already holds it.
    lookup_node(&client(&config), &session, &query(), &quick_backoff()).await.unwrap();
    assert_eq!(session.token(), conductor.token());
}

#[tokio::test]
async fn lookup_by_node_uuid_is_sent_when_known() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let q = LookupQuery { addresses: vec![], node_uuid: Some(conductor.node_uuid()) };
    lookup_node(&client(&config), &Session::new(None), &q, &quick_backoff()).await.unwrap();
    let sent = &conductor.lookups()[0];
    assert_eq!(sent.query_param("node_uuid"), Some(conductor.node_uuid().as_str()));
    assert_eq!(sent.query_param("addresses"), Some(""));
}

#[tokio::test]
async fn lookup_conflicts_add_escalating_waits() {
    let conductor = fake(FakeConductorConfig::default()).await;
    conductor.script_lookups([409, 409, 409].map(LookupStep::Status));
    let config = agent_config(vec![conductor.url()]);
    let backoff = quick_backoff();
    let started = Instant::now();

    lookup_node(&client(&config), &Session::new(None), &query(), &backoff).await.unwrap();

    let lookups = conductor.lookups();
    assert_eq!(statuses(&lookups), [409, 409, 409, 200]);
    let conflict_gaps = gaps(&lookups);
    for (gap, extra) in conflict_gaps.iter().zip(&backoff.conflict_waits) {
        assert!(gap >= extra, "gap {gap:?} shorter than the conflict wait {extra:?}");
        assert!(*gap < *extra + Duration::from_millis(600), "gap {gap:?} far above {extra:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Plain 404s wait only the short exponential backoff.
    let conductor = fake(FakeConductorConfig::default()).await;
    conductor.script_lookups([404, 404, 404].map(LookupStep::Status));
    let config = agent_config(vec![conductor.url()]);
    lookup_node(&client(&config), &Session::new(None), &query(), &backoff).await.unwrap();
    let quick: Duration = gaps(&conductor.lookups()).iter().sum();
    assert!(quick < Duration::from_millis(100 + 200 + 400), "404 retries took {quick:?}");
}

#[tokio::test]
async fn lookup_gives_up_after_its_budget() {
    let conductor = fake(FakeConductorConfig::default()).await;
    conductor.script_lookups(std::iter::repeat_n(LookupStep::Status(404), 1000));
    let config = agent_config(vec![conductor.url()]);
    let backoff = LookupBackoff { budget: Duration::from_millis(300), ..quick_backoff() };
    let started = Instant::now();

    let err =
        lookup_node(&client(&config), &Session::new(None), &query(), &backoff).await.unwrap_err();

    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "gave up early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "gave up late: {elapsed:?}");
    match err {
        LookupError::TimedOut { attempts, last, .. } => {
            assert!(attempts >= 3, "only {attempts} attempts");
            assert_eq!(attempts as usize, conductor.lookups().len());
            assert!(last.contains("404") && last.contains("Node could not be found"), "{last}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn masked_token_without_a_held_token_is_fatal() {
    let conductor = fake(FakeConductorConfig {
        pregenerated_token: Some("p".repeat(43)),
        ..Default::default()
    })
    .await;
    let config = agent_config(vec![conductor.url()]);
    let session = Session::new(None);

    let err =
        lookup_node(&client(&config), &session, &query(), &quick_backoff()).await.unwrap_err();

    assert!(
        matches!(&err, LookupError::TokenWithheld { node_uuid } if *node_uuid == conductor.node_uuid()),
        "{err:?}"
    );
    assert_eq!(conductor.lookups().len(), 1, "a withheld token must not be retried");
    assert_eq!(session.token(), None);
    assert_eq!(session.node(), None);

    // With the token preset (virtual media), the masked reply is expected and fine.
    let session = Session::new(Some("p".repeat(43)));
    lookup_node(&client(&config), &session, &query(), &quick_backoff()).await.unwrap();
    assert_eq!(session.token(), Some("p".repeat(43)));
    assert!(session.node().is_some());
}

#[tokio::test]
async fn short_or_null_tokens_are_ignored() {
    let conductor = fake(FakeConductorConfig::default()).await;
    conductor.script_lookups([
        LookupStep::Found(TokenReply::Literal("too-short".into())),
        LookupStep::Found(TokenReply::Null),
        LookupStep::Found(TokenReply::Literal("L".repeat(32))),
    ]);
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Session::new(None);
    for expected in [None, None, Some("L".repeat(32))] {
        lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
        assert_eq!(session.token(), expected);
    }
}

#[tokio::test]
async fn version_headers_are_capped_per_call() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));

    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
    let mut hb = heartbeater(client.clone(), session.clone(), outcome.node_uuid);
    hb.agent_verify_ca = Some(PEM.into());
    hb.heartbeat_once().await.unwrap();
    hb.heartbeat_once().await.unwrap();

    assert_eq!(conductor.root_requests().len(), 1, "the detected version is cached");
    assert_eq!(conductor.root_requests()[0].api_version(), None);
    assert_eq!(conductor.lookups()[0].api_version(), Some("1.62"));
    let heartbeats = conductor.heartbeats();
    assert_eq!(heartbeats[0].api_version(), Some("1.68"));
    assert_eq!(
        body_keys(&heartbeats[0]),
        ["agent_token", "agent_verify_ca", "agent_version", "callback_url"]
    );
    let body = heartbeats[0].body.as_ref().unwrap();
    assert_eq!(body["agent_token"], Value::String(conductor.token().unwrap()));
    assert_eq!(body["agent_version"], AGENT_VERSION);
    let callback = conductor.last_callback().unwrap();
    assert_eq!(callback.callback_url, "http://127.0.0.1:9999");
    assert_eq!(callback.agent_verify_ca.as_deref(), Some(PEM));
    assert_eq!(conductor.agent_version().as_deref(), Some(AGENT_VERSION));
}

#[tokio::test]
async fn older_conductors_get_older_versions_and_fewer_fields() {
    // (max version served, lookup header, heartbeat header, heartbeat keys, token issued)
    let table: &[(&str, &str, &str, &[&str], bool)] = &[
        ("1.40", "1.40", "1.40", &["agent_version", "callback_url"], false),
        ("1.65", "1.62", "1.65", &["agent_token", "agent_version", "callback_url"], true),
        (
            "1.90",
            "1.62",
            "1.68",
            &["agent_token", "agent_verify_ca", "agent_version", "callback_url"],
            true,
        ),
    ];
    for &(max, lookup_v, heartbeat_v, keys, token) in table {
        let conductor =
            fake(FakeConductorConfig { max_version: max.parse().unwrap(), ..Default::default() })
                .await;
        let config = agent_config(vec![conductor.url()]);
        let client = client(&config);
        let session = Arc::new(Session::new(None));
        let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
        assert_eq!(session.token().is_some(), token, "at {max}");
        let mut hb = heartbeater(client, session, outcome.node_uuid);
        hb.agent_verify_ca = Some(PEM.into());
        let result = hb.heartbeat_once().await;
        assert_eq!(conductor.lookups()[0].api_version(), Some(lookup_v), "at {max}");
        let sent = &conductor.heartbeats()[0];
        assert_eq!(sent.api_version(), Some(heartbeat_v), "at {max}");
        assert_eq!(body_keys(sent), keys, "at {max}");
        // Without a token the conductor refuses the heartbeat, as current Ironic does.
        assert_eq!(result.is_ok(), token, "at {max}: {result:?}");
    }
}

#[tokio::test]
async fn failed_detection_falls_back_to_1_31() {
    let conductor =
        fake(FakeConductorConfig { root_status: Some(500), ..Default::default() }).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));

    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
    assert_eq!(outcome.api_version, ApiVersion::AGENT_FLOOR);
    assert_eq!(conductor.lookups()[0].api_version(), Some("1.31"));
    assert_eq!(session.token(), None, "no token is issued below 1.62");

    let hb = heartbeater(client.clone(), session, outcome.node_uuid);
    let err = hb.heartbeat_once().await.unwrap_err();
    assert!(matches!(err, HeartbeatError::Rejected { status: 400, .. }), "{err:?}");
    let sent = &conductor.heartbeats()[0];
    assert_eq!(sent.api_version(), Some("1.31"));
    assert_eq!(body_keys(sent), ["callback_url"]);
    // Failures are not cached: each call asks the root again.
    assert!(conductor.root_requests().len() >= 2);
}

#[tokio::test]
async fn configured_version_skips_detection() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let mut config = agent_config(vec![conductor.url()]);
    config.ironic_api_version = Some(ApiVersion::new(1, 64));
    let client = client(&config);
    assert_eq!(client.api_version().await, ApiVersion::new(1, 64));
    lookup_node(&client, &Session::new(None), &query(), &quick_backoff()).await.unwrap();
    assert_eq!(conductor.root_requests().len(), 0);
    assert_eq!(conductor.lookups()[0].api_version(), Some("1.62"));
}

#[tokio::test]
async fn request_id_and_json_headers() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let mut config = agent_config(vec![conductor.url()]);
    config.global_request_id = Some("req-6a4b2c1e-0f3d-4b5a-8c7d-9e0f1a2b3c4d".into());
    let client = client(&config);
    let session = Arc::new(Session::new(None));
    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
    heartbeater(client, session, outcome.node_uuid).heartbeat_once().await.unwrap();

    let requests = conductor.requests();
    assert_eq!(requests.len(), 3, "root, lookup, heartbeat");
    for r in &requests {
        assert_eq!(
            r.header("X-OpenStack-Request-ID"),
            Some("req-6a4b2c1e-0f3d-4b5a-8c7d-9e0f1a2b3c4d"),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    // Not configured, not sent.
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    lookup_node(
        &ConductorClient::new(&config, None).unwrap(),
        &Session::new(None),
        &query(),
        &quick_backoff(),
    )
    .await
    .unwrap();
    assert!(conductor.requests().iter().all(|r| r.header("X-OpenStack-Request-ID").is_none()));
}

#[tokio::test]
async fn refused_url_is_skipped_and_the_working_one_moves_first() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/").parse::<reqwest::Url>().unwrap()
    };
    let conductor = fake(FakeConductorConfig::default()).await;
    let spare = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![refused.clone(), conductor.url(), spare.url()]);
    let client = client(&config);

    lookup_node(&client, &Session::new(None), &query(), &quick_backoff()).await.unwrap();

    let order: Vec<String> = client.api_urls().iter().map(|u| u.to_string()).collect();
    assert_eq!(order, [conductor.url().to_string(), refused.to_string(), spare.url().to_string()]);
    assert_eq!(statuses(&conductor.lookups()), [200]);
    assert!(spare.requests().is_empty(), "the third URL was not needed");

    // All URLs refusing: lookup keeps retrying and reports the connection failure.
    let config = agent_config(vec![refused]);
    let backoff = LookupBackoff { budget: Duration::from_millis(100), ..quick_backoff() };
    match lookup_node(
        &ConductorClient::new(&config, None).unwrap(),
        &Session::new(None),
        &query(),
        &backoff,
    )
    .await
    {
        Err(LookupError::TimedOut { last, .. }) => {
            assert!(last.contains("no conductor API URL accepted a connection"), "{last}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn heartbeat_success_is_exactly_202() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));
    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
    let hb = heartbeater(client, session.clone(), outcome.node_uuid);

    conductor.script_heartbeats([200, 409, 500, 202]);
    let results = [
        hb.heartbeat_once().await,
        hb.heartbeat_once().await,
        hb.heartbeat_once().await,
        hb.heartbeat_once().await,
    ];
    assert!(matches!(results[0], Err(HeartbeatError::Rejected { status: 200, .. })));
    assert!(
        matches!(&results[1], Err(HeartbeatError::Conflict { message }) if message.contains("locked")),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Err(HeartbeatError::Rejected { status: 500, .. })));
    assert!(results[3].is_ok());
}

#[tokio::test]
async fn conductor_checks_token_and_callback_url() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));
    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();

    let good = heartbeater(client.clone(), session.clone(), outcome.node_uuid.clone());
    good.heartbeat_once().await.unwrap();

    let mut moved = good.clone();
    moved.callback_url = callback_url(false, "127.0.0.2".parse().unwrap(), 9999);
    match moved.heartbeat_once().await {
        Err(HeartbeatError::Rejected { status: 400, message }) => {
            assert!(
                message.contains("Detected change in ramdisk provided callback_url"),
                "{message}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    let impostor =
        heartbeater(client, Arc::new(Session::new(Some("i".repeat(43)))), outcome.node_uuid);
    match impostor.heartbeat_once().await {
        Err(HeartbeatError::Rejected { status: 400, message }) => {
            assert!(message.contains("Invalid or missing agent token"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(statuses(&conductor.heartbeats()), [202, 400, 400]);
}

#[tokio::test]
async fn heartbeat_task_paces_retries_and_successes() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));
    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();
    conductor.script_heartbeats([409, 500]);

    let mut hb = heartbeater(client, session, outcome.node_uuid);
    hb.heartbeat_timeout = Duration::from_millis(1000);
    hb.timing = HeartbeatTiming {
        retry_base: Duration::from_millis(100),
        min_spacing: Duration::from_millis(100),
        ..HeartbeatTiming::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(hb.run(async {
        let _ = stopped.await;
    }));

    let beats = conductor.wait_for_heartbeats(4, WAIT).await.expect("four heartbeats");
    assert!(beats[0].at.duration_since(started) < Duration::from_millis(500), "first is prompt");
    assert_eq!(statuses(&beats[..4]), [409, 500, 202, 202]);
    let gaps = gaps(&beats[..4]);
    let ms = |d: Duration| d.as_millis();
    // Failures: 100 ms × U(1, 2). Success: 1000 ms × U(0.3, 0.6).
    for retry in &gaps[..2] {
        assert!((100..400).contains(&ms(*retry)), "retry gap {retry:?}");
    }
    assert!((300..900).contains(&ms(gaps[2])), "success gap {:?}", gaps[2]);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task).await.expect("task stops on shutdown").unwrap();
    let count = conductor.heartbeats().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(conductor.heartbeats().len(), count, "no heartbeat after shutdown");
}

#[tokio::test]
async fn command_finished_forces_a_heartbeat_but_not_too_soon() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let config = agent_config(vec![conductor.url()]);
    let client = client(&config);
    let session = Arc::new(Session::new(None));
    let outcome = lookup_node(&client, &session, &query(), &quick_backoff()).await.unwrap();

    let mut hb = heartbeater(client, session.clone(), outcome.node_uuid);
    // The regular interval (60 s × U(0.3, 0.6)) is far beyond this test.
    hb.heartbeat_timeout = Duration::from_secs(60);
    hb.timing = HeartbeatTiming { min_spacing: Duration::from_millis(400), ..Default::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hb.run(async {
        let _ = stopped.await;
    }));

    let first = conductor.next_heartbeat(WAIT).await.expect("first heartbeat");
    assert_eq!(first.status, 202);

    // Right after the first: the forced heartbeat waits out the minimum spacing.
    session.command_finished.notify_one();
    let second = conductor.next_heartbeat(WAIT).await.expect("forced heartbeat");
    let spacing = second.at.duration_since(first.at);
    assert!(spacing >= Duration::from_millis(400), "forced too soon: {spacing:?}");
    assert!(spacing < Duration::from_millis(900), "forced too late: {spacing:?}");

    // Long after the previous one: the forced heartbeat goes out at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let notified = Instant::now();
    session.command_finished.notify_one();
    let third = conductor.next_heartbeat(WAIT).await.expect("second forced heartbeat");
    let delay = third.at.duration_since(notified);
    assert!(delay < Duration::from_millis(300), "forced heartbeat delayed {delay:?}");

    // Without a notification nothing more is sent.
    assert!(conductor.next_heartbeat(Duration::from_millis(800)).await.is_none());
    assert_eq!(statuses(&conductor.heartbeats()), [202, 202, 202]);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task).await.expect("task stops on shutdown").unwrap();
}

#[tokio::test]
async fn caller_supplied_tls_config_is_used_and_https_fails_cleanly() {
    let conductor = fake(FakeConductorConfig::default()).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let config = agent_config(vec![conductor.url()]);
    let client = ConductorClient::new(&config, Some(Arc::new(tls))).unwrap();
    lookup_node(&client, &Session::new(None), &query(), &quick_backoff()).await.unwrap();
    assert_eq!(statuses(&conductor.lookups()), [200]);

    // The fake speaks plain HTTP: a TLS handshake with it fails, and that is an error
    // for the caller, not a panic.
    let https = format!("https://{}", conductor.addr()).parse().unwrap();
    let config = agent_config(vec![https]);
    let backoff = LookupBackoff { budget: Duration::from_millis(50), ..quick_backoff() };
    let result = lookup_node(
        &ConductorClient::new(&config, None).unwrap(),
        &Session::new(None),
        &query(),
        &backoff,
    )
    .await;
    assert!(matches!(result, Err(LookupError::TimedOut { .. })), "{result:?}");
    assert_eq!(conductor.lookups().len(), 1, "no TLS request reached the handler");
}
