//! The closed set of commands the agent accepts (`POST /v1/commands/`), parsed from the
//! wire `(name, params)` pair into typed values, and their implementations.
//!
//! Parsing is pure and happens in the request handler, so bad input is refused with an
//! HTTP error before anything is recorded; running happens only on the executor's one
//! worker (see [`crate::executor`]).

pub mod steps;
pub mod system_logs;

use std::sync::Arc;

use ferric_shared::command::{CommandError, CommandStatus};
use ferric_shared::steps::StepKind;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::inventory::{self, InventoryError, InventorySources};
use crate::logbuf::LogBuffer;
use crate::power::PowerControl;
use crate::session::Session;
use steps::{StepFailure, StepRequest};
use system_logs::SystemLogsError;

/// Extensions ironic-python-agent has. A command of a known extension that Ferric does not
/// implement is an unknown command (400), a command of any other extension is 404.
pub const KNOWN_EXTENSIONS: [&str; 10] =
    ["standby", "clean", "deploy", "service", "image", "log", "poll", "rescue", "system", "flow"];

/// Whether the caller waits for the result (sync) or gets `RUNNING` at once (async).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

/// A command, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `clean.get_clean_steps` / `deploy.get_deploy_steps`: the steps this agent offers.
    GetSteps(StepKind),
    /// `clean.execute_clean_step` / `deploy.execute_deploy_step`: runs one step.
    ExecuteStep(Box<StepRequest>),
    /// `standby.get_partition_uuids`: the partitions of the written image.
    GetPartitionUuids,
    /// `poll.get_hardware_info`: the inventory.
    GetHardwareInfo,
    /// `log.collect_system_logs`: base64 of a gzipped tar of the logs.
    CollectSystemLogs,
    /// `standby.sync`: flush file-system buffers.
    Sync,
    /// `standby.power_off`: sync, report success, power off.
    PowerOff,
    /// `standby.run_image`: sync, report success, reboot into the written image.
    RunImage,
    /// `system.lockdown`: stop the API and take the network down.
    Lockdown,
    /// `system.test_block`: runs until the test releases it.
    #[cfg(test)]
    TestBlock,
    /// `system.test_fail`: fails with the given message.
    #[cfg(test)]
    TestFail { message: String },
    /// `system.test_panic`: panics.
    #[cfg(test)]
    TestPanic,
}

/// Why a command request was refused. The `Display` text is the fault string the API
/// returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandParseError {
    #[error("Invalid command: Command name must be of the form <extension>.<name>")]
    MalformedName,
    #[error("Not found: Extension with id {0} not found.")]
    UnknownExtension(String),
    #[error("Invalid command: Unknown command: {0}")]
    UnknownCommand(String),
    #[error("Invalid command parameters: {0}")]
    InvalidParams(String),
}

/// Splits `extension.command` at the first dot.
pub fn split_name(name: &str) -> Result<(&str, &str), CommandParseError> {
    name.split_once('.').ok_or(CommandParseError::MalformedName)
}

/// Parameters of commands that take none. Unknown keys are refused, as a Python method
/// without `**kwargs` refuses them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[cfg(test)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFailParams {
    message: String,
}

fn params<T: DeserializeOwned>(params: Map<String, Value>) -> Result<T, CommandParseError> {
    serde_json::from_value(Value::Object(params))
        .map_err(|e| CommandParseError::InvalidParams(e.to_string()))
}

impl Command {
    /// Parses a command from its extension, command name and parameters.
    pub fn parse(
        extension: &str,
        command: &str,
        raw: Map<String, Value>,
    ) -> Result<Self, CommandParseError> {
        if !KNOWN_EXTENSIONS.contains(&extension) {
            return Err(CommandParseError::UnknownExtension(extension.to_owned()));
        }
        let parsed = match (extension, command) {
            ("clean", "get_clean_steps") | ("deploy", "get_deploy_steps") => {
                let kind = if extension == "clean" { StepKind::Clean } else { StepKind::Deploy };
                let steps::GetStepsParams { .. } = params(raw)?;
                return Ok(Command::GetSteps(kind));
            }
            ("clean", "execute_clean_step") | ("deploy", "execute_deploy_step") => {
                let kind = if extension == "clean" { StepKind::Clean } else { StepKind::Deploy };
                let request = StepRequest::parse(kind, raw)
                    .map_err(|e| CommandParseError::InvalidParams(e.to_string()))?;
                return Ok(Command::ExecuteStep(Box::new(request)));
            }
            ("standby", "get_partition_uuids") => Command::GetPartitionUuids,
            ("poll", "get_hardware_info") => Command::GetHardwareInfo,
            ("log", "collect_system_logs") => Command::CollectSystemLogs,
            ("standby", "sync") => Command::Sync,
            ("standby", "power_off") => Command::PowerOff,
            ("standby", "run_image") => Command::RunImage,
            ("system", "lockdown") => Command::Lockdown,
            #[cfg(test)]
            ("system", "test_block") => Command::TestBlock,
            #[cfg(test)]
            ("system", "test_fail") => {
                let p: TestFailParams = params(raw)?;
                return Ok(Command::TestFail { message: p.message });
            }
            #[cfg(test)]
            ("system", "test_panic") => Command::TestPanic,
            _ => return Err(CommandParseError::UnknownCommand(command.to_owned())),
        };
        let NoParams {} = params(raw)?;
        Ok(parsed)
    }

    /// The extension part of the wire name.
    pub fn extension(&self) -> &'static str {
        match self {
            Command::GetSteps(kind) => kind.as_str(),
            Command::ExecuteStep(request) => request.kind.as_str(),
            Command::GetPartitionUuids => "standby",
            Command::GetHardwareInfo => "poll",
            Command::CollectSystemLogs => "log",
            Command::Sync | Command::PowerOff | Command::RunImage => "standby",
            Command::Lockdown => "system",
            #[cfg(test)]
            Command::TestBlock | Command::TestFail { .. } | Command::TestPanic => "system",
        }
    }

    /// The command part of the wire name: what `command_name` reports.
    pub fn name(&self) -> &'static str {
        match self {
            Command::GetSteps(kind) => kind.get_command(),
            Command::ExecuteStep(request) => request.kind.execute_command(),
            Command::GetPartitionUuids => "get_partition_uuids",
            Command::GetHardwareInfo => "get_hardware_info",
            Command::CollectSystemLogs => "collect_system_logs",
            Command::Sync => "sync",
            Command::PowerOff => "power_off",
            Command::RunImage => "run_image",
            Command::Lockdown => "lockdown",
            #[cfg(test)]
            Command::TestBlock => "test_block",
            #[cfg(test)]
            Command::TestFail { .. } => "test_fail",
            #[cfg(test)]
            Command::TestPanic => "test_panic",
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Command::GetSteps(_) | Command::GetPartitionUuids => Mode::Sync,
            Command::ExecuteStep(_) => Mode::Async,
            Command::GetHardwareInfo
            | Command::CollectSystemLogs
            | Command::Sync
            | Command::Lockdown => Mode::Sync,
            Command::PowerOff | Command::RunImage => Mode::Async,
            #[cfg(test)]
            Command::TestBlock => Mode::Async,
            #[cfg(test)]
            Command::TestFail { .. } | Command::TestPanic => Mode::Sync,
        }
    }

    /// Runs the command on the executor's worker.
    pub async fn run(self, ctx: Arc<CommandContext>) -> Result<Completion, CommandFailure> {
        match self {
            Command::GetSteps(kind) => {
                let value =
                    serde_json::to_value(steps::get_steps(kind)).map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
            Command::ExecuteStep(request) => {
                let done = steps::execute(&request).map_err(CommandFailure::Step)?;
                let value = serde_json::to_value(done).map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
            // Whole-disk images only, so far: nothing to report, as IPA for such images.
            Command::GetPartitionUuids => Ok(Completion::value(Value::Object(Map::new()))),
            Command::GetHardwareInfo => {
                let sources = ctx.inventory.clone();
                let inventory = tokio::task::spawn_blocking(move || inventory::collect(&sources))
                    .await
                    .map_err(CommandFailure::Task)?
                    .map_err(CommandFailure::Inventory)?;
                let value = serde_json::to_value(inventory).map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
            Command::CollectSystemLogs => {
                let ctx2 = ctx.clone();
                let archive = tokio::task::spawn_blocking(move || {
                    let inventory = inventory::collect(&ctx2.inventory);
                    system_logs::collect(&ctx2.inventory.host, &ctx2.logs.contents(), inventory)
                })
                .await
                .map_err(CommandFailure::Task)?
                .map_err(CommandFailure::SystemLogs)?;
                Ok(Completion::value(serde_json::json!({ "system_logs": archive })))
            }
            Command::Sync => {
                sync_disks(&ctx).await?;
                Ok(Completion::null())
            }
            Command::PowerOff => {
                sync_disks(&ctx).await?;
                Ok(Completion::null().then(AfterAction::PowerOff))
            }
            Command::RunImage => {
                sync_disks(&ctx).await?;
                Ok(Completion::null().then(AfterAction::Reboot))
            }
            Command::Lockdown => Ok(Completion::null().then(AfterAction::Lockdown)),
            #[cfg(test)]
            Command::TestBlock => {
                if let Ok(permit) = ctx.test_gate.acquire().await {
                    // Each release lets exactly one blocked command finish.
                    permit.forget();
                }
                Ok(Completion::text("released"))
            }
            #[cfg(test)]
            Command::TestFail { message } => Err(CommandFailure::Test(message)),
            #[cfg(test)]
            Command::TestPanic => panic!("test_panic"),
        }
    }
}

async fn sync_disks(ctx: &Arc<CommandContext>) -> Result<(), CommandFailure> {
    let power = ctx.power.clone();
    // sync(2) can take long with much dirty data; keep it off the async threads.
    tokio::task::spawn_blocking(move || power.sync_disks()).await.map_err(CommandFailure::Task)
}

/// What commands may use.
#[derive(Debug)]
pub struct CommandContext {
    pub session: Arc<Session>,
    pub inventory: InventorySources,
    pub power: Arc<dyn PowerControl>,
    pub logs: Arc<LogBuffer>,
    /// Released by tests to let `system.test_block` finish.
    #[cfg(test)]
    pub test_gate: Arc<tokio::sync::Semaphore>,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A JSON result (`null` included).
    Value(Value),
    /// A plain string, wrapped as `{"result": ...}` when recorded.
    Text(String),
}

/// Something that must happen after the result is recorded, because it ends the
/// agent's ability to report anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAction {
    Reboot,
    PowerOff,
    Lockdown,
}

/// A successful command run.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub output: Output,
    pub after: Option<AfterAction>,
}

impl Completion {
    fn value(v: Value) -> Self {
        Self { output: Output::Value(v), after: None }
    }

    fn null() -> Self {
        Self::value(Value::Null)
    }

    #[cfg(test)]
    fn text(s: &str) -> Self {
        Self { output: Output::Text(s.to_owned()), after: None }
    }

    fn then(mut self, after: AfterAction) -> Self {
        self.after = Some(after);
        self
    }
}

/// Why a command failed while running.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailure {
    #[error("collecting the hardware inventory")]
    Inventory(#[source] InventoryError),
    #[error("encoding the result as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("collecting system logs")]
    SystemLogs(#[source] SystemLogsError),
    #[error("the command's task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Step(StepFailure),
    #[cfg(test)]
    #[error("{0}")]
    Test(String),
}

impl CommandFailure {
    /// The status and `command_error` recorded for this failure: a hardware-manager
    /// version mismatch has its own status, as in ironic-python-agent, so that the
    /// conductor fetches the steps again; anything else is `FAILED` with the whole
    /// error chain as details.
    pub fn record(&self, chain: String) -> (CommandStatus, CommandError) {
        match self {
            CommandFailure::Step(StepFailure::VersionMismatch { .. }) => (
                CommandStatus::CleanVersionMismatch,
                CommandError {
                    kind: "VersionMismatch".to_owned(),
                    code: 409,
                    message: "Hardware managers version mismatch, reload agent with correct \
                              version"
                        .to_owned(),
                    details: chain,
                },
            ),
            _ => (CommandStatus::Failed, CommandError::execution_failed(chain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn wire_names_parse_to_commands() {
        let table = [
            ("poll.get_hardware_info", Command::GetHardwareInfo, Mode::Sync),
            ("log.collect_system_logs", Command::CollectSystemLogs, Mode::Sync),
            ("standby.sync", Command::Sync, Mode::Sync),
            ("standby.power_off", Command::PowerOff, Mode::Async),
            ("standby.run_image", Command::RunImage, Mode::Async),
            ("system.lockdown", Command::Lockdown, Mode::Sync),
            ("clean.get_clean_steps", Command::GetSteps(StepKind::Clean), Mode::Sync),
            ("deploy.get_deploy_steps", Command::GetSteps(StepKind::Deploy), Mode::Sync),
            ("standby.get_partition_uuids", Command::GetPartitionUuids, Mode::Sync),
        ];
        for (wire, expected, mode) in table {
            let (ext, cmd) = split_name(wire).unwrap();
            let parsed = Command::parse(ext, cmd, Map::new()).unwrap();
            assert_eq!(parsed, expected, "{wire}");
            assert_eq!(parsed.mode(), mode, "{wire}");
            assert_eq!(format!("{}.{}", parsed.extension(), parsed.name()), wire);
        }
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        assert_eq!(split_name("nodot"), Err(CommandParseError::MalformedName));
        assert_eq!(split_name("a.b.c"), Ok(("a", "b.c")));
        let table = [
            ("bogus", "sync", json!({}), "Not found: Extension with id bogus not found."),
            ("standby", "nope", json!({}), "Invalid command: Unknown command: nope"),
            // Known extension, command not implemented here.
            (
                "service",
                "execute_service_step",
                json!({}),
                "Invalid command: Unknown command: execute_service_step",
            ),
            (
                "clean",
                "execute_clean_step",
                json!({}),
                "Invalid command parameters: missing parameter step",
            ),
        ];
        for (ext, cmd, p, text) in table {
            let err = Command::parse(ext, cmd, obj(p)).unwrap_err();
            assert_eq!(err.to_string(), text);
        }
        let err = Command::parse("standby", "sync", obj(json!({"force": true}))).unwrap_err();
        assert!(
            matches!(&err, CommandParseError::InvalidParams(m) if m.contains("force")),
            "{err}"
        );
        assert!(err.to_string().starts_with("Invalid command parameters: "));
    }
}
