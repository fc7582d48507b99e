//! The lookup reply (`GET /v1/lookup`): the node the agent runs on and the conductor's
//! settings for the agent.
//!
//! Every `config` key is optional so that replies from older Ironics parse: keys appear
//! release by release, and before `config` existed the reply carried a bare top-level
//! `heartbeat_timeout`. Values the agent acts on are typed; the rest are kept as JSON and
//! passed through untouched, as are keys this crate does not know.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// What Ironic shows instead of the agent token once it has been handed out.
pub const MASKED_TOKEN: &str = "******";

/// Tokens shorter than this are not real tokens (Ironic's are 43 characters).
pub const MIN_TOKEN_LEN: usize = 32;

/// Ironic's default `[api]ramdisk_heartbeat_timeout`, used when a reply names none.
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: u64 = 300;

/// The body of a `200` lookup reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResponse {
    pub node: LookupNode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<LookupConfig>,
    /// Only in replies from Ironics that predate `config`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "seconds_opt")]
    pub heartbeat_timeout: Option<u64>,
}

/// The node as lookup shows it (secrets already masked by the conductor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupNode {
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_info: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_internal_info: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<Value>>,
    /// Any other node fields the conductor chose to include.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `config` of a lookup reply: the conductor's overrides of agent options.
/// `Debug` masks the agent token.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupConfig {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "seconds_opt")]
    pub heartbeat_timeout: Option<u64>,
    /// The plain token (first lookup of this boot), [`MASKED_TOKEN`], or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_required: Option<bool>,
    /// Whether a bare 32-character checksum may be taken as MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_md5_checksum_enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_deep_image_inspection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permitted_image_formats: Option<Vec<String>>,
    /// True when the BMC is managed out of band (Redfish), so the agent need not probe it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_skip_bmc_detect: Option<bool>,
    // The next three have changed shape between releases; they are kept as JSON and read
    // through the accessors so that an unexpected shape costs one option, not the lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_bios_bootloader_install: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_statsd: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_containers: Option<Value>,
    /// Keys newer than this crate, passed through.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl std::fmt::Debug for LookupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut masked = self.clone();
        if masked.agent_token.is_some() {
            masked.agent_token = Some(MASKED_TOKEN.to_owned());
        }
        match serde_json::to_string(&masked) {
            Ok(json) => write!(f, "LookupConfig({json})"),
            Err(_) => f.write_str("LookupConfig(<unprintable>)"),
        }
    }
}

impl LookupConfig {
    /// `enable_bios_bootloader_install` as a boolean, if it is one.
    pub fn bios_bootloader_install(&self) -> Option<bool> {
        self.enable_bios_bootloader_install.as_ref().and_then(Value::as_bool)
    }

    /// `tls_min_version` (e.g. `"1.2"`), if it is a string.
    pub fn tls_min_version(&self) -> Option<&str> {
        self.tls_min_version.as_ref().and_then(Value::as_str)
    }

    /// `tls_cipher_suites` (an OpenSSL-style cipher string), if it is a string.
    pub fn tls_cipher_suites(&self) -> Option<&str> {
        self.tls_cipher_suites.as_ref().and_then(Value::as_str)
    }
}

/// What a lookup reply says about the agent token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOffer<'a> {
    /// A token long enough to be real: adopt it.
    Issued(&'a str),
    /// [`MASKED_TOKEN`]: the token was already handed out, to this agent earlier or to
    /// another one.
    Masked,
    /// `null`, absent (API older than 1.62) or too short to be a token.
    Unusable,
}

impl TokenOffer<'_> {
    /// Classifies a `config.agent_token` value.
    pub fn classify(token: Option<&str>) -> TokenOffer<'_> {
        match token {
            Some(MASKED_TOKEN) => TokenOffer::Masked,
            Some(t) if t.len() >= MIN_TOKEN_LEN => TokenOffer::Issued(t),
            _ => TokenOffer::Unusable,
        }
    }
}

/// Why a lookup reply body was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum LookupResponseError {
    #[error("lookup reply is not the expected JSON object")]
    Malformed(#[source] serde_json::Error),
    #[error("lookup reply has no node.uuid")]
    MissingNodeUuid,
}

impl LookupResponse {
    /// Parses a `200` reply body. A reply is valid only when it names `node.uuid`.
    pub fn from_json(body: &[u8]) -> Result<Self, LookupResponseError> {
        let value: Value = serde_json::from_slice(body).map_err(LookupResponseError::Malformed)?;
        let has_uuid = value
            .get("node")
            .and_then(|n| n.get("uuid"))
            .and_then(Value::as_str)
            .is_some_and(|u| !u.is_empty());
        if !has_uuid {
            return Err(LookupResponseError::MissingNodeUuid);
        }
        serde_json::from_value(value).map_err(LookupResponseError::Malformed)
    }

    /// The heartbeat timeout in seconds: from `config`, else the legacy top-level key,
    /// else Ironic's default.
    pub fn heartbeat_timeout_secs(&self) -> u64 {
        self.config
            .as_ref()
            .and_then(|c| c.heartbeat_timeout)
            .or(self.heartbeat_timeout)
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT_SECS)
    }

    /// What the reply says about the agent token.
    pub fn token_offer(&self) -> TokenOffer<'_> {
        TokenOffer::classify(self.config.as_ref().and_then(|c| c.agent_token.as_deref()))
    }

    /// The node as a JSON object, the form other parts of the agent read it in.
    pub fn node_json(&self) -> Value {
        serde_json::to_value(&self.node).unwrap_or(Value::Null)
    }
}

/// Seconds as a JSON number. Ironic sends an integer; a float (some config backends
/// produce one) is rounded up so that a fraction never turns into zero.
fn seconds_opt<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f.ceil() as u64)),
        _ => Err(serde::de::Error::custom(format!("{n} is not a number of seconds"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ironic_39_reply(token: Value) -> Value {
        json!({
            "node": {
                "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
                "properties": {"cpus": 4, "root_device": {"size": ">= 10"}},
                "instance_info": {"image_url": "******", "configdrive": "******"},
                "driver_internal_info": {"agent_secret_token": "******"},
                "links": [
                    {"href": "http://ironic/v1/nodes/1be2", "rel": "self"},
                    {"href": "http://ironic/nodes/1be2", "rel": "bookmark"}
                ]
            },
            "config": {
                "metrics": {"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                            "prepend_host_reverse": true, "global_prefix": null},
                "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
                "heartbeat_timeout": 300,
                "agent_containers": {"allow_arbitrary_containers": false,
                                     "allowed_containers": [], "runner": "podman"},
                "agent_token": token,
                "agent_token_required": true,
                "agent_md5_checksum_enable": true,
                "disable_deep_image_inspection": false,
                "permitted_image_formats": ["raw", "qcow2", "iso"],
                "agent_skip_bmc_detect": true,
                "enable_bios_bootloader_install": true,
                "tls_min_version": null,
                "tls_cipher_suites": null
            }
        })
    }

    #[test]
    fn full_reply_round_trips_and_types_what_the_agent_uses() {
        let token = "x".repeat(43);
        let wire = ironic_39_reply(json!(token));
        let parsed = LookupResponse::from_json(wire.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.node.uuid, "1be26c0b-03f2-4d2e-ae87-c02d7f33c123");
        let config = parsed.config.as_ref().unwrap();
        assert_eq!(config.heartbeat_timeout, Some(300));
        assert_eq!(config.agent_md5_checksum_enable, Some(true));
        assert_eq!(config.agent_skip_bmc_detect, Some(true));
        assert_eq!(config.bios_bootloader_install(), Some(true));
        assert_eq!(config.tls_min_version(), None);
        assert_eq!(
            config.permitted_image_formats.as_deref(),
            Some(&["raw".to_owned(), "qcow2".to_owned(), "iso".to_owned()][..])
        );
        assert_eq!(parsed.token_offer(), TokenOffer::Issued(&token));
        assert_eq!(parsed.heartbeat_timeout_secs(), 300);
        // Everything, including the opaque parts, survives unchanged — except explicit
        // nulls of optional keys, which serialize as absent.
        let mut expected = wire.clone();
        let cfg = expected["config"].as_object_mut().unwrap();
        cfg.remove("tls_min_version");
        cfg.remove("tls_cipher_suites");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), expected);
        assert_eq!(parsed.node_json(), wire["node"]);
    }

    #[test]
    fn unknown_keys_pass_through() {
        let mut wire = ironic_39_reply(json!(MASKED_TOKEN));
        wire["config"]["some_future_option"] = json!({"a": 1});
        wire["node"]["name"] = json!("node-7");
        let parsed: LookupResponse = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(parsed.config.as_ref().unwrap().other["some_future_option"], json!({"a": 1}));
        assert_eq!(parsed.node_json()["name"], "node-7");
        assert_eq!(parsed.token_offer(), TokenOffer::Masked);
    }

    #[test]
    fn legacy_reply_without_config_uses_top_level_heartbeat_timeout() {
        let wire = json!({"node": {"uuid": "abc"}, "heartbeat_timeout": 120});
        let parsed = LookupResponse::from_json(wire.to_string().as_bytes()).unwrap();
        assert!(parsed.config.is_none());
        assert_eq!(parsed.heartbeat_timeout_secs(), 120);
        assert_eq!(parsed.token_offer(), TokenOffer::Unusable);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let wire = json!({"node": {"uuid": "abc"}, "config": {}});
        let parsed = LookupResponse::from_json(wire.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.heartbeat_timeout_secs(), DEFAULT_HEARTBEAT_TIMEOUT_SECS);
        assert_eq!(parsed.config.unwrap(), LookupConfig::default());
    }

    #[test]
    fn float_heartbeat_timeout_is_rounded_up() {
        let wire = json!({"node": {"uuid": "abc"}, "config": {"heartbeat_timeout": 0.5}});
        let parsed = LookupResponse::from_json(wire.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.heartbeat_timeout_secs(), 1);
    }

    #[test]
    fn replies_without_node_uuid_are_rejected() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"config": {}}"#,
            r#"{"node": {}}"#,
            r#"{"node": {"uuid": ""}}"#,
            r#"{"node": {"uuid": 7}}"#,
            r#"{"node": "abc"}"#,
        ] {
            assert!(LookupResponse::from_json(body.as_bytes()).is_err(), "{body:?} accepted");
        }
        let bad_timeout = r#"{"node": {"uuid": "a"}, "config": {"heartbeat_timeout": -3}}"#;
        assert!(matches!(
            LookupResponse::from_json(bad_timeout.as_bytes()),
            Err(LookupResponseError::Malformed(_))
        ));
    }

    #[test]
    fn token_classification() {
        let long = "t".repeat(MIN_TOKEN_LEN);
        let short = "t".repeat(MIN_TOKEN_LEN - 1);
        let cases: [(Option<&str>, TokenOffer<'_>); 5] = [
            (Some(&long), TokenOffer::Issued(&long)),
            (Some(&short), TokenOffer::Unusable),
            (Some("******"), TokenOffer::Masked),
            (Some(""), TokenOffer::Unusable),
            (None, TokenOffer::Unusable),
        ];
        for (input, expected) in cases {
            assert_eq!(TokenOffer::classify(input), expected, "{input:?}");
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_masks_the_token() {
        let config = LookupConfig {
            agent_token: Some("t0ken-t0ken-t0ken-t0ken-t0ken-t0ken".into()),
            heartbeat_timeout: Some(300),
            ..LookupConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("t0ken"), "{text}");
        assert!(text.contains("******") && text.contains("300"), "{text}");
    }
}
