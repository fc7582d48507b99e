//! The command executor: one worker task that owns the host's disks and runs commands
//! one at a time, fed by a channel, plus the record of every command's result.
//!
//! Request handlers only parse and [`Executor::submit`]; the record is shared so the
//! command list can be read while a command runs. Results are kept in submission order
//! for the life of the process, since Ironic decides step completion from the last one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferric_shared::command::{CommandError, CommandResult, CommandStatus};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::commands::{
    split_name, AfterAction, Command, CommandContext, CommandFailure, CommandParseError,
    LiveResult, Mode, Output, ParseEnv,
};
use crate::session::Session;

/// Why a command was not accepted. The `Display` text is the fault string the API returns.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Parse(#[from] CommandParseError),
    #[error("Agent is busy: executing command {0}")]
    Busy(String),
    #[error("Agent is shutting down: the command executor has stopped")]
    Stopped,
}

/// An accepted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    pub mode: Mode,
}

/// Stops the API server; remembers whether the stop is a lockdown.
#[derive(Debug, Clone)]
pub struct StopSwitch {
    stop: Arc<watch::Sender<bool>>,
    lockdown: Arc<AtomicBool>,
}

impl Default for StopSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSwitch {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(watch::Sender::new(false)),
            lockdown: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the server to stop.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Asks the server to stop, to be followed by taking the network down.
    pub fn lockdown(&self) {
        self.lockdown.store(true, Ordering::SeqCst);
        self.stop();
    }

    pub fn lockdown_requested(&self) -> bool {
        self.lockdown.load(Ordering::SeqCst)
    }

    /// Resolves once a stop has been asked for.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            // The sender is kept alive by `self`'s clones; if all are gone, stop too.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

struct Job {
    index: usize,
    command: Command,
    span: tracing::Span,
}

#[derive(Debug)]
struct Record {
    results: Mutex<Vec<CommandResult>>,
    /// Bumped whenever a result changes, to wake waiters.
    changed: watch::Sender<u64>,
}

impl Record {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CommandResult>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut CommandResult)) {
        if let Some(r) = self.lock().get_mut(index) {
            f(r);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sets a running command's interim result; a finished command's result is final.
    fn publish(&self, index: usize, value: Value) {
        self.update(index, |r| {
            if r.command_status == CommandStatus::Running {
                r.command_result = Some(value);
            }
        });
    }
}

/// Handle to the worker and the record. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    record: Arc<Record>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Read when parsing: the conductor's settings from lookup.
    session: Arc<Session>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("index", &self.index).field("command", &self.command).finish()
    }
}

impl Executor {
    /// Starts the worker. Must be called within a Tokio runtime.
    pub fn start(ctx: CommandContext, stop: StopSwitch) -> Self {
        let record =
            Arc::new(Record { results: Mutex::new(Vec::new()), changed: watch::Sender::new(0) });
        let (jobs, rx) = mpsc::unbounded_channel();
        let session = ctx.session.clone();
        tokio::spawn(worker(rx, Arc::new(ctx), record.clone(), stop));
        Self { record, jobs, session }
    }

    /// Validates and records a command, and hands it to the worker.
    ///
    /// The checks run in ironic-python-agent's order: malformed name, busy (the last
    /// recorded command still running), unknown extension, unknown command, bad params.
    /// Nothing is recorded unless all pass.
    pub fn submit(&self, name: &str, params: Map<String, Value>) -> Result<Submitted, SubmitError> {
        let (extension, command_name) = split_name(name)?;
        let mut results = self.record.lock();
        if let Some(last) = results.last() {
            if !last.command_status.is_done() {
                return Err(SubmitError::Busy(last.command_name.clone()));
            }
        }
        let env = ParseEnv { md5_allowed: self.session.md5_allowed() };
        let command = Command::parse_in(extension, command_name, params, env)?;
        let id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("command", id = %id, name = %name);
        let mode = command.mode();
        let index = results.len();
        results.push(CommandResult {
            id: id.clone(),
            command_name: command.name().to_owned(),
            command_status: CommandStatus::Running,
            command_error: None,
            command_result: None,
        });
        if self.jobs.send(Job { index, command, span }).is_err() {
            results.pop();
            return Err(SubmitError::Stopped);
        }
        Ok(Submitted { id, mode })
    }

    /// Every result, in submission order.
    pub fn list(&self) -> Vec<CommandResult> {
        self.record.lock().clone()
    }

    pub fn get(&self, id: &str) -> Option<CommandResult> {
        self.record.lock().iter().find(|r| r.id == id).cloned()
    }

    /// Waits until the command is no longer running. `None` for an unknown id.
    pub async fn wait(&self, id: &str) -> Option<CommandResult> {
        let mut changed = self.record.changed.subscribe();
        loop {
            let current = self.get(id)?;
            if current.command_status.is_done() {
                return Some(current);
            }
            if changed.changed().await.is_err() {
                return self.get(id);
            }
        }
    }
}

/// Wraps a command's output as the recorded `command_result`.
fn wrap_output(output: Output, mode: Mode, command_name: &str) -> Option<Value> {
    match output {
        Output::Value(Value::Null) => None,
        Output::Value(v) => Some(v),
        Output::Text(s) => {
            let text = match mode {
                Mode::Sync => s,
                Mode::Async => format!("{command_name}: {s}"),
            };
            Some(serde_json::json!({ "result": text }))
        }
    }
}

/// The whole error chain, outermost first, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn worker(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ctx: Arc<CommandContext>,
    record: Arc<Record>,
    stop: StopSwitch,
) {
    while let Some(job) = jobs.recv().await {
        let span = job.span.clone();
        run_job(job, &ctx, &record, &stop).instrument(span).await;
    }
}

async fn run_job(job: Job, ctx: &Arc<CommandContext>, record: &Arc<Record>, stop: &StopSwitch) {
    let Job { index, command, span } = job;
    let mode = command.mode();
    let name = command.name();
    tracing::info!("command started");
    let sink = record.clone();
    let live = LiveResult::new(move |value| sink.publish(index, value));
    // A task of its own, so a panicking command fails instead of killing the worker.
    let task = tokio::spawn(command.run(ctx.clone(), live).instrument(span));
    let outcome = match task.await {
        Ok(r) => r,
        Err(e) => Err(CommandFailure::Task(e)),
    };
    let after = match outcome {
        Ok(done) => {
            tracing::info!("command succeeded");
            let result = wrap_output(done.output, mode, name);
            record.update(index, |r| {
                r.command_status = CommandStatus::Succeeded;
                r.command_result = result;
            });
            done.after
        }
        Err(e) => {
            let chain = error_chain(&e);
            tracing::error!(error = %chain, "command failed");
            let (status, error) = e.record(chain);
            record.update(index, |r| {
                r.command_status = status;
                r.command_error = Some(error);
                // An interim result published while running says nothing about a failure.
                r.command_result = None;
            });
            None
        }
    };
    if mode == Mode::Async {
        // Tell the heartbeat task, so the conductor hears about it without waiting for
        // the next regular heartbeat.
        ctx.session.command_finished.notify_one();
    }
    if let Some(action) = after {
        run_after(action, ctx, record, index, stop).await;
    }
}

/// Performs what must follow a recorded success. A failed power action turns the
/// record into a failure, since the machine is evidently still up to report it.
async fn run_after(
    action: AfterAction,
    ctx: &Arc<CommandContext>,
    record: &Record,
    index: usize,
    stop: &StopSwitch,
) {
    let power = ctx.power.clone();
    let result = match action {
        AfterAction::Lockdown => {
            // The network goes down only once the server has stopped and the reply to
            // this command has been sent; see `ApiHandle::lock_down_host`.
            tracing::warn!("lockdown requested: stopping the API");
            stop.lockdown();
            return;
        }
        AfterAction::PowerOff => {
            tracing::warn!("powering off");
            tokio::task::spawn_blocking(move || power.power_off()).await
        }
        AfterAction::Reboot => {
            tracing::warn!("rebooting");
            tokio::task::spawn_blocking(move || power.reboot()).await
        }
    };
    let failure = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => error_chain(&e),
        Err(e) => error_chain(&e),
    };
    tracing::error!(error = %failure, "power action failed");
    record.update(index, |r| {
        r.command_status = CommandStatus::Failed;
        r.command_result = None;
        r.command_error = Some(CommandError::execution_failed(failure));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_results_are_wrapped_by_mode() {
        let table = [
            (Mode::Sync, Some(serde_json::json!({"result": "done"}))),
            (Mode::Async, Some(serde_json::json!({"result": "prepare_image: done"}))),
        ];
        for (mode, expected) in table {
            assert_eq!(wrap_output(Output::Text("done".into()), mode, "prepare_image"), expected);
        }
        assert_eq!(wrap_output(Output::Value(Value::Null), Mode::Async, "x"), None);
        let v = serde_json::json!({"a": 1});
        assert_eq!(wrap_output(Output::Value(v.clone()), Mode::Sync, "x"), Some(v));
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
