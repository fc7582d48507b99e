//! The heartbeat body (`POST /v1/heartbeat/{node_ident}`) and which of its fields a given
//! API microversion allows.
//!
//! Ironic answers `400` when a field arrives with a version too old for it, so the agent
//! builds the body from the version it negotiated, and a conductor checks it the same way.

use serde::{Deserialize, Serialize};

use crate::api_version::ApiVersion;

/// The heartbeat body. Absent fields are omitted from the JSON, never sent as `null`.
/// `Debug` masks the agent token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// `http(s)://<ip>:<port>` where the agent's API listens (no path).
    pub callback_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// PEM of the agent's self-signed certificate (auto-TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_verify_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status_message: Option<String>,
}

impl std::fmt::Debug for HeartbeatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatRequest")
            .field("callback_url", &self.callback_url)
            .field("agent_token", &self.agent_token.as_ref().map(|_| crate::lookup::MASKED_TOKEN))
            .field("agent_version", &self.agent_version)
            .field("agent_verify_ca", &self.agent_verify_ca.as_ref().map(|_| "<PEM>"))
            .field("agent_status", &self.agent_status)
            .field("agent_status_message", &self.agent_status_message)
            .finish()
    }
}

/// `agent_status`: the only values Ironic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Start,
    End,
    Error,
}

/// What the agent knows when it heartbeats; [`HeartbeatRequest::for_version`] keeps what
/// the negotiated version allows.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeartbeatFacts<'a> {
    pub callback_url: &'a str,
    pub agent_token: Option<&'a str>,
    pub agent_version: &'a str,
    /// The auto-TLS certificate, when one was generated.
    pub agent_verify_ca: Option<&'a str>,
    pub agent_status: Option<AgentStatus>,
    pub agent_status_message: Option<&'a str>,
}

/// A heartbeat field sent with a version that does not know it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?} needs API version {needs} or later, request used {used}")]
pub struct HeartbeatFieldError {
    pub field: &'static str,
    pub needs: ApiVersion,
    pub used: ApiVersion,
}

impl HeartbeatRequest {
    /// The body for `version`: `agent_token` from 1.62, `agent_version` from 1.36,
    /// `agent_verify_ca` from 1.68 (and only with a certificate), `agent_status` and
    /// `agent_status_message` from 1.72.
    pub fn for_version(version: ApiVersion, facts: HeartbeatFacts<'_>) -> Self {
        let allow = |min: ApiVersion| version >= min;
        HeartbeatRequest {
            callback_url: facts.callback_url.to_owned(),
            agent_token: facts
                .agent_token
                .filter(|_| allow(ApiVersion::AGENT_TOKEN))
                .map(Into::into),
            agent_version: allow(ApiVersion::AGENT_VERSION).then(|| facts.agent_version.to_owned()),
            agent_verify_ca: facts
                .agent_verify_ca
                .filter(|_| allow(ApiVersion::AGENT_VERIFY_CA))
                .map(Into::into),
            agent_status: facts.agent_status.filter(|_| allow(ApiVersion::AGENT_STATUS)),
            agent_status_message: facts
                .agent_status_message
                .filter(|_| allow(ApiVersion::AGENT_STATUS))
                .map(Into::into),
        }
    }

    /// Checks the fields against `version` the way Ironic's API does. `agent_token` is
    /// not version-checked: Ironic accepts it at any version.
    pub fn check_version(&self, version: ApiVersion) -> Result<(), HeartbeatFieldError> {
        let fields: [(&'static str, bool, ApiVersion); 4] = [
            ("agent_version", self.agent_version.is_some(), ApiVersion::AGENT_VERSION),
            ("agent_verify_ca", self.agent_verify_ca.is_some(), ApiVersion::AGENT_VERIFY_CA),
            ("agent_status", self.agent_status.is_some(), ApiVersion::AGENT_STATUS),
            ("agent_status_message", self.agent_status_message.is_some(), ApiVersion::AGENT_STATUS),
        ];
        for (field, present, needs) in fields {
            if present && version < needs {
                return Err(HeartbeatFieldError { field, needs, used: version });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn facts(cert: Option<&'static str>) -> HeartbeatFacts<'static> {
        HeartbeatFacts {
            callback_url: "https://192.0.2.10:9999",
            agent_token: Some("tok-tok-tok-tok-tok-tok-tok-tok-tok-tok-tok"),
            agent_version: "13.0.0",
            agent_verify_ca: cert,
            agent_status: None,
            agent_status_message: None,
        }
    }

    #[test]
    fn fields_follow_the_version_table() {
        // (version, cert?, expected keys)
        let table: &[(&str, bool, &[&str])] = &[
            ("1.1", true, &["callback_url"]),
            ("1.31", true, &["callback_url"]),
            ("1.36", true, &["callback_url", "agent_version"]),
            ("1.61", true, &["callback_url", "agent_version"]),
            ("1.62", true, &["callback_url", "agent_token", "agent_version"]),
            ("1.67", true, &["callback_url", "agent_token", "agent_version"]),
            ("1.68", false, &["callback_url", "agent_token", "agent_version"]),
            ("1.68", true, &["callback_url", "agent_token", "agent_version", "agent_verify_ca"]),
            ("1.115", true, &["callback_url", "agent_token", "agent_version", "agent_verify_ca"]),
        ];
        for &(version, cert, keys) in table {
            let v: ApiVersion = version.parse().unwrap();
            let body = HeartbeatRequest::for_version(v, facts(cert.then_some(PEM)));
            let value = serde_json::to_value(&body).unwrap();
            let mut got: Vec<&str> =
                value.as_object().unwrap().keys().map(String::as_str).collect();
            got.sort_unstable();
            let mut want = keys.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "at {version} with cert={cert}");
            assert_eq!(body.check_version(v), Ok(()), "builder output rejected at {version}");
        }
    }

    #[test]
    fn status_fields_need_1_72() {
        let mut f = facts(None);
        f.agent_status = Some(AgentStatus::End);
        f.agent_status_message = Some("done");
        let at_68 = HeartbeatRequest::for_version(ApiVersion::HEARTBEAT_CAP, f);
        assert_eq!(at_68.agent_status, None);
        let at_72 = HeartbeatRequest::for_version(ApiVersion::AGENT_STATUS, f);
        assert_eq!(
            serde_json::to_value(&at_72).unwrap()["agent_status"],
            json!("end"),
            "status must serialize lowercase"
        );
        assert_eq!(
            at_72.check_version(ApiVersion::HEARTBEAT_CAP),
            Err(HeartbeatFieldError {
                field: "agent_status",
                needs: ApiVersion::AGENT_STATUS,
                used: ApiVersion::HEARTBEAT_CAP
            })
        );
    }

    #[test]
    fn check_version_rejects_fields_too_new() {
        let body: HeartbeatRequest = serde_json::from_value(json!({
            "callback_url": "http://10.0.0.5:9999",
            "agent_token": "x",
            "agent_version": "13.0.0",
            "agent_verify_ca": PEM,
        }))
        .unwrap();
        let err = body.check_version("1.35".parse().unwrap()).unwrap_err();
        assert_eq!(err.field, "agent_version");
        let err = body.check_version("1.67".parse().unwrap()).unwrap_err();
        assert_eq!(err.field, "agent_verify_ca");
        assert!(body.check_version("1.68".parse().unwrap()).is_ok());
        // A token alone is accepted at any version.
        let token_only = HeartbeatRequest {
            callback_url: "http://10.0.0.5:9999".into(),
            agent_token: Some("x".into()),
            ..Default::default()
        };
        assert!(token_only.check_version(ApiVersion::MINIMUM).is_ok());
    }

    #[test]
    fn wire_shape_round_trips() {
        let wire = json!({
            "callback_url": "https://[2001:db8::5]:9999",
            "agent_token": "x".repeat(43),
            "agent_version": "13.0.0",
            "agent_verify_ca": PEM,
            "agent_status": "start",
            "agent_status_message": "booting"
        });
        let body: HeartbeatRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(body.agent_status, Some(AgentStatus::Start));
        assert_eq!(serde_json::to_value(&body).unwrap(), wire);

        let minimal = json!({"callback_url": ""});
        let body: HeartbeatRequest = serde_json::from_value(minimal.clone()).unwrap();
        assert_eq!(serde_json::to_value(&body).unwrap(), minimal);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_status() {
        for bad in [
            json!({"callback_url": "http://a:1", "agent_tokn": "x"}),
            json!({"callback_url": "http://a:1", "agent_status": "running"}),
            json!({"agent_token": "x"}),
        ] {
            assert!(serde_json::from_value::<HeartbeatRequest>(bad.clone()).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_masks_the_token() {
        let body = HeartbeatRequest {
            callback_url: "https://10.0.0.5:9999".into(),
            agent_token: Some("t0ken-t0ken-t0ken-t0ken-t0ken-t0ken".into()),
            ..HeartbeatRequest::default()
        };
        let text = format!("{body:?}");
        assert!(!text.contains("t0ken"), "{text}");
        assert!(text.contains("******"), "{text}");
    }
}
