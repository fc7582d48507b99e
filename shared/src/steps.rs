//! Clean, deploy and service steps as they cross the wire.
//!
//! Three shapes exist: [`Step`], what the agent reports from `get_<kind>_steps`;
//! [`NodeStep`], the node's current step that the conductor sends to
//! `execute_<kind>_step` (and the agent echoes back); and [`UserStep`], what an operator
//! lists in `PUT /v1/nodes/{id}/states/provision`. The kind (clean/deploy/service) only
//! changes JSON key names, so one set of types serves all three kinds.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Which family of steps; decides every key and command name involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Clean,
    Deploy,
    Service,
}

impl StepKind {
    pub const ALL: [StepKind; 3] = [StepKind::Clean, StepKind::Deploy, StepKind::Service];

    /// `clean`, `deploy` or `service`; also the agent extension that runs these steps.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepKind::Clean => "clean",
            StepKind::Deploy => "deploy",
            StepKind::Service => "service",
        }
    }

    /// Key of the step lists in a `get_<kind>_steps` result: `clean_steps`.
    pub const fn steps_key(self) -> &'static str {
        match self {
            StepKind::Clean => "clean_steps",
            StepKind::Deploy => "deploy_steps",
            StepKind::Service => "service_steps",
        }
    }

    /// Key of the echoed step in an `execute_<kind>_step` result, and of the node field
    /// holding the current step: `clean_step`.
    pub const fn step_key(self) -> &'static str {
        match self {
            StepKind::Clean => "clean_step",
            StepKind::Deploy => "deploy_step",
            StepKind::Service => "service_step",
        }
    }

    /// Key of the step's own return value: `clean_result`.
    pub const fn result_key(self) -> &'static str {
        match self {
            StepKind::Clean => "clean_result",
            StepKind::Deploy => "deploy_result",
            StepKind::Service => "service_result",
        }
    }

    /// Parameter carrying the hardware-manager versions the steps were fetched with:
    /// `clean_version`.
    pub const fn version_key(self) -> &'static str {
        match self {
            StepKind::Clean => "clean_version",
            StepKind::Deploy => "deploy_version",
            StepKind::Service => "service_version",
        }
    }

    /// Command name (without extension) that runs one step: `execute_clean_step`. This is
    /// also the `command_name` of its `CommandResult`.
    pub const fn execute_command(self) -> &'static str {
        match self {
            StepKind::Clean => "execute_clean_step",
            StepKind::Deploy => "execute_deploy_step",
            StepKind::Service => "execute_service_step",
        }
    }

    /// Command name (without extension) that lists steps: `get_clean_steps`.
    pub const fn get_command(self) -> &'static str {
        match self {
            StepKind::Clean => "get_clean_steps",
            StepKind::Deploy => "get_deploy_steps",
            StepKind::Service => "get_service_steps",
        }
    }

    /// `driver_internal_info` key where Ironic caches the agent's steps:
    /// `agent_cached_clean_steps`.
    pub const fn cached_steps_key(self) -> &'static str {
        match self {
            StepKind::Clean => "agent_cached_clean_steps",
            StepKind::Deploy => "agent_cached_deploy_steps",
            StepKind::Service => "agent_cached_service_steps",
        }
    }

    /// Full command as posted to the agent: `clean.execute_clean_step`.
    pub fn execute_command_name(self) -> String {
        format!("{}.{}", self.as_str(), self.execute_command())
    }

    /// Full command as posted to the agent: `clean.get_clean_steps`.
    pub fn get_command_name(self) -> String {
        format!("{}.{}", self.as_str(), self.get_command())
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Description of one step argument, `argsinfo.<arg>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgInfo {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

/// A step as the agent reports it in `get_<kind>_steps`.
///
/// Keys this type does not name are kept in `extra`, because Ironic stores and returns the
/// agent's step dicts as they came (it adds `requires_ramdisk` itself when caching).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub priority: i64,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abortable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<BTreeMap<String, ArgInfo>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The step the conductor sends to the agent for execution (the node's `clean_step`,
/// `deploy_step` or `service_step`), which the agent echoes in its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStep {
    pub interface: String,
    pub step: String,
    /// Keyword arguments for the step; opaque to everything but the step itself.
    #[serde(default)]
    pub args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abortable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_ramdisk: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A step listed by the operator in `clean_steps` / `deploy_steps` / `service_steps` of
/// `PUT /v1/nodes/{id}/states/provision`. Ironic's request schema forbids other keys.
/// `priority` belongs to deploy and service steps; manual clean steps run in list order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserStep {
    pub interface: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// Identity of a step for Ironic: its interface and its name. Priority, arguments and
/// flags are deliberately not compared, because the agent's echo of a step and the node's
/// copy may differ in those (priority overrides, argument defaults) and still name the
/// same piece of work.
pub trait StepId {
    fn interface(&self) -> &str;
    fn step_name(&self) -> &str;

    /// Whether `self` and `other` are the same step as Ironic decides it.
    fn is_equivalent<O: StepId + ?Sized>(&self, other: &O) -> bool {
        self.interface() == other.interface() && self.step_name() == other.step_name()
    }
}

macro_rules! impl_step_id {
    ($($ty:ty),+) => {$(
        impl StepId for $ty {
            fn interface(&self) -> &str {
                &self.interface
            }
            fn step_name(&self) -> &str {
                &self.step
            }
        }
    )+};
}
impl_step_id!(Step, NodeStep, UserStep);

impl Step {
    /// The node-side form of this step, ready to become the node's current step.
    /// Agent-provided steps need the ramdisk by definition.
    pub fn to_node_step(&self, args: Map<String, Value>) -> NodeStep {
        NodeStep {
            interface: self.interface.clone(),
            step: self.step.clone(),
            args,
            priority: Some(self.priority),
            abortable: self.abortable,
            reboot_requested: self.reboot_requested,
            requires_ramdisk: Some(true),
            extra: Map::new(),
        }
    }
}

/// `hardware_manager_version`: manager NAME (`generic_hardware_manager`) to version
/// (`"1.2"`). Echoed back verbatim as `<kind>_version`; any difference means mismatch.
pub type HardwareManagerVersions = BTreeMap<String, String>;

/// Result of `get_<kind>_steps`: step lists keyed by hardware-manager CLASS name
/// (`GenericHardwareManager`) under the kind's key, plus the manager versions.
#[derive(Debug, Clone, PartialEq)]
pub struct GetStepsResult {
    pub kind: StepKind,
    pub steps: BTreeMap<String, Vec<Step>>,
    pub hardware_manager_version: HardwareManagerVersions,
}

impl GetStepsResult {
    /// Every step of every manager, in manager-name order then list order.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.values().flatten()
    }
}

const HWM_VERSION_KEY: &str = "hardware_manager_version";

impl Serialize for GetStepsResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.kind.steps_key(), &self.steps)?;
        map.serialize_entry(HWM_VERSION_KEY, &self.hardware_manager_version)?;
        map.end()
    }
}

/// The kind whose key (picked by `key`) is present in `map`; exactly one must be.
fn detect_kind<E: serde::de::Error>(
    map: &Map<String, Value>,
    key: fn(StepKind) -> &'static str,
) -> Result<StepKind, E> {
    let mut found = StepKind::ALL.into_iter().filter(|kind| map.contains_key(key(*kind)));
    match (found.next(), found.next()) {
        (Some(kind), None) => Ok(kind),
        (None, _) => Err(E::custom(format!(
            "none of {}, {}, {} present",
            key(StepKind::Clean),
            key(StepKind::Deploy),
            key(StepKind::Service)
        ))),
        (Some(a), Some(b)) => Err(E::custom(format!("both {} and {} present", key(a), key(b)))),
    }
}

fn take_field<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<T, E> {
    let value = map.remove(key).ok_or_else(|| E::custom(format!("missing field `{key}`")))?;
    serde_json::from_value(value).map_err(|e| E::custom(format!("field {key}: {e}")))
}

/// Deserialising detects the kind from whichever `<kind>_steps` key is present.
impl<'de> Deserialize<'de> for GetStepsResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = Map::deserialize(deserializer)?;
        let kind = detect_kind(&map, StepKind::steps_key)?;
        let steps = take_field(&mut map, kind.steps_key())?;
        let hardware_manager_version = take_field(&mut map, HWM_VERSION_KEY)?;
        Ok(GetStepsResult { kind, steps, hardware_manager_version })
    }
}

/// Result of `execute_<kind>_step`: `{"<kind>_result": <any>, "<kind>_step": <step>}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteStepResult {
    pub kind: StepKind,
    /// Whatever the step returned; opaque pass-through (`null` when it returned nothing).
    pub result: Value,
    /// The step as it was sent, echoed so the conductor can tell which step finished.
    pub step: NodeStep,
}

impl Serialize for ExecuteStepResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.kind.result_key(), &self.result)?;
        map.serialize_entry(self.kind.step_key(), &self.step)?;
        map.end()
    }
}

/// Deserialising detects the kind from whichever `<kind>_step` key is present; a missing
/// `<kind>_result` reads as `null`.
impl<'de> Deserialize<'de> for ExecuteStepResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = Map::deserialize(deserializer)?;
        let kind = detect_kind(&map, StepKind::step_key)?;
        let step = take_field(&mut map, kind.step_key())?;
        let result = map.remove(kind.result_key()).unwrap_or(Value::Null);
        Ok(ExecuteStepResult { kind, result, step })
    }
}

impl ExecuteStepResult {
    /// Parses a `command_result` that must belong to `kind`.
    pub fn from_value_for(kind: StepKind, value: Value) -> Result<Self, serde_json::Error> {
        let parsed: ExecuteStepResult = serde_json::from_value(value)?;
        if parsed.kind != kind {
            return Err(serde_json::Error::custom(format!(
                "expected {} but found {}",
                kind.step_key(),
                parsed.kind.step_key()
            )));
        }
        Ok(parsed)
    }
}

/// One hardware manager's offer of steps, for [`deduplicate_steps`].
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerSteps {
    /// Class name, the key of the result (`GenericHardwareManager`).
    pub class_name: String,
    /// How well the manager supports this hardware; higher wins.
    pub support: u32,
    pub steps: Vec<Step>,
}

/// Keeps one step per step name across all managers: the one from the manager with the
/// highest support level, then the highest priority, then the alphabetically first
/// manager class name. The result is keyed by manager class name; managers left without
/// steps are absent, and steps keep the order in which their names were first offered.
pub fn deduplicate_steps(offers: &[ManagerSteps]) -> BTreeMap<String, Vec<Step>> {
    let mut order: Vec<&str> = Vec::new();
    let mut best: BTreeMap<&str, (&ManagerSteps, &Step)> = BTreeMap::new();
    for manager in offers {
        for step in &manager.steps {
            let rank = |m: &ManagerSteps, s: &Step| {
                (m.support, s.priority, std::cmp::Reverse(m.class_name.clone()))
            };
            match best.get(step.step.as_str()) {
                None => {
                    order.push(&step.step);
                    best.insert(&step.step, (manager, step));
                }
                Some((m, s)) if rank(manager, step) > rank(m, s) => {
                    best.insert(&step.step, (manager, step));
                }
                Some(_) => {}
            }
        }
    }
    let mut result: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for name in order {
        if let Some((manager, step)) = best.get(name) {
            result.entry(manager.class_name.clone()).or_default().push((*step).clone());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_key_names() {
        let table = [
            (
                StepKind::Clean,
                [
                    "clean",
                    "clean_steps",
                    "clean_step",
                    "clean_result",
                    "clean_version",
                    "execute_clean_step",
                    "get_clean_steps",
                    "agent_cached_clean_steps",
                ],
            ),
            (
                StepKind::Deploy,
                [
                    "deploy",
                    "deploy_steps",
                    "deploy_step",
                    "deploy_result",
                    "deploy_version",
                    "execute_deploy_step",
                    "get_deploy_steps",
                    "agent_cached_deploy_steps",
                ],
            ),
            (
                StepKind::Service,
                [
                    "service",
                    "service_steps",
                    "service_step",
                    "service_result",
                    "service_version",
                    "execute_service_step",
                    "get_service_steps",
                    "agent_cached_service_steps",
                ],
            ),
        ];
        for (kind, keys) in table {
            let got = [
                kind.as_str(),
                kind.steps_key(),
                kind.step_key(),
                kind.result_key(),
                kind.version_key(),
                kind.execute_command(),
                kind.get_command(),
                kind.cached_steps_key(),
            ];
            assert_eq!(got, keys);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(keys[0]));
        }
        assert_eq!(StepKind::Clean.execute_command_name(), "clean.execute_clean_step");
        assert_eq!(StepKind::Service.get_command_name(), "service.get_service_steps");
    }

    #[test]
    fn agent_step_round_trips_the_documented_shape() {
        let doc = json!({"step": "erase_devices", "priority": 10, "interface": "deploy",
            "reboot_requested": false, "abortable": true,
            "argsinfo": {"match_patterns": {"description": "...", "required": false}}});
        let step: Step = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(step.step, "erase_devices");
        assert_eq!(step.priority, 10);
        assert_eq!(step.abortable, Some(true));
        assert!(!step.argsinfo.as_ref().unwrap()["match_patterns"].required);
        assert_eq!(serde_json::to_value(&step).unwrap(), doc);
    }

    #[test]
    fn agent_step_optional_keys_stay_absent_and_unknown_keys_survive() {
        let doc = json!({"step": "write_image", "priority": 0, "interface": "deploy",
            "vendor_hint": {"x": 1}});
        let step: Step = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(step.reboot_requested, None);
        assert_eq!(step.argsinfo, None);
        assert_eq!(step.extra["vendor_hint"], json!({"x": 1}));
        assert_eq!(serde_json::to_value(&step).unwrap(), doc);
    }

    #[test]
    fn agent_step_requires_step_priority_and_interface() {
        for missing in ["step", "priority", "interface"] {
            let mut doc = json!({"step": "erase_devices", "priority": 10, "interface": "deploy"});
            doc.as_object_mut().unwrap().remove(missing);
            let err = serde_json::from_value::<Step>(doc).unwrap_err().to_string();
            assert!(err.contains(missing), "{missing}: {err}");
        }
        let bad = json!({"step": "x", "priority": "high", "interface": "deploy"});
        assert!(serde_json::from_value::<Step>(bad).is_err());
    }

    #[test]
    fn node_step_round_trips_the_documented_shape() {
        let doc = json!({"interface": "deploy", "step": "erase_devices_metadata",
            "priority": 99, "args": {"k": [1, 2]}, "abortable": true,
            "reboot_requested": false, "requires_ramdisk": true});
        let step: NodeStep = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(step.priority, Some(99));
        assert_eq!(step.requires_ramdisk, Some(true));
        assert_eq!(step.args["k"], json!([1, 2]));
        assert_eq!(serde_json::to_value(&step).unwrap(), doc);
    }

    #[test]
    fn agent_step_becomes_node_step() {
        let step: Step = serde_json::from_value(json!({"step": "erase_devices_metadata",
            "priority": 99, "interface": "deploy", "reboot_requested": false,
            "abortable": true}))
        .unwrap();
        let node = step.to_node_step(Map::new());
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            json!({"interface": "deploy", "step": "erase_devices_metadata", "args": {},
                "priority": 99, "abortable": true, "reboot_requested": false,
                "requires_ramdisk": true})
        );
        assert!(node.is_equivalent(&step));
    }

    #[test]
    fn user_steps_reject_unknown_keys() {
        let ok = json!([{"interface": "deploy", "step": "erase_devices_metadata", "args": {}}]);
        let steps: Vec<UserStep> = serde_json::from_value(ok.clone()).unwrap();
        assert_eq!(serde_json::to_value(&steps).unwrap(), ok);
        let with_priority = json!({"interface": "raid", "step": "apply_configuration",
            "args": {"raid_config": {}}, "priority": 90});
        let step: UserStep = serde_json::from_value(with_priority).unwrap();
        assert_eq!(step.priority, Some(90));
        let unknown = json!({"interface": "deploy", "step": "x", "reboot": true});
        assert!(serde_json::from_value::<UserStep>(unknown).is_err());
    }

    #[test]
    fn equivalence_compares_interface_and_name_only() {
        let base = json!({"interface": "deploy", "step": "erase_devices", "priority": 10});
        let a: NodeStep = serde_json::from_value(base).unwrap();
        let cases = [
            (
                json!({"interface": "deploy", "step": "erase_devices", "priority": 0,
                "args": {"x": 1}, "abortable": false}),
                true,
            ),
            (json!({"interface": "deploy", "step": "erase_devices_metadata"}), false),
            (json!({"interface": "raid", "step": "erase_devices", "priority": 10}), false),
        ];
        for (other, expected) in cases {
            let b: NodeStep = serde_json::from_value(other.clone()).unwrap();
            assert_eq!(a.is_equivalent(&b), expected, "{other}");
        }
    }

    fn get_steps_doc(key: &str) -> Value {
        json!({
            key: {
                "GenericHardwareManager": [
                    {"step": "erase_devices", "priority": 10, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "delete_configuration", "priority": 0, "interface": "raid",
                     "reboot_requested": false, "abortable": true}
                ],
                "CustomHardwareManager": []
            },
            "hardware_manager_version": {"generic_hardware_manager": "1.2"}
        })
    }

    #[test]
    fn get_steps_result_round_trips_for_every_kind() {
        for kind in StepKind::ALL {
            let doc = get_steps_doc(kind.steps_key());
            let parsed: GetStepsResult = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.steps["GenericHardwareManager"].len(), 2);
            assert_eq!(parsed.hardware_manager_version["generic_hardware_manager"], "1.2");
            assert_eq!(parsed.all_steps().count(), 2);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
        }
    }

    #[test]
    fn get_steps_result_rejects_ambiguous_or_incomplete_bodies() {
        let none = json!({"hardware_manager_version": {}});
        let both = json!({"clean_steps": {}, "deploy_steps": {},
            "hardware_manager_version": {}});
        let no_version = json!({"clean_steps": {}});
        let bad_step = json!({"clean_steps": {"G": [{"step": "x"}]},
            "hardware_manager_version": {}});
        for body in [none, both, no_version, bad_step, json!([]), json!("x")] {
            assert!(serde_json::from_value::<GetStepsResult>(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn execute_step_result_round_trips_for_every_kind() {
        let step = json!({"interface": "deploy", "step": "write_image", "priority": 80,
            "args": {"image_info": {"id": "x"}}, "abortable": false,
            "reboot_requested": false, "requires_ramdisk": true});
        for kind in StepKind::ALL {
            let doc = json!({kind.result_key(): {"result": "prepare_image: done"},
                kind.step_key(): step.clone()});
            let parsed: ExecuteStepResult = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.step.step, "write_image");
            assert_eq!(parsed.result["result"], "prepare_image: done");
            assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
            let other = StepKind::ALL.into_iter().find(|k| *k != kind).unwrap();
            assert!(ExecuteStepResult::from_value_for(other, doc.clone()).is_err());
            assert!(ExecuteStepResult::from_value_for(kind, doc).is_ok());
        }
    }

    #[test]
    fn execute_step_result_null_result_and_errors() {
        let doc = json!({"clean_result": null,
            "clean_step": {"interface": "deploy", "step": "erase_devices"}});
        let parsed: ExecuteStepResult = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(parsed.result, Value::Null);
        let missing_result = json!({"clean_step": {"interface": "deploy", "step": "e"}});
        let parsed: ExecuteStepResult = serde_json::from_value(missing_result).unwrap();
        assert_eq!(parsed.result, Value::Null);
        for bad in [json!({"clean_result": 1}), json!({"clean_step": "erase_devices"}), json!(null)]
        {
            assert!(serde_json::from_value::<ExecuteStepResult>(bad.clone()).is_err(), "{bad}");
        }
    }

    fn offer(class_name: &str, support: u32, steps: &[(&str, i64)]) -> ManagerSteps {
        let steps = steps
            .iter()
            .map(|(name, priority)| {
                serde_json::from_value(json!({"step": name, "priority": priority,
                    "interface": "deploy"}))
                .unwrap()
            })
            .collect();
        ManagerSteps { class_name: class_name.into(), support, steps }
    }

    fn names(result: &BTreeMap<String, Vec<Step>>) -> Vec<(String, String, i64)> {
        result
            .iter()
            .flat_map(|(m, steps)| {
                steps.iter().map(move |s| (m.clone(), s.step.clone(), s.priority))
            })
            .collect()
    }

    #[test]
    fn dedup_prefers_support_then_priority_then_first_name() {
        let offers = [
            offer(
                "GenericHardwareManager",
                1,
                &[("erase_devices", 10), ("erase_pstore", 0), ("burnin_cpu", 0)],
            ),
            offer("VendorManager", 3, &[("erase_devices", 5)]),
            offer("ZetaManager", 2, &[("erase_pstore", 7), ("burnin_cpu", 0)]),
            offer("AlphaManager", 2, &[("erase_pstore", 7), ("burnin_cpu", 1)]),
            offer("EmptyManager", 9, &[]),
        ];
        let result = deduplicate_steps(&offers);
        let own = |m: &str, s: &str, p: i64| (m.to_owned(), s.to_owned(), p);
        assert_eq!(
            names(&result),
            [
                own("AlphaManager", "erase_pstore", 7),
                own("AlphaManager", "burnin_cpu", 1),
                own("VendorManager", "erase_devices", 5),
            ]
        );
        assert!(!result.contains_key("GenericHardwareManager"));
        assert!(!result.contains_key("EmptyManager"));
    }

    #[test]
    fn dedup_keeps_unique_steps_in_offer_order() {
        let offers = [offer("GenericHardwareManager", 1, &[("b", 1), ("a", 2), ("c", 0)])];
        let result = deduplicate_steps(&offers);
        let steps: Vec<_> = result["GenericHardwareManager"].iter().map(|s| &s.step).collect();
        assert_eq!(steps, ["b", "a", "c"]);
        assert!(deduplicate_steps(&[]).is_empty());
    }
}
