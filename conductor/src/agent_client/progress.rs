//! Where the node's current step stands, decided from the agent's command list the way
//! Ironic decides it on each heartbeat: only the LAST command matters.

use ferric_shared::command::{CommandError, CommandResult, CommandStatus};
use ferric_shared::steps::{ExecuteStepResult, NodeStep, StepId, StepKind};
use serde_json::Value;

/// The fate of the current step as the command list shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepProgress {
    /// The list is empty or holds only `get_<kind>_steps`: the agent has (re)booted since
    /// the last step was sent, e.g. after a step that asked for a reboot. Start the next
    /// step.
    FreshlyBooted,
    /// Nothing to do yet: the step is running, or the last command is another one (a
    /// previous step that finished, or an out-of-band command). Wait for the next
    /// heartbeat.
    Running,
    /// The current step succeeded; this is its `<kind>_result`.
    Done(Value),
    /// The step failed; the agent's message.
    Failed(String),
    /// The agent's hardware managers changed since the steps were fetched
    /// (`CLEAN_VERSION_MISMATCH`): fetch the steps again and restart.
    VersionMismatch,
}

/// The text Ironic shows for a failed command: `details`, else `message`, else the
/// whole error object.
pub fn command_error_message(error: Option<&CommandError>) -> String {
    let Some(error) = error else {
        return "the agent reported a failure without command_error".to_owned();
    };
    if !error.details.is_empty() {
        return error.details.clone();
    }
    if !error.message.is_empty() {
        return error.message.clone();
    }
    serde_json::to_string(error).unwrap_or_else(|_| format!("{error:?}"))
}

/// Decides the current step's progress from the agent's command list (section 2.5 of
/// the wire facts).
pub fn step_progress(
    kind: StepKind,
    commands: &[CommandResult],
    current_step: &NodeStep,
) -> StepProgress {
    if commands.iter().all(|c| c.command_name == kind.get_command()) {
        return StepProgress::FreshlyBooted;
    }
    let Some(last) = commands.last() else {
        return StepProgress::FreshlyBooted;
    };
    if last.command_name != kind.execute_command() {
        return StepProgress::Running;
    }
    match last.command_status {
        CommandStatus::Running => StepProgress::Running,
        CommandStatus::Failed => {
            StepProgress::Failed(command_error_message(last.command_error.as_ref()))
        }
        CommandStatus::CleanVersionMismatch => StepProgress::VersionMismatch,
        CommandStatus::Succeeded => {
            let echoed = last
                .command_result
                .clone()
                .and_then(|value| ExecuteStepResult::from_value_for(kind, value).ok());
            match echoed {
                Some(r) if r.step.is_equivalent(current_step) => StepProgress::Done(r.result),
                // A previous step's success: ours has not started yet.
                _ => StepProgress::Running,
            }
        }
    }
}

/// The interim progress a still-running `execute_<kind>_step` publishes in its
/// `command_result` (`{"progress": {...}}`: bytes done, total, rate, ETA of an image
/// write), when the last command is such a step. Ironic's agent publishes nothing while
/// running; Ferric's does.
pub fn running_step_progress(kind: StepKind, commands: &[CommandResult]) -> Option<Value> {
    let last = commands.last()?;
    if last.command_name != kind.execute_command() || last.command_status != CommandStatus::Running
    {
        return None;
    }
    last.command_result.as_ref()?.get("progress").filter(|p| p.is_object()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn running_progress_is_read_from_the_last_running_step_only() {
        let progress = json!({"phase": "downloading", "bytes_done": 10, "bytes_total": 100});
        let running =
            cmd("execute_deploy_step", "RUNNING", Value::Null, json!({"progress": progress}));
        let table: Vec<(Vec<CommandResult>, Option<Value>)> = vec![
            (vec![], None),
            (vec![running.clone()], Some(progress.clone())),
            (
                vec![cmd("get_deploy_steps", "SUCCEEDED", Value::Null, json!({})), running.clone()],
                Some(progress.clone()),
            ),
            // A running step that publishes nothing (IPA) or something else.
            (vec![cmd("execute_deploy_step", "RUNNING", Value::Null, Value::Null)], None),
            (
                vec![cmd("execute_deploy_step", "RUNNING", Value::Null, json!({"progress": 5}))],
                None,
            ),
            // Finished, or not the last command, or another kind of step.
            (
                vec![cmd("execute_deploy_step", "SUCCEEDED", Value::Null, json!({"progress": {}}))],
                None,
            ),
            (vec![running.clone(), cmd("sync", "SUCCEEDED", Value::Null, Value::Null)], None),
            (
                vec![cmd("execute_clean_step", "RUNNING", Value::Null, json!({"progress": {}}))],
                None,
            ),
        ];
        for (commands, expected) in table {
            assert_eq!(
                running_step_progress(StepKind::Deploy, &commands),
                expected,
                "{commands:?}"
            );
        }
    }

    fn cmd(name: &str, status: &str, error: Value, result: Value) -> CommandResult {
        serde_json::from_value(json!({"id": "x", "command_name": name,
            "command_status": status, "command_error": error, "command_result": result}))
        .unwrap()
    }

    fn step(interface: &str, name: &str) -> NodeStep {
        serde_json::from_value(json!({"interface": interface, "step": name, "priority": 99}))
            .unwrap()
    }

    fn echo(kind: StepKind, interface: &str, name: &str, result: Value) -> Value {
        json!({kind.result_key(): result,
            kind.step_key(): {"interface": interface, "step": name, "args": {}}})
    }

    fn error(details: &str, message: &str) -> Value {
        json!({"type": "CommandExecutionError", "code": 500, "message": message,
            "details": details})
    }

    #[test]
    fn progress_table() {
        use StepKind::{Clean, Deploy};
        let current = step("deploy", "erase_devices_metadata");
        let ok = |kind: StepKind, name: &str| {
            cmd(
                kind.execute_command(),
                "SUCCEEDED",
                Value::Null,
                echo(kind, "deploy", name, json!({"wiped": 2})),
            )
        };
        let get_steps =
            |kind: StepKind| cmd(kind.get_command(), "SUCCEEDED", Value::Null, json!({"x": 1}));
        let running =
            |kind: StepKind| cmd(kind.execute_command(), "RUNNING", Value::Null, Value::Null);
        let table: Vec<(&str, StepKind, Vec<CommandResult>, StepProgress)> = vec![
            ("empty list", Clean, vec![], StepProgress::FreshlyBooted),
            ("only get_clean_steps", Clean, vec![get_steps(Clean)], StepProgress::FreshlyBooted),
            (
                "get_deploy_steps is not a clean freshly-booted marker",
                Clean,
                vec![get_steps(Deploy)],
                StepProgress::Running,
            ),
            ("running", Clean, vec![get_steps(Clean), running(Clean)], StepProgress::Running),
            (
                "succeeded, ours",
                Clean,
                vec![get_steps(Clean), ok(Clean, "erase_devices_metadata")],
                StepProgress::Done(json!({"wiped": 2})),
            ),
            (
                "succeeded, ours, deploy kind",
                Deploy,
                vec![ok(Deploy, "erase_devices_metadata")],
                StepProgress::Done(json!({"wiped": 2})),
            ),
            (
                "succeeded, another step",
                Clean,
                vec![ok(Clean, "erase_devices")],
                StepProgress::Running,
            ),
            (
                "succeeded but for the other kind's keys",
                Clean,
                vec![cmd(
                    "execute_clean_step",
                    "SUCCEEDED",
                    Value::Null,
                    echo(Deploy, "deploy", "erase_devices_metadata", Value::Null),
                )],
                StepProgress::Running,
            ),
            (
                "succeeded without an echoed step",
                Clean,
                vec![cmd("execute_clean_step", "SUCCEEDED", Value::Null, Value::Null)],
                StepProgress::Running,
            ),
            (
                "only the last command counts",
                Clean,
                vec![ok(Clean, "erase_devices_metadata"), running(Clean)],
                StepProgress::Running,
            ),
            (
                "other command last",
                Clean,
                vec![ok(Clean, "erase_devices_metadata"), get_steps(Deploy)],
                StepProgress::Running,
            ),
            (
                "failed with details",
                Clean,
                vec![cmd(
                    "execute_clean_step",
                    "FAILED",
                    error("/dev/sda is read-only", "Command execution failed"),
                    Value::Null,
                )],
                StepProgress::Failed("/dev/sda is read-only".into()),
            ),
            (
                "failed with only a message",
                Clean,
                vec![cmd(
                    "execute_clean_step",
                    "FAILED",
                    error("", "Command execution failed"),
                    Value::Null,
                )],
                StepProgress::Failed("Command execution failed".into()),
            ),
            (
                "failed with neither",
                Clean,
                vec![cmd("execute_clean_step", "FAILED", error("", ""), Value::Null)],
                StepProgress::Failed(
                    r#"{"type":"CommandExecutionError","code":500,"message":"","details":""}"#
                        .into(),
                ),
            ),
            (
                "failed without an error object",
                Clean,
                vec![cmd("execute_clean_step", "FAILED", Value::Null, Value::Null)],
                StepProgress::Failed("the agent reported a failure without command_error".into()),
            ),
            (
                "failed, even for a previous step",
                Clean,
                vec![cmd(
                    "execute_clean_step",
                    "FAILED",
                    error("boom", "m"),
                    echo(Clean, "deploy", "erase_devices", Value::Null),
                )],
                StepProgress::Failed("boom".into()),
            ),
            (
                "version mismatch",
                Clean,
                vec![
                    get_steps(Clean),
                    cmd("execute_clean_step", "CLEAN_VERSION_MISMATCH", Value::Null, Value::Null),
                ],
                StepProgress::VersionMismatch,
            ),
        ];
        for (what, kind, commands, expected) in table {
            assert_eq!(step_progress(kind, &commands, &current), expected, "{what}");
        }
    }

    #[test]
    fn equivalence_ignores_priority_and_args_but_not_interface() {
        let current = step("deploy", "erase_devices_metadata");
        let with_other_args = cmd(
            "execute_clean_step",
            "SUCCEEDED",
            Value::Null,
            json!({"clean_result": null, "clean_step": {"interface": "deploy",
                "step": "erase_devices_metadata", "priority": 5, "args": {"a": 1}}}),
        );
        assert_eq!(
            step_progress(StepKind::Clean, &[with_other_args], &current),
            StepProgress::Done(Value::Null)
        );
        let other_interface = cmd(
            "execute_clean_step",
            "SUCCEEDED",
            Value::Null,
            echo(StepKind::Clean, "raid", "erase_devices_metadata", Value::Null),
        );
        assert_eq!(
            step_progress(StepKind::Clean, &[other_interface], &current),
            StepProgress::Running
        );
    }
}
