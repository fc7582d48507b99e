//! The example kernel command line shipped with the agent loads into a configuration.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ferric_agent::config::{parse_invocation, Invocation};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cmdline.example")
}

#[test]
fn example_cmdline_loads() {
    let empty_root = tempfile::tempdir().unwrap();
    let args = [
        "--cmdline-file".to_owned(),
        example().display().to_string(),
        "--host-root".to_owned(),
        empty_root.path().display().to_string(),
    ];
    let config = match parse_invocation(args) {
        Ok(Invocation::Run(config)) => config,
        other => panic!("expected a runnable configuration, got {other:?}"),
    };
    let urls: Vec<&str> = config.api_urls.iter().map(|u| u.as_str()).collect();
    assert_eq!(urls, ["http://192.0.2.1:6385/", "http://[fd00:1::1]:6385/"]);
    assert_eq!(
        config.global_request_id.as_deref(),
        Some("req-6f4a1b52-0c3e-4c8e-9d2f-6a1b2c3d4e5f")
    );
    assert!(config.debug);
    assert!(!config.insecure);
    assert!(config.enable_auto_tls);
    assert_eq!(config.lookup_timeout, Duration::from_secs(300));
    assert_eq!(config.bootif.as_deref(), Some("01-52-54-00-12-34-56"));
    assert_eq!(config.advertise_port, 9999);
    // Parameters the example leaves out keep IPA's defaults.
    assert_eq!(config.listen_port, 9999);
    assert_eq!(config.http_request_timeout, Duration::from_secs(30));
    assert_eq!(config.listen_host, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    assert_eq!(config.image_download_retries, 5);
    assert_eq!(config.image_download_retry_interval, Duration::from_secs(3));
    assert_eq!(config.image_download_timeout, Duration::from_secs(60));
}

#[test]
fn example_cmdline_also_serves_inventory_with_flag_overrides() {
    let empty_root = tempfile::tempdir().unwrap();
    let args = [
        "inventory",
        "--cmdline-file",
        example().to_str().unwrap(),
        "--host-root",
        empty_root.path().to_str().unwrap(),
        "--ipa-debug=false",
    ]
    .map(str::to_owned);
    match parse_invocation(args) {
        Ok(Invocation::Inventory(config)) => {
            assert!(!config.debug, "the flag must win over the example's ipa-debug=1");
            assert_eq!(config.host_root, empty_root.path());
        }
        other => panic!("expected an inventory invocation, got {other:?}"),
    }
}
