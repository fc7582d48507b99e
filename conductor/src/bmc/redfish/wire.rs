//! The parts of Redfish replies the driver reads.
//!
//! BMCs differ widely in what they include, so every field is optional and unknown ones
//! are ignored: a missing field becomes a typed error only where the driver needs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A link: `{"@odata.id": "/redfish/v1/..."}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Link {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
}

/// The service root (`/redfish/v1/`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    #[serde(default)]
    pub systems: Option<Link>,
    #[serde(default)]
    pub managers: Option<Link>,
    #[serde(default)]
    pub session_service: Option<Link>,
    #[serde(default)]
    pub links: RootLinks,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootLinks {
    #[serde(default)]
    pub sessions: Option<Link>,
}

/// Any collection (`Members`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Collection {
    #[serde(default)]
    pub members: Vec<Link>,
}

/// An action: its `target` and, where the BMC says so, the values a parameter may take.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Action {
    #[serde(default)]
    pub target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues", default)]
    pub reset_types: Option<Vec<String>>,
    #[serde(rename = "@Redfish.ActionInfo", default)]
    pub action_info: Option<String>,
}

/// An `ActionInfo` resource: the parameters an action takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionInfo {
    #[serde(default)]
    pub parameters: Vec<ActionParameter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionParameter {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub allowable_values: Option<Vec<String>>,
}

impl ActionInfo {
    /// The values the named parameter may take, when the BMC lists them.
    pub fn allowable_values(&self, name: &str) -> Option<Vec<String>> {
        self.parameters
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.allowable_values.clone())
    }
}

/// `ComputerSystem`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    #[serde(rename = "@odata.etag", default)]
    pub odata_etag: Option<String>,
    #[serde(default)]
    pub power_state: Option<String>,
    #[serde(default)]
    pub boot: Option<Boot>,
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    #[serde(default)]
    pub virtual_media: Option<Link>,
    #[serde(default)]
    pub links: SystemLinks,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemLinks {
    #[serde(default)]
    pub managed_by: Vec<Link>,
}

/// `ComputerSystem.Boot`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Boot {
    #[serde(rename = "BootSourceOverrideTarget", default)]
    pub target: Option<String>,
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues", default)]
    pub allowed_targets: Option<Vec<String>>,
    #[serde(rename = "BootSourceOverrideEnabled", default)]
    pub enabled: Option<String>,
    #[serde(rename = "BootSourceOverrideMode", default)]
    pub mode: Option<String>,
}

/// The `Boot` object of a PATCH.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BootPatch {
    #[serde(rename = "BootSourceOverrideTarget", skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(rename = "BootSourceOverrideEnabled", skip_serializing_if = "Option::is_none")]
    pub enabled: Option<String>,
    #[serde(rename = "BootSourceOverrideMode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `Manager` (only the link to its virtual media).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manager {
    #[serde(default)]
    pub virtual_media: Option<Link>,
}

/// `VirtualMedia`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMedia {
    #[serde(rename = "@odata.etag", default)]
    pub odata_etag: Option<String>,
    #[serde(default)]
    pub media_types: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub inserted: Option<bool>,
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
}

impl VirtualMedia {
    /// Whether the device takes CD or DVD images.
    pub fn is_optical(&self) -> bool {
        self.media_types.iter().any(|t| t == "CD" || t == "DVD")
    }

    /// An image is present: `Inserted` when the BMC reports it, else a non-empty `Image`.
    pub fn has_media(&self) -> bool {
        let has_image = self.image.as_deref().is_some_and(|i| !i.is_empty());
        self.inserted.unwrap_or(has_image)
    }
}

/// A task (`TaskService/Tasks/N`), as a task monitor may answer when done.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(default)]
    pub task_state: Option<String>,
    #[serde(default)]
    pub task_status: Option<String>,
    #[serde(default)]
    pub messages: Vec<MessageEntry>,
}

impl Task {
    /// Whether the task ended; `TaskState` values from the Redfish `Task` schema.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.task_state.as_deref(),
            Some("Completed" | "Exception" | "Killed" | "Cancelled" | "Interrupted")
        )
    }

    /// Whether a finished task failed.
    pub fn failed(&self) -> bool {
        matches!(self.task_state.as_deref(), Some("Exception" | "Killed" | "Cancelled"))
            || matches!(self.task_status.as_deref(), Some("Critical"))
    }

    pub fn message_text(&self) -> Option<String> {
        join_messages(&self.messages)
    }
}

/// One `@Message.ExtendedInfo` (or task `Messages`) entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageEntry {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(rename = "@Message.ExtendedInfo", default)]
    extended_info: Vec<MessageEntry>,
}

fn join_messages(entries: &[MessageEntry]) -> Option<String> {
    let texts: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.message.as_deref().or(e.message_id.as_deref()))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// Longest error text kept from a reply body, so a BMC returning a whole HTML page does
/// not flood logs and `last_error`.
const MAX_ERROR_TEXT: usize = 300;

/// The human text of an error reply: the `@Message.ExtendedInfo` messages, else
/// `error.message`, else `error.code`, else the body itself (shortened); `None` for an
/// empty body.
pub fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(reply) = serde_json::from_slice::<ErrorReply>(body) {
        let error = reply.error;
        if let Some(text) = join_messages(&error.extended_info) {
            return Some(text);
        }
        if let Some(text) = error.message.or(error.code).filter(|m| !m.trim().is_empty()) {
            return Some(text);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(shorten(text))
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_ERROR_TEXT).collect();
    short.push('…');
    short
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is not used by
/// BMCs in practice and is treated as absent).
pub fn retry_after_secs(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok()
}

/// The ETag a resource carries: the `ETag` header, else `@odata.etag` in the body.
pub fn etag(header: Option<&str>, body_etag: Option<&str>) -> Option<String> {
    header.or(body_etag).map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned)
}

/// A JSON body for `VirtualMedia.InsertMedia` or a PATCH of `Image`.
pub fn insert_media_body(url: &str) -> Value {
    serde_json::json!({ "Image": url, "Inserted": true, "WriteProtected": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_prefers_extended_info_then_message_then_body() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (
                br#"{"error":{"code":"Base.1.0.GeneralError","message":"A general error",
                    "@Message.ExtendedInfo":[{"Message":"The property Foo is read only."},
                    {"MessageId":"Base.1.8.PropertyNotWritable"}]}}"#,
                Some("The property Foo is read only.; Base.1.8.PropertyNotWritable"),
            ),
            (
                br#"{"error":{"code":"Base.1.0.GeneralError","message":"A general error"}}"#,
                Some("A general error"),
            ),
            (br#"{"error":{"code":"Base.1.0.GeneralError"}}"#, Some("Base.1.0.GeneralError")),
            (b"Service Unavailable\n", Some("Service Unavailable")),
            (br#"{"error": 5}"#, Some(r#"{"error": 5}"#)),
            (b"", None),
            (b"  \n", None),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body).as_deref(), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn long_error_bodies_are_shortened() {
        let body = "x".repeat(5000);
        let text = error_message(body.as_bytes()).unwrap();
        assert_eq!(text.chars().count(), MAX_ERROR_TEXT + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn system_parses_power_boot_and_reset_values() {
        let system: ComputerSystem = serde_json::from_str(
            r##"{"PowerState":"On","Boot":{"BootSourceOverrideTarget":"Pxe",
              "BootSourceOverrideTarget@Redfish.AllowableValues":["Pxe","Hdd"],
              "BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"UEFI"},
              "Actions":{"#ComputerSystem.Reset":{"target":"/r","ResetType@Redfish.AllowableValues":["On"]}},
              "Links":{"ManagedBy":[{"@odata.id":"/redfish/v1/Managers/1"}]},
              "@odata.etag":"W/\"1\"","Unknown":{"x":1}}"##,
        )
        .unwrap();
        assert_eq!(system.power_state.as_deref(), Some("On"));
        let boot = system.boot.unwrap();
        assert_eq!(boot.target.as_deref(), Some("Pxe"));
        assert_eq!(boot.allowed_targets.unwrap(), ["Pxe", "Hdd"]);
        assert_eq!(boot.enabled.as_deref(), Some("Once"));
        assert_eq!(boot.mode.as_deref(), Some("UEFI"));
        let reset = &system.actions["#ComputerSystem.Reset"];
        assert_eq!(reset.target.as_deref(), Some("/r"));
        assert_eq!(reset.reset_types.as_deref().unwrap(), ["On"]);
        assert_eq!(system.links.managed_by[0].odata_id, "/redfish/v1/Managers/1");
        assert_eq!(system.odata_etag.as_deref(), Some("W/\"1\""));
    }

    #[test]
    fn virtual_media_presence_and_kind() {
        let cases = [
            (r#"{"MediaTypes":["CD","DVD"],"Inserted":true,"Image":"http://x/a.iso"}"#, true, true),
            (r#"{"MediaTypes":["DVD"],"Image":"http://x/a.iso"}"#, true, true),
            (r#"{"MediaTypes":["Floppy","USBStick"],"Image":""}"#, false, false),
            (r#"{"MediaTypes":["CD"],"Inserted":false,"Image":"http://x/a.iso"}"#, true, false),
            (r#"{"MediaTypes":["CD"],"Image":null}"#, true, false),
        ];
        for (json, optical, media) in cases {
            let vm: VirtualMedia = serde_json::from_str(json).unwrap();
            assert_eq!(vm.is_optical(), optical, "{json}");
            assert_eq!(vm.has_media(), media, "{json}");
        }
    }

    #[test]
    fn task_states() {
        let cases = [
            (r#"{"TaskState":"Running"}"#, false, false),
            (r#"{"TaskState":"Completed","TaskStatus":"OK"}"#, true, false),
            (r#"{"TaskState":"Completed","TaskStatus":"Critical"}"#, true, true),
            (r#"{"TaskState":"Exception","Messages":[{"Message":"boom"}]}"#, true, true),
            (r#"{}"#, false, false),
        ];
        for (json, finished, failed) in cases {
            let task: Task = serde_json::from_str(json).unwrap();
            assert_eq!(task.is_finished(), finished, "{json}");
            assert_eq!(task.is_finished() && task.failed(), failed, "{json}");
        }
    }

    #[test]
    fn etag_header_wins_over_body() {
        assert_eq!(etag(Some("\"h\""), Some("\"b\"")).as_deref(), Some("\"h\""));
        assert_eq!(etag(None, Some("\"b\"")).as_deref(), Some("\"b\""));
        assert_eq!(etag(Some("  "), None), None);
        assert_eq!(etag(None, None), None);
    }

    #[test]
    fn retry_after_in_seconds_only() {
        assert_eq!(retry_after_secs("5"), Some(5));
        assert_eq!(retry_after_secs(" 12 "), Some(12));
        assert_eq!(retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_secs("-1"), None);
    }
}
