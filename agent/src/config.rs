//! The agent's configuration: ironic-python-agent kernel parameters (read from
//! `/proc/cmdline` or `--cmdline-file`) overlaid by command-line flags of the same names.
//!
//! (Parsing is being written; the struct below is the contract other modules use.)

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferric_shared::api_version::ApiVersion;

/// Everything the agent needs to know at start-up. Built once, then read-only.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `ipa-api-url`: conductor / Ironic API base URLs, tried in order.
    pub api_urls: Vec<reqwest::Url>,
    /// `ipa-inspection-callback-url`: where inspection data is posted.
    pub inspection_callback_urls: Vec<reqwest::Url>,
    /// `BOOTIF`: the raw PXE MAC (`01-aa-bb-…` or `aa:bb:…`), reported as
    /// `boot.pxe_interface`.
    pub bootif: Option<String>,
    /// `ipa-insecure`: do not verify the conductor's TLS certificate.
    pub insecure: bool,
    /// `ipa-lookup-timeout` (default 600 s).
    pub lookup_timeout: Duration,
    /// `ipa-lookup-interval` (default 1 s): the first lookup retry delay.
    pub lookup_interval: Duration,
    /// `ipa-listen-host` (default `::`).
    pub listen_host: IpAddr,
    /// `ipa-listen-port` (default 9999).
    pub listen_port: u16,
    /// `ipa-advertise-host`: the address put in `callback_url`; when unset, the source
    /// address of the route towards the API host.
    pub advertise_host: Option<IpAddr>,
    /// `ipa-advertise-port` (default 9999).
    pub advertise_port: u16,
    /// `ipa-network-interface`: take the advertised IPv4 address from this NIC.
    pub network_interface: Option<String>,
    /// `ipa-agent-token`: a pre-shared token (virtual-media boots).
    pub agent_token: Option<String>,
    /// `ipa-ironic-api-version`: skip version detection.
    pub ironic_api_version: Option<ApiVersion>,
    /// `ipa-global-request-id`: sent as `X-OpenStack-Request-ID`.
    pub global_request_id: Option<String>,
    /// `ipa-debug`: debug logging.
    pub debug: bool,
    /// `ipa-http-request-timeout` (default 30 s).
    pub http_request_timeout: Duration,
    /// `ipa-enable-auto-tls` (default true): serve the API over HTTPS with a
    /// self-signed certificate when the API version allows.
    pub enable_auto_tls: bool,
    /// `ipa-ca-file`: CA bundle to verify the conductor's certificate.
    pub ca_file: Option<PathBuf>,
    /// `--host-root` (default `/`): the directory standing for the host's `/`.
    pub host_root: PathBuf,
}
