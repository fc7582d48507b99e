//! The operator CLI: `ferric [--url URL] [-f table|json] node …|port …`.
//!
//! Argument names follow the `baremetal` CLI (python-ironicclient) where they mean the same
//! thing, so operators can move between the two. The HTTP side is in [`client`], the
//! command handlers in [`commands`], tables in [`table`], and `--wait` in [`wait`].
//!
//! Request and reply bodies are handled as `serde_json::Value` here; the typed node and
//! port wire structs of `ferric_shared` (`node.rs`, `port.rs`) can replace them field by
//! field without changing the command surface.

pub mod client;
pub mod commands;
pub mod erase_report;
pub mod inventory;
pub mod kv;
pub mod table;
pub mod wait;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::{ApiClient, ApiClientError};
pub use commands::{run, CliError, Console};

/// Where the API listens when neither `--url` nor `FERRIC_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:6385";

/// `ferric`: operate a Ferric (or any Ironic-compatible) bare-metal API.
#[derive(Debug, Parser)]
#[command(name = "ferric", version, about = "Ferric bare-metal provisioning: operator CLI")]
pub struct Cli {
    /// The API's base URL.
    #[arg(long, env = "FERRIC_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Extra trusted CA certificates (PEM) for an `https` API URL.
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Milliseconds between polls of `--wait`.
    #[arg(long, default_value_t = 2000, hide = true, global = true)]
    pub poll_interval_ms: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Nodes: enrol, inspect, provision and operate servers.
    #[command(subcommand)]
    Node(Box<NodeCommand>),
    /// Ports: the MAC addresses that identify a node's NICs.
    #[command(subcommand)]
    Port(PortCommand),
    /// Run the conductor service (the API, the worker, iPXE scripts, images), or with
    /// `status`, show its periodic tasks.
    Conductor(ConductorArgs),
}

/// `ferric conductor [--config FILE] [--data-dir DIR] [--listen ADDR]`, or
/// `ferric conductor status [--config FILE] [--data-dir DIR]`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConductorArgs {
    /// Without a subcommand, the service runs.
    #[command(subcommand)]
    pub action: Option<ConductorAction>,
    /// Configuration file (TOML); every key has a default, see `ferric.example.toml`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the database and images live (default `./ferric-data`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the API (default 127.0.0.1:6385).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConductorAction {
    /// Show the last run of each periodic reconciler (power sync, wait-state timeouts).
    ///
    /// Read from `<data_dir>/status.json`, which the running service rewrites after every
    /// run, so this works without the API (and while it is down).
    Status(ConductorStatusArgs),
}

/// `ferric conductor status [--config FILE] [--data-dir DIR]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConductorStatusArgs {
    /// The service's configuration file; its `data_dir` locates the status file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The service's data directory (default `./ferric-data`; wins over `--config`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Enrol a node (it starts in `enroll`).
    Create(NodeCreate),
    /// List nodes.
    List(NodeList),
    /// Show one node.
    Show(NodeShow),
    /// Set node fields (JSON-patch `add`).
    Set(NodeSet),
    /// Remove node fields (JSON-patch `remove`).
    Unset(NodeUnset),
    /// Delete nodes.
    Delete(NodeDelete),
    /// enroll → manageable (verifies BMC access).
    Manage(ProvisionArgs),
    /// manageable → available (through automated cleaning).
    Provide(ProvisionArgs),
    /// available → active.
    Deploy(DeployArgs),
    /// active → available (through automated cleaning).
    Undeploy(ProvisionArgs),
    /// Redeploy an active (or failed) node.
    Rebuild(DeployArgs),
    /// Manual cleaning of a manageable node with the given steps.
    Clean(CleanArgs),
    /// Hardware inspection of a manageable node.
    Inspect(ProvisionArgs),
    /// Abort the operation a node is waiting in.
    Abort(NodeRef),
    /// What the node's last inspection found: CPU, memory, disks, NICs, BMC.
    Inventory(NodeRef),
    /// Resume cleaning held by a `conductor.hold` step (`clean hold` → `clean wait`).
    Unhold(NodeRef),
    /// Check each interface of a node's driver.
    Validate(NodeRef),
    /// Power a node on or off, or reboot it.
    #[command(subcommand)]
    Power(PowerCommand),
    /// Reboot a node (same as `node power reboot`).
    Reboot(RebootArgs),
    /// Put a node into or out of maintenance.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Set a node's boot device.
    #[command(subcommand, name = "boot-device")]
    BootDevice(BootDeviceCommand),
}

/// A node by UUID or name.
#[derive(Debug, Args)]
pub struct NodeRef {
    /// Node UUID or name.
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct NodeCreate {
    /// Hardware type, e.g. `fake-hardware`, `ipmi`, `redfish`.
    #[arg(long)]
    pub driver: String,
    #[arg(long)]
    pub name: Option<String>,
    /// UUID of the new node (generated by the API when absent).
    #[arg(long)]
    pub uuid: Option<String>,
    #[arg(long = "resource-class")]
    pub resource_class: Option<String>,
    #[arg(long = "driver-info", value_name = "KEY=VALUE")]
    pub driver_info: Vec<String>,
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[arg(long = "instance-info", value_name = "KEY=VALUE")]
    pub instance_info: Vec<String>,
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    #[arg(long = "boot-interface")]
    pub boot_interface: Option<String>,
    #[arg(long = "deploy-interface")]
    pub deploy_interface: Option<String>,
    #[arg(long = "management-interface")]
    pub management_interface: Option<String>,
    #[arg(long = "power-interface")]
    pub power_interface: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeList {
    /// More columns (driver, resource class, target state, last error).
    #[arg(long)]
    pub long: bool,
    #[arg(long = "provision-state")]
    pub provision_state: Option<String>,
    /// Only nodes in maintenance.
    #[arg(long, conflicts_with = "no_maintenance")]
    pub maintenance: bool,
    /// Only nodes not in maintenance.
    #[arg(long = "no-maintenance")]
    pub no_maintenance: bool,
    #[arg(long)]
    pub driver: Option<String>,
    #[arg(long = "resource-class")]
    pub resource_class: Option<String>,
    /// At most this many nodes (one page); all pages are fetched without it.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this node UUID.
    #[arg(long)]
    pub marker: Option<String>,
    /// Sort as `KEY[:asc|desc]`.
    #[arg(long, value_name = "KEY[:DIR]")]
    pub sort: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeShow {
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Only these fields (repeatable).
    #[arg(long = "field", value_name = "FIELD")]
    pub fields: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeSet {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub driver: Option<String>,
    #[arg(long = "resource-class")]
    pub resource_class: Option<String>,
    #[arg(long = "driver-info", value_name = "KEY=VALUE")]
    pub driver_info: Vec<String>,
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[arg(long = "instance-info", value_name = "KEY=VALUE")]
    pub instance_info: Vec<String>,
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeUnset {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(long)]
    pub name: bool,
    #[arg(long = "resource-class")]
    pub resource_class: bool,
    #[arg(long = "driver-info", value_name = "KEY")]
    pub driver_info: Vec<String>,
    #[arg(long = "property", value_name = "KEY")]
    pub properties: Vec<String>,
    #[arg(long = "instance-info", value_name = "KEY")]
    pub instance_info: Vec<String>,
    #[arg(long = "extra", value_name = "KEY")]
    pub extra: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeDelete {
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// `--wait [SECONDS]`: poll until the verb's stable target; 0 or no value waits for ever.
#[derive(Debug, Args)]
pub struct WaitArg {
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "0",
    )]
    pub wait: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    /// A JSON object, a file whose content is a base64 gzipped ISO, or a URL.
    #[arg(long = "config-drive", value_name = "JSON|PATH|URL")]
    pub config_drive: Option<String>,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    /// The steps as JSON, `@FILE`, or `-` for standard input.
    #[arg(long = "clean-steps", value_name = "JSON|@FILE|-", required = true)]
    pub clean_steps: String,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Subcommand)]
pub enum PowerCommand {
    On(PowerArgs),
    Off(PowerOffArgs),
    Reboot(RebootArgs),
}

#[derive(Debug, Args)]
pub struct PowerArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Seconds the BMC may take (API 1.27).
    #[arg(long = "power-timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub power_timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct PowerOffArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Ask the OS to shut down (ACPI) instead of cutting power.
    #[arg(long)]
    pub soft: bool,
    #[arg(long = "power-timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub power_timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(long)]
    pub soft: bool,
    #[arg(long = "power-timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub power_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    Set(MaintenanceSet),
    Unset(NodeRef),
}

#[derive(Debug, Args)]
pub struct MaintenanceSet {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BootDeviceCommand {
    Set(BootDeviceSet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    Safe,
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
            BootDevice::Safe => "safe",
        }
    }
}

#[derive(Debug, Args)]
pub struct BootDeviceSet {
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(value_enum, value_name = "DEVICE")]
    pub device: BootDevice,
    /// Keep the device for every boot, not just the next one.
    #[arg(long)]
    pub persistent: bool,
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Create a port: `port create MAC --node NODE`.
    Create(PortCreate),
    /// List ports.
    List(PortList),
    /// Show one port.
    Show(PortRef),
    /// Delete ports.
    Delete(PortDelete),
}

#[derive(Debug, Args)]
pub struct PortCreate {
    /// MAC address of the NIC.
    #[arg(value_name = "MAC")]
    pub address: String,
    /// The node (UUID, or a name that is looked up).
    #[arg(long)]
    pub node: String,
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Whether the NIC PXE boots (API default: true).
    #[arg(long = "pxe-enabled", value_name = "BOOL")]
    pub pxe_enabled: Option<bool>,
}

#[derive(Debug, Args)]
pub struct PortList {
    #[arg(long)]
    pub long: bool,
    /// Only the ports of this node.
    #[arg(long)]
    pub node: Option<String>,
}

#[derive(Debug, Args)]
pub struct PortRef {
    #[arg(value_name = "PORT")]
    pub port: String,
}

#[derive(Debug, Args)]
pub struct PortDelete {
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<String>,
}

#[cfg(test)]
mod tests;
