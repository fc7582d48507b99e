//! The `clean`, `deploy` and `service` extensions: the steps this agent offers and their
//! execution, with ironic-python-agent's result shapes (`{"<kind>_steps": {<class>:
//! [...]}, "hardware_manager_version": {<name>: <version>}}` and `{"<kind>_result": ...,
//! "<kind>_step": <step>}`).
//!
//! The steps are offered under ironic-python-agent's `GenericHardwareManager` names, so
//! that Ironic's cleaning configuration (`[deploy]erase_devices_priority`, manual step
//! lists naming `deploy.erase_devices`) works unchanged. Only steps the agent really
//! carries out are offered: no RAID, no `clean_uefi_nvram`, no GPU or network burn-in.
//! `write_image` (priority 0: the conductor's own `write_image` step calls it) runs what
//! `standby.prepare_image` runs (see [`super::deploy`]).

use std::collections::BTreeMap;

use ferric_shared::steps::{
    ArgInfo, GetStepsResult, HardwareManagerVersions, NodeStep, Step, StepKind,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The class name under which the agent's steps are grouped.
pub const MANAGER_CLASS: &str = "GenericHardwareManager";
/// The manager name of `hardware_manager_version`.
pub const MANAGER_NAME: &str = "generic_hardware_manager";
/// The manager version; changes whenever the offered steps change meaning.
pub const MANAGER_VERSION: &str = "1.2";

/// `{generic_hardware_manager: <MANAGER_VERSION>}`.
pub fn manager_versions() -> HardwareManagerVersions {
    BTreeMap::from([(MANAGER_NAME.to_owned(), MANAGER_VERSION.to_owned())])
}

/// What a step request turns out to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    /// `deploy.write_image`: the same work as `standby.prepare_image`.
    WriteImage,
    /// Every erasable disk with the fastest verified method.
    EraseDevices,
    /// Signatures and partition tables of every erasable device.
    EraseDevicesMetadata,
    /// Hardware erase where a disk has one, metadata erase elsewhere.
    EraseDevicesExpress,
    /// The kernel's persistent-store records.
    ErasePstore,
    BurninCpu,
    BurninMemory,
    BurninDisk,
}

/// One offered step: its name, the interface it belongs to, its default priority, and
/// the action that carries it out.
struct Offer {
    step: &'static str,
    priority: i64,
    action: StepAction,
}

/// Clean steps: all `reboot_requested: false`, `abortable: true`, on the deploy
/// interface, with ironic-python-agent's priorities (metadata 99 before the full erase
/// at 10; everything else only on request).
const CLEAN_OFFERS: &[Offer] = &[
    Offer { step: "erase_devices", priority: 10, action: StepAction::EraseDevices },
    Offer {
        step: "erase_devices_metadata",
        priority: 99,
        action: StepAction::EraseDevicesMetadata,
    },
    Offer { step: "erase_devices_express", priority: 0, action: StepAction::EraseDevicesExpress },
    Offer { step: "erase_pstore", priority: 0, action: StepAction::ErasePstore },
    Offer { step: "burnin_cpu", priority: 0, action: StepAction::BurninCpu },
    Offer { step: "burnin_disk", priority: 0, action: StepAction::BurninDisk },
    Offer { step: "burnin_memory", priority: 0, action: StepAction::BurninMemory },
];

/// Deploy steps carry no `abortable`, as in ironic-python-agent.
const DEPLOY_OFFERS: &[Offer] = &[
    Offer { step: "erase_devices_metadata", priority: 0, action: StepAction::EraseDevicesMetadata },
    Offer { step: "write_image", priority: 0, action: StepAction::WriteImage },
];

/// Service steps (ironic-python-agent leaves `burnin_disk` out on purpose: servicing
/// runs on a deployed node whose disks hold the instance).
const SERVICE_OFFERS: &[Offer] = &[
    Offer { step: "burnin_cpu", priority: 0, action: StepAction::BurninCpu },
    Offer { step: "burnin_memory", priority: 0, action: StepAction::BurninMemory },
    Offer { step: "write_image", priority: 0, action: StepAction::WriteImage },
];

fn offers(kind: StepKind) -> &'static [Offer] {
    match kind {
        StepKind::Clean => CLEAN_OFFERS,
        StepKind::Deploy => DEPLOY_OFFERS,
        StepKind::Service => SERVICE_OFFERS,
    }
}

fn write_image_argsinfo() -> BTreeMap<String, ArgInfo> {
    BTreeMap::from([
        (
            "image_info".to_owned(),
            ArgInfo {
                description: "Information about the image to write".to_owned(),
                required: true,
            },
        ),
        (
            "configdrive".to_owned(),
            ArgInfo {
                description: "Config drive to write: base64 of a gzipped ISO 9660 image, or \
                              its URL"
                    .to_owned(),
                required: false,
            },
        ),
    ])
}

/// The steps of `kind` this agent offers.
pub fn offered_steps(kind: StepKind) -> Vec<Step> {
    offers(kind)
        .iter()
        .map(|offer| Step {
            step: offer.step.to_owned(),
            priority: offer.priority,
            interface: "deploy".to_owned(),
            reboot_requested: Some(false),
            abortable: (kind != StepKind::Deploy).then_some(true),
            argsinfo: (offer.action == StepAction::WriteImage).then(write_image_argsinfo),
            extra: Map::new(),
        })
        .collect()
}

/// The `get_<kind>_steps` result.
pub fn get_steps(kind: StepKind) -> GetStepsResult {
    GetStepsResult {
        kind,
        steps: BTreeMap::from([(MANAGER_CLASS.to_owned(), offered_steps(kind))]),
        hardware_manager_version: manager_versions(),
    }
}

/// Parameters of `get_<kind>_steps`: the node and its ports, which this agent does not
/// need to decide its steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetStepsParams {
    #[serde(default)]
    #[allow(dead_code)]
    node: Value,
    #[serde(default)]
    #[allow(dead_code)]
    ports: Value,
}

/// A parsed `execute_<kind>_step` request.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    pub kind: StepKind,
    pub step: NodeStep,
    /// The conductor's copy of `hardware_manager_version`; `None` skips the check.
    pub expected_versions: Option<HardwareManagerVersions>,
    /// The node object sent with the step (root-device hints, skip list), if any.
    pub node: Option<Value>,
}

/// Why a step request is malformed; becomes "Invalid command parameters: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepParamsError {
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("unexpected parameter {0}")]
    Unexpected(String),
    #[error("parameter step: {0}")]
    Step(String),
    #[error("parameter {key}: {reason}")]
    Version { key: &'static str, reason: String },
}

impl StepRequest {
    /// Parses `{step, node, ports, <kind>_version}`.
    pub fn parse(kind: StepKind, mut raw: Map<String, Value>) -> Result<Self, StepParamsError> {
        let step = raw.remove("step").ok_or(StepParamsError::Missing("step"))?;
        let step: NodeStep =
            serde_json::from_value(step).map_err(|e| StepParamsError::Step(e.to_string()))?;
        let version_key = kind.version_key();
        let expected_versions = match raw.remove(version_key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| StepParamsError::Version {
                key: version_key,
                reason: e.to_string(),
            })?),
        };
        let node = raw.remove("node").filter(|n| !n.is_null());
        raw.remove("ports");
        if let Some(key) = raw.keys().next() {
            return Err(StepParamsError::Unexpected(key.clone()));
        }
        Ok(Self { kind, step, expected_versions, node })
    }
}

/// Why a step did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// The conductor's manager versions differ from the agent's: it must fetch the steps
    /// again. Recorded with status `CLEAN_VERSION_MISMATCH`.
    #[error("Hardware managers version mismatch, reload agent with correct version: current versions {current:?}, expected versions {expected:?}")]
    VersionMismatch { current: HardwareManagerVersions, expected: HardwareManagerVersions },
    #[error("{kind} step {interface}.{step} is not offered by this agent")]
    Unknown { kind: StepKind, interface: String, step: String },
}

/// Checks a step request: the versions, then whether the step is offered.
pub fn plan(request: &StepRequest) -> Result<StepAction, StepFailure> {
    let current = manager_versions();
    if let Some(expected) = &request.expected_versions {
        if *expected != current {
            return Err(StepFailure::VersionMismatch { current, expected: expected.clone() });
        }
    }
    let step = &request.step;
    offers(request.kind)
        .iter()
        .find(|offer| offer.step == step.step && step.interface == "deploy")
        .map(|offer| offer.action)
        .ok_or_else(|| StepFailure::Unknown {
            kind: request.kind,
            interface: step.interface.clone(),
            step: step.step.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn row(step: &Step) -> (String, String, i64, Option<bool>, Option<bool>) {
        (
            step.step.clone(),
            step.interface.clone(),
            step.priority,
            step.reboot_requested,
            step.abortable,
        )
    }

    #[test]
    fn offered_steps_are_the_generic_hardware_managers() {
        // ironic-python-agent's GenericHardwareManager steps that this agent carries out,
        // as the wire facts list them.
        let t = |s: &str, p: i64, abortable: Option<bool>| {
            (s.to_owned(), "deploy".to_owned(), p, Some(false), abortable)
        };
        let table = [
            (
                StepKind::Clean,
                vec![
                    t("erase_devices", 10, Some(true)),
                    t("erase_devices_metadata", 99, Some(true)),
                    t("erase_devices_express", 0, Some(true)),
                    t("erase_pstore", 0, Some(true)),
                    t("burnin_cpu", 0, Some(true)),
                    t("burnin_disk", 0, Some(true)),
                    t("burnin_memory", 0, Some(true)),
                ],
            ),
            (
                StepKind::Deploy,
                vec![t("erase_devices_metadata", 0, None), t("write_image", 0, None)],
            ),
            (
                StepKind::Service,
                vec![
                    t("burnin_cpu", 0, Some(true)),
                    t("burnin_memory", 0, Some(true)),
                    t("write_image", 0, Some(true)),
                ],
            ),
        ];
        for (kind, expected) in table {
            let got: Vec<_> = offered_steps(kind).iter().map(row).collect();
            assert_eq!(got, expected, "{kind:?}");
            // Every offered step is carried out.
            for step in offered_steps(kind) {
                let req = request(kind, "deploy", &step.step, None);
                assert!(plan(&req).is_ok(), "{kind:?} {}", step.step);
            }
        }
    }

    #[test]
    fn get_steps_have_ipa_shape() {
        let clean = serde_json::to_value(get_steps(StepKind::Clean)).unwrap();
        assert_eq!(clean["hardware_manager_version"], json!({"generic_hardware_manager": "1.2"}));
        assert_eq!(
            clean["clean_steps"]["GenericHardwareManager"][1],
            json!({"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                   "reboot_requested": false, "abortable": true})
        );
        assert_eq!(clean.as_object().unwrap().len(), 2, "{clean}");
        assert_eq!(clean["clean_steps"].as_object().unwrap().len(), 1, "{clean}");
        let deploy = serde_json::to_value(get_steps(StepKind::Deploy)).unwrap();
        assert_eq!(
            deploy["deploy_steps"]["GenericHardwareManager"][1],
            json!({"step": "write_image", "priority": 0, "interface": "deploy",
                   "reboot_requested": false,
                   "argsinfo": {
                       "image_info": {"description": "Information about the image to write",
                                      "required": true},
                       "configdrive": {"description": "Config drive to write: base64 of \
                                                       a gzipped ISO 9660 image, or its URL",
                                       "required": false}}})
        );
        let service = serde_json::to_value(get_steps(StepKind::Service)).unwrap();
        assert_eq!(service["service_steps"]["GenericHardwareManager"][0]["step"], "burnin_cpu");
    }

    #[test]
    fn step_requests_parse_and_refuse_bad_params() {
        let ok = StepRequest::parse(
            StepKind::Clean,
            obj(json!({"step": {"interface": "deploy", "step": "erase_devices"},
                       "node": {"uuid": "n1"}, "ports": [],
                       "clean_version": {"generic_hardware_manager": "1.2"}})),
        )
        .unwrap();
        assert_eq!(ok.step.step, "erase_devices");
        assert_eq!(ok.expected_versions, Some(manager_versions()));
        assert_eq!(ok.node, Some(json!({"uuid": "n1"})));
        let null_version = StepRequest::parse(
            StepKind::Deploy,
            obj(json!({"step": {"interface": "deploy", "step": "write_image"},
                       "deploy_version": null})),
        )
        .unwrap();
        assert_eq!(null_version.expected_versions, None);
        assert_eq!(null_version.node, None);

        for (kind, params, fragment) in [
            (StepKind::Clean, json!({"node": {}}), "missing parameter step"),
            (StepKind::Clean, json!({"step": {"interface": "deploy"}}), "parameter step"),
            (
                StepKind::Clean,
                json!({"step": {"interface": "deploy", "step": "x"}, "clean_version": 3}),
                "clean_version",
            ),
            (
                StepKind::Deploy,
                json!({"step": {"interface": "deploy", "step": "x"}, "clean_version": {}}),
                "unexpected parameter clean_version",
            ),
        ] {
            let err = StepRequest::parse(kind, obj(params.clone())).unwrap_err();
            assert!(err.to_string().contains(fragment), "{params}: {err}");
        }
    }

    fn request(
        kind: StepKind,
        interface: &str,
        step: &str,
        versions: Option<Value>,
    ) -> StepRequest {
        StepRequest {
            kind,
            step: serde_json::from_value(json!({"interface": interface, "step": step})).unwrap(),
            expected_versions: versions.map(|v| serde_json::from_value(v).unwrap()),
            node: None,
        }
    }

    #[test]
    fn execution_outcomes() {
        let write = request(StepKind::Deploy, "deploy", "write_image", None);
        assert_eq!(plan(&write), Ok(StepAction::WriteImage));
        let current = request(
            StepKind::Deploy,
            "deploy",
            "write_image",
            Some(json!({"generic_hardware_manager": "1.2"})),
        );
        assert_eq!(plan(&current), Ok(StepAction::WriteImage));

        let erase = request(StepKind::Clean, "deploy", "erase_devices", None);
        assert_eq!(plan(&erase), Ok(StepAction::EraseDevices));
        let deploy_meta = request(StepKind::Deploy, "deploy", "erase_devices_metadata", None);
        assert_eq!(plan(&deploy_meta), Ok(StepAction::EraseDevicesMetadata));

        for (kind, interface, step) in [
            (StepKind::Clean, "deploy", "clean_uefi_nvram"),
            (StepKind::Clean, "raid", "delete_configuration"),
            // The right name on the wrong interface.
            (StepKind::Clean, "raid", "erase_devices"),
            // write_image is no clean step, burnin_disk no service step.
            (StepKind::Clean, "deploy", "write_image"),
            (StepKind::Service, "deploy", "burnin_disk"),
            (StepKind::Deploy, "deploy", "erase_devices"),
        ] {
            let err = plan(&request(kind, interface, step, None)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{kind} step {interface}.{step} is not offered by this agent")
            );
        }

        let stale = request(
            StepKind::Deploy,
            "deploy",
            "write_image",
            Some(json!({"generic_hardware_manager": "0.9"})),
        );
        match plan(&stale) {
            Err(StepFailure::VersionMismatch { current, expected }) => {
                assert_eq!(current, manager_versions());
                assert_eq!(expected.get(MANAGER_NAME).map(String::as_str), Some("0.9"));
            }
            other => panic!("{other:?}"),
        }
    }
}
