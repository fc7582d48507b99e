//! Which steps run, in which order: pure planning from what the agent offers, the
//! operator's request and the conductor's configuration.

use std::collections::BTreeMap;

use ferric_shared::steps::{GetStepsResult, NodeStep, Step, StepId, UserStep};
use serde_json::{Map, Value};

/// The interface of the steps the conductor carries out itself (Ironic's reserved
/// steps), which the agent never sees.
pub const CONDUCTOR_INTERFACE: &str = "conductor";
/// `conductor.hold`: stop in `clean hold` until `unhold` (or `abort`).
pub const HOLD_STEP: &str = "hold";
/// `conductor.wait`: pause for `args.seconds` before the next step.
pub const WAIT_STEP: &str = "wait";

/// Ironic's tie-break between steps of equal priority: the step of the interface with the
/// higher rank runs first.
fn interface_rank(interface: &str) -> u8 {
    match interface {
        "vendor" => 6,
        "power" => 5,
        "management" => 4,
        "deploy" => 3,
        "bios" => 2,
        "raid" => 1,
        _ => 0,
    }
}

/// Operator overrides of agent step priorities, keyed by `interface.step`
/// (e.g. `deploy.erase_devices`). A priority of 0 disables the step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityOverrides {
    by_step: BTreeMap<String, i64>,
}

impl PriorityOverrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the priority of `interface.step`; `None` keeps the agent's.
    pub fn set(&mut self, interface: &str, step: &str, priority: Option<i64>) -> &mut Self {
        let key = format!("{interface}.{step}");
        match priority {
            Some(p) => self.by_step.insert(key, p),
            None => self.by_step.remove(&key),
        };
        self
    }

    fn priority_of(&self, step: &Step) -> i64 {
        self.by_step
            .get(&format!("{}.{}", step.interface, step.step))
            .copied()
            .unwrap_or(step.priority)
    }
}

/// Why a requested step list cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{kind} step {interface}.{step} is not supported by the agent")]
    Unsupported { kind: &'static str, interface: String, step: String },
    #[error("{kind} step {interface}.{step} is missing required argument {arg}")]
    MissingArgument { kind: &'static str, interface: String, step: String, arg: String },
    #[error("{kind} step conductor.{step} is not a conductor step (hold, wait)")]
    UnknownConductorStep { kind: &'static str, step: String },
    #[error(
        "{kind} step conductor.wait needs argument seconds, a number of seconds >= 0, not {value}"
    )]
    WaitSeconds { kind: &'static str, value: String },
    #[error(transparent)]
    OutOfBand(#[from] crate::bmc::oob_steps::OobStepError),
}

/// The seconds of a `conductor.wait` step, from its arguments.
pub fn wait_seconds(args: &Map<String, Value>) -> Option<f64> {
    let seconds = match args.get("seconds")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// A reserved conductor step of a manual list, checked.
fn conductor_step(user: &UserStep) -> Result<NodeStep, PlanError> {
    let args = user.args.clone().unwrap_or_default();
    match user.step.as_str() {
        HOLD_STEP => {}
        WAIT_STEP => {
            if wait_seconds(&args).is_none() {
                let value = args.get("seconds").map_or("nothing".to_owned(), Value::to_string);
                return Err(PlanError::WaitSeconds { kind: "clean", value });
            }
        }
        other => {
            return Err(PlanError::UnknownConductorStep { kind: "clean", step: other.to_owned() })
        }
    }
    Ok(NodeStep {
        interface: CONDUCTOR_INTERFACE.to_owned(),
        step: user.step.clone(),
        args,
        priority: Some(0),
        // Waiting can always be given up.
        abortable: Some(true),
        reboot_requested: Some(false),
        requires_ramdisk: Some(false),
        extra: Map::new(),
    })
}

/// Automated cleaning: every agent step whose (possibly overridden) priority is above 0,
/// highest priority first, ties broken by interface rank then step name. A step offered
/// by several managers appears once (the agent already de-duplicates; this guards the
/// conductor's order against an agent that does not).
pub fn automated_clean_plan(
    offered: &GetStepsResult,
    overrides: &PriorityOverrides,
) -> Vec<NodeStep> {
    let mut chosen: Vec<(i64, &Step)> = Vec::new();
    for step in offered.all_steps() {
        let priority = overrides.priority_of(step);
        if priority <= 0 || chosen.iter().any(|(_, s)| s.is_equivalent(step)) {
            continue;
        }
        chosen.push((priority, step));
    }
    chosen.sort_by(|(pa, a), (pb, b)| {
        pb.cmp(pa)
            .then_with(|| interface_rank(&b.interface).cmp(&interface_rank(&a.interface)))
            .then_with(|| a.step.cmp(&b.step))
    });
    chosen
        .into_iter()
        .map(|(priority, step)| {
            let mut node_step = step.to_node_step(Map::new());
            node_step.priority = Some(priority);
            node_step
        })
        .collect()
}

/// Manual cleaning: the operator's steps in the order given, each of which the agent
/// must offer, or a conductor step (`hold`, `wait`); arguments the agent marks as
/// required must be present.
pub fn manual_clean_plan(
    requested: &[UserStep],
    offered: &GetStepsResult,
) -> Result<Vec<NodeStep>, PlanError> {
    requested
        .iter()
        .map(|user| {
            if user.interface == CONDUCTOR_INTERFACE {
                return conductor_step(user);
            }
            let Some(step) = offered.all_steps().find(|s| s.is_equivalent(user)) else {
                return Err(PlanError::Unsupported {
                    kind: "clean",
                    interface: user.interface.clone(),
                    step: user.step.clone(),
                });
            };
            let args = user.args.clone().unwrap_or_default();
            if let Some(info) = &step.argsinfo {
                if let Some((arg, _)) =
                    info.iter().find(|(name, i)| i.required && !args.contains_key(*name))
                {
                    return Err(PlanError::MissingArgument {
                        kind: "clean",
                        interface: user.interface.clone(),
                        step: user.step.clone(),
                        arg: arg.clone(),
                    });
                }
            }
            let mut node_step = step.to_node_step(args);
            // Manual steps run in list order; their priority carries no meaning.
            node_step.priority = Some(0);
            Ok(node_step)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// ironic-python-agent's GenericHardwareManager clean steps (facts doc §7.2), plus a
    /// vendor manager offering a step of equal priority on another interface.
    fn offered() -> GetStepsResult {
        serde_json::from_value(json!({
            "clean_steps": {
                "GenericHardwareManager": [
                    {"step": "erase_devices", "priority": 10, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "erase_devices_express", "priority": 0, "interface": "deploy"},
                    {"step": "delete_configuration", "priority": 0, "interface": "raid"},
                    {"step": "clean_uefi_nvram", "priority": 0, "interface": "deploy",
                     "argsinfo": {"match_patterns": {"description": "regexes", "required": false}}},
                    {"step": "apply_configuration", "priority": 0, "interface": "raid",
                     "argsinfo": {"raid_config": {"description": "RAID", "required": true}}}
                ],
                "VendorManager": [
                    {"step": "update_firmware", "priority": 10, "interface": "management"}
                ]
            },
            "hardware_manager_version": {"generic_hardware_manager": "1.2"}
        }))
        .unwrap()
    }

    fn names(plan: &[NodeStep]) -> Vec<(String, i64)> {
        plan.iter().map(|s| (format!("{}.{}", s.interface, s.step), s.priority.unwrap())).collect()
    }

    #[test]
    fn automated_plan_orders_by_priority_then_interface_rank() {
        let plan = automated_clean_plan(&offered(), &PriorityOverrides::new());
        assert_eq!(
            names(&plan),
            [
                ("deploy.erase_devices_metadata".to_owned(), 99),
                ("management.update_firmware".to_owned(), 10),
                ("deploy.erase_devices".to_owned(), 10),
            ]
        );
        assert!(plan.iter().all(|s| s.requires_ramdisk == Some(true) && s.args.is_empty()));
    }

    #[test]
    fn overrides_change_and_disable_priorities() {
        let mut o = PriorityOverrides::new();
        o.set("deploy", "erase_devices", Some(0))
            .set("deploy", "erase_devices_express", Some(50))
            .set("deploy", "erase_devices_metadata", None);
        let plan = automated_clean_plan(&offered(), &o);
        assert_eq!(
            names(&plan),
            [
                ("deploy.erase_devices_metadata".to_owned(), 99),
                ("deploy.erase_devices_express".to_owned(), 50),
                ("management.update_firmware".to_owned(), 10),
            ]
        );
    }

    #[test]
    fn manual_plan_keeps_order_and_checks_support_and_arguments() {
        let user = |i: &str, s: &str, args: Option<serde_json::Value>| UserStep {
            interface: i.into(),
            step: s.into(),
            args: args.map(|a| a.as_object().unwrap().clone()),
            priority: None,
        };
        let plan = manual_clean_plan(
            &[
                user("deploy", "erase_devices_express", None),
                user("raid", "apply_configuration", Some(json!({"raid_config": {}}))),
            ],
            &offered(),
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            [
                ("deploy.erase_devices_express".to_owned(), 0),
                ("raid.apply_configuration".to_owned(), 0)
            ]
        );
        assert_eq!(plan[1].args, json!({"raid_config": {}}).as_object().unwrap().clone());

        let plan = manual_clean_plan(
            &[
                user("deploy", "erase_devices_express", None),
                user("conductor", "hold", None),
                user("conductor", "wait", Some(json!({"seconds": 2}))),
                user("deploy", "erase_devices", None),
            ],
            &offered(),
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            [
                ("deploy.erase_devices_express".to_owned(), 0),
                ("conductor.hold".to_owned(), 0),
                ("conductor.wait".to_owned(), 0),
                ("deploy.erase_devices".to_owned(), 0),
            ]
        );
        assert_eq!(plan[1].requires_ramdisk, Some(false));
        assert_eq!(plan[1].abortable, Some(true));
        assert_eq!(wait_seconds(&plan[2].args), Some(2.0));
        for (step, args, text) in [
            ("reboot", None, "clean step conductor.reboot is not a conductor step (hold, wait)"),
            (
                "wait",
                None,
                "clean step conductor.wait needs argument seconds, a number of seconds >= 0, \
                 not nothing",
            ),
            (
                "wait",
                Some(json!({"seconds": -1})),
                "clean step conductor.wait needs argument seconds, a number of seconds >= 0, \
                 not -1",
            ),
        ] {
            let err = manual_clean_plan(&[user("conductor", step, args)], &offered()).unwrap_err();
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(wait_seconds(json!({"seconds": "1.5"}).as_object().unwrap()), Some(1.5));

        let err =
            manual_clean_plan(&[user("deploy", "burn_it_all", None)], &offered()).unwrap_err();
        assert_eq!(err.to_string(), "clean step deploy.burn_it_all is not supported by the agent");
        let err = manual_clean_plan(&[user("raid", "apply_configuration", None)], &offered())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "clean step raid.apply_configuration is missing required argument raid_config"
        );
    }
}
