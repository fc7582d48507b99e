//! The agent's command API bodies (ironic-python-agent's REST API on port 9999): command
//! requests and results, the fault body of every error reply, and the bodies of `GET /`,
//! `GET /v1/` and `GET /v1/status`.
//!
//! Field names and status strings are the ones Ironic reads; a `CommandResult` carries
//! exactly five keys, with `null` written out rather than left off.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/commands/` body: `{"name": "<extension>.<command>", "params": {...}}`.
///
/// Both keys are required and `params` must be an object. Other keys are ignored, as
/// ironic-python-agent ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub name: String,
    pub params: Map<String, Value>,
}

/// Where a command stands. `CLEAN_VERSION_MISMATCH` means the hardware-manager versions
/// sent with a step differ from the agent's; Ironic also accepts `VERSION_MISMATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandStatus {
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "CLEAN_VERSION_MISMATCH", alias = "VERSION_MISMATCH")]
    CleanVersionMismatch,
}

impl CommandStatus {
    /// Whether the command has finished (anything but `RUNNING`).
    pub fn is_done(self) -> bool {
        self != CommandStatus::Running
    }
}

/// `command_error` of a failed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    /// The error class, e.g. `CommandExecutionError`.
    #[serde(rename = "type")]
    pub kind: String,
    /// An HTTP-like code, e.g. 500.
    pub code: u16,
    /// The generic message of the class, e.g. "Command execution failed".
    pub message: String,
    /// What specifically went wrong; Ironic shows this text to the operator.
    pub details: String,
}

impl CommandError {
    /// The class name used for failures that are not request errors.
    pub const EXECUTION_ERROR: &'static str = "CommandExecutionError";

    /// A command that ran and failed: `CommandExecutionError`, code 500.
    pub fn execution_failed(details: impl Into<String>) -> Self {
        Self {
            kind: Self::EXECUTION_ERROR.to_owned(),
            code: 500,
            message: "Command execution failed".to_owned(),
            details: details.into(),
        }
    }
}

/// One entry of the agent's command list.
///
/// `command_name` is the command part only (`execute_clean_step`, not
/// `clean.execute_clean_step`). The parameters are deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: String,
    pub command_name: String,
    pub command_status: CommandStatus,
    pub command_error: Option<CommandError>,
    pub command_result: Option<Value>,
}

/// `GET /v1/commands/` body, results in submission order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CommandList {
    pub commands: Vec<CommandResult>,
}

/// Who is at fault for an error reply: `Server` for codes >= 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultCode {
    Client,
    Server,
}

impl FaultCode {
    /// The fault code ironic-python-agent uses for an HTTP status code.
    pub fn for_status(status: u16) -> Self {
        if status >= 500 {
            FaultCode::Server
        } else {
            FaultCode::Client
        }
    }
}

/// The body of every error reply of the agent API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFault {
    pub faultcode: FaultCode,
    pub faultstring: String,
}

/// `GET /v1/status` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Seconds since the epoch when the agent started.
    pub started_at: f64,
    pub version: String,
}

/// A hypermedia link: `{"href": "...", "rel": "self"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
    pub rel: String,
}

/// The version object in `GET /`: `{"id": "v1", "links": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentApiVersion {
    pub id: String,
    pub links: Vec<Link>,
}

impl AgentApiVersion {
    /// The `v1` version object for an agent reached at `base_url` (no trailing slash).
    pub fn v1(base_url: &str) -> Self {
        Self {
            id: "v1".to_owned(),
            links: vec![Link { href: format!("{base_url}/v1/"), rel: "self".to_owned() }],
        }
    }
}

/// `GET /` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRoot {
    pub name: String,
    pub description: String,
    pub versions: Vec<AgentApiVersion>,
    pub default_version: AgentApiVersion,
}

impl AgentRoot {
    pub fn new(base_url: &str) -> Self {
        Self {
            name: "OpenStack Ironic Python Agent API".to_owned(),
            description: "Ironic Python Agent is a provisioning agent for OpenStack Ironic"
                .to_owned(),
            versions: vec![AgentApiVersion::v1(base_url)],
            default_version: AgentApiVersion::v1(base_url),
        }
    }
}

/// A media type offered by the API (`GET /v1/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaType {
    pub base: String,
    #[serde(rename = "type")]
    pub media_type: String,
}

/// `GET /v1/` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentV1 {
    pub id: String,
    pub links: Vec<Link>,
    pub commands: Vec<Link>,
    pub status: Vec<Link>,
    pub media_types: Vec<MediaType>,
}

impl AgentV1 {
    pub fn new(base_url: &str) -> Self {
        let pair = |path: &str| {
            ["self", "bookmark"]
                .into_iter()
                .map(|rel| Link { href: format!("{base_url}{path}"), rel: rel.to_owned() })
                .collect()
        };
        let v1 = AgentApiVersion::v1(base_url);
        Self {
            id: v1.id,
            links: v1.links,
            commands: pair("/v1/commands/"),
            status: pair("/v1/status/"),
            media_types: vec![MediaType {
                base: "application/json".to_owned(),
                media_type: "application/vnd.openstack.ironic-python-agent.v1+json".to_owned(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_result_round_trips_with_exactly_five_keys() {
        let wire = json!({
            "id": "4c0b7c5e-0f4b-4a4e-9a65-3f4f3f1d2a10",
            "command_name": "execute_clean_step",
            "command_status": "SUCCEEDED",
            "command_error": null,
            "command_result": {
                "clean_result": null,
                "clean_step": {"interface": "deploy", "step": "erase_devices_metadata"}
            }
        });
        let parsed: CommandResult = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(parsed.command_status, CommandStatus::Succeeded);
        assert_eq!(parsed.command_name, "execute_clean_step");
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, wire);
        assert_eq!(back.as_object().unwrap().len(), 5);
    }

    #[test]
    fn nulls_are_written_out() {
        let r = CommandResult {
            id: "x".into(),
            command_name: "power_off".into(),
            command_status: CommandStatus::Running,
            command_error: None,
            command_result: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"x","command_name":"power_off","command_status":"RUNNING","command_error":null,"command_result":null}"#
        );
    }

    #[test]
    fn failed_result_carries_the_error_object() {
        let wire = json!({
            "id": "a",
            "command_name": "get_hardware_info",
            "command_status": "FAILED",
            "command_error": {
                "type": "CommandExecutionError",
                "code": 500,
                "message": "Command execution failed",
                "details": "reading /proc/meminfo: permission denied"
            },
            "command_result": null
        });
        let parsed: CommandResult = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(
            parsed.command_error,
            Some(CommandError::execution_failed("reading /proc/meminfo: permission denied"))
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
    }

    #[test]
    fn status_strings() {
        let table = [
            ("RUNNING", CommandStatus::Running, false),
            ("SUCCEEDED", CommandStatus::Succeeded, true),
            ("FAILED", CommandStatus::Failed, true),
            ("CLEAN_VERSION_MISMATCH", CommandStatus::CleanVersionMismatch, true),
        ];
        for (s, status, done) in table {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(s));
            assert_eq!(serde_json::from_value::<CommandStatus>(json!(s)).unwrap(), status);
            assert_eq!(status.is_done(), done, "{s}");
        }
        let alias: CommandStatus = serde_json::from_value(json!("VERSION_MISMATCH")).unwrap();
        assert_eq!(alias, CommandStatus::CleanVersionMismatch);
        assert!(serde_json::from_value::<CommandStatus>(json!("running")).is_err());
    }

    #[test]
    fn request_needs_name_and_object_params() {
        let ok: CommandRequest =
            serde_json::from_value(json!({"name": "standby.sync", "params": {}, "x": 1})).unwrap();
        assert_eq!(ok.name, "standby.sync");
        assert!(ok.params.is_empty());
        for bad in [
            json!({"name": "standby.sync"}),
            json!({"params": {}}),
            json!({"name": "standby.sync", "params": []}),
            json!({"name": "standby.sync", "params": null}),
            json!({"name": 5, "params": {}}),
            json!([]),
        ] {
            assert!(serde_json::from_value::<CommandRequest>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_list_and_fault_bodies() {
        let list: CommandList = serde_json::from_value(json!({"commands": []})).unwrap();
        assert!(list.commands.is_empty());
        let fault =
            json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."});
        let parsed: AgentFault = serde_json::from_value(fault.clone()).unwrap();
        assert_eq!(parsed.faultcode, FaultCode::Client);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), fault);
        assert_eq!(FaultCode::for_status(499), FaultCode::Client);
        assert_eq!(FaultCode::for_status(500), FaultCode::Server);
        assert_eq!(serde_json::to_value(FaultCode::Server).unwrap(), json!("Server"));
    }

    #[test]
    fn status_body() {
        let wire = json!({"started_at": 1700000000.25, "version": "13.0.0"});
        let parsed: AgentStatus = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(parsed.started_at, 1700000000.25);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
    }

    #[test]
    fn root_and_v1_bodies() {
        let root = serde_json::to_value(AgentRoot::new("http://10.0.0.5:9999")).unwrap();
        let v = json!({"id": "v1", "links": [{"href": "http://10.0.0.5:9999/v1/", "rel": "self"}]});
        assert_eq!(root["versions"], json!([v.clone()]));
        assert_eq!(root["default_version"], v);
        assert!(root["name"].is_string() && root["description"].is_string());
        assert_eq!(root.as_object().unwrap().len(), 4);

        let v1 = serde_json::to_value(AgentV1::new("https://h:9999")).unwrap();
        assert_eq!(
            v1,
            json!({
                "id": "v1",
                "links": [{"href": "https://h:9999/v1/", "rel": "self"}],
                "commands": [
                    {"href": "https://h:9999/v1/commands/", "rel": "self"},
                    {"href": "https://h:9999/v1/commands/", "rel": "bookmark"}
                ],
                "status": [
                    {"href": "https://h:9999/v1/status/", "rel": "self"},
                    {"href": "https://h:9999/v1/status/", "rel": "bookmark"}
                ],
                "media_types": [{
                    "base": "application/json",
                    "type": "application/vnd.openstack.ironic-python-agent.v1+json"
                }]
            })
        );
        let back: AgentV1 = serde_json::from_value(v1).unwrap();
        assert_eq!(back, AgentV1::new("https://h:9999"));
    }
}
