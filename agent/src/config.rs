//! The agent's configuration: ironic-python-agent kernel parameters (read from
//! `/proc/cmdline` or `--cmdline-file`) overlaid by command-line flags of the same names.
//!
//! Parameter names, defaults and value syntax follow IPA so that a ramdisk booted by a
//! real Ironic (which writes `ipa-api-url=…` and friends on the kernel command line)
//! configures Ferric's agent the same way. Parsing is strict: a value that IPA would
//! reject, or that would silently change meaning, is an error naming the parameter.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ferric_shared::api_version::ApiVersion;

use crate::cmdline::{parse_cmdline, KernelParams};
use crate::host::HostRoot;

/// Everything the agent needs to know at start-up. Built once, then read-only.
/// `Debug` masks the agent token, so the configuration can be logged.
#[derive(Clone)]
pub struct AgentConfig {
    /// `ipa-api-url`: conductor / Ironic API base URLs, tried in order.
    pub api_urls: Vec<reqwest::Url>,
    /// `ipa-inspection-callback-url`: where inspection data is posted.
    pub inspection_callback_urls: Vec<reqwest::Url>,
    /// `ipa-inspection-collectors` (default `default,logs`): what inspection reports.
    pub inspection_collectors: Vec<String>,
    /// `ipa-collect-lldp` (default false): listen for LLDP frames on every NIC during
    /// inspection and report them.
    pub collect_lldp: bool,
    /// `ipa-lldp-timeout` (default 30 s): how long to listen for LLDP frames.
    pub lldp_timeout: Duration,
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
    /// `ipa-image-download-connection-retries` (default 9): image download attempts
    /// after the first that a connection error, a 5xx or a stall may cost.
    pub image_download_retries: u32,
    /// `ipa-image-download-connection-retry-interval` (default 10 s): pause between them.
    pub image_download_retry_interval: Duration,
    /// `ipa-image-download-connection-timeout` (default 60 s): an image download that
    /// delivers no byte for this long has stalled.
    pub image_download_timeout: Duration,
    /// `ipa-enable-discard-erase` (default false): `erase_devices` may use a verified
    /// secure discard before falling back to zero-fill.
    pub enable_discard_erase: bool,
    /// `ipa-guard-special-filesystems` (default true): erase steps refuse disks holding
    /// special filesystems (Ceph and the like) unless the node allows wiping them.
    pub guard_special_filesystems: bool,
}

fn url_strings(urls: &[reqwest::Url]) -> Vec<&str> {
    urls.iter().map(reqwest::Url::as_str).collect()
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("api_urls", &url_strings(&self.api_urls))
            .field("inspection_callback_urls", &url_strings(&self.inspection_callback_urls))
            .field("inspection_collectors", &self.inspection_collectors)
            .field("collect_lldp", &self.collect_lldp)
            .field("lldp_timeout", &self.lldp_timeout)
            .field("bootif", &self.bootif)
            .field("insecure", &self.insecure)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("lookup_interval", &self.lookup_interval)
            .field("listen_host", &self.listen_host)
            .field("listen_port", &self.listen_port)
            .field("advertise_host", &self.advertise_host)
            .field("advertise_port", &self.advertise_port)
            .field("network_interface", &self.network_interface)
            .field("agent_token", &self.agent_token.as_ref().map(|_| "******"))
            .field("ironic_api_version", &self.ironic_api_version)
            .field("global_request_id", &self.global_request_id)
            .field("debug", &self.debug)
            .field("http_request_timeout", &self.http_request_timeout)
            .field("enable_auto_tls", &self.enable_auto_tls)
            .field("ca_file", &self.ca_file)
            .field("host_root", &self.host_root)
            .field("image_download_retries", &self.image_download_retries)
            .field("enable_discard_erase", &self.enable_discard_erase)
            .field("guard_special_filesystems", &self.guard_special_filesystems)
            .field("image_download_retry_interval", &self.image_download_retry_interval)
            .field("image_download_timeout", &self.image_download_timeout)
            .finish()
    }
}

/// IPA's defaults for every parameter, with no API URL.
impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            api_urls: Vec::new(),
            inspection_callback_urls: Vec::new(),
            inspection_collectors: vec!["default".to_owned(), "logs".to_owned()],
            collect_lldp: false,
            lldp_timeout: Duration::from_secs(30),
            bootif: None,
            insecure: false,
            lookup_timeout: Duration::from_secs(600),
            lookup_interval: Duration::from_secs(1),
            listen_host: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            listen_port: 9999,
            advertise_host: None,
            advertise_port: 9999,
            network_interface: None,
            agent_token: None,
            ironic_api_version: None,
            global_request_id: None,
            debug: false,
            http_request_timeout: Duration::from_secs(30),
            enable_auto_tls: true,
            ca_file: None,
            host_root: PathBuf::from("/"),
            image_download_retries: 9,
            image_download_retry_interval: Duration::from_secs(10),
            image_download_timeout: Duration::from_secs(60),
            enable_discard_erase: false,
            guard_special_filesystems: true,
        }
    }
}

/// What the command line asked the binary to do.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// No subcommand: run the agent.
    Run(AgentConfig),
    /// `inventory`: print the hardware inventory as JSON and exit.
    Inventory(AgentConfig),
    /// `--help`: print this text and exit.
    Help(String),
    /// `--version`: print the version and exit.
    Version,
    /// `write-image`: write one image to a disk or file and exit.
    WriteImage(Box<crate::write_image_cli::WriteImageArgs>),
}

/// Why the agent's configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown flag {0:?} (see --help)")]
    UnknownFlag(String),
    #[error("flag --{0} needs a value")]
    MissingFlagValue(String),
    #[error(
        "unexpected argument {0:?}: the subcommands are `inventory`, `write-image` and `erase`"
    )]
    UnexpectedArgument(String),
    #[error("cannot read the kernel command line from {}", path.display())]
    ReadCmdline {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every malformed parameter, in `usage()` order.
    #[error("{}", InvalidList(.0))]
    InvalidParameters(Vec<InvalidParameter>),
    #[error(
        "no conductor to talk to: give ipa-api-url (or ipa-inspection-callback-url) on the \
         kernel command line or as a flag"
    )]
    NoApiUrl,
    #[error("invalid write-image arguments")]
    WriteImage(#[from] crate::write_image_cli::WriteImageArgsError),
}

/// One parameter whose value is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParameter {
    /// The IPA parameter name, e.g. `ipa-listen-port`.
    pub name: &'static str,
    /// The value as given.
    pub value: String,
    pub problem: ValueProblem,
}

impl fmt::Display for InvalidParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.name, self.value, self.problem)
    }
}

/// What is wrong with a parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    #[error("not a boolean (use 1/t/true/on/y/yes or 0/f/false/off/n/no)")]
    NotBoolean,
    #[error("not a non-negative number of seconds")]
    NotSeconds,
    #[error("not a port number in 1..=65535")]
    NotPort,
    #[error("not a non-negative whole number")]
    NotCount,
    #[error("not an IP address")]
    NotIpAddress,
    #[error("not an Ironic API version: expected MAJOR.MINOR, e.g. 1.68")]
    NotApiVersion,
    #[error("mDNS discovery is not supported; give the conductor URL explicitly")]
    MdnsUnsupported,
    #[error("empty item in the comma-separated URL list")]
    EmptyUrl,
    #[error("URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("URL {0:?} is not http:// or https://")]
    UnsupportedScheme(String),
}

struct InvalidList<'a>(&'a [InvalidParameter]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed agent parameters: ")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// How a parameter's value is written; decides flag syntax and the usage text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Seconds,
    Port,
    Ip,
    Urls,
    Text,
    Version,
    Path,
    Count,
}

impl Kind {
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Bool => "[BOOL]",
            Kind::Seconds => "SECONDS",
            Kind::Port => "PORT",
            Kind::Ip => "IP",
            Kind::Urls => "URL[,URL…]",
            Kind::Text => "TEXT",
            Kind::Version => "1.NN",
            Kind::Path => "PATH",
            Kind::Count => "N",
        }
    }
}

/// Stores a parameter's parsed value in the configuration.
type Apply = fn(&mut AgentConfig, &str) -> Result<(), ValueProblem>;

struct Param {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
    apply: Apply,
}

const PARAMS: &[Param] = &[
    Param {
        name: "ipa-api-url",
        kind: Kind::Urls,
        default: "none",
        help: "conductor / Ironic API base URLs, tried in order",
        apply: |c, v| parse_urls(v).map(|x| c.api_urls = x),
    },
    Param {
        name: "ipa-inspection-callback-url",
        kind: Kind::Urls,
        default: "none",
        help: "where inspection data is posted",
        apply: |c, v| parse_urls(v).map(|x| c.inspection_callback_urls = x),
    },
    Param {
        name: "ipa-inspection-collectors",
        kind: Kind::Text,
        default: "default,logs",
        help: "comma-separated inspection collectors: default, logs, lldp",
        apply: |c, v| {
            c.inspection_collectors = parse_names(v);
            Ok(())
        },
    },
    Param {
        name: "ipa-collect-lldp",
        kind: Kind::Bool,
        default: "false",
        help: "listen for LLDP frames on every NIC during inspection",
        apply: |c, v| parse_bool_value(v).map(|x| c.collect_lldp = x),
    },
    Param {
        name: "ipa-lldp-timeout",
        kind: Kind::Seconds,
        default: "30",
        help: "how long inspection listens for LLDP frames",
        apply: |c, v| parse_seconds(v).map(|x| c.lldp_timeout = x),
    },
    Param {
        name: "BOOTIF",
        kind: Kind::Text,
        default: "none",
        help: "MAC address of the interface the machine PXE-booted from",
        apply: |c, v| {
            c.bootif = non_empty(v);
            Ok(())
        },
    },
    Param {
        name: "ipa-insecure",
        kind: Kind::Bool,
        default: "false",
        help: "do not verify the conductor's TLS certificate",
        apply: |c, v| parse_bool_value(v).map(|x| c.insecure = x),
    },
    Param {
        name: "ipa-lookup-timeout",
        kind: Kind::Seconds,
        default: "600",
        help: "give up looking this node up after this long",
        apply: |c, v| parse_seconds(v).map(|x| c.lookup_timeout = x),
    },
    Param {
        name: "ipa-lookup-interval",
        kind: Kind::Seconds,
        default: "1",
        help: "first delay between lookup attempts",
        apply: |c, v| parse_seconds(v).map(|x| c.lookup_interval = x),
    },
    Param {
        name: "ipa-listen-host",
        kind: Kind::Ip,
        default: "::",
        help: "address the agent API listens on",
        apply: |c, v| parse_ip(v).map(|x| c.listen_host = x),
    },
    Param {
        name: "ipa-listen-port",
        kind: Kind::Port,
        default: "9999",
        help: "port the agent API listens on",
        apply: |c, v| parse_port(v).map(|x| c.listen_port = x),
    },
    Param {
        name: "ipa-advertise-host",
        kind: Kind::Ip,
        default: "route source address towards the API",
        help: "address put in the heartbeat callback URL",
        apply: |c, v| optional(v, parse_ip).map(|x| c.advertise_host = x),
    },
    Param {
        name: "ipa-advertise-port",
        kind: Kind::Port,
        default: "9999",
        help: "port put in the heartbeat callback URL",
        apply: |c, v| parse_port(v).map(|x| c.advertise_port = x),
    },
    Param {
        name: "ipa-network-interface",
        kind: Kind::Text,
        default: "none",
        help: "take the advertised IPv4 address from this interface",
        apply: |c, v| {
            c.network_interface = non_empty(v);
            Ok(())
        },
    },
    Param {
        name: "ipa-agent-token",
        kind: Kind::Text,
        default: "none",
        help: "pre-shared agent token (virtual-media boots)",
        apply: |c, v| {
            c.agent_token = non_empty(v);
            Ok(())
        },
    },
    Param {
        name: "ipa-ironic-api-version",
        kind: Kind::Version,
        default: "detected",
        help: "Ironic API version to use instead of detecting it",
        apply: |c, v| optional(v, parse_api_version).map(|x| c.ironic_api_version = x),
    },
    Param {
        name: "ipa-global-request-id",
        kind: Kind::Text,
        default: "none",
        help: "sent as X-OpenStack-Request-ID on every API call",
        apply: |c, v| {
            c.global_request_id = non_empty(v);
            Ok(())
        },
    },
    Param {
        name: "ipa-debug",
        kind: Kind::Bool,
        default: "false",
        help: "debug logging",
        apply: |c, v| parse_bool_value(v).map(|x| c.debug = x),
    },
    Param {
        name: "ipa-http-request-timeout",
        kind: Kind::Seconds,
        default: "30",
        help: "timeout of each request to the conductor",
        apply: |c, v| parse_seconds(v).map(|x| c.http_request_timeout = x),
    },
    Param {
        name: "ipa-enable-auto-tls",
        kind: Kind::Bool,
        default: "true",
        help: "serve the agent API over HTTPS with a self-signed certificate",
        apply: |c, v| parse_bool_value(v).map(|x| c.enable_auto_tls = x),
    },
    Param {
        name: "ipa-ca-file",
        kind: Kind::Path,
        default: "the ramdisk's CA bundle",
        help: "CA certificates (PEM) that the conductor's certificate must chain to",
        apply: |c, v| {
            c.ca_file = non_empty(v).map(PathBuf::from);
            Ok(())
        },
    },
    Param {
        name: "ipa-enable-discard-erase",
        kind: Kind::Bool,
        default: "false",
        help: "let erase_devices use a verified secure discard before zero-fill",
        apply: |c, v| parse_bool_value(v).map(|x| c.enable_discard_erase = x),
    },
    Param {
        name: "ipa-guard-special-filesystems",
        kind: Kind::Bool,
        default: "true",
        help: "refuse to erase disks holding special filesystems (Ceph, ...) unless allowed",
        apply: |c, v| parse_bool_value(v).map(|x| c.guard_special_filesystems = x),
    },
    Param {
        name: "ipa-image-download-connection-retries",
        kind: Kind::Count,
        default: "9",
        help: "retries of an image download after connection errors, 5xx replies or stalls",
        apply: |c, v| parse_count(v).map(|x| c.image_download_retries = x),
    },
    Param {
        name: "ipa-image-download-connection-retry-interval",
        kind: Kind::Seconds,
        default: "10",
        help: "pause between image download retries",
        apply: |c, v| parse_seconds(v).map(|x| c.image_download_retry_interval = x),
    },
    Param {
        name: "ipa-image-download-connection-timeout",
        kind: Kind::Seconds,
        default: "60",
        help: "an image download that receives nothing for this long is retried",
        apply: |c, v| parse_seconds(v).map(|x| c.image_download_timeout = x),
    },
];

fn find_param(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name == name)
}

/// The `--help` text: every flag and parameter with its default.
pub fn usage() -> String {
    let mut out = String::from(
        "Usage: ferric-agent [inventory] [FLAGS]\n\
         Or:    ferric-agent write-image --help\n\
         Or:    ferric-agent erase --help\n\
         \n\
         Runs the deploy agent, or with `inventory` prints this machine's hardware\n\
         inventory as JSON. Parameters are read from the kernel command line\n\
         (NAME=VALUE) and may be overridden by flags of the same name\n\
         (--NAME VALUE or --NAME=VALUE; boolean flags alone mean true).\n\
         \n\
         Parameters:\n",
    );
    for p in PARAMS {
        out.push_str(&format!(
            "  --{} {}\n      {} (default: {})\n",
            p.name,
            p.kind.placeholder(),
            p.help,
            p.default
        ));
    }
    out.push_str(
        "\nOther flags:\n  \
         --cmdline-file PATH\n      read parameters from PATH instead of <host root>/proc/cmdline\n  \
         --host-root DIR\n      directory standing for the host's / (default: /)\n  \
         --help, -h\n      print this text\n  \
         --version, -V\n      print the version\n",
    );
    out
}

/// Parses the agent's arguments (without `argv[0]`), reads the kernel command line
/// they point at, and builds the configuration.
pub fn parse_invocation<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<Invocation, ConfigError> {
    let mut args = args.into_iter().peekable();
    if args.next_if(|first| first == "write-image").is_some() {
        return Ok(crate::write_image_cli::parse_invocation(args)?);
    }
    let parsed = parse_args(args)?;
    if parsed.help {
        return Ok(Invocation::Help(usage()));
    }
    if parsed.version {
        return Ok(Invocation::Version);
    }
    let host_root = parsed.host_root.unwrap_or_else(|| PathBuf::from("/"));
    let mut params = read_kernel_params(parsed.cmdline_file, &host_root)?;
    params.extend(parsed.flags);
    let config = AgentConfig::from_params(&params, host_root)?;
    if parsed.inventory {
        Ok(Invocation::Inventory(config))
    } else if config.api_urls.is_empty() && config.inspection_callback_urls.is_empty() {
        Err(ConfigError::NoApiUrl)
    } else {
        Ok(Invocation::Run(config))
    }
}

#[derive(Debug, Default)]
struct ParsedArgs {
    flags: KernelParams,
    cmdline_file: Option<PathBuf>,
    host_root: Option<PathBuf>,
    inventory: bool,
    help: bool,
    version: bool,
}

fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<ParsedArgs, ConfigError> {
    let mut out = ParsedArgs::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                out.help = true;
                continue;
            }
            "--version" | "-V" => {
                out.version = true;
                continue;
            }
            "inventory" if !out.inventory => {
                out.inventory = true;
                continue;
            }
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnexpectedArgument(arg));
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        match name {
            "cmdline-file" | "host-root" => {
                let value = match inline_value {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| missing_value(name))?,
                };
                let slot =
                    if name == "cmdline-file" { &mut out.cmdline_file } else { &mut out.host_root };
                *slot = Some(PathBuf::from(value));
            }
            _ => {
                let Some(param) = find_param(name) else {
                    return Err(ConfigError::UnknownFlag(arg));
                };
                let value = match inline_value {
                    Some(v) => v,
                    // A boolean flag alone means true; it takes the next argument as its
                    // value only when that argument is itself a boolean word.
                    None if param.kind == Kind::Bool => {
                        match args.next_if(|next| parse_bool(next).is_some()) {
                            Some(v) => v,
                            None => "true".to_owned(),
                        }
                    }
                    None => args.next().ok_or_else(|| missing_value(name))?,
                };
                out.flags.insert(param.name.to_owned(), value);
            }
        }
    }
    Ok(out)
}

fn missing_value(name: &str) -> ConfigError {
    ConfigError::MissingFlagValue(name.to_owned())
}

/// Reads the parameters from `--cmdline-file`, or else from `<host root>/proc/cmdline`.
///
/// A fake host tree without `proc/cmdline` (tests, `inventory` against a captured tree)
/// simply has no parameters; an explicitly named file must exist.
fn read_kernel_params(
    cmdline_file: Option<PathBuf>,
    host_root: &std::path::Path,
) -> Result<KernelParams, ConfigError> {
    match cmdline_file {
        Some(path) => match std::fs::read(&path) {
            Ok(raw) => Ok(parse_cmdline(&raw)),
            Err(source) => Err(ConfigError::ReadCmdline { path, source }),
        },
        None => {
            let host = HostRoot::new(host_root);
            match host.read_bytes("/proc/cmdline") {
                Ok(raw) => Ok(parse_cmdline(&raw)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(KernelParams::new()),
                Err(source) => {
                    Err(ConfigError::ReadCmdline { path: host.path("/proc/cmdline"), source })
                }
            }
        }
    }
}

impl AgentConfig {
    /// The erase settings every erase step starts from; the node adds its own.
    pub fn erase_config(&self) -> crate::erase::run::EraseConfig {
        crate::erase::run::EraseConfig {
            enable_discard_erase: self.enable_discard_erase,
            guard_special_filesystems: self.guard_special_filesystems,
        }
    }

    /// Builds the configuration from named parameters (kernel command line already
    /// overlaid by flags). Unknown names are ignored, as IPA ignores kernel parameters
    /// meant for others; every malformed value is reported, not just the first.
    pub fn from_params(params: &KernelParams, host_root: PathBuf) -> Result<Self, ConfigError> {
        let mut config = AgentConfig { host_root, ..AgentConfig::default() };
        let mut invalid = Vec::new();
        for param in PARAMS {
            let Some(value) = params.get(param.name) else { continue };
            if let Err(problem) = (param.apply)(&mut config, value) {
                invalid.push(InvalidParameter { name: param.name, value: value.clone(), problem });
            }
        }
        if invalid.is_empty() {
            // IPA's rule: naming collectors without a callback URL means "report to the
            // API we were given" (Ironic's own inspection endpoint).
            if config.inspection_callback_urls.is_empty()
                && params.get("ipa-inspection-collectors").is_some()
            {
                if let Some(url) = config.api_urls.first().and_then(continue_inspection_url) {
                    config.inspection_callback_urls = vec![url];
                }
            }
            Ok(config)
        } else {
            Err(ConfigError::InvalidParameters(invalid))
        }
    }
}

impl AgentConfig {
    /// The download settings every image write starts from: the agent's CA bundle and
    /// `ipa-insecure` (the ramdisk's one trust decision), and the retry flags. The
    /// image's own auth and proxies are added per image.
    pub fn image_http_options(&self) -> crate::image::source::HttpOptions {
        crate::image::source::HttpOptions {
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            retries: self.image_download_retries,
            retry_interval: self.image_download_retry_interval,
            stall_timeout: self.image_download_timeout,
            ..crate::image::source::HttpOptions::default()
        }
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// An empty value means "not set", so a flag can clear what the cmdline set.
fn optional<T>(
    value: &str,
    parse: fn(&str) -> Result<T, ValueProblem>,
) -> Result<Option<T>, ValueProblem> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn parse_bool_value(value: &str) -> Result<bool, ValueProblem> {
    parse_bool(value).ok_or(ValueProblem::NotBoolean)
}

fn parse_api_version(value: &str) -> Result<ApiVersion, ValueProblem> {
    value.parse().map_err(|_| ValueProblem::NotApiVersion)
}

/// oslo.utils' `bool_from_string` in strict mode: `None` for anything it would reject.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Seconds as a non-negative integer or decimal (`30`, `0.5`); no sign, exponent, or
/// `inf`, which a float parser would otherwise let through.
fn parse_seconds(value: &str) -> Result<Duration, ValueProblem> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + frac.len() == 0 || !digits(whole) || !digits(frac) {
        return Err(ValueProblem::NotSeconds);
    }
    let secs: u64 =
        if whole.is_empty() { 0 } else { whole.parse().map_err(|_| ValueProblem::NotSeconds)? };
    // Nanoseconds from the first nine fractional digits; finer precision is meaningless.
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Ok(Duration::new(secs, nanos))
}

/// A count as plain decimal digits, no sign.
fn parse_count(value: &str) -> Result<u32, ValueProblem> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueProblem::NotCount);
    }
    value.parse().map_err(|_| ValueProblem::NotCount)
}

fn parse_port(value: &str) -> Result<u16, ValueProblem> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueProblem::NotPort);
    }
    match value.parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(ValueProblem::NotPort),
    }
}

/// An IP address; IPv6 may be bracketed (`[fd00::1]`) as in URLs.
fn parse_ip(value: &str) -> Result<IpAddr, ValueProblem> {
    if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ValueProblem::NotIpAddress);
    }
    value.parse().map_err(|_| ValueProblem::NotIpAddress)
}

/// A comma-separated list of http(s) URLs. An empty value is an empty list, so a flag
/// `--ipa-api-url=` can clear what the kernel command line set.
/// `<api>/v1/continue_inspection`, keeping any path prefix of `api`.
fn continue_inspection_url(api: &reqwest::Url) -> Option<reqwest::Url> {
    let mut url = api.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().ok()?.pop_if_empty().extend(["v1", "continue_inspection"]);
    Some(url)
}

/// A comma-separated list of names; blanks around and between items are dropped.
fn parse_names(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
}

fn parse_urls(value: &str) -> Result<Vec<reqwest::Url>, ValueProblem> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value.split(',').map(parse_url).collect()
}

fn parse_url(item: &str) -> Result<reqwest::Url, ValueProblem> {
    let item = item.trim();
    if item.is_empty() {
        return Err(ValueProblem::EmptyUrl);
    }
    if item.eq_ignore_ascii_case("mdns") {
        return Err(ValueProblem::MdnsUnsupported);
    }
    let url = reqwest::Url::parse(item)
        .map_err(|e| ValueProblem::BadUrl { url: item.to_owned(), reason: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValueProblem::UnsupportedScheme(item.to_owned()));
    }
    if url.host().is_none() {
        return Err(ValueProblem::BadUrl { url: item.to_owned(), reason: "no host".to_owned() });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn params(pairs: &[(&str, &str)]) -> KernelParams {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn config(pairs: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_params(&params(pairs), PathBuf::from("/"))
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn invalid(err: ConfigError) -> Vec<InvalidParameter> {
        match err {
            ConfigError::InvalidParameters(list) => list,
            other => panic!("expected invalid parameters, got {other:?}"),
        }
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn defaults_match_ipa() {
        let c = config(&[]).unwrap();
        assert!(c.api_urls.is_empty());
        assert!(c.inspection_callback_urls.is_empty());
        assert_eq!(c.inspection_collectors, ["default", "logs"]);
        assert!(!c.collect_lldp);
        assert_eq!(c.lldp_timeout, Duration::from_secs(30));
        assert_eq!(c.bootif, None);
        assert!(!c.insecure);
        assert_eq!(c.lookup_timeout, Duration::from_secs(600));
        assert_eq!(c.lookup_interval, Duration::from_secs(1));
        assert_eq!(c.listen_host, "::".parse::<IpAddr>().unwrap());
        assert_eq!(c.listen_port, 9999);
        assert_eq!(c.advertise_host, None);
        assert_eq!(c.advertise_port, 9999);
        assert_eq!(c.network_interface, None);
        assert_eq!(c.agent_token, None);
        assert_eq!(c.ironic_api_version, None);
        assert_eq!(c.global_request_id, None);
        assert!(!c.debug);
        assert_eq!(c.http_request_timeout, Duration::from_secs(30));
        assert!(c.enable_auto_tls);
        assert_eq!(c.ca_file, None);
        assert_eq!(c.host_root, PathBuf::from("/"));
        assert_eq!(c.image_download_retries, 9);
        assert_eq!(c.image_download_retry_interval, Duration::from_secs(10));
        assert_eq!(c.image_download_timeout, Duration::from_secs(60));
        assert!(!c.enable_discard_erase);
        assert!(c.guard_special_filesystems);
        assert_eq!(c.erase_config(), crate::erase::run::EraseConfig::default());
    }

    type Check = fn(&AgentConfig) -> bool;

    #[test]
    fn every_parameter_accepts_valid_values() {
        let table: &[(&str, &str, Check)] = &[
            ("ipa-api-url", "http://10.0.0.1:6385", |c| {
                c.api_urls == [url("http://10.0.0.1:6385")]
            }),
            ("ipa-api-url", "https://a.example:6385/baremetal,http://[fd00::1]:6385", |c| {
                c.api_urls
                    == [url("https://a.example:6385/baremetal"), url("http://[fd00::1]:6385")]
            }),
            ("ipa-api-url", "", |c| c.api_urls.is_empty()),
            ("ipa-inspection-callback-url", "http://10.0.0.1:6385/v1/continue_inspection", |c| {
                c.inspection_callback_urls == [url("http://10.0.0.1:6385/v1/continue_inspection")]
            }),
            ("ipa-inspection-collectors", " default, lldp,,logs ", |c| {
                c.inspection_collectors == ["default", "lldp", "logs"]
            }),
            ("ipa-inspection-collectors", "", |c| c.inspection_collectors.is_empty()),
            ("ipa-collect-lldp", "1", |c| c.collect_lldp),
            ("ipa-lldp-timeout", "2.5", |c| c.lldp_timeout == Duration::from_millis(2500)),
            ("BOOTIF", "01-52-54-00-12-34-56", |c| {
                c.bootif.as_deref() == Some("01-52-54-00-12-34-56")
            }),
            ("BOOTIF", "52:54:00:12:34:56", |c| c.bootif.as_deref() == Some("52:54:00:12:34:56")),
            ("ipa-insecure", "1", |c| c.insecure),
            ("ipa-lookup-timeout", "120", |c| c.lookup_timeout == Duration::from_secs(120)),
            ("ipa-lookup-timeout", "0", |c| c.lookup_timeout == Duration::ZERO),
            ("ipa-lookup-interval", "2.5", |c| c.lookup_interval == Duration::from_millis(2500)),
            ("ipa-lookup-interval", ".25", |c| c.lookup_interval == Duration::from_millis(250)),
            ("ipa-listen-host", "0.0.0.0", |c| c.listen_host == IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ("ipa-listen-host", "[fd00::5]", |c| {
                c.listen_host == "fd00::5".parse::<IpAddr>().unwrap()
            }),
            ("ipa-listen-port", "1", |c| c.listen_port == 1),
            ("ipa-listen-port", "65535", |c| c.listen_port == 65535),
            ("ipa-advertise-host", "192.0.2.7", |c| {
                c.advertise_host == Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
            }),
            ("ipa-advertise-port", "8443", |c| c.advertise_port == 8443),
            ("ipa-network-interface", "eth1", |c| c.network_interface.as_deref() == Some("eth1")),
            ("ipa-agent-token", "abc", |c| c.agent_token.as_deref() == Some("abc")),
            ("ipa-agent-token", "", |c| c.agent_token.is_none()),
            ("ipa-ironic-api-version", "1.68", |c| {
                c.ironic_api_version == Some(ApiVersion::new(1, 68))
            }),
            ("ipa-global-request-id", "req-1234", |c| {
                c.global_request_id.as_deref() == Some("req-1234")
            }),
            ("ipa-debug", "yes", |c| c.debug),
            ("ipa-http-request-timeout", "45", |c| {
                c.http_request_timeout == Duration::from_secs(45)
            }),
            ("ipa-enable-auto-tls", "0", |c| !c.enable_auto_tls),
            ("ipa-enable-discard-erase", "1", |c| c.erase_config().enable_discard_erase),
            ("ipa-guard-special-filesystems", "false", |c| {
                !c.erase_config().guard_special_filesystems
            }),
            ("ipa-ca-file", "/etc/ferric/ca.pem", |c| {
                c.ca_file.as_deref() == Some(std::path::Path::new("/etc/ferric/ca.pem"))
            }),
            ("ipa-image-download-connection-retries", "0", |c| c.image_download_retries == 0),
            ("ipa-image-download-connection-retries", "25", |c| c.image_download_retries == 25),
            ("ipa-image-download-connection-retry-interval", "2.5", |c| {
                c.image_download_retry_interval == Duration::from_millis(2500)
            }),
            ("ipa-image-download-connection-timeout", "120", |c| {
                c.image_download_timeout == Duration::from_secs(120)
            }),
        ];
        for (name, value, check) in table {
            let c = config(&[(name, value)])
                .unwrap_or_else(|e| panic!("{name}={value:?} rejected: {e}"));
            assert!(check(&c), "{name}={value:?} gave {c:?}");
        }
        // Every parameter of the contract appears in the table.
        for p in PARAMS {
            assert!(table.iter().any(|(n, _, _)| *n == p.name), "{} untested", p.name);
        }
    }

    #[test]
    fn every_parameter_rejects_malformed_values() {
        let table: &[(&str, &str, ValueProblem)] = &[
            ("ipa-api-url", "mdns", ValueProblem::MdnsUnsupported),
            ("ipa-api-url", "http://a:1,mdns", ValueProblem::MdnsUnsupported),
            ("ipa-api-url", "http://a:1,", ValueProblem::EmptyUrl),
            ("ipa-api-url", "ftp://a/", ValueProblem::UnsupportedScheme("ftp://a/".into())),
            ("ipa-inspection-callback-url", "mdns", ValueProblem::MdnsUnsupported),
            ("ipa-insecure", "maybe", ValueProblem::NotBoolean),
            ("ipa-insecure", "", ValueProblem::NotBoolean),
            ("ipa-lookup-timeout", "-1", ValueProblem::NotSeconds),
            ("ipa-lookup-timeout", "1e3", ValueProblem::NotSeconds),
            ("ipa-lookup-timeout", "inf", ValueProblem::NotSeconds),
            ("ipa-lookup-timeout", "99999999999999999999999", ValueProblem::NotSeconds),
            ("ipa-lookup-interval", ".", ValueProblem::NotSeconds),
            ("ipa-lookup-interval", "1.2.3", ValueProblem::NotSeconds),
            ("ipa-listen-host", "localhost", ValueProblem::NotIpAddress),
            ("ipa-listen-host", "[10.0.0.1]", ValueProblem::NotIpAddress),
            ("ipa-listen-port", "0", ValueProblem::NotPort),
            ("ipa-listen-port", "65536", ValueProblem::NotPort),
            ("ipa-listen-port", "+80", ValueProblem::NotPort),
            ("ipa-advertise-host", "10.0.0.300", ValueProblem::NotIpAddress),
            ("ipa-advertise-port", "http", ValueProblem::NotPort),
            ("ipa-ironic-api-version", "latest", ValueProblem::NotApiVersion),
            ("ipa-debug", "2", ValueProblem::NotBoolean),
            ("ipa-http-request-timeout", "30s", ValueProblem::NotSeconds),
            ("ipa-enable-auto-tls", "enabled", ValueProblem::NotBoolean),
            ("ipa-image-download-connection-retries", "-1", ValueProblem::NotCount),
            ("ipa-image-download-connection-retries", "3.5", ValueProblem::NotCount),
            ("ipa-image-download-connection-retries", "", ValueProblem::NotCount),
            ("ipa-image-download-connection-retries", "99999999999", ValueProblem::NotCount),
            ("ipa-image-download-connection-retry-interval", "10s", ValueProblem::NotSeconds),
            ("ipa-image-download-connection-timeout", "-5", ValueProblem::NotSeconds),
        ];
        for (name, value, problem) in table {
            let got = invalid(config(&[(name, value)]).unwrap_err());
            assert_eq!(
                got,
                [InvalidParameter { name, value: value.to_string(), problem: problem.clone() }],
                "{name}={value:?}"
            );
        }
        let bad_url = invalid(config(&[("ipa-api-url", "http://")]).unwrap_err());
        assert!(matches!(bad_url[0].problem, ValueProblem::BadUrl { .. }), "{bad_url:?}");
    }

    #[test]
    fn inspect_collectors_without_a_callback_url_report_to_the_api() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let table: &[Case] = &[
            (
                &[
                    ("ipa-api-url", "http://10.0.0.1:6385"),
                    ("ipa-inspection-collectors", "default"),
                ],
                &["http://10.0.0.1:6385/v1/continue_inspection"],
            ),
            (
                &[
                    ("ipa-api-url", "https://h.example/baremetal/,http://other:6385"),
                    ("ipa-inspection-collectors", "default,logs"),
                ],
                &["https://h.example/baremetal/v1/continue_inspection"],
            ),
            (
                &[
                    ("ipa-api-url", "http://10.0.0.1:6385"),
                    ("ipa-inspection-collectors", "default"),
                    ("ipa-inspection-callback-url", "http://10.0.0.2:5050/v1/continue"),
                ],
                &["http://10.0.0.2:5050/v1/continue"],
            ),
            // Without collectors named, an API URL does not turn inspection on...
            (&[("ipa-api-url", "http://10.0.0.1:6385")], &[]),
            // ...and collectors without an API URL have nowhere to report to.
            (&[("ipa-inspection-collectors", "default")], &[]),
        ];
        for (pairs, want) in table {
            let c = config(pairs).unwrap();
            let got: Vec<&str> = c.inspection_callback_urls.iter().map(|u| u.as_str()).collect();
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    #[test]
    fn booleans_follow_oslo_strict_spellings() {
        for (value, want) in [
            ("1", true),
            ("t", true),
            ("true", true),
            ("TRUE", true),
            ("on", true),
            ("y", true),
            ("Yes", true),
            ("0", false),
            ("f", false),
            ("False", false),
            ("off", false),
            ("n", false),
            ("NO", false),
        ] {
            assert_eq!(config(&[("ipa-debug", value)]).unwrap().debug, want, "{value}");
        }
    }

    #[test]
    fn reports_every_malformed_parameter_with_name_and_value() {
        let err = config(&[
            ("ipa-listen-port", "0"),
            ("ipa-insecure", "perhaps"),
            ("ipa-api-url", "mdns"),
            ("ipa-lookup-timeout", "10"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "ipa-listen-port=\"0\"",
            "ipa-insecure=\"perhaps\"",
            "ipa-api-url=\"mdns\"",
            "mDNS discovery is not supported",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert!(!text.contains("ipa-lookup-timeout"), "{text}");
        assert_eq!(invalid(err).len(), 3);
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        let c = config(&[
            ("ipa-inspection-benchmarks", "cpu"),
            ("console", "ttyS0"),
            ("ipa-debug", "1"),
        ]);
        assert!(c.unwrap().debug);
    }

    fn cmdline_dir(cmdline: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cmdline"), cmdline).unwrap();
        dir
    }

    fn run(invocation: Invocation) -> AgentConfig {
        match invocation {
            Invocation::Run(c) => c,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_cmdline_under_the_host_root() {
        let dir = cmdline_dir(
            "BOOT_IMAGE=/vmlinuz ro quiet ipa-api-url=http://10.1.1.1:6385 ipa-debug=1 \
             ipa-debug=0 BOOTIF=01-aa-bb-cc-dd-ee-ff\n",
        );
        let root = dir.path().to_str().unwrap();
        let c = run(parse_invocation(args(&["--host-root", root])).unwrap());
        assert_eq!(c.api_urls, [url("http://10.1.1.1:6385")]);
        assert!(!c.debug, "the later duplicate must win");
        assert_eq!(c.bootif.as_deref(), Some("01-aa-bb-cc-dd-ee-ff"));
        assert_eq!(c.host_root, dir.path());
    }

    #[test]
    fn flags_override_the_cmdline_in_both_forms() {
        let dir = cmdline_dir(
            "ipa-api-url=http://10.1.1.1:6385 ipa-listen-port=1234 ipa-insecure=0 \
             ipa-global-request-id=from-cmdline",
        );
        let root = format!("--host-root={}", dir.path().display());
        let c = run(parse_invocation(args(&[
            &root,
            "--ipa-api-url",
            "https://10.2.2.2:6385",
            "--ipa-listen-port=4321",
            "--ipa-insecure",
            "--BOOTIF",
            "aa:bb:cc:dd:ee:ff",
        ]))
        .unwrap());
        assert_eq!(c.api_urls, [url("https://10.2.2.2:6385")]);
        assert_eq!(c.listen_port, 4321);
        assert!(c.insecure);
        assert_eq!(c.bootif.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(c.global_request_id.as_deref(), Some("from-cmdline"));
    }

    #[test]
    fn image_download_flags_override_the_cmdline_and_reach_the_http_options() {
        let dir = cmdline_dir(
            "ipa-api-url=http://10.1.1.1:6385 ipa-image-download-connection-retries=3 \
             ipa-image-download-connection-retry-interval=7 ipa-insecure=1",
        );
        let root = format!("--host-root={}", dir.path().display());
        let c = run(parse_invocation(args(&[
            &root,
            "--ipa-image-download-connection-retries",
            "5",
            "--ipa-image-download-connection-timeout=90",
        ]))
        .unwrap());
        let http = c.image_http_options();
        assert_eq!(http.retries, 5);
        assert_eq!(http.retry_interval, Duration::from_secs(7));
        assert_eq!(http.stall_timeout, Duration::from_secs(90));
        assert!(http.insecure);
        assert_eq!(http.authorization, None);
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let base = ["--ipa-api-url", "http://h:1", "--host-root", "/nonexistent-ferric-root"];
        let cases: &[(&[&str], bool, bool)] = &[
            (&["--ipa-debug"], true, true),
            (&["--ipa-debug=no"], false, true),
            (&["--ipa-debug", "off"], false, true),
            (&["--ipa-debug", "--ipa-enable-auto-tls", "false"], true, false),
            (&["--ipa-enable-auto-tls=0", "--ipa-enable-auto-tls"], false, true),
        ];
        for (flags, debug, auto_tls) in cases {
            let mut all = args(&base);
            all.extend(args(flags));
            let c = run(parse_invocation(all).unwrap());
            assert_eq!((c.debug, c.enable_auto_tls), (*debug, *auto_tls), "{flags:?}");
        }
        // The word after a bare boolean flag is not swallowed unless it is a boolean.
        let inv = parse_invocation(args(&["--ipa-debug", "inventory", "--host-root", "/x"]));
        assert!(matches!(inv, Ok(Invocation::Inventory(ref c)) if c.debug), "{inv:?}");
    }

    #[test]
    fn cmdline_file_replaces_proc_cmdline() {
        let dir = cmdline_dir("ipa-api-url=http://from-proc:1");
        let file = dir.path().join("params.txt");
        std::fs::write(&file, "ipa-api-url=http://from-file:2 ipa-lookup-timeout=5").unwrap();
        let c = run(parse_invocation(args(&[
            "--host-root",
            dir.path().to_str().unwrap(),
            "--cmdline-file",
            file.to_str().unwrap(),
        ]))
        .unwrap());
        assert_eq!(c.api_urls, [url("http://from-file:2")]);
        assert_eq!(c.lookup_timeout, Duration::from_secs(5));

        let missing = dir.path().join("missing.txt");
        let err =
            parse_invocation(args(&["--cmdline-file", missing.to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, ConfigError::ReadCmdline { ref path, .. } if *path == missing));
    }

    #[test]
    fn subcommands_help_and_version() {
        let empty = tempfile::tempdir().unwrap();
        let root = empty.path().to_str().unwrap();
        // No proc/cmdline in the tree: no parameters, which `inventory` accepts...
        let inv = parse_invocation(args(&["inventory", "--host-root", root])).unwrap();
        assert!(matches!(inv, Invocation::Inventory(ref c) if c.api_urls.is_empty()));
        // ...but running the agent needs somewhere to call home.
        let err = parse_invocation(args(&["--host-root", root])).unwrap_err();
        assert!(matches!(err, ConfigError::NoApiUrl), "{err:?}");
        let c = run(parse_invocation(args(&[
            "--host-root",
            root,
            "--ipa-inspection-callback-url",
            "http://h:5050/v1/continue",
        ]))
        .unwrap());
        assert_eq!(c.inspection_callback_urls, [url("http://h:5050/v1/continue")]);

        assert!(matches!(parse_invocation(args(&["--version"])).unwrap(), Invocation::Version));
        match parse_invocation(args(&["inventory", "--help"])).unwrap() {
            Invocation::Help(text) => assert_eq!(text, usage()),
            other => panic!("expected help, got {other:?}"),
        }
    }

    #[test]
    fn usage_lists_every_parameter_with_its_default() {
        let text = usage();
        for p in PARAMS {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("--{} ", p.name)))
                .unwrap_or_else(|| panic!("--{} missing from usage", p.name));
            let help = text.lines().nth(line + 1).unwrap();
            assert!(help.contains(&format!("(default: {})", p.default)), "{help}");
        }
        for flag in ["--cmdline-file", "--host-root", "--help", "--version"] {
            assert!(text.contains(flag), "{flag} missing from usage");
        }
    }

    #[test]
    fn argument_errors_name_the_culprit() {
        let cases: &[(&[&str], &str)] = &[
            (&["--ipa-bogus=1"], "unknown flag \"--ipa-bogus=1\""),
            (&["--api-url", "http://h:1"], "unknown flag \"--api-url\""),
            (&["-x"], "unexpected argument \"-x\""),
            (&["inventory", "inventory"], "unexpected argument \"inventory\""),
            (&["deploy"], "unexpected argument \"deploy\""),
            (&["--ipa-api-url"], "flag --ipa-api-url needs a value"),
            (&["--host-root"], "flag --host-root needs a value"),
        ];
        for (list, want) in cases {
            let err = parse_invocation(args(list)).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(want), "{list:?}: {text:?} does not start with {want:?}");
        }
    }

    #[test]
    fn malformed_flag_values_are_reported_like_cmdline_ones() {
        let err = parse_invocation(args(&[
            "--host-root",
            "/nonexistent-ferric-root",
            "--ipa-listen-port",
            "99999",
            "--ipa-api-url=http://h:1",
        ]))
        .unwrap_err();
        let list = invalid(err);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name, list[0].value.as_str()), ("ipa-listen-port", "99999"));
    }

    /// xorshift64: a tiny deterministic generator so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let names: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
        let fragments = [
            "",
            "=",
            ",",
            ".",
            "-",
            "[",
            "]",
            "::",
            "1",
            "0",
            "65536",
            "http://",
            "https://h:1",
            "mdns",
            "\u{fffd}",
            "é",
            "yes",
            " ",
        ];
        for _ in 0..3000 {
            let mut raw = Vec::new();
            for _ in 0..(rng.next() % 8) {
                match rng.next() % 3 {
                    0 => raw.extend((0..rng.next() % 12).map(|_| rng.next() as u8)),
                    _ => {
                        raw.extend(rng.pick(&names).as_bytes());
                        raw.push(b'=');
                        for _ in 0..(rng.next() % 4) {
                            raw.extend(rng.pick(&fragments).as_bytes());
                        }
                    }
                }
                raw.push(b' ');
            }
            let params = parse_cmdline(&raw);
            match AgentConfig::from_params(&params, PathBuf::from("/")) {
                Ok(c) => assert!(c.listen_port >= 1 && c.advertise_port >= 1),
                Err(ConfigError::InvalidParameters(list)) => {
                    assert!(!list.is_empty());
                    for p in list {
                        assert_eq!(params.get(p.name), Some(&p.value));
                    }
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }

            let flag_words = ["--ipa-debug", "--ipa-api-url", "inventory", "--", "-", "--="];
            // The host root comes first so no random flag can take it as its value.
            let argv: Vec<String> = args(&["--host-root", "/nonexistent-ferric-root"])
                .into_iter()
                .chain((0..rng.next() % 5).map(|_| {
                    match rng.next() % 2 {
                        0 => rng.pick(&flag_words).to_owned(),
                        _ => {
                            String::from_utf8_lossy(&raw[..(rng.next() as usize % (raw.len() + 1))])
                                .into_owned()
                        }
                    }
                }))
                .collect();
            // Any outcome but a panic is acceptable, as long as `Run` keeps its promise.
            if let Ok(Invocation::Run(c)) = parse_invocation(argv) {
                assert!(!c.api_urls.is_empty() || !c.inspection_callback_urls.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_masks_the_agent_token() {
        let config = AgentConfig {
            agent_token: Some("s3cret-token-value-that-must-not-leak".into()),
            ..AgentConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("agent_token: Some(\"******\")"), "{text}");
    }
}
