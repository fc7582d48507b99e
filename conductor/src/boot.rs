//! iPXE boot scripts, served over plain HTTP.
//!
//! DHCP and TFTP stay outside the conductor (as in Ironic): the DHCP server hands iPXE
//! the URL of `/boot.ipxe` (or TFTP serves a copy of it). That chain script loads
//! `/boot/${mac:hexhyp}.ipxe` — the MAC iPXE booted from, as lower-case hex pairs joined
//! by `-`, which needs no escaping in a URL. The per-node route also accepts `:` as
//! separator and upper case.
//!
//! A dnsmasq setup (addresses are examples; `ipxe.efi` and `undionly.kpxe` come from the
//! iPXE project): firmware PXE gets iPXE over TFTP, iPXE itself gets the chain script.
//!
//! ```text
//! enable-tftp
//! tftp-root=/srv/tftp
//! dhcp-range=10.0.0.100,10.0.0.200,12h
//! dhcp-match=set:ipxe,175
//! dhcp-match=set:efi64,option:client-arch,7
//! dhcp-match=set:efi64,option:client-arch,9
//! dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi
//! dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe
//! dhcp-boot=tag:ipxe,http://10.0.0.1:8080/boot.ipxe
//! ```
//!
//! What a node's script does ([`plan`]):
//! - **local boot** when the node is `active` or its boot device is `disk`: on BIOS,
//!   `sanboot --no-describe --drive 0x80` (the first hard disk); on UEFI, or if that
//!   fails, `exit`, which hands back to the firmware's next boot entry;
//! - otherwise **the deploy ramdisk**: kernel and ramdisk from `driver_info.deploy_kernel`
//!   / `deploy_ramdisk` (else the configured defaults), each an `http(s)://` URL or the
//!   name of a file in the image directory (served at `/images/{name}`), on the command
//!   line `ipa-api-url=<api url>`, the node's `kernel_append_params` (`driver_info`, else
//!   the configured default), `BOOTIF=${mac}` and `initrd=ramdisk` (needed by EFI stub
//!   kernels). Downloads that fail are retried every 10 s. A node that is `inspecting`
//!   or in `inspect wait` also gets `ipa-inspection-callback-url=<api url>/v1/continue_inspection`
//!   and the `[inspector] extra_kernel_params`, so that its agent posts what it finds.
//!
//! An unknown MAC gets a script that says so, waits 10 s and exits to the firmware's next
//! boot device; a failed store lookup gets one that retries. Neither is an HTTP error:
//! iPXE would only loop on it. A path that is not a MAC is a 400.
//!
//! # Escaping
//!
//! iPXE has no reliable quoting, so values are never escaped: they are checked and
//! refused. Every value placed in a command (URLs, each word of `kernel_append_params`)
//! must be printable ASCII without spaces and without `$` (setting expansion), `\`, `"`,
//! `'`, `` ` ``, `|`, `#` or `&&` (iPXE operators and comments). `kernel_append_params`
//! is split into words on spaces and tabs; a newline or other control character refuses
//! it. A node whose values are refused gets a script that prints the reason (with unsafe
//! characters replaced) and exits; [`check_kernel_append_params`] lets node validation
//! report the same problem earlier.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ferric_shared::states::ProvisionState;
use serde_json::{Map, Value};

use crate::bmc::BootDevice;
use crate::images;

/// Seconds a script waits before retrying or giving up, so that a failing machine does
/// not hammer the conductor.
const RETRY_SECS: u32 = 10;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

/// A string that is not six hex pairs joined by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (six hex pairs separated by ':' or '-')")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddress {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMac(s.to_owned());
        let separator = if s.contains(':') { ':' } else { '-' };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(separator);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    /// Ironic's form: lower case, `:`-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl MacAddress {
    /// iPXE's `${mac:hexhyp}` form, used in script URLs.
    pub fn hexhyp(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

/// What the conductor knows about a node when its iPXE asks for a script.
#[derive(Debug, Clone, PartialEq)]
pub struct BootParams {
    pub node_uuid: String,
    pub provision_state: ProvisionState,
    /// The boot device the conductor last set for the node (from its records; the BMC is
    /// not asked while iPXE waits).
    pub boot_device: Option<BootDevice>,
    /// The node's `driver_info` (`deploy_kernel`, `deploy_ramdisk`,
    /// `kernel_append_params` are read).
    pub driver_info: Map<String, Value>,
}

/// Conductor-wide boot settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The conductor API as nodes reach it: the ramdisk's `ipa-api-url`.
    pub api_url: String,
    /// The base URL of the HTTP server carrying [`router`] and [`images::router`], as
    /// nodes reach it.
    pub http_url: String,
    /// Used when `driver_info.deploy_kernel` is absent.
    pub deploy_kernel: Option<String>,
    /// Used when `driver_info.deploy_ramdisk` is absent.
    pub deploy_ramdisk: Option<String>,
    /// Used when `driver_info.kernel_append_params` is absent (Ironic's default is
    /// `nofb vga=normal`).
    pub kernel_append_params: String,
    /// Added for a node being inspected (`[inspector] extra_kernel_params`).
    pub inspection_kernel_params: String,
}

/// Why no script can be built for a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootScriptError {
    #[error("no {key} in driver_info and no default configured")]
    MissingDeployImage { key: &'static str },
    #[error("{key} must be a string")]
    NotAString { key: &'static str },
    #[error("{key}: only http:// and https:// URLs or image file names are supported")]
    UnsupportedScheme { key: &'static str },
    #[error("{key} names no valid image file")]
    BadImageName {
        key: &'static str,
        #[source]
        source: images::ImageNameError,
    },
    /// The value would be interpreted by iPXE (or break the script's lines).
    #[error("{field} contains {what}, which an iPXE script cannot carry safely")]
    UnsafeValue { field: &'static str, what: &'static str },
    #[error("{field} is empty")]
    EmptyValue { field: &'static str },
}

/// Checks one word placed in an iPXE command.
fn check_word(field: &'static str, word: &str) -> Result<(), BootScriptError> {
    if word.is_empty() {
        return Err(BootScriptError::EmptyValue { field });
    }
    for c in word.chars() {
        let what = match c {
            '$' => "'$'",
            '\\' => "a backslash",
            '"' | '\'' | '`' => "a quote",
            '|' => "'|'",
            '#' => "'#'",
            ' ' | '\t' => "a space",
            c if c.is_control() => "a line break or control character",
            c if !c.is_ascii() => "a non-ASCII character",
            _ => continue,
        };
        return Err(BootScriptError::UnsafeValue { field, what });
    }
    if word.contains("&&") {
        return Err(BootScriptError::UnsafeValue { field, what: "'&&'" });
    }
    Ok(())
}

/// Splits `kernel_append_params` into words, refusing anything iPXE would interpret.
pub fn check_kernel_append_params(params: &str) -> Result<Vec<&str>, BootScriptError> {
    check_kernel_params("kernel_append_params", params)
}

/// Splits kernel parameters (named `field` in errors) into words, refusing anything iPXE
/// would interpret.
pub fn check_kernel_params<'a>(
    field: &'static str,
    params: &'a str,
) -> Result<Vec<&'a str>, BootScriptError> {
    params
        .split([' ', '\t'])
        .filter(|word| !word.is_empty())
        .map(|word| check_word(field, word).map(|()| word))
        .collect()
}

/// The URL an inspecting ramdisk posts its report to, under the conductor API `api_url`.
pub fn inspection_callback_url(api_url: &str) -> String {
    format!("{}/v1/continue_inspection", api_url.trim_end_matches('/'))
}

fn check_url(field: &'static str, url: &str) -> Result<(), BootScriptError> {
    check_word(field, url)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(BootScriptError::UnsafeValue { field, what: "something other than an http(s) URL" })
    }
}

/// How a node boots when iPXE asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeBoot {
    /// Boot the deploy ramdisk; `kernel_params` are checked words, `ipa-api-url=…` first
    /// (`BOOTIF` and `initrd` are added by the script).
    Ramdisk { kernel_url: String, ramdisk_url: String, kernel_params: Vec<String> },
    /// Boot from the local disk.
    LocalDisk,
}

fn driver_info_str<'a>(
    params: &'a BootParams,
    key: &'static str,
) -> Result<Option<&'a str>, BootScriptError> {
    match params.driver_info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BootScriptError::NotAString { key }),
    }
}

fn deploy_image_url(
    params: &BootParams,
    config: &BootConfig,
    key: &'static str,
    default: Option<&str>,
) -> Result<String, BootScriptError> {
    resolve_image_url(&params.driver_info, key, default, &config.http_url)
}

/// The URL of the deploy image `driver_info[key]` (else `default`) names: an `http(s)://`
/// URL as it is, or the name of a file of the image directory as its URL under
/// `http_url`.
pub fn resolve_image_url(
    driver_info: &Map<String, Value>,
    key: &'static str,
    default: Option<&str>,
    http_url: &str,
) -> Result<String, BootScriptError> {
    let value = match driver_info.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(BootScriptError::NotAString { key }),
    };
    let value = value.or(default).ok_or(BootScriptError::MissingDeployImage { key })?;
    let url = if value.starts_with("http://") || value.starts_with("https://") {
        value.to_owned()
    } else if value.contains("://") {
        return Err(BootScriptError::UnsupportedScheme { key });
    } else {
        images::validate_name(value)
            .map_err(|source| BootScriptError::BadImageName { key, source })?;
        images::image_url(http_url, value)
    };
    check_url(key, &url)?;
    Ok(url)
}

/// The boot interfaces Ferric implements, with Ironic's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootInterface {
    /// Network boot through the conductor's iPXE scripts (the default).
    Ipxe,
    /// Ironic's PXE interface; Ferric boots it exactly as `ipxe`.
    Pxe,
    /// The deploy ISO inserted as virtual media by the BMC (no DHCP or TFTP needed).
    RedfishVirtualMedia,
    /// Boots nothing: the BMC is told nothing about boot devices by the boot interface.
    Fake,
}

/// A `boot_interface` Ferric does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Could not find the following interface in the 'ironic.hardware.interfaces.boot' \
     entrypoint: {0}. Valid interfaces are [{valid}].",
    valid = BootInterface::ALL.map(|i| format!("'{}'", i.as_str())).join(", ")
)]
pub struct UnknownBootInterface(pub String);

impl BootInterface {
    pub const ALL: [BootInterface; 4] = [
        BootInterface::Fake,
        BootInterface::Ipxe,
        BootInterface::Pxe,
        BootInterface::RedfishVirtualMedia,
    ];

    /// The name nodes use in `boot_interface`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootInterface::Ipxe => "ipxe",
            BootInterface::Pxe => "pxe",
            BootInterface::RedfishVirtualMedia => "redfish-virtual-media",
            BootInterface::Fake => "fake",
        }
    }

    pub fn from_name(name: &str) -> Option<BootInterface> {
        BootInterface::ALL.into_iter().find(|i| i.as_str() == name)
    }

    /// A node's boot interface: its `boot_interface`, `ipxe` when it has none.
    pub fn of_node(boot_interface: Option<&str>) -> Result<BootInterface, UnknownBootInterface> {
        match boot_interface {
            None | Some("") => Ok(BootInterface::Ipxe),
            Some(name) => {
                BootInterface::from_name(name).ok_or_else(|| UnknownBootInterface(name.to_owned()))
            }
        }
    }
}

/// The `driver_info` key naming a node's deploy ISO (Ironic's).
pub const DEPLOY_ISO_KEY: &str = "deploy_iso";

/// The URL of the deploy ISO a node boots over virtual media: `driver_info.deploy_iso`,
/// else `default`, each an `http(s)://` URL or a file of the image directory served under
/// `http_url`.
pub fn deploy_iso_url(
    driver_info: &Map<String, Value>,
    default: Option<&str>,
    http_url: &str,
) -> Result<String, BootScriptError> {
    resolve_image_url(driver_info, DEPLOY_ISO_KEY, default, http_url)
}

/// Why a node cannot boot over virtual media. The texts are Ironic's where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtualMediaError {
    #[error(
        "boot interface implementation 'redfish-virtual-media' is not supported by hardware \
         type {driver}."
    )]
    Unsupported { driver: String },
    #[error("Missing 'deploy_iso' parameter in node's driver_info and no default is configured")]
    MissingIso,
    #[error("Invalid 'deploy_iso' parameter in node's driver_info: {0}")]
    BadIso(#[source] BootScriptError),
    #[error("The deploy ISO {name:?} does not exist in the conductor's image directory")]
    IsoNotFound { name: String },
}

/// The URL of the deploy ISO a node boots over virtual media, after checking that its
/// driver can (`supported`) and that a named ISO is a file of `image_dir`.
pub fn virtual_media_iso(
    driver: &str,
    supported: bool,
    driver_info: &Map<String, Value>,
    default: Option<&str>,
    http_url: &str,
    image_dir: &std::path::Path,
) -> Result<String, VirtualMediaError> {
    if !supported {
        return Err(VirtualMediaError::Unsupported { driver: driver.to_owned() });
    }
    let url = deploy_iso_url(driver_info, default, http_url).map_err(|e| match e {
        BootScriptError::MissingDeployImage { .. } => VirtualMediaError::MissingIso,
        other => VirtualMediaError::BadIso(other),
    })?;
    let named = match driver_info.get(DEPLOY_ISO_KEY) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => default,
    };
    if let Some(name) = named.filter(|n| !n.contains("://")) {
        let present = images::image_path(image_dir, name).is_ok_and(|p| p.is_file());
        if !present {
            return Err(VirtualMediaError::IsoNotFound { name: name.to_owned() });
        }
    }
    Ok(url)
}

/// Decides how the node boots, checking every value that goes into its script.
pub fn plan(params: &BootParams, config: &BootConfig) -> Result<NodeBoot, BootScriptError> {
    if params.provision_state == ProvisionState::Active
        || params.boot_device == Some(BootDevice::Disk)
    {
        return Ok(NodeBoot::LocalDisk);
    }
    let kernel_url =
        deploy_image_url(params, config, "deploy_kernel", config.deploy_kernel.as_deref())?;
    let ramdisk_url =
        deploy_image_url(params, config, "deploy_ramdisk", config.deploy_ramdisk.as_deref())?;
    check_url("api_url", &config.api_url)?;
    let mut kernel_params = vec![format!("ipa-api-url={}", config.api_url)];
    let append =
        driver_info_str(params, "kernel_append_params")?.unwrap_or(&config.kernel_append_params);
    kernel_params.extend(check_kernel_append_params(append)?.into_iter().map(str::to_owned));
    if matches!(params.provision_state, ProvisionState::Inspecting | ProvisionState::InspectWait) {
        kernel_params.push(format!(
            "ipa-inspection-callback-url={}",
            inspection_callback_url(&config.api_url)
        ));
        let extra = check_kernel_params("extra_kernel_params", &config.inspection_kernel_params)?;
        kernel_params.extend(extra.into_iter().map(str::to_owned));
    }
    Ok(NodeBoot::Ramdisk { kernel_url, ramdisk_url, kernel_params })
}

/// Free text for `echo` and comments: anything but letters, digits, spaces and plain
/// punctuation becomes `_`, so it can neither expand, nor end the line, nor chain commands.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || " .,:_-=/()+@".contains(c) { c } else { '_' })
        .collect()
}

/// The script at `/boot.ipxe`: chains to the per-node script of the booting MAC.
pub fn chain_script(http_url: &str) -> Result<String, BootScriptError> {
    check_url("http_url", http_url)?;
    let base = http_url.trim_end_matches('/');
    Ok(format!(
        "#!ipxe\n\
         # Ferric: load this machine's own script, named after the MAC it booted from.\n\
         chain {base}/boot/${{mac:hexhyp}}.ipxe || goto failed\n\
         exit\n\
         :failed\n\
         echo Ferric: no boot script for ${{mac}}, trying the next boot device in {RETRY_SECS} seconds\n\
         sleep {RETRY_SECS}\n\
         exit\n"
    ))
}

/// The script of a node, from a [`plan`].
pub fn node_script(node_uuid: &str, boot: &NodeBoot) -> String {
    let node = printable(node_uuid);
    match boot {
        NodeBoot::LocalDisk => format!(
            "#!ipxe\n\
             # Ferric: node {node} boots from its local disk.\n\
             iseq ${{platform}} efi && goto efi || goto bios\n\
             :bios\n\
             sanboot --no-describe --drive 0x80 || goto efi\n\
             :efi\n\
             exit\n"
        ),
        NodeBoot::Ramdisk { kernel_url, ramdisk_url, kernel_params } => {
            let cmdline = kernel_params.join(" ");
            format!(
                "#!ipxe\n\
                 # Ferric: deploy ramdisk of node {node}.\n\
                 :deploy\n\
                 imgfree\n\
                 kernel {kernel_url} {cmdline} BOOTIF=${{mac}} initrd=ramdisk || goto retry\n\
                 initrd --name ramdisk {ramdisk_url} || goto retry\n\
                 boot\n\
                 :retry\n\
                 echo Ferric: loading the deploy kernel or ramdisk failed, retrying in {RETRY_SECS} seconds\n\
                 sleep {RETRY_SECS}\n\
                 goto deploy\n"
            )
        }
    }
}

/// The whole script for a node: its [`plan`] as a script, or a script that prints why
/// the node cannot boot.
pub fn script_for_node(params: &BootParams, config: &BootConfig) -> String {
    match plan(params, config) {
        Ok(boot) => node_script(&params.node_uuid, &boot),
        Err(error) => refused_script(&params.node_uuid, &error),
    }
}

/// The script for a MAC no node's port has.
pub fn unknown_mac_script(mac: &MacAddress) -> String {
    format!(
        "#!ipxe\n\
         echo Ferric: no node has a port with MAC {mac}, trying the next boot device in {RETRY_SECS} seconds\n\
         sleep {RETRY_SECS}\n\
         exit\n"
    )
}

/// The script for a node whose settings cannot produce a script.
pub fn refused_script(node_uuid: &str, error: &BootScriptError) -> String {
    let node = printable(node_uuid);
    let reason = printable(&error.to_string());
    format!(
        "#!ipxe\n\
         echo Ferric: node {node} cannot boot: {reason}\n\
         echo Ferric: fix the node, then power cycle it. Trying the next boot device in {RETRY_SECS} seconds\n\
         sleep {RETRY_SECS}\n\
         exit\n"
    )
}

/// The script when the node could not be looked up: try again later.
pub fn retry_script(mac: &MacAddress, http_url: &str) -> String {
    let base = http_url.trim_end_matches('/');
    let hexhyp = mac.hexhyp();
    format!(
        "#!ipxe\n\
         echo Ferric: the conductor could not look up MAC {mac}, retrying in {RETRY_SECS} seconds\n\
         sleep {RETRY_SECS}\n\
         chain {base}/boot/{hexhyp}.ipxe\n"
    )
}

/// The store could not answer a boot lookup (the message says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("boot lookup failed: {0}")]
pub struct BootLookupError(pub String);

/// Finds the node a MAC belongs to; the store implements this.
#[async_trait::async_trait]
pub trait BootParamsSource: Send + Sync + 'static {
    async fn boot_params(&self, mac: &MacAddress) -> Result<Option<BootParams>, BootLookupError>;
}

/// A [`BootParamsSource`] from a plain function (tests, static setups).
pub struct FnSource<F>(pub F);

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSource")
    }
}

#[async_trait::async_trait]
impl<F> BootParamsSource for FnSource<F>
where
    F: Fn(&MacAddress) -> Option<BootParams> + Send + Sync + 'static,
{
    async fn boot_params(&self, mac: &MacAddress) -> Result<Option<BootParams>, BootLookupError> {
        Ok((self.0)(mac))
    }
}

#[derive(Clone)]
struct BootState {
    config: Arc<BootConfig>,
    source: Arc<dyn BootParamsSource>,
}

fn script(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// `GET /boot.ipxe` and `GET /boot/{mac}.ipxe`.
pub fn router(config: BootConfig, source: Arc<dyn BootParamsSource>) -> Router {
    let state = BootState { config: Arc::new(config), source };
    Router::new().route("/boot.ipxe", get(chain)).route("/boot/{file}", get(node)).with_state(state)
}

async fn chain(State(state): State<BootState>) -> Response {
    match chain_script(&state.config.http_url) {
        Ok(text) => script(text),
        Err(error) => {
            tracing::error!(%error, "boot HTTP URL is unusable in an iPXE script");
            let text = format!(
                "#!ipxe\necho Ferric: {}\nsleep {RETRY_SECS}\nexit\n",
                printable(&error.to_string())
            );
            script(text)
        }
    }
}

async fn node(State(state): State<BootState>, Path(file): Path<String>) -> Response {
    let mac = match file.strip_suffix(".ipxe").map(MacAddress::from_str) {
        Some(Ok(mac)) => mac,
        Some(Err(error)) => {
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
        None => {
            let text = format!("{file:?} is not <mac>.ipxe\n");
            return (StatusCode::BAD_REQUEST, text).into_response();
        }
    };
    let params = match state.source.boot_params(&mac).await {
        Ok(Some(params)) => params,
        Ok(None) => {
            tracing::info!(%mac, "iPXE script requested for an unknown MAC");
            return script(unknown_mac_script(&mac));
        }
        Err(error) => {
            tracing::warn!(%mac, %error, "iPXE script lookup failed");
            return script(retry_script(&mac, &state.config.http_url));
        }
    };
    let span = tracing::info_span!("boot_script", node = %params.node_uuid, %mac);
    let _entered = span.enter();
    match plan(&params, &state.config) {
        Ok(boot) => {
            tracing::info!(local = boot == NodeBoot::LocalDisk, "serving iPXE script");
            script(node_script(&params.node_uuid, &boot))
        }
        Err(error) => {
            tracing::warn!(%error, "node cannot be given an iPXE script");
            script(refused_script(&params.node_uuid, &error))
        }
    }
}

#[cfg(test)]
mod tests;
