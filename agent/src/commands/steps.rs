//! The `clean` and `deploy` extensions: the steps this agent offers and their execution,
//! with ironic-python-agent's result shapes (`{"<kind>_steps": {<class>: [...]},
//! "hardware_manager_version": {<name>: <version>}}` and `{"<kind>_result": ...,
//! "<kind>_step": <step>}`).
//!
//! Only steps the agent really carries out are offered: today no clean step, and the
//! `write_image` deploy step (priority 0: the conductor's own `write_image` step calls
//! it), which runs what `standby.prepare_image` runs (see [`super::deploy`]).

use std::collections::BTreeMap;

use ferric_shared::steps::{
    ArgInfo, GetStepsResult, HardwareManagerVersions, NodeStep, Step, StepKind,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The class name under which the agent's steps are grouped.
pub const MANAGER_CLASS: &str = "FerricHardwareManager";
/// The manager name of `hardware_manager_version`.
pub const MANAGER_NAME: &str = "ferric_hardware_manager";
/// The manager version; changes whenever the offered steps change meaning.
pub const MANAGER_VERSION: &str = "1.1";

/// `{ferric_hardware_manager: <MANAGER_VERSION>}`.
pub fn manager_versions() -> HardwareManagerVersions {
    BTreeMap::from([(MANAGER_NAME.to_owned(), MANAGER_VERSION.to_owned())])
}

/// The steps of `kind` this agent offers.
pub fn offered_steps(kind: StepKind) -> Vec<Step> {
    match kind {
        StepKind::Deploy => vec![Step {
            step: "write_image".to_owned(),
            priority: 0,
            interface: "deploy".to_owned(),
            reboot_requested: Some(false),
            abortable: None,
            argsinfo: Some(BTreeMap::from([
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
                        description: "Config drive to write: base64 of a gzipped ISO 9660 \
                                      image, or its URL"
                            .to_owned(),
                        required: false,
                    },
                ),
            ])),
            extra: Map::new(),
        }],
        StepKind::Clean | StepKind::Service => Vec::new(),
    }
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

/// What a step request turns out to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    /// `deploy.write_image`: the same work as `standby.prepare_image`.
    WriteImage,
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
    let offered = offered_steps(request.kind)
        .into_iter()
        .any(|s| s.step == step.step && s.interface == step.interface);
    if !offered {
        return Err(StepFailure::Unknown {
            kind: request.kind,
            interface: step.interface.clone(),
            step: step.step.clone(),
        });
    }
    match (request.kind, step.interface.as_str(), step.step.as_str()) {
        (StepKind::Deploy, "deploy", "write_image") => Ok(StepAction::WriteImage),
        _ => Err(StepFailure::Unknown {
            kind: request.kind,
            interface: step.interface.clone(),
            step: step.step.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn get_steps_have_ipa_shape() {
        assert_eq!(
            serde_json::to_value(get_steps(StepKind::Clean)).unwrap(),
            json!({"clean_steps": {"FerricHardwareManager": []},
                   "hardware_manager_version": {"ferric_hardware_manager": "1.1"}})
        );
        assert_eq!(
            serde_json::to_value(get_steps(StepKind::Deploy)).unwrap(),
            json!({"deploy_steps": {"FerricHardwareManager": [
                        {"step": "write_image", "priority": 0, "interface": "deploy",
                         "reboot_requested": false,
                         "argsinfo": {
                             "image_info": {"description": "Information about the image to write",
                                            "required": true},
                             "configdrive": {"description": "Config drive to write: base64 of \
                                                             a gzipped ISO 9660 image, or its URL",
                                             "required": false}}}]},
                   "hardware_manager_version": {"ferric_hardware_manager": "1.1"}})
        );
    }

    #[test]
    fn step_requests_parse_and_refuse_bad_params() {
        let ok = StepRequest::parse(
            StepKind::Clean,
            obj(json!({"step": {"interface": "deploy", "step": "erase_devices"},
                       "node": {"uuid": "n1"}, "ports": [],
                       "clean_version": {"ferric_hardware_manager": "1.1"}})),
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
            Some(json!({"ferric_hardware_manager": "1.1"})),
        );
        assert_eq!(plan(&current), Ok(StepAction::WriteImage));

        let unknown = request(StepKind::Clean, "deploy", "erase_devices", None);
        assert_eq!(
            plan(&unknown).unwrap_err().to_string(),
            "clean step deploy.erase_devices is not offered by this agent"
        );
        // write_image is a deploy step only.
        let wrong_kind = request(StepKind::Clean, "deploy", "write_image", None);
        assert!(matches!(plan(&wrong_kind), Err(StepFailure::Unknown { .. })));

        let stale = request(
            StepKind::Deploy,
            "deploy",
            "write_image",
            Some(json!({"ferric_hardware_manager": "0.9"})),
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
