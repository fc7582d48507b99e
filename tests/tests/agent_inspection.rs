//! The real `ferric-agent` binary in inspection mode (`ipa-inspection-callback-url`), on
//! a fixture host tree, against the fake conductor's `POST /v1/continue_inspection`: what
//! it reports, how it retries, and how the reply steers the lookup that follows. Every
//! wait has a deadline; a failing test prints the agent's log.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferric_agent::fixtures::{self, DiskBus, HostBuilder};
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use ferric_tests::fake_conductor::{
    FakeConductor, FakeConductorConfig, InspectionDialect, RecordedRequest,
};
use serde_json::Value;

/// Generous: the agent is a debug build and the machine may be busy.
const START: Duration = Duration::from_secs(30);
/// The PXE MAC as pxelinux writes it on the kernel command line.
const BOOTIF: &str = "01-3c-fd-fe-a0-00-01";

struct Rig {
    conductor: FakeConductor,
    agent: AgentProcess,
    fixture: HostBuilder,
    _tree: tempfile::TempDir,
}

/// A `dual_socket_server` tree booted with `BOOTIF`, the fake conductor knowing its
/// MACs, and the agent posting to the conductor's inspection endpoint. `scripted` are
/// the statuses the first reports get; `api_url` decides whether the agent may look up.
async fn start(dialect: InspectionDialect, scripted: &[u16], api_url: bool) -> Rig {
    let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
    let fixture = fixtures::dual_socket_server()
        .cmdline(&format!("BOOT_IMAGE=/vmlinuz ro console=ttyS0 BOOTIF={BOOTIF} ipa-debug=1"));
    let tree = tempfile::tempdir().unwrap();
    fixture.build(tree.path()).unwrap();
    let config = FakeConductorConfig {
        node_uuid: "7d1f6a52-0b8e-4c1d-9f3a-2e5b6c7d8e9f".into(),
        macs: fixture.nics.iter().map(|n| n.mac.clone()).collect(),
        inspection_reply: dialect,
        ..FakeConductorConfig::default()
    };
    let conductor = FakeConductor::start(config).await.unwrap();
    conductor.script_inspections(scripted.iter().copied());
    let callback = format!("{}v1/continue_inspection", conductor.url());
    let api = if api_url { conductor.url().to_string() } else { String::new() };
    let args = AgentArgs::new(api, tree.path())
        .arg("--ipa-inspection-callback-url")
        .arg(callback)
        .arg("--ipa-lookup-interval=0.1")
        .arg("--ipa-enable-auto-tls=0");
    let agent = AgentProcess::spawn(&binary, &args).unwrap();
    Rig { conductor, agent, fixture, _tree: tree }
}

impl Rig {
    /// Waits until `count` reports have been answered.
    async fn reports(&mut self, count: usize, within: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.conductor.inspections();
            if seen.len() >= count {
                return seen;
            }
            if let Ok(Some(status)) = self.agent.try_exit() {
                panic!("the agent exited ({status}) after {} reports", seen.len());
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} reports within {within:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn first_heartbeat(&self) -> RecordedRequest {
        match self.conductor.wait_for_heartbeats(1, START).await {
            Some(beats) => beats.into_iter().next().unwrap(),
            None => panic!("no heartbeat within {START:?}"),
        }
    }
}

fn strings(v: &Value, pointer: &str, field: &str) -> BTreeSet<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{pointer} is not an array in {v}"))
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect()
}

/// Checks a report against the fixture's definition (not against the agent's own
/// inventory code).
fn assert_describes(report: &Value, fixture: &HostBuilder) {
    assert_eq!(report["inventory"]["cpu"]["count"], fixture.cpu.logical());
    assert_eq!(report["inventory"]["cpu"]["model_name"], fixture.cpu.model_name.as_str());
    let macs: BTreeSet<String> = fixture.nics.iter().map(|n| n.mac.clone()).collect();
    assert_eq!(strings(report, "/inventory/interfaces", "mac_address"), macs);
    let real_disks: Vec<_> =
        fixture.disks.iter().filter(|d| !matches!(d.bus, DiskBus::Virtual)).collect();
    let disk_names: BTreeSet<String> =
        real_disks.iter().map(|d| format!("/dev/{}", d.name)).collect();
    assert_eq!(strings(report, "/inventory/disks", "name"), disk_names);
    assert_eq!(report["boot_interface"], BOOTIF);
    assert_eq!(report["inventory"]["boot"]["pxe_interface"], BOOTIF);

    // The no-hints rule: the smallest writable disk of at least 4 GiB.
    let root = real_disks
        .iter()
        .filter(|d| !d.read_only && d.size_bytes >= 4 << 30)
        .min_by_key(|d| d.size_bytes)
        .unwrap();
    assert_eq!(report["root_disk"]["name"], format!("/dev/{}", root.name));
    assert_eq!(report["root_disk"]["size"], root.size_bytes);

    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["configuration"]["collectors"], serde_json::json!(["default", "logs"]));
    let archive = base64::engine::general_purpose::STANDARD
        .decode(report["logs"].as_str().expect("logs are a base64 string"))
        .unwrap();
    let names = tar_listing(&archive);
    assert!(names.iter().any(|n| n == "ferric-agent.log"), "{names:?}");
}

/// The entries of a gzipped tar, as the `tar` tool lists them.
fn tar_listing(archive: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.tar.gz");
    std::fs::write(&path, archive).unwrap();
    let out = std::process::Command::new("tar").arg("-tzf").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_report_describes_the_fixture_and_its_uuid_drives_the_lookup() {
    let mut rig = start(InspectionDialect::ByVersion, &[], true).await;
    let reports = rig.reports(1, START).await;
    let beat = rig.first_heartbeat().await;

    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.status, 202);
    // IPA sends no microversion, and so gets inspector's `{"uuid": ...}` from Ironic.
    assert_eq!(report.api_version(), None);
    assert_eq!(report.header("content-type"), Some("application/json"));
    assert_describes(report.body.as_ref().unwrap(), &rig.fixture);

    let lookups = rig.conductor.lookups();
    assert!(!lookups.is_empty());
    assert!(lookups[0].at > report.at, "lookup must follow the report");
    assert_eq!(lookups[0].query_param("node_uuid"), Some(rig.conductor.node_uuid().as_str()));
    assert_eq!(beat.path, format!("/v1/heartbeat/{}", rig.conductor.node_uuid()));
    assert!(rig.agent.log().contains("inspection data accepted"));
}

#[tokio::test]
async fn server_errors_are_retried_after_ipa_pauses() {
    let mut rig = start(InspectionDialect::Uuid, &[503, 503], true).await;
    let reports = rig.reports(3, START + Duration::from_secs(20)).await;
    rig.first_heartbeat().await;

    let statuses: Vec<u16> = reports.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 202]);
    // IPA waits at least 5 s between attempts.
    for pair in reports.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(4900), "retried after only {gap:?}");
        assert!(gap < Duration::from_secs(15), "retried after {gap:?}");
    }
    assert!(reports.iter().all(|r| r.body == reports[0].body), "the same report every time");
    let lookups = rig.conductor.lookups();
    assert_eq!(lookups[0].query_param("node_uuid"), Some(rig.conductor.node_uuid().as_str()));
}

#[tokio::test]
async fn a_client_error_is_final_and_the_lookup_goes_ahead_by_mac() {
    let mut rig = start(InspectionDialect::Uuid, &[400], true).await;
    rig.reports(1, START).await;
    let beat = rig.first_heartbeat().await;
    assert_eq!(beat.path, format!("/v1/heartbeat/{}", rig.conductor.node_uuid()));

    let reports = rig.conductor.inspections();
    assert_eq!(reports.iter().map(|r| r.status).collect::<Vec<_>>(), [400]);
    let lookup = &rig.conductor.lookups()[0];
    assert_eq!(lookup.query_param("node_uuid"), None);
    let addresses: BTreeSet<&str> = lookup.query_param("addresses").unwrap().split(',').collect();
    assert!(addresses.contains("3c:fd:fe:a0:00:01"), "{addresses:?}");
    let log = rig.agent.log();
    assert!(log.contains("refused the inspection report with HTTP 400"), "{log}");
}

#[tokio::test]
async fn a_token_issued_with_a_lookup_shaped_reply_is_kept() {
    let mut rig = start(InspectionDialect::Lookup, &[], true).await;
    rig.reports(1, START).await;
    let beat = rig.first_heartbeat().await;
    let token = rig.conductor.token().expect("the inspection reply issued a token");
    // The lookup showed the token masked; the agent heartbeats with the one it kept.
    let body = beat.body.unwrap();
    assert_eq!(body["agent_token"], token.as_str());
    assert_eq!(beat.status, 202);
    let lookup = &rig.conductor.lookups()[0];
    assert_eq!(lookup.query_param("node_uuid"), Some(rig.conductor.node_uuid().as_str()));
}

#[tokio::test]
async fn without_an_api_url_the_agent_reports_then_idles() {
    let mut rig = start(InspectionDialect::Uuid, &[], false).await;
    let reports = rig.reports(1, START).await;
    assert_describes(reports[0].body.as_ref().unwrap(), &rig.fixture);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.agent.log().contains("idling until stopped") {
        assert!(Instant::now() < deadline, "the agent did not settle into idling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.agent.try_exit().unwrap(), None, "the agent must keep running");
    assert!(rig.conductor.lookups().is_empty());
    assert!(rig.conductor.heartbeats().is_empty());
    assert_eq!(rig.conductor.inspections().len(), 1);
}
