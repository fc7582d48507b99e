//! Heartbeats (`POST /v1/heartbeat/{node}`): how the conductor learns the agent is alive,
//! where its API listens, and — through forced heartbeats — that a command finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferric_shared::api_version::ApiVersion;
use ferric_shared::heartbeat::{HeartbeatFacts, HeartbeatRequest};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::Instrument;

use super::client::{ConductorClient, ConductorRequestError};
use crate::session::Session;

/// The version reported as `agent_version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Heartbeat pacing. The defaults are ironic-python-agent's; tests shrink them.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatTiming {
    /// After a success the next heartbeat is due in `heartbeat_timeout × U(low, high)`:
    /// (0.3, 0.6), comfortably inside the conductor's timeout.
    pub success_jitter: (f64, f64),
    /// After a failure the next attempt is due in `retry_base × U(low, high)`: 5 s ×
    /// U(1, 2).
    pub retry_base: Duration,
    pub retry_jitter: (f64, f64),
    /// A forced heartbeat never follows the previous one sooner than this (5 s).
    pub min_spacing: Duration,
}

impl Default for HeartbeatTiming {
    fn default() -> Self {
        Self {
            success_jitter: (0.3, 0.6),
            retry_base: Duration::from_secs(5),
            retry_jitter: (1.0, 2.0),
            min_spacing: Duration::from_secs(5),
        }
    }
}

impl HeartbeatTiming {
    /// When the next heartbeat is due after a successful one.
    pub fn after_success(&self, heartbeat_timeout: Duration) -> Duration {
        heartbeat_timeout.mul_f64(uniform(self.success_jitter))
    }

    /// When the next attempt is due after a failed one.
    pub fn after_failure(&self) -> Duration {
        self.retry_base.mul_f64(uniform(self.retry_jitter))
    }
}

/// `at + wait`, saturating: the wait can come from the conductor's `heartbeat_timeout`.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

fn uniform((low, high): (f64, f64)) -> f64 {
    let (low, high) = (low.max(0.0), high.max(0.0));
    let (low, high) = if low <= high { (low, high) } else { (high, low) };
    low + fastrand::f64() * (high - low)
}

/// Why one heartbeat was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// `409`: the node is locked by the conductor; retried soon.
    #[error("conductor reports a conflict (node locked): {message}")]
    Conflict { message: String },
    #[error("conductor rejected the heartbeat with HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("heartbeat not delivered")]
    Transport(#[from] ConductorRequestError),
}

/// Everything the heartbeat task needs. Build it after lookup.
#[derive(Debug, Clone)]
pub struct Heartbeater {
    pub client: Arc<ConductorClient>,
    /// The token is read from here at every heartbeat.
    pub session: Arc<Session>,
    pub node_uuid: String,
    /// Where the agent's API is reachable, see [`super::advertise::callback_url`].
    pub callback_url: String,
    pub agent_version: String,
    /// PEM of the auto-TLS certificate, when the API is served over HTTPS.
    pub agent_verify_ca: Option<String>,
    /// `heartbeat_timeout` from lookup.
    pub heartbeat_timeout: Duration,
    pub timing: HeartbeatTiming,
}

impl Heartbeater {
    /// Sends one heartbeat. Success is exactly `202 Accepted`.
    pub async fn heartbeat_once(&self) -> Result<(), HeartbeatError> {
        let version = self.client.api_version().await.min(ApiVersion::HEARTBEAT_CAP);
        let token = self.session.token();
        let body = HeartbeatRequest::for_version(
            version,
            HeartbeatFacts {
                callback_url: &self.callback_url,
                agent_token: token.as_deref(),
                agent_version: &self.agent_version,
                agent_verify_ca: self.agent_verify_ca.as_deref(),
                agent_status: None,
                agent_status_message: None,
            },
        );
        let reply = self
            .client
            .request(
                Method::POST,
                &["v1", "heartbeat", &self.node_uuid],
                &[],
                Some(version),
                Some(&body),
            )
            .await?;
        match reply.status {
            StatusCode::ACCEPTED => Ok(()),
            StatusCode::CONFLICT => {
                Err(HeartbeatError::Conflict { message: reply.error_message() })
            }
            status => Err(HeartbeatError::Rejected {
                status: status.as_u16(),
                message: reply.error_message(),
            }),
        }
    }

    /// Heartbeats until `shutdown` completes: the first immediately, then on the
    /// schedule of [`HeartbeatTiming`], plus a forced one whenever
    /// `session.command_finished` is notified (but not sooner than `min_spacing` after
    /// the previous heartbeat).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let span = tracing::info_span!("heartbeat", node = %self.node_uuid);
        self.run_until(shutdown).instrument(span).await;
    }

    async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next = Instant::now();
        let mut previous: Option<Instant> = None;
        let mut forced = false;
        loop {
            let due = match (forced, previous) {
                (true, Some(prev)) => next.min(later(prev, self.timing.min_spacing)),
                (true, None) => Instant::now(),
                (false, _) => next,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = self.session.command_finished.notified(), if !forced => {
                    tracing::debug!("command finished: heartbeat forced");
                    forced = true;
                    continue;
                }
                () = tokio::time::sleep_until(due) => {}
            }
            let sent = Instant::now();
            previous = Some(sent);
            forced = false;
            let result = tokio::select! {
                biased;
                () = &mut shutdown => return,
                r = self.heartbeat_once() => r,
            };
            next = match result {
                Ok(()) => {
                    tracing::debug!("heartbeat accepted");
                    // A zero `heartbeat_timeout` from the conductor must not turn
                    // into a busy loop.
                    let wait = self.timing.after_success(self.heartbeat_timeout);
                    later(sent, wait.max(self.timing.min_spacing))
                }
                Err(e) => {
                    match &e {
                        HeartbeatError::Conflict { .. } => tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "heartbeat conflict, retrying soon"
                        ),
                        _ => tracing::error!(
                            error = &e as &dyn std::error::Error,
                            "heartbeat failed, retrying soon"
                        ),
                    }
                    later(sent, self.timing.after_failure())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_defaults_are_ipas() {
        let t = HeartbeatTiming::default();
        assert_eq!(t.min_spacing, Duration::from_secs(5));
        for _ in 0..200 {
            let s = t.after_success(Duration::from_secs(300)).as_secs_f64();
            assert!((90.0..=180.0).contains(&s), "{s}");
            let f = t.after_failure().as_secs_f64();
            assert!((5.0..=10.0).contains(&f), "{f}");
        }
    }

    #[test]
    fn huge_intervals_saturate() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600));
        let t = HeartbeatTiming::default();
        let far = t.after_success(Duration::from_secs(u64::MAX));
        assert!(later(now, far) > now);
    }

    #[test]
    fn jitter_bounds_in_either_order() {
        for _ in 0..100 {
            let u = uniform((2.0, 1.0));
            assert!((1.0..=2.0).contains(&u));
            assert_eq!(uniform((-1.0, 0.0)), 0.0);
        }
    }
}
