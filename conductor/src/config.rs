//! The conductor's configuration file (`ferric conductor --config FILE`): one typed, strict
//! struct. Every table rejects unknown keys so that a misspelt option is an error naming the
//! key, not a silently ignored line. `ferric.example.toml` documents every key with its
//! default; a test loads it.
//!
//! Paths that default relative to other settings (`database`, `image_dir`, `public_url`) are
//! kept as `Option` and resolved by accessor methods, so that a `--data-dir` or `--listen`
//! override given after loading moves them too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration of `ferric conductor`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConductorConfig {
    /// Address the API (and the boot/image HTTP endpoints) listen on.
    pub listen: SocketAddr,
    /// Directory holding the database and the image directory by default.
    pub data_dir: PathBuf,
    /// SQLite database file; default `<data_dir>/ferric.db`.
    pub database: Option<PathBuf>,
    /// URL under which agents and iPXE reach the API; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Directory of images the conductor serves itself; default `<data_dir>/images`.
    pub image_dir: Option<PathBuf>,
    pub deploy: DeployConfig,
    pub cleaning: CleaningConfig,
    pub power: PowerConfig,
    pub agent: AgentConfig,
    pub bmc: BmcConfig,
    pub conductor: ConductorIdentity,
    pub inspector: InspectorConfig,
}

/// `[deploy]`: the deploy ramdisk and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Default deploy kernel (path in the image directory or URL) for nodes whose
    /// `driver_info` has no `deploy_kernel`.
    pub deploy_kernel: Option<String>,
    /// Default deploy ramdisk, as `deploy_kernel`.
    pub deploy_ramdisk: Option<String>,
    /// Kernel command line appended for the deploy ramdisk (Ironic's
    /// `[pxe]kernel_append_params`).
    pub kernel_append_params: String,
    /// Seconds a node may stay in `wait call-back` before it fails.
    pub deploy_callback_timeout: u64,
    /// Default deploy ISO (file name in the image directory or URL) for nodes booting
    /// over virtual media whose `driver_info` has no `deploy_iso`.
    pub deploy_iso: Option<String>,
    /// Boot mode (`uefi` or `bios`) of nodes whose `instance_info` and capabilities name
    /// none (Ironic's `[deploy]default_boot_mode`).
    pub default_boot_mode: String,
}

/// `[cleaning]`: automated cleaning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleaningConfig {
    /// Seconds a node may stay in `clean wait` before it fails.
    pub clean_callback_timeout: u64,
    /// Whether `provide` and tear-down run automated cleaning.
    pub automated_clean: bool,
    /// Priority override for `erase_devices`; unset keeps the agent's, 0 disables it.
    pub erase_devices_priority: Option<u32>,
    /// Priority override for `erase_devices_metadata`; unset keeps the agent's, 0 disables.
    pub erase_devices_metadata_priority: Option<u32>,
}

/// `[power]`: the power-state reconciler and soft power off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerConfig {
    /// Seconds between power-state sync runs.
    pub sync_interval: u64,
    /// Failed BMC reads in a row before the node is put in maintenance.
    pub sync_max_retries: u32,
    /// Seconds a soft power off may take before it is reported as failed.
    pub soft_power_off_timeout: u64,
    /// Nodes whose power state one sync run reads at once (Ironic's
    /// `[conductor] sync_power_state_workers`, 8 there). Each waits for its BMC's answer,
    /// so this, not CPU, bounds how fast a large fleet is swept.
    pub sync_concurrency: usize,
}

/// `[agent]`: talking to the ramdisk agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Reject heartbeats whose `callback_url` is not `https://`. Off by default as in Ironic,
    /// so that agents without TLS can be driven; Ferric's agent enables TLS by itself, so
    /// turning this on is safe when only Ferric agents are used.
    pub require_tls: bool,
    /// Seconds to wait for one agent command call.
    pub command_timeout: u64,
    /// Attempts of one agent command call before the step fails.
    pub max_command_attempts: u32,
    /// Seconds the agent is told (in the lookup reply) to wait at most between
    /// heartbeats; it heartbeats every 30–60 % of this.
    pub heartbeat_timeout: u64,
    /// BMC power-state reads after `standby.power_off` at the end of a deploy before the
    /// node is powered off hard.
    pub post_deploy_get_power_state_retries: u32,
    /// Seconds between those reads.
    pub post_deploy_get_power_state_retry_interval: u64,
}

/// `[bmc]`: how orchestration treats BMC calls that fail for a passing reason.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BmcConfig {
    /// Extra attempts of a BMC call inside a flow (power, boot device) after an
    /// unreachable BMC or a timeout; 0 disables retrying. Rejected credentials and
    /// unsupported operations are never retried.
    pub retries: u32,
    /// Seconds between two attempts; 0 retries at once.
    pub retry_interval: u64,
    /// BMC requests (IPMI exchanges, Redfish HTTP requests) in flight at once across all
    /// BMCs; each BMC has at most one in flight anyway.
    pub max_concurrent_requests: usize,
}

/// `[conductor]`: this conductor's identity and its own timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConductorIdentity {
    /// Name written into a node's `reservation` while this conductor holds its lock;
    /// defaults to the host name.
    pub name: String,
    /// Seconds a node may stay in `inspect wait` before it fails (Ironic's
    /// `[conductor] inspect_wait_timeout`); 0 disables the timeout.
    pub inspect_wait_timeout: u64,
}

/// `[inspector]`: how inspection reports are processed (ironic-inspector's
/// `[processing]`) and whether machines nobody enrolled are enrolled when they report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectorConfig {
    /// The processing hooks, in the order they run.
    pub hooks: Vec<crate::inspection::HookName>,
    /// Which NICs get ports.
    pub add_ports: crate::inspection::AddPorts,
    /// Which existing ports survive inspection.
    pub keep_ports: crate::inspection::KeepPorts,
    /// Power the machine off when inspection ends.
    pub power_off: bool,
    /// Kernel parameters added when the ramdisk boots for inspection.
    pub extra_kernel_params: String,
    /// Enroll a machine whose report matches no node.
    pub auto_discovery: bool,
    /// The driver of auto-discovered nodes.
    pub discovery_driver: String,
    /// `driver_info` of auto-discovered nodes (the BMC address the ramdisk found is
    /// added to it).
    pub discovery_driver_info: serde_json::Map<String, serde_json::Value>,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        InspectorConfig {
            hooks: crate::inspection::DEFAULT_HOOKS.to_vec(),
            add_ports: Default::default(),
            keep_ports: Default::default(),
            power_off: true,
            extra_kernel_params: "ipa-collect-lldp=1".to_owned(),
            auto_discovery: false,
            discovery_driver: "ipmi".to_owned(),
            discovery_driver_info: serde_json::Map::new(),
        }
    }
}

/// Values given on the command line; they win over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Ironic's defaults: `[pxe]kernel_append_params`.
const DEFAULT_KERNEL_APPEND_PARAMS: &str = "nofb vga=normal";

impl Default for ConductorConfig {
    fn default() -> Self {
        ConductorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6385)),
            data_dir: PathBuf::from("./ferric-data"),
            database: None,
            public_url: None,
            image_dir: None,
            deploy: DeployConfig::default(),
            cleaning: CleaningConfig::default(),
            power: PowerConfig::default(),
            agent: AgentConfig::default(),
            bmc: BmcConfig::default(),
            conductor: ConductorIdentity::default(),
            inspector: InspectorConfig::default(),
        }
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            deploy_kernel: None,
            deploy_ramdisk: None,
            kernel_append_params: DEFAULT_KERNEL_APPEND_PARAMS.to_owned(),
            deploy_callback_timeout: 1800,
            deploy_iso: None,
            default_boot_mode: "uefi".to_owned(),
        }
    }
}

impl Default for CleaningConfig {
    fn default() -> Self {
        CleaningConfig {
            clean_callback_timeout: 1800,
            automated_clean: true,
            erase_devices_priority: None,
            erase_devices_metadata_priority: None,
        }
    }
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            sync_interval: 60,
            sync_max_retries: 3,
            soft_power_off_timeout: 600,
            sync_concurrency: crate::periodic::power_sync::DEFAULT_CONCURRENCY,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            require_tls: false,
            command_timeout: 60,
            max_command_attempts: 3,
            heartbeat_timeout: 300,
            post_deploy_get_power_state_retries: 6,
            post_deploy_get_power_state_retry_interval: 5,
        }
    }
}

impl Default for BmcConfig {
    fn default() -> Self {
        BmcConfig {
            retries: 3,
            retry_interval: 2,
            max_concurrent_requests: crate::bmc::limit::DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

impl Default for ConductorIdentity {
    fn default() -> Self {
        ConductorIdentity { name: host_name(), inspect_wait_timeout: 1800 }
    }
}

/// The machine's host name, or a fixed name where it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "ferric-conductor".to_owned())
}

impl ConductorConfig {
    /// Loads `path` (or the defaults when `None`) and validates it.
    pub fn load(path: Option<&Path>) -> Result<ConductorConfig, ConfigError> {
        let Some(path) = path else {
            let config = ConductorConfig::default();
            config.validate()?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config = ConductorConfig::from_toml(&text).map_err(|err| match err {
            ConfigError::Parse { source, .. } => {
                ConfigError::Parse { path: path.to_owned(), source }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Loads `path` and applies the command-line overrides, then validates the result.
    pub fn load_with(
        path: Option<&Path>,
        overrides: &ConfigOverrides,
    ) -> Result<ConductorConfig, ConfigError> {
        let mut config = ConductorConfig::load(path)?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<ConductorConfig, ConfigError> {
        let config: ConductorConfig = toml::from_str(text).map_err(|source| {
            ConfigError::Parse { path: PathBuf::from("<text>"), source: Box::new(source) }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: &ConfigOverrides) {
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
    }

    /// Checks values the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The callback timeouts may be 0: that disables them, as in Ironic.
        let positive = [
            ("power.sync_interval", self.power.sync_interval),
            ("power.sync_max_retries", u64::from(self.power.sync_max_retries)),
            ("power.soft_power_off_timeout", self.power.soft_power_off_timeout),
            ("power.sync_concurrency", self.power.sync_concurrency as u64),
            ("bmc.max_concurrent_requests", self.bmc.max_concurrent_requests as u64),
            ("agent.command_timeout", self.agent.command_timeout),
            ("agent.max_command_attempts", u64::from(self.agent.max_command_attempts)),
            ("agent.heartbeat_timeout", self.agent.heartbeat_timeout),
            (
                "agent.post_deploy_get_power_state_retry_interval",
                self.agent.post_deploy_get_power_state_retry_interval,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid { key, reason: "must be at least 1".into() });
            }
        }
        if let Some(url) = &self.public_url {
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
                return Err(ConfigError::Invalid {
                    key: "public_url",
                    reason: format!("{url:?} is not an http:// or https:// URL with a host"),
                });
            }
        }
        if crate::bmc::BootMode::from_name(&self.deploy.default_boot_mode).is_none() {
            return Err(ConfigError::Invalid {
                key: "deploy.default_boot_mode",
                reason: format!(
                    "{:?} is neither \"uefi\" nor \"bios\"",
                    self.deploy.default_boot_mode
                ),
            });
        }
        let name = self.conductor.name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ConfigError::Invalid {
                key: "conductor.name",
                reason: "must be 1 to 255 characters".into(),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.database.clone().unwrap_or_else(|| self.data_dir.join("ferric.db"))
    }

    /// The directory of locally served images.
    pub fn image_dir(&self) -> PathBuf {
        self.image_dir.clone().unwrap_or_else(|| self.data_dir.join("images"))
    }

    /// The base URL agents and iPXE use to reach the API, without a trailing `/`.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

impl DeployConfig {
    pub fn deploy_callback_timeout(&self) -> Duration {
        Duration::from_secs(self.deploy_callback_timeout)
    }

    /// `default_boot_mode`, which [`ConductorConfig::validate`] checked.
    pub fn default_boot_mode(&self) -> crate::bmc::BootMode {
        crate::bmc::BootMode::from_name(&self.default_boot_mode)
            .unwrap_or(crate::bmc::BootMode::Uefi)
    }
}

impl CleaningConfig {
    pub fn clean_callback_timeout(&self) -> Duration {
        Duration::from_secs(self.clean_callback_timeout)
    }
}

impl PowerConfig {
    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval)
    }

    pub fn soft_power_off_timeout(&self) -> Duration {
        Duration::from_secs(self.soft_power_off_timeout)
    }
}

impl BmcConfig {
    pub fn retry_interval(&self) -> Duration {
        Duration::from_secs(self.retry_interval)
    }
}

impl ConductorIdentity {
    pub fn inspect_wait_timeout(&self) -> Duration {
        Duration::from_secs(self.inspect_wait_timeout)
    }
}

impl AgentConfig {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout)
    }

    pub fn post_deploy_get_power_state_retry_interval(&self) -> Duration {
        Duration::from_secs(self.post_deploy_get_power_state_retry_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole error chain, as the service logs it.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(next) = source {
            text.push_str(": ");
            text.push_str(&next.to_string());
            source = next.source();
        }
        text
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = ConductorConfig::from_toml("").unwrap();
        assert_eq!(config.listen, "127.0.0.1:6385".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./ferric-data"));
        assert_eq!(config.database_path(), PathBuf::from("./ferric-data/ferric.db"));
        assert_eq!(config.image_dir(), PathBuf::from("./ferric-data/images"));
        assert_eq!(config.public_url(), "http://127.0.0.1:6385");
        assert_eq!(config.deploy.deploy_callback_timeout(), Duration::from_secs(1800));
        assert_eq!(config.deploy.kernel_append_params, "nofb vga=normal");
        assert_eq!(config.deploy.deploy_kernel, None);
        assert_eq!(config.deploy.deploy_iso, None);
        assert_eq!(config.deploy.default_boot_mode(), crate::bmc::BootMode::Uefi);
        assert_eq!(config.cleaning.clean_callback_timeout(), Duration::from_secs(1800));
        assert!(config.cleaning.automated_clean);
        assert_eq!(config.cleaning.erase_devices_priority, None);
        assert_eq!(config.power.sync_interval(), Duration::from_secs(60));
        assert_eq!(config.power.sync_max_retries, 3);
        assert_eq!(config.power.soft_power_off_timeout(), Duration::from_secs(600));
        assert!(!config.agent.require_tls);
        assert_eq!(config.agent.command_timeout(), Duration::from_secs(60));
        assert_eq!(config.agent.max_command_attempts, 3);
        assert_eq!(config.agent.heartbeat_timeout, 300);
        assert_eq!(config.agent.post_deploy_get_power_state_retries, 6);
        assert_eq!(
            config.agent.post_deploy_get_power_state_retry_interval(),
            Duration::from_secs(5)
        );
        assert_eq!(config.bmc.retries, 3);
        assert_eq!(config.bmc.max_concurrent_requests, 64);
        assert_eq!(config.power.sync_concurrency, 16);
        assert_eq!(config.bmc.retry_interval(), Duration::from_secs(2));
        assert_eq!(config.conductor.inspect_wait_timeout(), Duration::from_secs(1800));
        assert!(!config.conductor.name.is_empty());
        assert_eq!(ConductorConfig::load(None).unwrap(), config);
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let cases = [
            ("lisen = \"127.0.0.1:1\"\n", "lisen"),
            ("[deploy]\ndeploy_callback_timout = 5\n", "deploy_callback_timout"),
            ("[cleaning]\nerase_priority = 0\n", "erase_priority"),
            ("[power]\nsync = 1\n", "sync"),
            ("[agent]\nrequire_ssl = true\n", "require_ssl"),
            ("[conductor]\nhost = \"x\"\n", "host"),
            ("[conductor]\ninspect_timeout = 5\n", "inspect_timeout"),
            ("[bmc]\nattempts = 2\n", "attempts"),
            ("[pxe]\nkernel_append_params = \"\"\n", "pxe"),
        ];
        for (text, key) in cases {
            let err = ConductorConfig::from_toml(text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err:?}");
            let message = chain(&err);
            assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
        }
    }

    #[test]
    fn bad_values_are_rejected_naming_the_key() {
        let parse_errors = [
            ("listen = \"localhost\"\n", "listen"),
            ("[deploy]\ndeploy_callback_timeout = -1\n", "deploy_callback_timeout"),
            ("[cleaning]\nautomated_clean = \"yes\"\n", "automated_clean"),
            ("[cleaning]\nerase_devices_priority = -5\n", "erase_devices_priority"),
            ("[agent]\nmax_command_attempts = 1.5\n", "max_command_attempts"),
            ("[bmc]\nretries = -1\n", "retries"),
            ("[bmc]\nretry_interval = \"2s\"\n", "retry_interval"),
            ("[conductor]\ninspect_wait_timeout = -1\n", "inspect_wait_timeout"),
        ];
        for (text, key) in parse_errors {
            let err = ConductorConfig::from_toml(text).unwrap_err();
            let message = chain(&err);
            assert!(message.contains(key), "{text}: {message}");
        }
        let invalid = [
            ("[power]\nsync_interval = 0\n", "power.sync_interval"),
            ("[power]\nsync_concurrency = 0\n", "power.sync_concurrency"),
            ("[bmc]\nmax_concurrent_requests = 0\n", "bmc.max_concurrent_requests"),
            ("[agent]\nmax_command_attempts = 0\n", "agent.max_command_attempts"),
            ("[agent]\nheartbeat_timeout = 0\n", "agent.heartbeat_timeout"),
            ("public_url = \"ftp://host\"\n", "public_url"),
            ("public_url = \"http://\"\n", "public_url"),
            ("[conductor]\nname = \"  \"\n", "conductor.name"),
            ("[deploy]\ndefault_boot_mode = \"legacy\"\n", "deploy.default_boot_mode"),
        ];
        for (text, key) in invalid {
            match ConductorConfig::from_toml(text) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn zero_callback_timeouts_disable_them() {
        let config = ConductorConfig::from_toml(
            "[deploy]\ndeploy_callback_timeout = 0\n[cleaning]\nclean_callback_timeout = 0\n\
             [conductor]\nname = \"c\"\ninspect_wait_timeout = 0\n",
        )
        .unwrap();
        assert_eq!(config.deploy.deploy_callback_timeout(), Duration::ZERO);
        assert_eq!(config.cleaning.clean_callback_timeout(), Duration::ZERO);
        assert_eq!(config.conductor.inspect_wait_timeout(), Duration::ZERO);
    }

    #[test]
    fn bmc_retries_may_be_off_and_immediate() {
        let config =
            ConductorConfig::from_toml("[bmc]\nretries = 0\nretry_interval = 0\n").unwrap();
        assert_eq!(config.bmc, BmcConfig { retries: 0, retry_interval: 0, ..BmcConfig::default() });
        let config =
            ConductorConfig::from_toml("[bmc]\nretries = 5\nretry_interval = 1\n").unwrap();
        assert_eq!(config.bmc.retries, 5);
        assert_eq!(config.bmc.retry_interval(), Duration::from_secs(1));
    }

    #[test]
    fn overrides_move_the_derived_paths() {
        let mut config = ConductorConfig::from_toml("[conductor]\nname = \"c1\"\n").unwrap();
        config.apply(&ConfigOverrides {
            data_dir: Some(PathBuf::from("/srv/ferric")),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
        });
        assert_eq!(config.database_path(), PathBuf::from("/srv/ferric/ferric.db"));
        assert_eq!(config.image_dir(), PathBuf::from("/srv/ferric/images"));
        assert_eq!(config.public_url(), "http://127.0.0.1:7000");

        let explicit = ConductorConfig::from_toml(
            "database = \"/db/f.db\"\nimage_dir = \"/img\"\npublic_url = \"http://10.0.0.1:6385/\"\n",
        )
        .unwrap();
        assert_eq!(explicit.database_path(), PathBuf::from("/db/f.db"));
        assert_eq!(explicit.image_dir(), PathBuf::from("/img"));
        assert_eq!(explicit.public_url(), "http://10.0.0.1:6385");
    }

    #[test]
    fn load_reports_missing_file_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = ConductorConfig::load(Some(&path)).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("missing.toml"));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[agent]\ntimeout = 3\n").unwrap();
        let err = ConductorConfig::load(Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        assert!(chain(&err).contains("`timeout`"), "{}", chain(&err));
    }

    #[test]
    fn example_file_loads_with_the_documented_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ferric.example.toml");
        let config = ConductorConfig::load_with(Some(&path), &ConfigOverrides::default()).unwrap();
        let mut expected = ConductorConfig::default();
        expected.conductor.name = "conductor-1".into();
        assert_eq!(config, expected);
        assert_eq!(config.public_url(), "http://127.0.0.1:6385");
    }
}
