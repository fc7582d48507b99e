//! The node resource of the Ironic v1 API as it crosses the wire: the node document, the
//! create body, collections, the states view, the request bodies of the state, power,
//! maintenance and boot-device endpoints, the validate result, JSON-patch operations, and
//! the masking of secrets that every response applies.
//!
//! Request bodies reject unknown fields, as Ironic's JSON schemas do, so that a typo in a
//! client is a `400`, not a silently dropped setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::states::{PowerState, PowerTarget, ProvisionState, ProvisionVerb};
use crate::steps::UserStep;

/// What Ironic shows in place of a secret.
pub const MASK: &str = "******";

/// A hypermedia link: `{"href": …, "rel": "self"|"bookmark"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
    pub rel: String,
}

impl Link {
    /// The `self` (versioned, `…/v1/<path>`) and `bookmark` (`…/<path>`) links Ironic puts
    /// on every resource. `base` is the public URL of the API without a trailing slash.
    pub fn pair(base: &str, path: &str) -> Vec<Link> {
        let base = base.trim_end_matches('/');
        let path = path.trim_start_matches('/');
        vec![
            Link { href: format!("{base}/v1/{path}"), rel: "self".into() },
            Link { href: format!("{base}/{path}"), rel: "bookmark".into() },
        ]
    }
}

/// `GET /v1/nodes/{id}`: every field of the latest microversion. Absent values are `null`
/// on the wire, never omitted, because clients index the document by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: String,
    pub name: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub links: Vec<Link>,
    pub ports: Vec<Link>,
    pub states: Vec<Link>,
    pub portgroups: Vec<Link>,
    pub volume: Vec<Link>,
    pub chassis_uuid: Option<String>,
    pub allocation_uuid: Option<String>,
    /// Hostname of the conductor that manages the node.
    pub conductor: Option<String>,
    pub traits: Vec<String>,
    pub automated_clean: Option<bool>,
    pub bios_interface: Option<String>,
    pub boot_interface: Option<String>,
    pub boot_mode: Option<String>,
    pub clean_step: Option<Value>,
    pub conductor_group: String,
    pub console_enabled: bool,
    pub console_interface: Option<String>,
    pub disable_power_off: bool,
    pub deploy_interface: Option<String>,
    pub deploy_step: Option<Value>,
    pub description: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub driver_internal_info: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub fault: Option<String>,
    pub firmware_interface: Option<String>,
    pub health: Option<String>,
    pub inspection_finished_at: Option<String>,
    pub inspection_started_at: Option<String>,
    pub inspect_interface: Option<String>,
    pub instance_info: Map<String, Value>,
    pub instance_name: Option<String>,
    pub instance_uuid: Option<String>,
    pub last_error: Option<String>,
    pub lessee: Option<String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub management_interface: Option<String>,
    pub network_data: Map<String, Value>,
    pub network_interface: Option<String>,
    pub owner: Option<String>,
    pub parent_node: Option<String>,
    pub power_interface: Option<String>,
    pub power_state: Option<PowerState>,
    pub properties: Map<String, Value>,
    pub protected: bool,
    pub protected_reason: Option<String>,
    pub provision_state: ProvisionState,
    pub provision_updated_at: Option<String>,
    pub raid_config: Map<String, Value>,
    pub raid_interface: Option<String>,
    pub rescue_interface: Option<String>,
    /// Hostname of the conductor holding the node's lock, or `null`.
    pub reservation: Option<String>,
    pub resource_class: Option<String>,
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub secure_boot: Option<bool>,
    pub service_step: Option<Value>,
    pub shard: Option<String>,
    pub storage_interface: Option<String>,
    pub target_power_state: Option<PowerTarget>,
    pub target_provision_state: Option<ProvisionState>,
    pub target_raid_config: Map<String, Value>,
    pub vendor_interface: Option<String>,
}

/// The fields `GET /v1/nodes` (without `detail` or `fields`) shows, besides `links`.
pub const NODE_DEFAULT_LIST_FIELDS: &[&str] =
    &["uuid", "name", "instance_uuid", "maintenance", "power_state", "provision_state"];

/// `POST /v1/nodes`. Only `driver` is required; read-only fields (states, `reservation`,
/// `driver_internal_info`, …) are unknown fields here and rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCreate {
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_info: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_info: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lessee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conductor_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated_clean: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_power_off: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescue_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_interface: Option<String>,
}

/// `GET /v1/nodes[/detail]`: one page of nodes (each possibly limited by `fields`), and a
/// `next` link when more may follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCollection {
    pub nodes: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /v1/nodes/{id}/states`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStates {
    pub console_enabled: bool,
    pub last_error: Option<String>,
    pub power_state: Option<PowerState>,
    pub provision_state: ProvisionState,
    pub provision_updated_at: Option<String>,
    pub target_power_state: Option<PowerTarget>,
    pub target_provision_state: Option<ProvisionState>,
    pub raid_config: Map<String, Value>,
    pub target_raid_config: Map<String, Value>,
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
}

impl From<&Node> for NodeStates {
    fn from(node: &Node) -> Self {
        NodeStates {
            console_enabled: node.console_enabled,
            last_error: node.last_error.clone(),
            power_state: node.power_state,
            provision_state: node.provision_state,
            provision_updated_at: node.provision_updated_at.clone(),
            target_power_state: node.target_power_state,
            target_provision_state: node.target_provision_state,
            raid_config: node.raid_config.clone(),
            target_raid_config: node.target_raid_config.clone(),
            boot_mode: node.boot_mode.clone(),
            secure_boot: node.secure_boot,
        }
    }
}

/// `configdrive` of a provision request: a base64 gzipped ISO or a URL, or (API 1.56) the
/// parts the conductor builds the drive from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigDrive {
    Encoded(String),
    Parts(Map<String, Value>),
}

/// `PUT /v1/nodes/{id}/states/provision`. Only `target` is required; which other fields
/// a verb accepts is checked by the server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub target: ProvisionVerb,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configdrive: Option<ConfigDrive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_steps: Option<Vec<UserStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_steps: Option<Vec<UserStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_steps: Option<Vec<UserStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescue_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_ramdisk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
}

impl ProvisionRequest {
    /// A request with only `target` set.
    pub fn new(target: ProvisionVerb) -> Self {
        ProvisionRequest {
            target,
            configdrive: None,
            clean_steps: None,
            deploy_steps: None,
            service_steps: None,
            rescue_password: None,
            disable_ramdisk: None,
            runbook: None,
        }
    }
}

impl std::fmt::Debug for ProvisionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |present: bool| present.then_some(MASK);
        f.debug_struct("ProvisionRequest")
            .field("target", &self.target)
            .field("configdrive", &masked(self.configdrive.is_some()))
            .field("clean_steps", &self.clean_steps)
            .field("deploy_steps", &self.deploy_steps)
            .field("service_steps", &self.service_steps)
            .field("rescue_password", &masked(self.rescue_password.is_some()))
            .field("disable_ramdisk", &self.disable_ramdisk)
            .field("runbook", &self.runbook)
            .finish()
    }
}

/// `PUT /v1/nodes/{id}/states/power`. `timeout` is in seconds (>= 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub target: PowerTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `PUT /v1/nodes/{id}/maintenance`; the body is optional and so is the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /v1/nodes/{id}/management/boot_device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootDeviceRequest {
    /// `pxe`, `disk`, `cdrom`, `bios` or `safe`.
    pub boot_device: String,
    #[serde(default)]
    pub persistent: bool,
}

/// `GET /v1/nodes/{id}/management/boot_device`; either may be `null` when the BMC cannot
/// tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootDeviceView {
    pub boot_device: Option<String>,
    pub persistent: Option<bool>,
}

/// One interface's entry of `GET /v1/nodes/{id}/validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceValidation {
    /// `true` valid, `false` invalid, `null` when the interface is not supported.
    pub result: Option<bool>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl InterfaceValidation {
    pub fn ok() -> Self {
        InterfaceValidation { result: Some(true), reason: None }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        InterfaceValidation { result: Some(false), reason: Some(reason.into()) }
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        InterfaceValidation { result: None, reason: Some(reason.into()) }
    }
}

/// `GET /v1/nodes/{id}/validate`: interface name → result.
pub type ValidateResult = BTreeMap<String, InterfaceValidation>;

/// The interfaces `validate` reports on, as Ironic lists them.
pub const VALIDATED_INTERFACES: &[&str] = &[
    "bios",
    "boot",
    "console",
    "deploy",
    "firmware",
    "inspect",
    "management",
    "network",
    "power",
    "raid",
    "rescue",
    "storage",
];

/// The operations Ironic accepts in a JSON patch (RFC 6902 also has move/copy/test,
/// which Ironic refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Replace,
    Remove,
}

/// One operation of a `PATCH` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOperation {
    pub op: PatchOp,
    pub path: String,
    /// Required for `add` and `replace`, refused for `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Whether a key of a node's JSON dictionaries holds a secret: any key whose name, in
/// lower case, contains one of these fragments.
const SECRET_KEY_FRAGMENTS: &[&str] =
    &["password", "passwd", "pswd", "secret", "token", "key", "configdrive", "credential"];

/// Whether `key` names a secret (case-insensitive substring match, as oslo's
/// `mask_dict_password` does).
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS.iter().any(|f| lower.contains(f))
}

/// Replaces every secret in `map`, at any depth: values of secret keys become
/// [`MASK`] unless they are objects (which are searched instead, so that e.g.
/// `{"auth": {"password": …}}` keeps its shape), and credentials inside URL strings
/// (`scheme://user:pass@host`) have their password masked.
pub fn mask_secrets(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if value.is_null() {
            continue;
        }
        match value {
            // A config drive may be given as a dict of its parts; all of it is user data.
            _ if key.eq_ignore_ascii_case("configdrive") => {
                *value = Value::String(MASK.to_owned());
            }
            Value::Object(inner) => mask_secrets(inner),
            _ if is_secret_key(key) => *value = Value::String(MASK.to_owned()),
            Value::String(s) => {
                if let Some(masked) = mask_url_credentials(s) {
                    *s = masked;
                }
            }
            Value::Array(items) => mask_array(items),
            _ => {}
        }
    }
}

fn mask_array(items: &mut [Value]) {
    for item in items {
        match item {
            Value::Object(inner) => mask_secrets(inner),
            Value::Array(nested) => mask_array(nested),
            Value::String(s) => {
                if let Some(masked) = mask_url_credentials(s) {
                    *s = masked;
                }
            }
            _ => {}
        }
    }
}

/// `scheme://user:pass@host/…` → `scheme://user:******@host/…`; `None` when `url` carries
/// no password.
pub fn mask_url_credentials(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end)?;
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    if password.is_empty() || password == MASK {
        return None;
    }
    let tail = rest.get(authority_end..)?;
    Some(format!("{scheme}://{user}:{MASK}@{host}{tail}"))
}

/// Masks every secret of a node as the API shows it: secret-like keys of `driver_info`,
/// `instance_info`, `driver_internal_info`, `properties` and `extra` (the agent token
/// included), `instance_info.configdrive` and `instance_info.image_url` whole, and
/// credentials inside URLs.
pub fn mask_node(node: &mut Node) {
    for map in [
        &mut node.driver_info,
        &mut node.instance_info,
        &mut node.driver_internal_info,
        &mut node.properties,
        &mut node.extra,
    ] {
        mask_secrets(map);
    }
    mask_instance_info_urls(&mut node.instance_info);
}

/// `instance_info.image_url` may be a temporary URL whose query string is the credential,
/// so Ironic hides it whole.
pub fn mask_instance_info_urls(instance_info: &mut Map<String, Value>) {
    if let Some(url) = instance_info.get_mut("image_url") {
        if !url.is_null() {
            *url = Value::String(MASK.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_node() -> Node {
        Node {
            uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123".into(),
            name: Some("n1".into()),
            created_at: Some("2026-01-01T00:00:00+00:00".into()),
            updated_at: None,
            links: Link::pair("http://h:6385", "nodes/1be26c0b-03f2-4d2e-ae87-c02d7f33c123"),
            ports: vec![],
            states: vec![],
            portgroups: vec![],
            volume: vec![],
            chassis_uuid: None,
            allocation_uuid: None,
            conductor: None,
            traits: vec![],
            automated_clean: None,
            bios_interface: None,
            boot_interface: None,
            boot_mode: None,
            clean_step: None,
            conductor_group: String::new(),
            console_enabled: false,
            console_interface: None,
            disable_power_off: false,
            deploy_interface: None,
            deploy_step: None,
            description: None,
            driver: "fake-hardware".into(),
            driver_info: Map::new(),
            driver_internal_info: Map::new(),
            extra: Map::new(),
            fault: None,
            firmware_interface: None,
            health: None,
            inspection_finished_at: None,
            inspection_started_at: None,
            inspect_interface: None,
            instance_info: Map::new(),
            instance_name: None,
            instance_uuid: None,
            last_error: None,
            lessee: None,
            maintenance: false,
            maintenance_reason: None,
            management_interface: None,
            network_data: Map::new(),
            network_interface: None,
            owner: None,
            parent_node: None,
            power_interface: None,
            power_state: None,
            properties: Map::new(),
            protected: false,
            protected_reason: None,
            provision_state: ProvisionState::Enroll,
            provision_updated_at: None,
            raid_config: Map::new(),
            raid_interface: None,
            rescue_interface: None,
            reservation: None,
            resource_class: None,
            retired: false,
            retired_reason: None,
            secure_boot: None,
            service_step: None,
            shard: None,
            storage_interface: None,
            target_power_state: None,
            target_provision_state: None,
            target_raid_config: Map::new(),
            vendor_interface: None,
        }
    }

    /// The field list of the facts document, §9.3, verbatim.
    const SPEC_FIELDS: &str = "uuid, name, created_at, updated_at, links, ports, states, \
        portgroups, volume, chassis_uuid, allocation_uuid, conductor, traits, \
        automated_clean, bios_interface, boot_interface, boot_mode, clean_step, \
        conductor_group, console_enabled, console_interface, disable_power_off, \
        deploy_interface, deploy_step, description, driver, driver_info, \
        driver_internal_info, extra, fault, firmware_interface, health, \
        inspection_finished_at, inspection_started_at, inspect_interface, instance_info, \
        instance_name, instance_uuid, last_error, lessee, maintenance, maintenance_reason, \
        management_interface, network_data, network_interface, owner, parent_node, \
        power_interface, power_state, properties, protected, protected_reason, \
        provision_state, provision_updated_at, raid_config, raid_interface, rescue_interface, \
        reservation, resource_class, retired, retired_reason, secure_boot, service_step, \
        shard, storage_interface, target_power_state, target_provision_state, \
        target_raid_config, vendor_interface";

    #[test]
    fn node_has_exactly_the_documented_fields() {
        let wire = serde_json::to_value(sample_node()).unwrap();
        let mut got: Vec<&str> = wire.as_object().unwrap().keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = SPEC_FIELDS.split(',').map(str::trim).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(wire["provision_state"], json!("enroll"));
        assert_eq!(wire["power_state"], Value::Null, "absent values are null, not omitted");
        let back: Node = serde_json::from_value(wire).unwrap();
        assert_eq!(back, sample_node());
    }

    #[test]
    fn links_are_self_and_bookmark() {
        let links = Link::pair("http://127.0.0.1:6385/", "/nodes/abc");
        assert_eq!(
            serde_json::to_value(links).unwrap(),
            json!([
                {"href": "http://127.0.0.1:6385/v1/nodes/abc", "rel": "self"},
                {"href": "http://127.0.0.1:6385/nodes/abc", "rel": "bookmark"}
            ])
        );
    }

    #[test]
    fn create_body_rejects_unknown_and_read_only_fields() {
        let ok: NodeCreate = serde_json::from_value(json!({
            "driver": "fake-hardware", "name": "n1",
            "driver_info": {"ipmi_port": 623}, "resource_class": "baremetal"
        }))
        .unwrap();
        assert_eq!(ok.driver_info.unwrap()["ipmi_port"], json!(623));
        for bad in [
            json!({"driver": "x", "provision_state": "active"}),
            json!({"driver": "x", "driver_internal_info": {}}),
            json!({"driver": "x", "colour": "red"}),
            json!({"name": "no-driver"}),
            json!({"driver": 5}),
        ] {
            let err = serde_json::from_value::<NodeCreate>(bad.clone()).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        let err = serde_json::from_value::<NodeCreate>(json!({"driver": "x", "colour": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn provision_body_shapes() {
        let req: ProvisionRequest = serde_json::from_value(json!({
            "target": "clean",
            "clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata", "args": {}}]
        }))
        .unwrap();
        assert_eq!(req.target, ProvisionVerb::Clean);
        assert_eq!(req.clean_steps.as_ref().unwrap()[0].step, "erase_devices_metadata");

        let dict: ProvisionRequest = serde_json::from_value(json!({
            "target": "active", "configdrive": {"meta_data": {"hostname": "h"}}
        }))
        .unwrap();
        assert!(matches!(dict.configdrive, Some(ConfigDrive::Parts(_))));
        let text: ProvisionRequest =
            serde_json::from_value(json!({"target": "deploy", "configdrive": "H4sI"})).unwrap();
        assert_eq!(text.configdrive, Some(ConfigDrive::Encoded("H4sI".into())));
        let debug = format!("{text:?}");
        assert!(!debug.contains("H4sI"), "{debug}");

        for bad in [
            json!({"target": "explode"}),
            json!({"target": "manage", "colour": 1}),
            json!({}),
            json!({"target": "active", "configdrive": 5}),
        ] {
            assert!(serde_json::from_value::<ProvisionRequest>(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_value(ProvisionRequest::new(ProvisionVerb::Provide)).unwrap(),
            json!({"target": "provide"})
        );
    }

    #[test]
    fn power_maintenance_boot_bodies() {
        let p: PowerRequest =
            serde_json::from_value(json!({"target": "soft power off", "timeout": 30})).unwrap();
        assert_eq!(p.target, PowerTarget::SoftPowerOff);
        assert_eq!(p.timeout, Some(30));
        for bad in [
            json!({"target": "power sideways"}),
            json!({"target": "power on", "timeout": -1}),
            json!({"target": "power on", "extra": 1}),
        ] {
            assert!(serde_json::from_value::<PowerRequest>(bad.clone()).is_err(), "{bad}");
        }
        let m: MaintenanceRequest = serde_json::from_value(json!({})).unwrap();
        assert_eq!(m.reason, None);
        assert!(serde_json::from_value::<MaintenanceRequest>(json!({"why": "x"})).is_err());
        let b: BootDeviceRequest = serde_json::from_value(json!({"boot_device": "pxe"})).unwrap();
        assert!(!b.persistent);
        assert_eq!(
            serde_json::to_value(InterfaceValidation::ok()).unwrap(),
            json!({"result": true, "reason": null})
        );
    }

    #[test]
    fn patch_operations_parse_strictly() {
        let ops: Vec<PatchOperation> = serde_json::from_value(json!([
            {"op": "add", "path": "/extra/foo", "value": 1},
            {"op": "remove", "path": "/name"}
        ]))
        .unwrap();
        assert_eq!(ops[0].op, PatchOp::Add);
        assert_eq!(ops[1].value, None);
        for bad in [
            json!([{"op": "move", "path": "/a", "from": "/b"}]),
            json!([{"op": "test", "path": "/a", "value": 1}]),
            json!([{"path": "/a"}]),
            json!([{"op": "add", "path": "/a", "value": 1, "x": 2}]),
        ] {
            assert!(serde_json::from_value::<Vec<PatchOperation>>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_keys_table() {
        for (key, secret) in [
            ("ipmi_password", true),
            ("redfish_password", true),
            ("IPMI_PASSWORD", true),
            ("agent_secret_token", true),
            ("configdrive", true),
            ("ssh_key_contents", true),
            ("sys_pswd", true),
            ("ipmi_address", false),
            ("ipmi_username", false),
            ("deploy_kernel", false),
            ("image_source", false),
            ("root_device", false),
            ("agent_url", false),
        ] {
            assert_eq!(is_secret_key(key), secret, "{key}");
        }
    }

    #[test]
    fn url_credentials_table() {
        for (url, want) in [
            ("http://u:p@h/x.img", Some("http://u:******@h/x.img")),
            ("https://user:pa:ss@host:8080/a?b#c", Some("https://user:******@host:8080/a?b#c")),
            ("http://u@h/x", None),
            ("http://h/x@y", None),
            ("http://u:@h/", None),
            ("not a url", None),
            ("file:///var/lib/x", None),
            ("http://u:******@h/", None),
        ] {
            assert_eq!(mask_url_credentials(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn node_masking_hides_every_secret() {
        let mut node = sample_node();
        node.driver_info = json!({
            "ipmi_address": "10.0.0.1", "ipmi_password": "hunter2",
            "auth": {"password": "deep", "user": "u"}, "ipmi_port": 623
        })
        .as_object()
        .unwrap()
        .clone();
        node.instance_info = json!({
            "image_source": "http://u:pw@images/x.qcow2",
            "image_url": "http://swift/tmp?temp_url_sig=abc",
            "configdrive": {"user_data": "H4sIAAAA"}, "root_gb": 10,
            "mirrors": ["http://a:b@m1/"]
        })
        .as_object()
        .unwrap()
        .clone();
        node.driver_internal_info =
            json!({"agent_secret_token": "t".repeat(43), "agent_url": "https://1.2.3.4:9999"})
                .as_object()
                .unwrap()
                .clone();
        mask_node(&mut node);
        let wire = serde_json::to_string(&node).unwrap();
        for secret in
            ["hunter2", "deep", ":pw@", "temp_url_sig", "H4sIAAAA", &"t".repeat(43), ":b@"]
        {
            assert!(!wire.contains(secret), "{secret} leaked: {wire}");
        }
        assert_eq!(node.driver_info["ipmi_password"], json!(MASK));
        assert_eq!(node.driver_info["auth"]["user"], json!("u"));
        assert_eq!(node.driver_info["ipmi_port"], json!(623));
        assert_eq!(node.instance_info["image_source"], json!("http://u:******@images/x.qcow2"));
        assert_eq!(node.instance_info["image_url"], json!(MASK));
        assert_eq!(node.instance_info["root_gb"], json!(10));
        assert_eq!(node.driver_internal_info["agent_url"], json!("https://1.2.3.4:9999"));
    }

    #[test]
    fn states_view_copies_the_node() {
        let mut node = sample_node();
        node.provision_state = ProvisionState::CleanWait;
        node.target_provision_state = Some(ProvisionState::Available);
        node.power_state = Some(PowerState::On);
        let states = serde_json::to_value(NodeStates::from(&node)).unwrap();
        assert_eq!(states["provision_state"], json!("clean wait"));
        assert_eq!(states["target_provision_state"], json!("available"));
        assert_eq!(states["power_state"], json!("power on"));
        assert_eq!(states.as_object().unwrap().len(), 11);
    }
}
