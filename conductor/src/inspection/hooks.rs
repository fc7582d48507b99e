//! The processing hooks.
//!
//! Each hook reads the report (the JSON body the ramdisk posted) and the node, and adds
//! to one [`InspectionOutcome`]. Hooks read the report themselves rather than what an
//! earlier hook left in `plugin_data`, so a configuration that leaves one out or
//! reorders them still gets consistent answers.

mod capabilities;
mod interfaces;
mod link;
mod properties;

use serde_json::{Map, Value};

use super::{HookName, InspectionError, InspectionOutcome, PortUpdate};
use crate::config::InspectorConfig;
use crate::store::{Node, Port};

/// Runs the configured hooks, in order, over an inspection report.
pub fn process(
    config: &InspectorConfig,
    node: &Node,
    ports: &[Port],
    data: &Value,
) -> Result<InspectionOutcome, InspectionError> {
    let Value::Object(data) = data else {
        return Err(InspectionError::Invalid {
            hook: "process",
            reason: format!("the report is {}, not a JSON object", kind(data)),
        });
    };
    let ctx = Ctx { config, node, ports, data };
    let mut outcome = InspectionOutcome::default();
    for &hook in &config.hooks {
        run(hook, &ctx, &mut outcome)?;
    }
    Ok(outcome)
}

fn run(hook: HookName, ctx: &Ctx<'_>, out: &mut InspectionOutcome) -> Result<(), InspectionError> {
    match hook {
        HookName::RamdiskError => ramdisk_error(ctx),
        HookName::ValidateInterfaces => interfaces::validate_interfaces(ctx, out),
        HookName::Ports => interfaces::ports(ctx, out),
        HookName::Properties => properties::properties(ctx, out),
        HookName::Capabilities => capabilities::capabilities(ctx, out),
        HookName::RootDevice => properties::root_device(ctx, out),
        HookName::Lldp => link::lldp(ctx, out),
        HookName::PciDevices => capabilities::pci_devices(ctx, out),
    }
}

/// The name a hook has in the configuration, for error messages.
fn hook_name(hook: HookName) -> &'static str {
    match hook {
        HookName::RamdiskError => "ramdisk_error",
        HookName::ValidateInterfaces => "validate_interfaces",
        HookName::Ports => "ports",
        HookName::Properties => "properties",
        HookName::Capabilities => "capabilities",
        HookName::RootDevice => "root_device",
        HookName::Lldp => "lldp",
        HookName::PciDevices => "pci_devices",
    }
}

/// What every hook looks at.
struct Ctx<'a> {
    config: &'a InspectorConfig,
    node: &'a Node,
    ports: &'a [Port],
    data: &'a Map<String, Value>,
}

impl<'a> Ctx<'a> {
    /// The report's `inventory`, which a hook that needs it cannot do without.
    fn inventory(&self, hook: HookName) -> Result<&'a Map<String, Value>, InspectionError> {
        match self.data.get("inventory") {
            Some(Value::Object(inventory)) => Ok(inventory),
            Some(other) => {
                Err(invalid(hook, format!("inventory is {}, not an object", kind(other))))
            }
            None => Err(invalid(hook, "the report has no inventory")),
        }
    }

    /// `inventory.<section>` as an object, `None` when absent or of another type.
    fn section(
        &self,
        hook: HookName,
        name: &str,
    ) -> Result<Option<&'a Map<String, Value>>, InspectionError> {
        Ok(self.inventory(hook)?.get(name).and_then(Value::as_object))
    }
}

fn invalid(hook: HookName, reason: impl Into<String>) -> InspectionError {
    InspectionError::Invalid { hook: hook_name(hook), reason: reason.into() }
}

/// A JSON value's kind, for messages.
fn kind(value: &Value) -> &'static str {
    ferric_shared::hints::json_kind(value)
}

/// A non-empty string field of a JSON object.
fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// Fails inspection with the ramdisk's own `error`, as Ironic's `ramdisk-error` hook.
fn ramdisk_error(ctx: &Ctx<'_>) -> Result<(), InspectionError> {
    match ctx.data.get("error") {
        // Ironic tests the value's truth: empty or false values are no error.
        None | Some(Value::Null | Value::Bool(false)) => Ok(()),
        Some(Value::String(message)) if message.trim().is_empty() => Ok(()),
        Some(Value::Array(list)) if list.is_empty() => Ok(()),
        Some(Value::Object(map)) if map.is_empty() => Ok(()),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(()),
        Some(Value::String(message)) => Err(InspectionError::Ramdisk(message.clone())),
        // Anything else still means the ramdisk reported a failure; show it as sent.
        Some(other) => Err(InspectionError::Ramdisk(other.to_string())),
    }
}

/// The update for the port with `address` (normalized), created empty on first use so
/// that hooks touching the same port produce one update.
fn port_update<'o>(out: &'o mut InspectionOutcome, address: &str) -> &'o mut PortUpdate {
    let index = match out.port_updates.iter().position(|u| u.address == address) {
        Some(index) => index,
        None => {
            out.port_updates
                .push(PortUpdate { address: address.to_owned(), ..PortUpdate::default() });
            out.port_updates.len() - 1
        }
    };
    &mut out.port_updates[index]
}

#[cfg(test)]
mod tests;
