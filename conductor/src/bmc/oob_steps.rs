//! Out-of-band clean steps: steps the conductor carries out through the BMC while the
//! node cleans, beside the agent's in-band steps.
//!
//! A driver lists the steps it can run ([`super::Driver::clean_steps`]); the conductor
//! plans them together with the agent's and runs them itself
//! ([`super::Bmc::run_oob_step`]). Both are offered on the `management` interface with
//! priority 0, so they run only when a manual clean lists them:
//!
//! | step | arguments | what the BMC does |
//! | --- | --- | --- |
//! | `management.reset_bios_to_default` | none | BIOS settings back to factory defaults (applied at the next boot) |
//! | `management.set_secure_boot` | `enable` (boolean, required) | UEFI secure boot on or off |

use std::collections::BTreeMap;

use ferric_shared::steps::{ArgInfo, Step};
use serde_json::{Map, Value};

/// The interface the out-of-band steps are offered on.
pub const MANAGEMENT_INTERFACE: &str = "management";
/// `management.reset_bios_to_default`.
pub const RESET_BIOS_TO_DEFAULT: &str = "reset_bios_to_default";
/// `management.set_secure_boot`.
pub const SET_SECURE_BOOT: &str = "set_secure_boot";

/// An out-of-band step with its arguments checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OobStep {
    ResetBiosToDefault,
    SetSecureBoot { enable: bool },
}

/// An out-of-band step whose arguments are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OobStepError {
    #[error("clean step {MANAGEMENT_INTERFACE}.{step} is missing required argument {arg}")]
    MissingArgument { step: &'static str, arg: &'static str },
    #[error(
        "clean step {MANAGEMENT_INTERFACE}.{step}: argument {arg} must be a boolean, not {got}"
    )]
    NotBoolean { step: &'static str, arg: &'static str, got: String },
}

impl OobStep {
    /// The step's name.
    pub fn name(self) -> &'static str {
        match self {
            OobStep::ResetBiosToDefault => RESET_BIOS_TO_DEFAULT,
            OobStep::SetSecureBoot { .. } => SET_SECURE_BOOT,
        }
    }

    /// The out-of-band step `interface.step` names, with `args` checked; `Ok(None)` when
    /// it names none (an agent step, or a conductor step).
    pub fn parse(
        interface: &str,
        step: &str,
        args: &Map<String, Value>,
    ) -> Result<Option<OobStep>, OobStepError> {
        if interface != MANAGEMENT_INTERFACE {
            return Ok(None);
        }
        match step {
            RESET_BIOS_TO_DEFAULT => Ok(Some(OobStep::ResetBiosToDefault)),
            SET_SECURE_BOOT => {
                let arg = "enable";
                let enable = match args.get(arg) {
                    None => {
                        return Err(OobStepError::MissingArgument { step: SET_SECURE_BOOT, arg })
                    }
                    Some(value) => boolean(value).ok_or_else(|| OobStepError::NotBoolean {
                        step: SET_SECURE_BOOT,
                        arg,
                        got: value.to_string(),
                    })?,
                };
                Ok(Some(OobStep::SetSecureBoot { enable }))
            }
            _ => Ok(None),
        }
    }
}

/// A JSON boolean, or one of the strings the `baremetal` CLI and oslo accept for one.
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Some(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The step documents of every out-of-band step, as a driver that can run them offers
/// them (the shape of an agent's `get_clean_steps` entries).
pub fn offered() -> Vec<Step> {
    let step = |name: &str, argsinfo: Option<BTreeMap<String, ArgInfo>>| {
        let mut extra = Map::new();
        extra.insert("requires_ramdisk".into(), Value::Bool(false));
        Step {
            step: name.to_owned(),
            priority: 0,
            interface: MANAGEMENT_INTERFACE.to_owned(),
            reboot_requested: Some(false),
            abortable: Some(false),
            argsinfo,
            extra,
        }
    };
    let enable = ArgInfo {
        description: "true to enable UEFI secure boot, false to disable it".to_owned(),
        required: true,
    };
    vec![
        step(RESET_BIOS_TO_DEFAULT, None),
        step(SET_SECURE_BOOT, Some(BTreeMap::from([("enable".to_owned(), enable)]))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn steps_are_recognised_by_interface_and_name_with_checked_arguments() {
        let none = Map::new();
        assert_eq!(
            OobStep::parse("management", "reset_bios_to_default", &none),
            Ok(Some(OobStep::ResetBiosToDefault))
        );
        for (value, enable) in [(json!(true), true), (json!("false"), false), (json!("on"), true)] {
            assert_eq!(
                OobStep::parse("management", "set_secure_boot", &args(json!({"enable": value}))),
                Ok(Some(OobStep::SetSecureBoot { enable }))
            );
        }
        // Other interfaces and names are not out-of-band steps.
        assert_eq!(OobStep::parse("deploy", "reset_bios_to_default", &none), Ok(None));
        assert_eq!(OobStep::parse("management", "update_firmware", &none), Ok(None));

        let missing = OobStep::parse("management", "set_secure_boot", &none).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "clean step management.set_secure_boot is missing required argument enable"
        );
        let wrong = OobStep::parse("management", "set_secure_boot", &args(json!({"enable": 2})))
            .unwrap_err();
        assert!(wrong.to_string().contains("must be a boolean, not 2"), "{wrong}");
    }

    #[test]
    fn offered_steps_parse_back_and_say_what_they_need() {
        let steps = offered();
        assert_eq!(steps.len(), 2);
        for step in &steps {
            assert_eq!(step.priority, 0, "out-of-band steps never run unasked");
            assert_eq!(step.extra.get("requires_ramdisk"), Some(&Value::Bool(false)));
            let mut args = Map::new();
            for (name, info) in step.argsinfo.iter().flatten() {
                assert!(info.required && !info.description.is_empty());
                args.insert(name.clone(), Value::Bool(true));
            }
            let parsed = OobStep::parse(&step.interface, &step.step, &args).unwrap().unwrap();
            assert_eq!(parsed.name(), step.step);
        }
    }
}
