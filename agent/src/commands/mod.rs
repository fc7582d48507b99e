//! The closed set of commands the agent accepts (`POST /v1/commands/`), parsed from the
//! wire `(name, params)` pair into typed values, and their implementations.
//!
//! Parsing is pure and happens in the request handler, so bad input is refused with an
//! HTTP error before anything is recorded; running happens only on the executor's one
//! worker (see [`crate::executor`]).

pub mod deploy;
pub mod steps;
pub mod system_logs;

use std::sync::Arc;

use ferric_shared::command::{CommandError, CommandStatus};
use ferric_shared::steps::StepKind;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::executor::error_chain;
use crate::inventory::{self, InventoryError, InventorySources};
use crate::logbuf::LogBuffer;
use crate::power::PowerControl;
use crate::session::Session;
use deploy::{DeployContext, DeployError, ImageJob, ImageParams, PrepareEnv};
use steps::{StepAction, StepFailure, StepRequest};
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
    /// `standby.prepare_image`: writes the image to the target disk.
    PrepareImage(Box<ImageJob>),
    /// `image.install_bootloader`: not supported yet; fails with a clear message.
    InstallBootloader,
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

/// What parsing may depend on besides the request itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseEnv {
    /// Whether the conductor allows MD5 checksums (lookup's `agent_md5_checksum_enable`).
    pub md5_allowed: bool,
}

/// Splits `extension.command` at the first dot.
pub fn split_name(name: &str) -> Result<(&str, &str), CommandParseError> {
    name.split_once('.').ok_or(CommandParseError::MalformedName)
}

/// The step kind of a steps extension (`clean`, `deploy` or `service`).
fn step_kind(extension: &str) -> StepKind {
    match extension {
        "clean" => StepKind::Clean,
        "service" => StepKind::Service,
        _ => StepKind::Deploy,
    }
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

/// Parameters of `image.install_bootloader`, accepted as sent so that the refusal is the
/// clear "not supported yet" rather than a complaint about parameters.
#[derive(Debug, Deserialize)]
struct AnyParams {}

impl Command {
    /// Parses a command from its extension, command name and parameters, with MD5
    /// checksums refused.
    pub fn parse(
        extension: &str,
        command: &str,
        raw: Map<String, Value>,
    ) -> Result<Self, CommandParseError> {
        Self::parse_in(extension, command, raw, ParseEnv::default())
    }

    /// Parses a command from its extension, command name and parameters.
    pub fn parse_in(
        extension: &str,
        command: &str,
        raw: Map<String, Value>,
        env: ParseEnv,
    ) -> Result<Self, CommandParseError> {
        if !KNOWN_EXTENSIONS.contains(&extension) {
            return Err(CommandParseError::UnknownExtension(extension.to_owned()));
        }
        let parsed = match (extension, command) {
            ("clean", "get_clean_steps")
            | ("deploy", "get_deploy_steps")
            | ("service", "get_service_steps") => {
                let kind = step_kind(extension);
                let steps::GetStepsParams { .. } = params(raw)?;
                return Ok(Command::GetSteps(kind));
            }
            ("clean", "execute_clean_step")
            | ("deploy", "execute_deploy_step")
            | ("service", "execute_service_step") => {
                let kind = step_kind(extension);
                let request = StepRequest::parse(kind, raw)
                    .map_err(|e| CommandParseError::InvalidParams(e.to_string()))?;
                return Ok(Command::ExecuteStep(Box::new(request)));
            }
            ("standby", "get_partition_uuids") => Command::GetPartitionUuids,
            ("standby", "prepare_image") => {
                let p: ImageParams = params(raw)?;
                let job = ImageJob::from_params(p, None, env.md5_allowed)
                    .map_err(|e| CommandParseError::InvalidParams(error_chain(&e)))?;
                return Ok(Command::PrepareImage(Box::new(job)));
            }
            ("image", "install_bootloader") => {
                let AnyParams {} = params(raw)?;
                return Ok(Command::InstallBootloader);
            }
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
            Command::GetPartitionUuids | Command::PrepareImage(_) => "standby",
            Command::InstallBootloader => "image",
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
            Command::PrepareImage(_) => "prepare_image",
            Command::InstallBootloader => "install_bootloader",
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
            Command::ExecuteStep(_) | Command::PrepareImage(_) | Command::InstallBootloader => {
                Mode::Async
            }
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

    /// Runs the command on the executor's worker. `live` publishes a running command's
    /// interim result.
    pub async fn run(
        self,
        ctx: Arc<CommandContext>,
        live: LiveResult,
    ) -> Result<Completion, CommandFailure> {
        match self {
            Command::GetSteps(kind) => {
                let value =
                    serde_json::to_value(steps::get_steps(kind)).map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
            Command::ExecuteStep(request) => {
                let action = steps::plan(&request).map_err(CommandFailure::Step)?;
                let result = match action {
                    StepAction::WriteImage => {
                        let args = request.step.args.clone();
                        let p: ImageParams = serde_json::from_value(Value::Object(args))
                            .map_err(|e| DeployError::InvalidArgs(e.to_string()))?;
                        let md5 = ctx.session.md5_allowed();
                        let job = ImageJob::from_params(p, request.node.clone(), md5)?;
                        let prepared =
                            deploy::prepare_image(&job, prepare_env(&ctx, &live)).await?;
                        // As ironic-python-agent's step, which runs prepare_image.
                        serde_json::json!({
                            "result": format!("prepare_image: {}", prepared.message())
                        })
                    }
                    other => {
                        // The node sent with the step, else the one lookup returned, for
                        // driver_info / driver_internal_info / skip_block_devices.
                        let node = request.node.clone().or_else(|| ctx.session.node());
                        run_blocking_step(&ctx, &live, other, node).await?
                    }
                };
                let done = ferric_shared::steps::ExecuteStepResult {
                    kind: request.kind,
                    result,
                    step: request.step,
                };
                let value = serde_json::to_value(done).map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
            Command::PrepareImage(job) => {
                let prepared = deploy::prepare_image(&job, prepare_env(&ctx, &live)).await?;
                Ok(Completion { output: Output::Text(prepared.message()), after: None })
            }
            Command::InstallBootloader => Err(CommandFailure::NotSupported("install_bootloader")),
            Command::GetPartitionUuids => {
                let value = serde_json::to_value(ctx.deploy.partition_uuids())
                    .map_err(CommandFailure::Encode)?;
                Ok(Completion::value(value))
            }
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
                live.publish(serde_json::json!({"waiting": "for release"}));
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

/// Runs an erase or burn-in step on a blocking thread: they do long, synchronous disk and
/// memory work. Erase progress is published as the command's interim result.
async fn run_blocking_step(
    ctx: &Arc<CommandContext>,
    live: &LiveResult,
    action: StepAction,
    node: Option<Value>,
) -> Result<Value, CommandFailure> {
    use crate::erase::run as erase;
    let host = ctx.inventory.host.clone();
    let config = ctx.erase.clone();
    let live = live.clone();
    tokio::task::spawn_blocking(move || {
        let progress = |value: Value| live.publish(value);
        let node = node.as_ref();
        match action {
            StepAction::EraseDevices => {
                erase::erase_devices(&host, node, &config, &progress).map_err(CommandFailure::Erase)
            }
            StepAction::EraseDevicesMetadata => {
                erase::erase_devices_metadata(&host, node, &config, &progress)
                    .map_err(CommandFailure::Erase)
            }
            StepAction::EraseDevicesExpress => {
                erase::erase_devices_express(&host, node, &config, &progress)
                    .map_err(CommandFailure::Erase)
            }
            StepAction::ErasePstore => {
                crate::erase::pstore::erase_pstore(&host).map_err(CommandFailure::Erase)
            }
            StepAction::BurninCpu => {
                crate::burnin::cpu::burnin_cpu(node).map_err(CommandFailure::Burnin)
            }
            StepAction::BurninMemory => {
                crate::burnin::memory::burnin_memory(&host, node).map_err(CommandFailure::Burnin)
            }
            StepAction::BurninDisk => {
                crate::burnin::disk::burnin_disk(&host, node).map_err(CommandFailure::Burnin)
            }
            StepAction::WriteImage => {
                Err(CommandFailure::NotSupported("write_image as a blocking step"))
            }
        }
    })
    .await
    .map_err(CommandFailure::Task)?
}

fn prepare_env<'a>(ctx: &'a CommandContext, live: &'a LiveResult) -> PrepareEnv<'a> {
    let config = ctx.session.lookup_config();
    PrepareEnv {
        host: &ctx.inventory.host,
        deploy: &ctx.deploy,
        cached_node: ctx.session.node(),
        md5_allowed: config.agent_md5_checksum_enable == Some(true),
        permitted_formats: config.permitted_image_formats,
        live,
    }
}

/// Publishes a running command's interim `command_result` (e.g. an image write's
/// progress). Ironic reads results only once a command is done; Ferric shows them live.
#[derive(Clone, Default)]
pub struct LiveResult {
    sink: Option<Arc<dyn Fn(Value) + Send + Sync>>,
}

impl std::fmt::Debug for LiveResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveResult").field("connected", &self.sink.is_some()).finish()
    }
}

impl LiveResult {
    /// Publishes through `sink`.
    pub fn new(sink: impl Fn(Value) + Send + Sync + 'static) -> Self {
        Self { sink: Some(Arc::new(sink)) }
    }

    /// Publishes nowhere.
    pub fn detached() -> Self {
        Self::default()
    }

    pub fn publish(&self, value: Value) {
        if let Some(sink) = &self.sink {
            sink(value);
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
    /// Image-writing settings and what has been written.
    pub deploy: DeployContext,
    /// The agent's erase settings.
    pub erase: crate::erase::run::EraseConfig,
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
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("{0} is not supported yet")]
    NotSupported(&'static str),
    #[error(transparent)]
    Erase(crate::erase::run::EraseStepError),
    #[error(transparent)]
    Burnin(crate::burnin::BurninError),
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
            ("image.install_bootloader", Command::InstallBootloader, Mode::Async),
            ("service.get_service_steps", Command::GetSteps(StepKind::Service), Mode::Sync),
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
                "rescue",
                "finalize_rescue",
                json!({}),
                "Invalid command: Unknown command: finalize_rescue",
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
        let image_info = json!({"id": "i", "urls": ["http://h/i"],
                                "checksum": "d41d8cd98f00b204e9800998ecf8427e"});
        let params = obj(json!({"image_info": image_info, "configdrive": "H4sI"}));
        let err = Command::parse("standby", "prepare_image", params.clone()).unwrap_err();
        assert!(err.to_string().contains("no usable checksum"), "{err}");
        let env = ParseEnv { md5_allowed: true };
        match Command::parse_in("standby", "prepare_image", params, env).unwrap() {
            Command::PrepareImage(job) => {
                assert_eq!(job.info.id, "i");
                assert_eq!(job.configdrive.as_deref(), Some("H4sI"));
                assert_eq!(job.node, None);
            }
            other => panic!("{other:?}"),
        }
        let extra = obj(json!({"image_info": image_info, "force": true}));
        let err = Command::parse_in("standby", "prepare_image", extra, env).unwrap_err();
        assert!(err.to_string().contains("force"), "{err}");

        let err = Command::parse("standby", "sync", obj(json!({"force": true}))).unwrap_err();
        assert!(
            matches!(&err, CommandParseError::InvalidParams(m) if m.contains("force")),
            "{err}"
        );
        assert!(err.to_string().starts_with("Invalid command parameters: "));
    }
}
