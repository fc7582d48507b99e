//! State shared by the agent's tasks for the life of the process: the agent token, the
//! node cached from lookup, and the signal that an asynchronous command has finished.

use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ferric_shared::lookup::LookupConfig;
use tokio::sync::Notify;

/// Shared across the API server, the command executor and the heartbeat task.
/// `Debug` never shows the token.
pub struct Session {
    token: RwLock<Option<String>>,
    node: RwLock<Option<serde_json::Value>>,
    /// The conductor's settings from the last successful lookup.
    lookup_config: RwLock<LookupConfig>,
    /// Seconds since the epoch when the agent started (reported by `/v1/status`).
    pub started_at: f64,
    /// Notified when an asynchronous command finishes, so the heartbeat task can tell
    /// the conductor promptly (a "forced" heartbeat).
    pub command_finished: Notify,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.token.read().unwrap_or_else(|e| e.into_inner()).is_some();
        f.debug_struct("Session")
            .field("token", &if held { "******" } else { "<none>" })
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(pregenerated_token: Option<String>) -> Self {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self {
            token: RwLock::new(pregenerated_token),
            node: RwLock::new(None),
            lookup_config: RwLock::new(LookupConfig::default()),
            started_at,
            command_finished: Notify::new(),
        }
    }

    /// The token the agent holds, if any.
    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    /// Whether `presented` is the token the agent holds. No token held means no match:
    /// the command API stays closed until lookup has delivered one.
    pub fn token_matches(&self, presented: Option<&str>) -> bool {
        let held = self.token.read().unwrap_or_else(|e| e.into_inner());
        match (held.as_deref(), presented) {
            (Some(h), Some(p)) => constant_time_eq(h.as_bytes(), p.as_bytes()),
            _ => false,
        }
    }

    /// The node object from the last successful lookup (Ironic's `node` dict, passed
    /// through as the conductor sent it).
    pub fn node(&self) -> Option<serde_json::Value> {
        self.node.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_node(&self, node: serde_json::Value) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) = Some(node);
    }

    /// The `config` of the last successful lookup (empty before one).
    pub fn lookup_config(&self) -> LookupConfig {
        self.lookup_config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_lookup_config(&self, config: LookupConfig) {
        *self.lookup_config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Whether a bare 32-character checksum may be taken as MD5: only when the conductor
    /// said so (`agent_md5_checksum_enable`); without a lookup, no.
    pub fn md5_allowed(&self) -> bool {
        self.lookup_config.read().unwrap_or_else(|e| e.into_inner()).agent_md5_checksum_enable
            == Some(true)
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_be_held_and_equal() {
        let s = Session::new(None);
        assert!(!s.token_matches(Some("x")));
        assert!(!s.token_matches(None));
        s.set_token("a".repeat(43));
        assert!(s.token_matches(Some(&"a".repeat(43))));
        assert!(!s.token_matches(Some(&"a".repeat(42))));
        assert!(!s.token_matches(Some(&format!("{}b", "a".repeat(42)))));
        assert!(!s.token_matches(None));
        assert!(s.started_at > 1.0e9);
        assert!(!format!("{s:?}").contains("aaaa"));
    }

    #[test]
    fn md5_needs_the_conductor_to_allow_it() {
        let s = Session::new(None);
        assert!(!s.md5_allowed());
        s.set_lookup_config(LookupConfig {
            agent_md5_checksum_enable: Some(true),
            ..LookupConfig::default()
        });
        assert!(s.md5_allowed());
        s.set_lookup_config(LookupConfig {
            agent_md5_checksum_enable: Some(false),
            permitted_image_formats: Some(vec!["raw".into()]),
            ..LookupConfig::default()
        });
        assert!(!s.md5_allowed());
        assert_eq!(s.lookup_config().permitted_image_formats, Some(vec!["raw".to_owned()]));
    }
}
