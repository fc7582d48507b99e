//! The port resource of the Ironic v1 API: the port document, its create body, the
//! collection, and the MAC address rule ports are held to.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::node::Link;

/// `GET /v1/ports/{uuid}`. Absent values are `null` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub uuid: String,
    /// Lower-case, colon-separated MAC.
    pub address: String,
    pub node_uuid: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub extra: Map<String, Value>,
    pub internal_info: Map<String, Value>,
    pub local_link_connection: Map<String, Value>,
    pub pxe_enabled: bool,
    pub physical_network: Option<String>,
    pub is_smartnic: bool,
    pub portgroup_uuid: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub links: Vec<Link>,
}

/// The fields `GET /v1/ports` (without `detail` or `fields`) shows, besides `links`.
pub const PORT_DEFAULT_LIST_FIELDS: &[&str] = &["uuid", "address"];

/// `POST /v1/ports`. `address` and `node_uuid` are required; `node_uuid` must be a UUID
/// (a node name is refused, as Ironic does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCreate {
    pub address: String,
    pub node_uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_link_connection: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_smartnic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portgroup_uuid: Option<String>,
}

/// `GET /v1/ports[/detail]` and `GET /v1/nodes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortCollection {
    pub ports: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A string that is not a MAC address. The message is Ironic's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Expected a MAC address but received {0}.")]
pub struct InvalidMac(pub String);

/// Checks a 48-bit MAC (six hex octets separated by `:` or `-`, one separator throughout)
/// and returns it lower case with colons, the one spelling ports are stored and compared
/// in.
pub fn normalize_mac(mac: &str) -> Result<String, InvalidMac> {
    let invalid = || InvalidMac(mac.to_owned());
    let bytes = mac.as_bytes();
    if bytes.len() != 17 {
        return Err(invalid());
    }
    let separator = bytes.get(2).copied().ok_or_else(invalid)?;
    if separator != b':' && separator != b'-' {
        return Err(invalid());
    }
    let mut out = String::with_capacity(17);
    for (i, octet) in mac.split(separator as char).enumerate() {
        if i >= 6 || octet.len() != 2 || !octet.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        if i > 0 {
            out.push(':');
        }
        out.push_str(&octet.to_ascii_lowercase());
    }
    if out.len() != 17 {
        return Err(invalid());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mac_table() {
        for (input, want) in [
            ("52:54:00:12:34:56", Some("52:54:00:12:34:56")),
            ("52:54:00:AB:CD:EF", Some("52:54:00:ab:cd:ef")),
            ("52-54-00-ab-cd-ef", Some("52:54:00:ab:cd:ef")),
            ("52:54-00:ab:cd:ef", None),
            ("52:54:00:ab:cd", None),
            ("52:54:00:ab:cd:ef:01", None),
            ("5254.00ab.cdef", None),
            ("52:54:00:ab:cd:eg", None),
            ("525400abcdef", None),
            ("", None),
            ("52:54:00:ab:cd:é", None),
            (" 52:54:00:ab:cd:e", None),
        ] {
            assert_eq!(normalize_mac(input).ok().as_deref(), want, "{input:?}");
        }
        assert_eq!(
            normalize_mac("zz").unwrap_err().to_string(),
            "Expected a MAC address but received zz."
        );
    }

    #[test]
    fn port_wire_shape() {
        let port = Port {
            uuid: "u".into(),
            address: "52:54:00:12:34:56".into(),
            node_uuid: "n".into(),
            name: None,
            description: None,
            extra: Map::new(),
            internal_info: Map::new(),
            local_link_connection: Map::new(),
            pxe_enabled: true,
            physical_network: None,
            is_smartnic: false,
            portgroup_uuid: None,
            created_at: None,
            updated_at: None,
            links: Link::pair("http://h", "ports/u"),
        };
        let wire = serde_json::to_value(&port).unwrap();
        assert_eq!(wire["address"], json!("52:54:00:12:34:56"));
        assert_eq!(wire["physical_network"], Value::Null);
        assert_eq!(wire["links"][0]["href"], json!("http://h/v1/ports/u"));
        assert_eq!(serde_json::from_value::<Port>(wire).unwrap(), port);
    }

    #[test]
    fn create_body_is_strict() {
        let ok: PortCreate = serde_json::from_value(json!({
            "address": "52:54:00:12:34:56", "node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "pxe_enabled": false
        }))
        .unwrap();
        assert_eq!(ok.pxe_enabled, Some(false));
        for bad in [
            json!({"address": "52:54:00:12:34:56"}),
            json!({"node_uuid": "x"}),
            json!({"address": "a", "node_uuid": "x", "node_id": 5}),
        ] {
            assert!(serde_json::from_value::<PortCreate>(bad.clone()).is_err(), "{bad}");
        }
    }
}
