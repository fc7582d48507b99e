//! `--wait`: deciding, from successive `GET /v1/nodes/{id}/states` replies, whether a
//! provisioning verb has reached its stable target, failed, or is still under way; and the
//! one-line progress report shown while waiting.
//!
//! The decisions are a pure function of the observations so that they can be checked
//! against scripted state sequences.

use std::time::Duration;

use ferric_shared::states::{ProvisionState, ProvisionVerb};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The fields of `GET /v1/nodes/{id}/states` the wait loop reads. Unknown states are
/// kept as text: a newer server may report states this client does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeStates {
    #[serde(default)]
    pub provision_state: Option<String>,
    #[serde(default)]
    pub target_provision_state: Option<String>,
    #[serde(default)]
    pub provision_updated_at: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub power_state: Option<String>,
}

/// The stable state a verb's `--wait` waits for; `None` for verbs that have nothing to
/// wait for (`abort` lands in a failed state by design).
pub fn wait_goal(verb: ProvisionVerb) -> Option<ProvisionState> {
    use ProvisionState as S;
    use ProvisionVerb as V;
    match verb {
        V::Manage | V::Clean | V::Inspect => Some(S::Manageable),
        V::Provide | V::Deleted | V::Undeploy => Some(S::Available),
        V::Active | V::Deploy | V::Rebuild | V::Adopt | V::Unrescue => Some(S::Active),
        V::Rescue => Some(S::Rescue),
        V::Service | V::Unhold => None,
        V::Abort => None,
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The node reached the goal.
    Reached { state: String },
    /// The node landed in a failed state, or in a stable state other than the goal.
    Failed { state: String, last_error: Option<String> },
    /// The time allowed ran out; `state` is the last one seen.
    TimedOut { state: String, waited: Duration },
}

impl WaitOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, WaitOutcome::Reached { .. })
    }
}

/// Watches one node after a provisioning request.
#[derive(Debug, Clone)]
pub struct Waiter {
    goal: ProvisionState,
    before: NodeStates,
    timeout: Option<Duration>,
    moved: bool,
}

impl Waiter {
    /// `before` is the node's state read just before the request was sent: until the node
    /// visibly moves away from it, its (possibly failed or stable) state is not a verdict
    /// on this request. `timeout` of `None` waits for ever.
    pub fn new(goal: ProvisionState, before: NodeStates, timeout: Option<Duration>) -> Self {
        Self { goal, before, timeout, moved: false }
    }

    pub fn goal(&self) -> ProvisionState {
        self.goal
    }

    /// One observation at `elapsed` since the request; `None` means keep polling.
    pub fn observe(&mut self, elapsed: Duration, now: &NodeStates) -> Option<WaitOutcome> {
        let state = now.provision_state.clone().unwrap_or_default();
        self.moved = self.moved
            || now.provision_state != self.before.provision_state
            || now.target_provision_state != self.before.target_provision_state
            || now.provision_updated_at != self.before.provision_updated_at
            || now.last_error != self.before.last_error;
        if self.moved {
            if state == self.goal.as_str() {
                return Some(WaitOutcome::Reached { state });
            }
            if is_failed_state(&state) {
                return Some(WaitOutcome::Failed { state, last_error: now.last_error.clone() });
            }
            // Stable without a target yet not the goal: the operation ended elsewhere
            // (e.g. `manage` whose verification failed returns the node to `enroll`).
            if now.target_provision_state.is_none() && is_stable_state(&state) {
                return Some(WaitOutcome::Failed { state, last_error: now.last_error.clone() });
            }
        }
        match self.timeout {
            Some(limit) if elapsed >= limit => {
                Some(WaitOutcome::TimedOut { state, waited: elapsed })
            }
            _ => None,
        }
    }
}

/// `deploy failed`, `clean failed`, … and `error`.
pub fn is_failed_state(state: &str) -> bool {
    state.ends_with(" failed") || state == ProvisionState::Error.as_str()
}

fn is_stable_state(state: &str) -> bool {
    state.parse::<ProvisionState>().is_ok_and(ProvisionState::is_stable)
}

/// Runs a waiter over a whole sequence of observations, as the polling loop does; `None`
/// when the sequence ends before a verdict.
pub fn judge_sequence<'a>(
    mut waiter: Waiter,
    observations: impl IntoIterator<Item = (Duration, &'a NodeStates)>,
) -> Option<WaitOutcome> {
    observations.into_iter().find_map(|(elapsed, states)| waiter.observe(elapsed, states))
}

/// How long ago `agent_last_heartbeat` (`driver_internal_info`) was, given `now`. Ironic
/// writes it as an ISO 8601 time without an offset (UTC, microseconds); RFC 3339 with an
/// offset is accepted too. A time in the future counts as zero.
pub fn heartbeat_age(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let at = OffsetDateTime::parse(value, &Rfc3339).ok().or_else(|| {
        let naive = time::macros::format_description!(
            version = 2,
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(value, naive).ok().map(PrimitiveDateTime::assume_utc)
    })?;
    let age = now - at;
    Some(if age.is_negative() { Duration::ZERO } else { age.unsigned_abs() })
}

/// `1h02m03s`, `4m05s`, `7s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The progress line: `node-7: wait call-back -> active, 1m05s elapsed, last heartbeat 12s
/// ago`.
pub fn progress_line(
    node: &str,
    states: &NodeStates,
    elapsed: Duration,
    heartbeat: Option<Duration>,
) -> String {
    let state = states.provision_state.as_deref().unwrap_or("None");
    let target = states.target_provision_state.as_deref().unwrap_or("None");
    let beat = match heartbeat {
        Some(age) => format!("last heartbeat {} ago", format_duration(age)),
        None => "no heartbeat yet".to_owned(),
    };
    format!("{node}: {state} -> {target}, {} elapsed, {beat}", format_duration(elapsed))
}

/// An image write's progress as the conductor keeps it
/// (`driver_internal_info.deploy_step_progress`, published by the agent while its
/// `write_image` step runs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageProgress {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: Option<u64>,
    #[serde(default)]
    pub rate_bytes_per_second: Option<f64>,
    #[serde(default)]
    pub eta_seconds: Option<f64>,
}

impl ImageProgress {
    /// Reads it from a node's `driver_internal_info`; `None` when absent or malformed.
    pub fn from_driver_internal_info(info: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(info.get("deploy_step_progress")?.clone()).ok()
    }
}

/// `1.5 GiB`, `512.0 MiB`, `100 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `writing image (downloading): 512.0 MiB of 2.0 GiB (25%), 100.0 MiB/s, ETA 15s`.
pub fn image_progress_text(p: &ImageProgress) -> String {
    let phase = p.phase.as_deref().map(|ph| format!(" ({ph})")).unwrap_or_default();
    let mut text = format!("writing image{phase}: {}", format_bytes(p.bytes_done));
    if let Some(total) = p.bytes_total {
        text.push_str(&format!(" of {}", format_bytes(total)));
        if total > 0 {
            let percent = (p.bytes_done.min(total) as f64 * 100.0 / total as f64).floor();
            text.push_str(&format!(" ({percent:.0}%)"));
        }
    }
    if let Some(rate) = p.rate_bytes_per_second.filter(|r| r.is_finite() && *r > 0.0) {
        text.push_str(&format!(", {}/s", format_bytes(rate as u64)));
    }
    if let Some(eta) = p.eta_seconds.filter(|e| e.is_finite() && *e >= 0.0) {
        text.push_str(&format!(", ETA {}", format_duration(Duration::from_secs_f64(eta.round()))));
    }
    text
}

/// What to write for one progress report: on a terminal the line is redrawn in place
/// (carriage return, erase line) and ended only when the wait is over; elsewhere every
/// report is a line of its own.
pub fn progress_output(live: bool, line: &str, finished: bool) -> String {
    match (live, finished) {
        (true, false) => format!("\r\x1b[2K{line}"),
        (true, true) => format!("\r\x1b[2K{line}\n"),
        (false, _) => format!("{line}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn st(state: &str, target: Option<&str>, at: &str, err: Option<&str>) -> NodeStates {
        NodeStates {
            provision_state: Some(state.to_owned()),
            target_provision_state: target.map(str::to_owned),
            provision_updated_at: Some(at.to_owned()),
            last_error: err.map(str::to_owned),
            power_state: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn image_progress_lines() {
        let table = [
            (
                serde_json::json!({"deploy_step_progress": {
                    "phase": "downloading", "bytes_done": 536870912u64,
                    "bytes_total": 2147483648u64, "elapsed_seconds": 5.0,
                    "rate_bytes_per_second": 104857600.0, "eta_seconds": 15.4}}),
                Some(
                    "writing image (downloading): 512.0 MiB of 2.0 GiB (25%), 100.0 MiB/s, ETA 15s",
                ),
            ),
            (
                serde_json::json!({"deploy_step_progress": {"bytes_done": 100,
                    "bytes_total": null, "rate_bytes_per_second": 0.0, "eta_seconds": null}}),
                Some("writing image: 100 B"),
            ),
            (
                serde_json::json!({"deploy_step_progress": {"phase": "finishing",
                    "bytes_done": 3221225472u64, "bytes_total": 3221225472u64,
                    "eta_seconds": 0.0}}),
                Some("writing image (finishing): 3.0 GiB of 3.0 GiB (100%), ETA 0s"),
            ),
            (serde_json::json!({"deploy_step_progress": "garbage"}), None),
            (serde_json::json!({"agent_url": "http://a"}), None),
        ];
        for (info, expected) in table {
            let text =
                ImageProgress::from_driver_internal_info(&info).map(|p| image_progress_text(&p));
            assert_eq!(text.as_deref(), expected, "{info}");
        }
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
    }

    struct Case {
        name: &'static str,
        goal: ProvisionState,
        before: NodeStates,
        seen: Vec<NodeStates>,
        timeout: Option<u64>,
        expected: Option<WaitOutcome>,
    }

    #[test]
    fn wait_decisions() {
        use ProvisionState as S;
        let cases = vec![
            Case {
                name: "deploy reaches active through the wait states",
                goal: S::Active,
                before: st("available", None, "t0", None),
                seen: vec![
                    st("deploying", Some("active"), "t1", None),
                    st("wait call-back", Some("active"), "t2", None),
                    st("deploying", Some("active"), "t3", None),
                    st("active", None, "t4", None),
                ],
                timeout: Some(60),
                expected: Some(WaitOutcome::Reached { state: "active".into() }),
            },
            Case {
                name: "deploy fails with last_error",
                goal: S::Active,
                before: st("available", None, "t0", None),
                seen: vec![
                    st("wait call-back", Some("active"), "t1", None),
                    st("deploy failed", Some("active"), "t2", Some("write_image: not supported")),
                ],
                timeout: None,
                expected: Some(WaitOutcome::Failed {
                    state: "deploy failed".into(),
                    last_error: Some("write_image: not supported".into()),
                }),
            },
            Case {
                name: "redeploy from deploy failed ignores the stale failed state",
                goal: S::Active,
                before: st("deploy failed", None, "t0", Some("old")),
                seen: vec![
                    st("deploy failed", None, "t0", Some("old")),
                    st("deploy failed", None, "t0", Some("old")),
                    st("wait call-back", Some("active"), "t1", None),
                    st("active", None, "t2", None),
                ],
                timeout: Some(60),
                expected: Some(WaitOutcome::Reached { state: "active".into() }),
            },
            Case {
                name: "failed manage falls back to enroll",
                goal: S::Manageable,
                before: st("enroll", None, "t0", None),
                seen: vec![
                    st("verifying", Some("manageable"), "t1", None),
                    st("enroll", None, "t2", Some("Failed to get power state")),
                ],
                timeout: Some(60),
                expected: Some(WaitOutcome::Failed {
                    state: "enroll".into(),
                    last_error: Some("Failed to get power state".into()),
                }),
            },
            Case {
                name: "manage that failed within the same second shows by last_error",
                goal: S::Manageable,
                before: st("enroll", None, "t0", None),
                seen: vec![st("enroll", None, "t0", Some("BMC unreachable"))],
                timeout: None,
                expected: Some(WaitOutcome::Failed {
                    state: "enroll".into(),
                    last_error: Some("BMC unreachable".into()),
                }),
            },
            Case {
                name: "cleaning fails",
                goal: S::Available,
                before: st("manageable", None, "t0", None),
                seen: vec![
                    st("cleaning", Some("available"), "t1", None),
                    st("clean wait", Some("available"), "t2", None),
                    st("clean failed", None, "t3", Some("Timeout reached while cleaning")),
                ],
                timeout: Some(600),
                expected: Some(WaitOutcome::Failed {
                    state: "clean failed".into(),
                    last_error: Some("Timeout reached while cleaning".into()),
                }),
            },
            Case {
                name: "error state counts as failure",
                goal: S::Available,
                before: st("active", None, "t0", None),
                seen: vec![
                    st("deleting", Some("available"), "t1", None),
                    st("error", None, "t2", None),
                ],
                timeout: None,
                expected: Some(WaitOutcome::Failed { state: "error".into(), last_error: None }),
            },
            Case {
                name: "times out in clean wait",
                goal: S::Available,
                before: st("manageable", None, "t0", None),
                seen: vec![
                    st("clean wait", Some("available"), "t1", None),
                    st("clean wait", Some("available"), "t1", None),
                    st("clean wait", Some("available"), "t1", None),
                ],
                timeout: Some(10),
                expected: Some(WaitOutcome::TimedOut {
                    state: "clean wait".into(),
                    waited: secs(10),
                }),
            },
            Case {
                name: "no timeout keeps waiting",
                goal: S::Available,
                before: st("manageable", None, "t0", None),
                seen: vec![st("clean wait", Some("available"), "t1", None); 4],
                timeout: None,
                expected: None,
            },
            Case {
                name: "a node that never moves is not judged by its old state",
                goal: S::Active,
                before: st("active", None, "t0", None),
                seen: vec![st("active", None, "t0", None); 3],
                timeout: None,
                expected: None,
            },
            Case {
                name: "unknown in-between states are waited through",
                goal: S::Manageable,
                before: st("manageable", None, "t0", None),
                seen: vec![
                    st("some future state", Some("manageable"), "t1", None),
                    st("manageable", None, "t2", None),
                ],
                timeout: None,
                expected: Some(WaitOutcome::Reached { state: "manageable".into() }),
            },
        ];
        for case in cases {
            let waiter = Waiter::new(case.goal, case.before, case.timeout.map(secs));
            let observations = case.seen.iter().enumerate().map(|(i, s)| (secs(5 * i as u64), s));
            assert_eq!(judge_sequence(waiter, observations), case.expected, "{}", case.name);
        }
    }

    #[test]
    fn goals_per_verb() {
        use ProvisionState as S;
        use ProvisionVerb as V;
        let table = [
            (V::Manage, Some(S::Manageable)),
            (V::Provide, Some(S::Available)),
            (V::Deploy, Some(S::Active)),
            (V::Active, Some(S::Active)),
            (V::Rebuild, Some(S::Active)),
            (V::Undeploy, Some(S::Available)),
            (V::Deleted, Some(S::Available)),
            (V::Clean, Some(S::Manageable)),
            (V::Inspect, Some(S::Manageable)),
            (V::Abort, None),
        ];
        for (verb, goal) in table {
            assert_eq!(wait_goal(verb), goal, "{verb}");
        }
    }

    #[test]
    fn heartbeat_ages() {
        let now = datetime!(2026-11-21 11:00:30 UTC);
        let table = [
            (
                "2026-11-21T11:00:18.123456",
                Some(Duration::from_millis(11_876) + Duration::from_nanos(544_000)),
            ),
            ("2026-11-21T11:00:00", Some(secs(30))),
            ("2026-11-21T11:00:00+00:00", Some(secs(30))),
            ("2026-11-21T12:00:00+01:00", Some(secs(30))),
            ("2026-11-21T11:05:00", Some(Duration::ZERO)),
            ("yesterday", None),
            ("", None),
        ];
        for (text, age) in table {
            assert_eq!(heartbeat_age(text, now), age, "{text}");
        }
    }

    #[test]
    fn progress_output_redraws_on_a_terminal_only() {
        assert_eq!(progress_output(true, "a", false), "\r\x1b[2Ka");
        assert_eq!(progress_output(true, "b", true), "\r\x1b[2Kb\n");
        assert_eq!(progress_output(false, "a", false), "a\n");
        assert_eq!(progress_output(false, "b", true), "b\n");
    }

    #[test]
    fn progress_lines() {
        let states = st("wait call-back", Some("active"), "t", None);
        assert_eq!(
            progress_line("node-7", &states, secs(65), Some(secs(12))),
            "node-7: wait call-back -> active, 1m05s elapsed, last heartbeat 12s ago"
        );
        assert_eq!(
            progress_line("n", &NodeStates::default(), secs(3723), None),
            "n: None -> None, 1h02m03s elapsed, no heartbeat yet"
        );
    }
}
