//! Store records → wire documents: the node and port JSON with links, timestamps in
//! Ironic's format, secrets masked, and `?fields=` selection.

use ferric_shared::node::{mask_node, Link, Node as WireNode};
use ferric_shared::port::Port as WirePort;
use serde::Serialize;
use serde_json::{Map, Value};
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use super::error::ApiError;
use crate::store::{Node, NodeListItem, Port};

/// Ironic's timestamp form: `2026-01-31T12:00:00.123456+00:00`.
pub fn timestamp(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    at.to_offset(UtcOffset::UTC).format(&format).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn opt_timestamp(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(timestamp)
}

/// A step column: `null` when no step is set (stored as `{}`).
fn step(map: &Map<String, Value>) -> Option<Value> {
    (!map.is_empty()).then(|| Value::Object(map.clone()))
}

/// The node document with every secret in clear: only for patching, never sent.
pub fn node_unmasked(node: &Node, base: &str, conductor: &str) -> WireNode {
    let path = format!("nodes/{}", node.uuid);
    WireNode {
        uuid: node.uuid.to_string(),
        name: node.name.clone(),
        created_at: Some(timestamp(node.created_at)),
        updated_at: opt_timestamp(node.updated_at),
        links: Link::pair(base, &path),
        ports: Link::pair(base, &format!("{path}/ports")),
        states: Link::pair(base, &format!("{path}/states")),
        portgroups: Link::pair(base, &format!("{path}/portgroups")),
        volume: Link::pair(base, &format!("{path}/volume")),
        chassis_uuid: None,
        allocation_uuid: None,
        conductor: Some(conductor.to_owned()),
        traits: node.traits.clone(),
        automated_clean: node.automated_clean,
        bios_interface: node.bios_interface.clone(),
        boot_interface: node.boot_interface.clone(),
        boot_mode: node.boot_mode.clone(),
        clean_step: step(&node.clean_step),
        conductor_group: node.conductor_group.clone(),
        console_enabled: node.console_enabled,
        console_interface: node.console_interface.clone(),
        disable_power_off: false,
        deploy_interface: node.deploy_interface.clone(),
        deploy_step: step(&node.deploy_step),
        description: node.description.clone(),
        driver: node.driver.clone(),
        driver_info: node.driver_info.clone(),
        driver_internal_info: node.driver_internal_info.clone(),
        extra: node.extra.clone(),
        fault: node.fault.clone(),
        firmware_interface: node.firmware_interface.clone(),
        health: None,
        inspection_finished_at: opt_timestamp(node.inspection_finished_at),
        inspection_started_at: opt_timestamp(node.inspection_started_at),
        inspect_interface: node.inspect_interface.clone(),
        instance_info: node.instance_info.clone(),
        instance_name: None,
        instance_uuid: node.instance_uuid.clone(),
        last_error: node.last_error.clone(),
        lessee: node.lessee.clone(),
        maintenance: node.maintenance,
        maintenance_reason: node.maintenance_reason.clone(),
        management_interface: node.management_interface.clone(),
        network_data: node.network_data.clone(),
        network_interface: node.network_interface.clone(),
        owner: node.owner.clone(),
        parent_node: None,
        power_interface: node.power_interface.clone(),
        power_state: node.power_state,
        properties: node.properties.clone(),
        protected: node.protected,
        protected_reason: node.protected_reason.clone(),
        provision_state: node.provision_state,
        provision_updated_at: opt_timestamp(node.provision_updated_at),
        raid_config: Map::new(),
        raid_interface: node.raid_interface.clone(),
        rescue_interface: node.rescue_interface.clone(),
        reservation: node.reservation.clone(),
        resource_class: node.resource_class.clone(),
        retired: node.retired,
        retired_reason: node.retired_reason.clone(),
        secure_boot: node.secure_boot,
        service_step: None,
        shard: None,
        storage_interface: node.storage_interface.clone(),
        target_power_state: node.target_power_state,
        target_provision_state: node.target_provision_state,
        target_raid_config: Map::new(),
        vendor_interface: node.vendor_interface.clone(),
    }
}

/// The node as the API shows it: secrets masked.
pub fn node(node: &Node, base: &str, conductor: &str) -> WireNode {
    let mut wire = node_unmasked(node, base, conductor);
    mask_node(&mut wire);
    wire
}

/// The `fields` (all among [`NodeListItem::COLUMNS`] and `links`) of a node list item,
/// valued exactly as in the full node document.
pub fn node_list_item(
    item: &NodeListItem,
    base: &str,
    fields: &Fields,
) -> Result<Map<String, Value>, ApiError> {
    let value = |v: Result<Value, serde_json::Error>| {
        v.map_err(|_| ApiError::Internal("A resource could not be serialised.".into()))
    };
    let mut doc = Map::new();
    doc.insert(
        "links".into(),
        value(serde_json::to_value(Link::pair(base, &format!("nodes/{}", item.uuid))))?,
    );
    for name in fields.names() {
        let v = match name {
            "uuid" => Value::String(item.uuid.to_string()),
            "name" => value(serde_json::to_value(&item.name))?,
            "instance_uuid" => value(serde_json::to_value(&item.instance_uuid))?,
            "maintenance" => Value::Bool(item.maintenance),
            "power_state" => value(serde_json::to_value(item.power_state))?,
            "provision_state" => value(serde_json::to_value(item.provision_state))?,
            _ => continue,
        };
        doc.insert(name.to_owned(), v);
    }
    Ok(doc)
}

/// The port as the API shows it.
pub fn port(port: &Port, base: &str) -> WirePort {
    WirePort {
        uuid: port.uuid.to_string(),
        address: port.address.clone(),
        node_uuid: port.node_uuid.to_string(),
        name: None,
        description: None,
        extra: port.extra.clone(),
        internal_info: port.internal_info.clone(),
        local_link_connection: port.local_link_connection.clone(),
        pxe_enabled: port.pxe_enabled,
        physical_network: port.physical_network.clone(),
        is_smartnic: port.is_smartnic,
        portgroup_uuid: port.portgroup_uuid.map(|u| u.to_string()),
        created_at: Some(timestamp(port.created_at)),
        updated_at: opt_timestamp(port.updated_at),
        links: Link::pair(base, &format!("ports/{}", port.uuid)),
    }
}

/// A `?fields=a,b` selection, checked against the resource's field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields(Vec<String>);

impl Fields {
    /// Parses `fields`; an unknown name is `400` naming it. `known` is the full document
    /// of the resource (its keys are the valid names).
    pub fn parse(text: &str, known: &[&str]) -> Result<Fields, ApiError> {
        let names: Vec<String> =
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let unknown: Vec<&str> =
            names.iter().map(String::as_str).filter(|n| !known.contains(n)).collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid(format!(
                "Field(s) \"{}\" are not valid",
                unknown.join(", ")
            )));
        }
        if names.is_empty() {
            return Err(ApiError::Invalid("The fields parameter names no field.".into()));
        }
        Ok(Fields(names))
    }

    pub fn from_static(names: &[&str]) -> Fields {
        Fields(names.iter().map(|s| (*s).to_owned()).collect())
    }

    /// The selected field names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Keeps only the selected fields of `doc`, plus `links`.
    pub fn select(&self, doc: Map<String, Value>) -> Map<String, Value> {
        doc.into_iter().filter(|(k, _)| k == "links" || self.0.iter().any(|f| f == k)).collect()
    }
}

/// Serialises a wire document to a JSON object.
pub fn to_map<T: Serialize>(doc: &T) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(doc) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::Internal("A resource could not be serialised.".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_ironic() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap();
        assert_eq!(timestamp(at), "2023-11-14T22:13:20.123456+00:00");
    }

    #[test]
    fn fields_selection() {
        let known = ["uuid", "name", "links", "driver"];
        let f = Fields::parse("name, driver", &known).unwrap();
        let doc: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "uuid": "u", "name": "n", "driver": "d", "links": []
        }))
        .unwrap();
        let out = f.select(doc);
        let mut keys: Vec<&str> = out.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["driver", "links", "name"]);
        let err = Fields::parse("name,colour", &known).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(Fields::parse(",", &known).is_err());
    }
}
