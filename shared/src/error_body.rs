//! Error bodies of the three services, which all differ:
//!
//! - the Ironic API wraps a JSON document *inside a string*:
//!   `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"…\", …}"}`;
//! - the agent's API answers `{"faultcode": "Client", "faultstring": "…"}`;
//! - ironic-inspector answers `{"error": {"message": "…"}}`.
//!
//! Producing each exactly lets real Ironic clients read Ferric's errors; reading them
//! leniently lets Ferric report something useful whatever version answered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who is at fault, WSME style: `Server` for HTTP status >= 500, else `Client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultCode {
    Client,
    Server,
}

impl FaultCode {
    pub fn for_status(status: u16) -> FaultCode {
        if status >= 500 {
            FaultCode::Server
        } else {
            FaultCode::Client
        }
    }
}

/// The fault document an Ironic error carries (inside [`IronicErrorBody::error_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IronicFault {
    pub faultcode: FaultCode,
    pub faultstring: String,
    /// A traceback in debug deployments; `null` otherwise (always serialised).
    #[serde(default)]
    pub debuginfo: Option<String>,
}

/// A non-2xx body of the Ironic API: `{"error_message": "<fault as a JSON string>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IronicErrorBody {
    pub error_message: String,
}

impl IronicErrorBody {
    /// The body Ironic sends for an error with HTTP `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> IronicErrorBody {
        IronicErrorBody::from_fault(&IronicFault {
            faultcode: FaultCode::for_status(status),
            faultstring: message.into(),
            debuginfo: None,
        })
    }

    /// Wraps `fault`, serialised to a string as the Ironic middleware does.
    pub fn from_fault(fault: &IronicFault) -> IronicErrorBody {
        // Serialising a struct of strings cannot fail; the fallback keeps this total.
        let error_message = serde_json::to_string(fault)
            .unwrap_or_else(|_| Value::String(fault.faultstring.clone()).to_string());
        IronicErrorBody { error_message }
    }

    /// The fault inside, if `error_message` holds one.
    pub fn fault(&self) -> Option<IronicFault> {
        serde_json::from_str(&self.error_message).ok()
    }
}

/// The message to report for an error reply from Ironic (or any service speaking one of
/// its dialects), read the way the agent reads it:
///
/// 1. a body that is not JSON is reported as its text;
/// 2. otherwise `error_message` (or the body itself) is taken as the fault, decoding it
///    when it is a JSON document inside a string;
/// 3. the fault's `faultstring` is used, else a `title` (webob-style errors), else
///    inspector's `error.message`, else the whole body text.
///
/// Empty strings count as absent, as they do for the agent.
pub fn error_message_from_reply(body: &str) -> String {
    let raw = body.trim();
    let Ok(parsed) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    let fault = match parsed.get("error_message") {
        Some(Value::String(inner)) => serde_json::from_str::<Value>(inner).unwrap_or(Value::Null),
        Some(other) => other.clone(),
        None => parsed.clone(),
    };
    let text_at = |value: &Value, path: &[&str]| -> Option<String> {
        let mut node = value;
        for key in path {
            node = node.get(key)?;
        }
        node.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    };
    text_at(&fault, &["faultstring"])
        .or_else(|| text_at(&fault, &["title"]))
        .or_else(|| text_at(&parsed, &["title"]))
        .or_else(|| text_at(&parsed, &["error", "message"]))
        .unwrap_or_else(|| raw.to_owned())
}

/// An error body of the agent's API: `{"faultcode": …, "faultstring": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFault {
    pub faultcode: FaultCode,
    pub faultstring: String,
}

impl AgentFault {
    /// The body the agent sends for an error with HTTP `status`.
    pub fn new(status: u16, message: impl Into<String>) -> AgentFault {
        AgentFault { faultcode: FaultCode::for_status(status), faultstring: message.into() }
    }

    /// Whether a reply means "another command is still running": HTTP 409, or a
    /// faultstring saying the agent is busy (older agents used other codes for it).
    pub fn means_busy(&self, status: u16) -> bool {
        status == 409 || self.faultstring.to_lowercase().contains("agent is busy")
    }
}

/// An error body of ironic-inspector: `{"error": {"message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectorErrorBody {
    pub error: InspectorError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectorError {
    pub message: String,
}

impl InspectorErrorBody {
    pub fn new(message: impl Into<String>) -> InspectorErrorBody {
        InspectorErrorBody { error: InspectorError { message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ironic_body_wraps_the_fault_as_a_string() {
        let body = IronicErrorBody::new(404, "Node 1be2 could not be found.");
        let wire = serde_json::to_value(&body).unwrap();
        let inner = wire["error_message"].as_str().expect("error_message is a string");
        let inner: Value = serde_json::from_str(inner).unwrap();
        assert_eq!(
            inner,
            json!({"faultcode": "Client", "faultstring": "Node 1be2 could not be found.",
                "debuginfo": null})
        );
        assert_eq!(wire.as_object().unwrap().len(), 1);
        assert_eq!(body.fault().unwrap().faultstring, "Node 1be2 could not be found.");
        let server = IronicErrorBody::new(503, "down").fault().unwrap();
        assert_eq!(server.faultcode, FaultCode::Server);
        let back: IronicErrorBody = serde_json::from_value(wire).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn fault_code_boundary() {
        for (status, code) in [
            (400, FaultCode::Client),
            (401, FaultCode::Client),
            (409, FaultCode::Client),
            (499, FaultCode::Client),
            (500, FaultCode::Server),
            (503, FaultCode::Server),
        ] {
            assert_eq!(FaultCode::for_status(status), code, "{status}");
            assert_eq!(AgentFault::new(status, "x").faultcode, code);
        }
    }

    #[test]
    fn reply_messages_in_every_dialect() {
        let table = [
            (
                concat!(
                    r#"{"error_message": "{\"faultcode\": \"Client\", "#,
                    r#"\"faultstring\": \"Invalid or missing agent token\", "#,
                    r#"\"debuginfo\": null}"}"#
                ),
                "Invalid or missing agent token",
            ),
            (
                concat!(
                    r#"{"error_message": {"faultcode": "Server", "faultstring": "boom", "#,
                    r#""debuginfo": "tb"}}"#
                ),
                "boom",
            ),
            (
                r#"{"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."}"#,
                "401 Unauthorized: Token invalid.",
            ),
            (r#"{"title": "Not Acceptable", "description": "v"}"#, "Not Acceptable"),
            (r#"{"error_message": {"title": "Forbidden"}}"#, "Forbidden"),
            (r#"{"error": {"message": "Node already finished"}}"#, "Node already finished"),
            (
                "<html><body>502 Bad Gateway</body></html>\n",
                "<html><body>502 Bad Gateway</body></html>",
            ),
            (r#"{"error_message": "not json"}"#, r#"{"error_message": "not json"}"#),
            (r#"{"faultstring": ""}"#, r#"{"faultstring": ""}"#),
            (r#"{"faultstring": 42, "title": "T"}"#, "T"),
            ("[1, 2]", "[1, 2]"),
            ("", ""),
        ];
        for (body, expected) in table {
            assert_eq!(error_message_from_reply(body), expected, "{body}");
        }
        let ours = serde_json::to_string(&IronicErrorBody::new(400, "bad")).unwrap();
        assert_eq!(error_message_from_reply(&ours), "bad");
    }

    #[test]
    fn agent_fault_shape_and_busy_detection() {
        let fault = AgentFault::new(409, "Agent is busy: executing command execute_clean_step");
        assert_eq!(
            serde_json::to_value(&fault).unwrap(),
            json!({"faultcode": "Client",
                "faultstring": "Agent is busy: executing command execute_clean_step"})
        );
        assert!(fault.means_busy(409));
        assert!(fault.means_busy(500));
        assert!(AgentFault::new(503, "x").means_busy(409));
        assert!(!AgentFault::new(400, "Invalid command: Unknown command: x").means_busy(400));
        let parsed: AgentFault =
            serde_json::from_str(r#"{"faultcode": "Server", "faultstring": "oops"}"#).unwrap();
        assert_eq!(parsed, AgentFault::new(500, "oops"));
        assert!(serde_json::from_str::<AgentFault>(r#"{"faultcode": "Nobody"}"#).is_err());
    }

    #[test]
    fn inspector_body_shape() {
        let body = InspectorErrorBody::new("Node not found");
        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(wire, json!({"error": {"message": "Node not found"}}));
        assert_eq!(serde_json::from_value::<InspectorErrorBody>(wire).unwrap(), body);
    }

    #[test]
    fn garbage_replies_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            "\\\"",
            ":",
            ",",
            "error_message",
            "faultstring",
            "title",
            "error",
            "message",
            "null",
            "1",
            "true",
            " ",
            "é",
            "\\u00e9",
            "\\ud800",
            "{\\\"",
        ];
        for _ in 0..20_000 {
            let len = next() % 30;
            let body: String =
                (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            let message = error_message_from_reply(&body);
            // Whatever comes back is either a field of the body or the body itself.
            assert!(message.len() <= body.len(), "{body:?} -> {message:?}");
        }
    }
}
