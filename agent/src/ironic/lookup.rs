//! Lookup: asking the conductor which node this machine is (`GET /v1/lookup`), retrying
//! until it knows, and taking the agent token from the reply.

use std::time::Duration;

use ferric_shared::api_version::ApiVersion;
use ferric_shared::lookup::{LookupConfig, LookupResponse, TokenOffer};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::client::ConductorClient;
use crate::config::AgentConfig;
use crate::session::Session;

/// How long to wait between lookups. The defaults are ironic-python-agent's; tests
/// shrink them.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupBackoff {
    /// The shortest wait between attempts (`ipa-lookup-interval`, default 1 s).
    pub min_wait: Duration,
    /// The exponential step: after attempt `n` the wait is drawn uniformly from
    /// `[min_wait, unit × 2^(n-1)]`, clamped to `[min_wait, max_wait]` (1 s).
    pub unit: Duration,
    /// The longest wait between attempts (60 s).
    pub max_wait: Duration,
    /// Give up once this much time has passed (`ipa-lookup-timeout`, default 600 s).
    pub budget: Duration,
    /// Extra waits after successive `409 Conflict` replies (node locked): 5, 10, 30 s;
    /// the last one repeats.
    pub conflict_waits: Vec<Duration>,
}

impl Default for LookupBackoff {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_secs(1),
            unit: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
            budget: Duration::from_secs(600),
            conflict_waits: [5, 10, 30].map(Duration::from_secs).to_vec(),
        }
    }
}

impl LookupBackoff {
    /// The policy for `config`'s `ipa-lookup-interval` and `ipa-lookup-timeout`.
    pub fn from_config(config: &AgentConfig) -> Self {
        Self { min_wait: config.lookup_interval, budget: config.lookup_timeout, ..Self::default() }
    }

    /// The (random) wait after failed attempt number `attempt` (counting from 1).
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(63);
        let growth = self.unit.as_secs_f64() * 2f64.powi(exponent as i32);
        // Not `clamp`: `ipa-lookup-interval` may exceed the 60 s cap, and then it wins.
        let low = self.min_wait.as_secs_f64();
        let high = growth.min(self.max_wait.as_secs_f64()).max(low);
        Duration::try_from_secs_f64(low + fastrand::f64() * (high - low))
            .unwrap_or(self.min_wait.max(self.max_wait))
    }

    /// The extra wait after the `conflicts`-th `409` reply (counting from 1).
    pub fn conflict_wait(&self, conflicts: u32) -> Duration {
        let index =
            (conflicts.max(1) as usize - 1).min(self.conflict_waits.len().saturating_sub(1));
        self.conflict_waits.get(index).copied().unwrap_or_default()
    }
}

/// What identifies this machine to the conductor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupQuery {
    /// MAC addresses of every interface that has one.
    pub addresses: Vec<String>,
    /// The node's UUID, when already known (from inspection).
    pub node_uuid: Option<String>,
}

/// The result of a successful lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupOutcome {
    pub node_uuid: String,
    /// How often the conductor expects heartbeats (`config.heartbeat_timeout`).
    pub heartbeat_timeout: Duration,
    /// The conductor's overrides of agent options; defaults when the reply had none.
    pub config: LookupConfig,
    /// The version lookup negotiated with.
    pub api_version: ApiVersion,
}

/// Why lookup gave up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "no node found for this machine after {attempts} lookups over {elapsed:?}; last \
         attempt: {last}"
    )]
    TimedOut { attempts: u32, elapsed: Duration, last: String },
    /// Fatal: the token was handed out before (to an earlier agent on this machine or to
    /// an impostor), and without it the agent can never be trusted by the conductor.
    #[error(
        "the conductor withheld the agent token of node {node_uuid} (\"******\") and none \
         was preconfigured"
    )]
    TokenWithheld { node_uuid: String },
}

enum Attempt {
    Found(Box<LookupResponse>),
    Conflict(String),
    Retry(String),
}

/// Looks the node up, retrying per `backoff`. On success the token (if the reply has a
/// usable one) and the node are stored in `session`.
pub async fn lookup_node(
    client: &ConductorClient,
    session: &Session,
    query: &LookupQuery,
    backoff: &LookupBackoff,
) -> Result<LookupOutcome, LookupError> {
    let start = Instant::now();
    let mut attempts = 0u32;
    let mut conflicts = 0u32;
    loop {
        attempts += 1;
        let version = client.api_version().await.min(ApiVersion::LOOKUP_CAP);
        let why = match attempt(client, query, version).await {
            Attempt::Found(reply) => return adopt(session, *reply, version),
            Attempt::Conflict(message) => {
                conflicts += 1;
                let wait = backoff.conflict_wait(conflicts);
                tracing::warn!(%message, ?wait, "lookup conflict: node is locked");
                tokio::time::sleep(wait).await;
                format!("409 Conflict: {message}")
            }
            Attempt::Retry(why) => {
                tracing::warn!(attempt = attempts, %why, "lookup did not find the node yet");
                why
            }
        };
        let elapsed = start.elapsed();
        if elapsed >= backoff.budget {
            return Err(LookupError::TimedOut { attempts, elapsed, last: why });
        }
        let wait = backoff.wait_after(attempts).min(backoff.budget - elapsed);
        tokio::time::sleep(wait).await;
    }
}

async fn attempt(client: &ConductorClient, query: &LookupQuery, version: ApiVersion) -> Attempt {
    let addresses = query.addresses.join(",");
    let mut params = vec![("addresses", addresses.as_str())];
    if let Some(uuid) = &query.node_uuid {
        params.push(("node_uuid", uuid.as_str()));
    }
    let reply = match client
        .request::<()>(Method::GET, &["v1", "lookup"], &params, Some(version), None)
        .await
    {
        Ok(reply) => reply,
        Err(e) => return Attempt::Retry(error_chain(&e)),
    };
    match reply.status {
        StatusCode::OK => match LookupResponse::from_json(&reply.body) {
            Ok(parsed) => Attempt::Found(Box::new(parsed)),
            Err(e) => Attempt::Retry(error_chain(&e)),
        },
        StatusCode::CONFLICT => Attempt::Conflict(reply.error_message()),
        status => Attempt::Retry(format!("HTTP {}: {}", status.as_u16(), reply.error_message())),
    }
}

fn adopt(
    session: &Session,
    reply: LookupResponse,
    api_version: ApiVersion,
) -> Result<LookupOutcome, LookupError> {
    let node_uuid = reply.node.uuid.clone();
    match reply.token_offer() {
        TokenOffer::Issued(token) => {
            tracing::info!(node = %node_uuid, "agent token received from lookup");
            session.set_token(token.to_owned());
        }
        TokenOffer::Masked if session.token().is_none() => {
            return Err(LookupError::TokenWithheld { node_uuid });
        }
        TokenOffer::Masked => {
            tracing::info!(node = %node_uuid, "lookup masked the token; keeping the preset one");
        }
        TokenOffer::Unusable => {
            if reply.config.as_ref().and_then(|c| c.agent_token.as_deref()).is_some() {
                tracing::warn!(node = %node_uuid, "ignoring an invalid agent token from lookup");
            }
        }
    }
    let mut node = reply.node_json();
    let skip_bmc = reply.config.as_ref().and_then(|c| c.agent_skip_bmc_detect) == Some(true);
    if let (true, Some(fields)) = (skip_bmc, node.as_object_mut()) {
        // The BMC is managed out of band (Redfish); inventory must not probe it.
        fields.insert("skip_bmc_detect".into(), serde_json::Value::Bool(true));
    }
    session.set_node(node);
    session.set_lookup_config(reply.config.clone().unwrap_or_default());
    let heartbeat_timeout = Duration::from_secs(reply.heartbeat_timeout_secs());
    tracing::info!(node = %node_uuid, ?heartbeat_timeout, %api_version, "lookup succeeded");
    Ok(LookupOutcome {
        node_uuid,
        heartbeat_timeout,
        config: reply.config.unwrap_or_default(),
        api_version,
    })
}

/// `error: cause: cause` in one line, for retry reasons that are kept as text.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(config: serde_json::Value) -> LookupResponse {
        let body = serde_json::json!({"node": {"uuid": "n-1", "properties": {}}, "config": config});
        LookupResponse::from_json(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn adopt_marks_skip_bmc_detect_on_the_cached_node() {
        let v = ApiVersion::LOOKUP_CAP;
        let session = Session::new(None);
        adopt(&session, reply(serde_json::json!({"agent_skip_bmc_detect": true})), v).unwrap();
        assert_eq!(session.node().unwrap()["skip_bmc_detect"], true);
        let session = Session::new(None);
        adopt(&session, reply(serde_json::json!({"agent_skip_bmc_detect": false})), v).unwrap();
        assert_eq!(session.node().unwrap().get("skip_bmc_detect"), None);
    }

    #[test]
    fn adopt_token_rules() {
        let v = ApiVersion::LOOKUP_CAP;
        let long = "k".repeat(43);
        let session = Session::new(None);
        let outcome = adopt(
            &session,
            reply(serde_json::json!({"agent_token": long, "heartbeat_timeout": 30})),
            v,
        )
        .unwrap();
        assert_eq!(session.token(), Some(long.clone()));
        assert_eq!(outcome.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(outcome.node_uuid, "n-1");

        let fresh = Session::new(None);
        let err =
            adopt(&fresh, reply(serde_json::json!({"agent_token": "******"})), v).unwrap_err();
        assert!(matches!(err, LookupError::TokenWithheld { ref node_uuid } if node_uuid == "n-1"));
        assert_eq!(fresh.node(), None);

        let kept = Session::new(Some(long.clone()));
        adopt(&kept, reply(serde_json::json!({"agent_token": "short"})), v).unwrap();
        assert_eq!(kept.token(), Some(long));
    }

    #[test]
    fn production_defaults_are_ipas() {
        let b = LookupBackoff::default();
        assert_eq!(b.min_wait, Duration::from_secs(1));
        assert_eq!(b.max_wait, Duration::from_secs(60));
        assert_eq!(b.budget, Duration::from_secs(600));
        let conflicts: Vec<_> = (1..=5).map(|n| b.conflict_wait(n).as_secs()).collect();
        assert_eq!(conflicts, [5, 10, 30, 30, 30]);
    }

    #[test]
    fn waits_grow_exponentially_within_bounds() {
        let b = LookupBackoff { min_wait: Duration::from_secs(2), ..LookupBackoff::default() };
        // (attempt, upper bound in seconds)
        let table = [(1, 2.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (40, 60.0)];
        for (attempt, high) in table {
            let mut saw_above_half = false;
            for _ in 0..200 {
                let w = b.wait_after(attempt).as_secs_f64();
                assert!((2.0..=high).contains(&w), "attempt {attempt}: {w}");
                saw_above_half |= w > 2.0 + (high - 2.0) / 2.0;
            }
            assert!(high == 2.0 || saw_above_half, "attempt {attempt} never used its range");
        }
        assert!(b.wait_after(u32::MAX) <= Duration::from_secs(60));
    }

    #[test]
    fn an_interval_above_the_cap_is_used_as_is() {
        let b = LookupBackoff { min_wait: Duration::from_secs(90), ..LookupBackoff::default() };
        for attempt in [1, 5, 30] {
            assert_eq!(b.wait_after(attempt), Duration::from_secs(90));
        }
        let huge = LookupBackoff { min_wait: Duration::MAX, ..LookupBackoff::default() };
        assert!(huge.wait_after(3) >= Duration::from_secs(60));
    }

    #[test]
    fn empty_conflict_table_waits_nothing() {
        let b = LookupBackoff { conflict_waits: vec![], ..LookupBackoff::default() };
        assert_eq!(b.conflict_wait(1), Duration::ZERO);
        assert_eq!(b.conflict_wait(0), Duration::ZERO);
    }
}
