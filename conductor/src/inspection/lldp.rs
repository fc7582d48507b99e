//! LLDP TLVs as the agent reports them (`lldp_raw`), parsed.
//!
//! The agent sends what it received from the switch, so every byte here is untrusted:
//! parsing is total, never panics, and reports what was wrong as an [`LldpError`]. One
//! bad TLV does not spoil the others ([`parse_reported`] collects the errors and keeps
//! going), and the first value of a TLV that may appear once wins, as in Ironic.
//!
//! Layout (IEEE 802.1AB): a TLV is a 16-bit header — 7-bit type, 9-bit value length —
//! and the value. The agent reports each TLV as `[type, "hex of the value"]`.
//! Organizationally specific TLVs (type 127) start with a 3-byte OUI and a subtype:
//! IEEE 802.1 (`00-80-C2`) and IEEE 802.3 (`00-12-0F`) ones are understood here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

/// The longest value a 9-bit TLV length can describe.
pub const MAX_TLV_VALUE_LEN: usize = 511;

const TLV_END: u8 = 0;
const TLV_CHASSIS_ID: u8 = 1;
const TLV_PORT_ID: u8 = 2;
const TLV_TTL: u8 = 3;
const TLV_PORT_DESCRIPTION: u8 = 4;
const TLV_SYSTEM_NAME: u8 = 5;
const TLV_SYSTEM_DESCRIPTION: u8 = 6;
const TLV_SYSTEM_CAPABILITIES: u8 = 7;
const TLV_MANAGEMENT_ADDRESS: u8 = 8;
const TLV_ORG_SPECIFIC: u8 = 127;

const OUI_IEEE_802_1: [u8; 3] = [0x00, 0x80, 0xc2];
const OUI_IEEE_802_3: [u8; 3] = [0x00, 0x12, 0x0f];

/// Capability bits of the System Capabilities TLV, from bit 1 (bit 0 is "other"), with
/// the names Ironic reports.
const CAPABILITY_NAMES: [&str; 10] = [
    "Repeater",
    "Bridge",
    "WLAN",
    "Router",
    "Telephone",
    "DOCSIS cable device",
    "Station only",
    "C-Vlan",
    "S-Vlan",
    "TPMR",
];

/// Why a TLV (or a whole LLDPDU) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LldpError {
    #[error("entry {index} is not a [type, \"hex\"] pair")]
    NotAPair { index: usize },
    #[error("TLV type {0} is outside 0-127")]
    BadType(u64),
    #[error("TLV value is not hexadecimal (at character {position})")]
    BadHex { position: usize },
    #[error("TLV value has an odd number of hex digits")]
    OddHex,
    #[error("{what}: {len} bytes is more than the {MAX_TLV_VALUE_LEN} a TLV can carry")]
    TooLong { what: &'static str, len: usize },
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("{what}: too short ({got} bytes, at least {min} needed)")]
    TooShort { what: &'static str, min: usize, got: usize },
    #[error("{what}: unknown subtype {subtype}")]
    UnknownSubtype { what: &'static str, subtype: u8 },
    #[error("{what}: unknown address family {family}")]
    UnknownFamily { what: &'static str, family: u8 },
    #[error("{what}: not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("LLDPDU truncated: the TLV at byte {offset} needs {needed} bytes, {left} left")]
    Truncated { offset: usize, needed: usize, left: usize },
}

/// The value of a chassis or port ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdValue {
    Mac([u8; 6]),
    Address(IpAddr),
    Text(String),
}

impl std::fmt::Display for IdValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdValue::Mac(mac) => {
                let [a, b, c, d, e, g] = mac;
                write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
            }
            IdValue::Address(ip) => write!(f, "{ip}"),
            IdValue::Text(text) => f.write_str(text),
        }
    }
}

/// A chassis or port ID with its subtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LldpId {
    pub subtype: u8,
    pub value: IdValue,
}

/// An IEEE 802.1 VLAN Name TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub id: u16,
    pub name: String,
}

/// An IEEE 802.1/802.3 Link Aggregation TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAggregation {
    pub supported: bool,
    pub enabled: bool,
    pub port_id: u32,
}

/// What one interface's LLDP TLVs say about the switch port at the other end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LldpInfo {
    pub chassis_id: Option<LldpId>,
    pub port_id: Option<LldpId>,
    pub ttl: Option<u16>,
    pub port_description: Option<String>,
    pub system_name: Option<String>,
    pub system_description: Option<String>,
    pub capabilities_supported: Option<Vec<&'static str>>,
    pub capabilities_enabled: Option<Vec<&'static str>>,
    pub management_addresses: Vec<String>,
    /// 802.1 Port VLAN ID: the untagged VLAN.
    pub port_vlan_id: Option<u16>,
    pub protocol_vlan_supported: Option<bool>,
    pub protocol_vlan_enabled: Option<bool>,
    pub protocol_vlan_ids: Vec<u16>,
    pub vlans: Vec<Vlan>,
    pub management_vlan_id: Option<u16>,
    pub link_aggregation: Option<LinkAggregation>,
    /// 802.3 Maximum Frame Size.
    pub mtu: Option<u16>,
}

fn set_once<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn exact<'a>(what: &'static str, value: &'a [u8], expected: usize) -> Result<&'a [u8], LldpError> {
    if value.len() == expected {
        Ok(value)
    } else {
        Err(LldpError::Length { what, expected, got: value.len() })
    }
}

fn u16_of(what: &'static str, value: &[u8]) -> Result<u16, LldpError> {
    match exact(what, value, 2)? {
        [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(LldpError::Length { what, expected: 2, got: value.len() }),
    }
}

fn text(what: &'static str, value: &[u8]) -> Result<String, LldpError> {
    std::str::from_utf8(value)
        .map(|s| s.trim_end_matches('\0').to_owned())
        .map_err(|_| LldpError::NotUtf8 { what })
}

fn mac(what: &'static str, value: &[u8]) -> Result<[u8; 6], LldpError> {
    <[u8; 6]>::try_from(value).map_err(|_| LldpError::Length {
        what,
        expected: 6,
        got: value.len(),
    })
}

/// An address as IANA address family number + bytes.
fn iana_address(what: &'static str, value: &[u8]) -> Result<IdValue, LldpError> {
    let Some((&family, bytes)) = value.split_first() else {
        return Err(LldpError::TooShort { what, min: 1, got: 0 });
    };
    match family {
        1 => <[u8; 4]>::try_from(bytes)
            .map(|b| IdValue::Address(IpAddr::V4(Ipv4Addr::from(b))))
            .map_err(|_| LldpError::Length { what, expected: 5, got: value.len() }),
        2 => <[u8; 16]>::try_from(bytes)
            .map(|b| IdValue::Address(IpAddr::V6(Ipv6Addr::from(b))))
            .map_err(|_| LldpError::Length { what, expected: 17, got: value.len() }),
        6 => mac(what, bytes).map(IdValue::Mac),
        family => Err(LldpError::UnknownFamily { what, family }),
    }
}

/// Chassis ID subtypes: 4 is a MAC, 5 a network address, the others text.
fn chassis_id(value: &[u8]) -> Result<LldpId, LldpError> {
    let what = "chassis ID";
    let Some((&subtype, rest)) = value.split_first() else {
        return Err(LldpError::TooShort { what, min: 2, got: 0 });
    };
    let value = match subtype {
        1 | 2 | 3 | 6 | 7 => IdValue::Text(text(what, rest)?),
        4 => IdValue::Mac(mac(what, rest)?),
        5 => iana_address(what, rest)?,
        subtype => return Err(LldpError::UnknownSubtype { what, subtype }),
    };
    Ok(LldpId { subtype, value })
}

/// Port ID subtypes: 3 is a MAC, 4 a network address, 1, 2, 5 and 7 text.
fn port_id(value: &[u8]) -> Result<LldpId, LldpError> {
    let what = "port ID";
    let Some((&subtype, rest)) = value.split_first() else {
        return Err(LldpError::TooShort { what, min: 2, got: 0 });
    };
    let value = match subtype {
        1 | 2 | 5 | 7 => IdValue::Text(text(what, rest)?),
        3 => IdValue::Mac(mac(what, rest)?),
        4 => iana_address(what, rest)?,
        subtype => return Err(LldpError::UnknownSubtype { what, subtype }),
    };
    Ok(LldpId { subtype, value })
}

fn capability_names(bits: u16) -> Vec<&'static str> {
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << (bit + 1)) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The management address: a length byte (address subtype + address), the IANA family,
/// the address, then interface numbering and an OID, which are not needed here.
fn management_address(value: &[u8]) -> Result<String, LldpError> {
    let what = "management address";
    let Some((&len, rest)) = value.split_first() else {
        return Err(LldpError::TooShort { what, min: 2, got: 0 });
    };
    let len = usize::from(len);
    let address =
        rest.get(..len).ok_or(LldpError::TooShort { what, min: len + 1, got: value.len() })?;
    iana_address(what, address).map(|a| a.to_string())
}

fn link_aggregation(what: &'static str, value: &[u8]) -> Result<LinkAggregation, LldpError> {
    match exact(what, value, 5)? {
        [status, a, b, c, d] => Ok(LinkAggregation {
            supported: status & 0x01 != 0,
            enabled: status & 0x02 != 0,
            port_id: u32::from_be_bytes([*a, *b, *c, *d]),
        }),
        _ => Err(LldpError::Length { what, expected: 5, got: value.len() }),
    }
}

impl LldpInfo {
    /// Adds one TLV. Unknown types and organizations are ignored (`Ok`), as the
    /// standard asks of receivers.
    pub fn add_tlv(&mut self, tlv_type: u8, value: &[u8]) -> Result<(), LldpError> {
        if value.len() > MAX_TLV_VALUE_LEN {
            return Err(LldpError::TooLong { what: "TLV", len: value.len() });
        }
        match tlv_type {
            TLV_CHASSIS_ID => set_once(&mut self.chassis_id, chassis_id(value)?),
            TLV_PORT_ID => set_once(&mut self.port_id, port_id(value)?),
            TLV_TTL => set_once(&mut self.ttl, u16_of("time to live", value)?),
            TLV_PORT_DESCRIPTION => {
                set_once(&mut self.port_description, text("port description", value)?)
            }
            TLV_SYSTEM_NAME => set_once(&mut self.system_name, text("system name", value)?),
            TLV_SYSTEM_DESCRIPTION => {
                set_once(&mut self.system_description, text("system description", value)?)
            }
            TLV_SYSTEM_CAPABILITIES => {
                let [a, b, c, d] = <[u8; 4]>::try_from(value).map_err(|_| LldpError::Length {
                    what: "system capabilities",
                    expected: 4,
                    got: value.len(),
                })?;
                set_once(
                    &mut self.capabilities_supported,
                    capability_names(u16::from_be_bytes([a, b])),
                );
                set_once(
                    &mut self.capabilities_enabled,
                    capability_names(u16::from_be_bytes([c, d])),
                );
            }
            TLV_MANAGEMENT_ADDRESS => self.management_addresses.push(management_address(value)?),
            TLV_ORG_SPECIFIC => self.add_org_specific(value)?,
            _ => {}
        }
        Ok(())
    }

    fn add_org_specific(&mut self, value: &[u8]) -> Result<(), LldpError> {
        let (Some(oui), Some(&subtype), Some(data)) =
            (value.get(..3), value.get(3), value.get(4..))
        else {
            return Err(LldpError::TooShort {
                what: "organizationally specific TLV",
                min: 4,
                got: value.len(),
            });
        };
        if oui == OUI_IEEE_802_1 {
            match subtype {
                1 => set_once(&mut self.port_vlan_id, u16_of("802.1 port VLAN ID", data)?),
                2 => {
                    let what = "802.1 port and protocol VLAN ID";
                    let [flags, hi, lo] = <[u8; 3]>::try_from(data)
                        .map_err(|_| LldpError::Length { what, expected: 3, got: data.len() })?;
                    set_once(&mut self.protocol_vlan_supported, flags & 0x02 != 0);
                    set_once(&mut self.protocol_vlan_enabled, flags & 0x04 != 0);
                    self.protocol_vlan_ids.push(u16::from_be_bytes([hi, lo]));
                }
                3 => {
                    let what = "802.1 VLAN name";
                    let (Some(&hi), Some(&lo), Some(&len)) =
                        (data.first(), data.get(1), data.get(2))
                    else {
                        return Err(LldpError::TooShort { what, min: 3, got: data.len() });
                    };
                    let len = usize::from(len);
                    let name = data.get(3..3 + len).ok_or(LldpError::TooShort {
                        what,
                        min: 3 + len,
                        got: data.len(),
                    })?;
                    let id = u16::from_be_bytes([hi, lo]);
                    self.vlans.push(Vlan { id, name: text(what, name)? });
                }
                6 => set_once(&mut self.management_vlan_id, u16_of("802.1 management VID", data)?),
                7 => set_once(
                    &mut self.link_aggregation,
                    link_aggregation("802.1 link aggregation", data)?,
                ),
                _ => {}
            }
        } else if oui == OUI_IEEE_802_3 {
            match subtype {
                3 => set_once(
                    &mut self.link_aggregation,
                    link_aggregation("802.3 link aggregation", data)?,
                ),
                4 => set_once(&mut self.mtu, u16_of("802.3 maximum frame size", data)?),
                _ => {}
            }
        }
        Ok(())
    }

    /// True when no TLV yielded anything.
    pub fn is_empty(&self) -> bool {
        *self == LldpInfo::default()
    }

    /// The `plugin_data.parsed_lldp` form, with Ironic's key names; absent values are
    /// left out.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |key: &str, value: Value| {
            map.insert(key.to_owned(), value);
        };
        if let Some(id) = &self.chassis_id {
            put("switch_chassis_id", json!(id.value.to_string()));
        }
        if let Some(id) = &self.port_id {
            put("switch_port_id", json!(id.value.to_string()));
        }
        let strings = [
            ("switch_port_description", &self.port_description),
            ("switch_system_name", &self.system_name),
            ("switch_system_description", &self.system_description),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                put(key, json!(value));
            }
        }
        if let Some(caps) = &self.capabilities_supported {
            put("switch_capabilities_support", json!(caps));
        }
        if let Some(caps) = &self.capabilities_enabled {
            put("switch_capabilities_enabled", json!(caps));
        }
        if !self.management_addresses.is_empty() {
            put("switch_mgmt_addresses", json!(self.management_addresses));
        }
        if let Some(id) = self.port_vlan_id {
            put("switch_port_untagged_vlan_id", json!(id));
        }
        if let Some(flag) = self.protocol_vlan_enabled {
            put("switch_port_protocol_vlan_enabled", json!(flag));
        }
        if let Some(flag) = self.protocol_vlan_supported {
            put("switch_port_protocol_vlan_support", json!(flag));
        }
        if !self.protocol_vlan_ids.is_empty() {
            put("switch_port_protocol_vlan_ids", json!(self.protocol_vlan_ids));
        }
        if !self.vlans.is_empty() {
            let vlans: Vec<Value> =
                self.vlans.iter().map(|v| json!({"id": v.id, "name": v.name})).collect();
            put("switch_port_vlans", Value::Array(vlans));
        }
        if let Some(id) = self.management_vlan_id {
            put("switch_port_management_vlan_id", json!(id));
        }
        if let Some(agg) = self.link_aggregation {
            put("switch_port_link_aggregation_enabled", json!(agg.enabled));
            put("switch_port_link_aggregation_support", json!(agg.supported));
            put("switch_port_link_aggregation_id", json!(agg.port_id));
        }
        if let Some(mtu) = self.mtu {
            put("switch_port_mtu", json!(mtu));
        }
        map
    }
}

/// Decodes a hex string (either case); an empty string is an empty value.
pub fn decode_hex(hex: &str) -> Result<Vec<u8>, LldpError> {
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(LldpError::OddHex);
    }
    let nibble = |position: usize| -> Result<u8, LldpError> {
        let digit = digits.get(position).copied().unwrap_or(b'?');
        char::from(digit)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(LldpError::BadHex { position })
    };
    (0..digits.len() / 2).map(|i| Ok(nibble(2 * i)? << 4 | nibble(2 * i + 1)?)).collect()
}

/// Parses one interface's TLVs in the agent's form, `[[type, "hex"], ...]`. Returns what
/// could be parsed and an error per TLV that could not.
pub fn parse_reported(tlvs: &[Value]) -> (LldpInfo, Vec<LldpError>) {
    let mut info = LldpInfo::default();
    let mut errors = Vec::new();
    for (index, entry) in tlvs.iter().enumerate() {
        let pair = entry.as_array().filter(|pair| pair.len() == 2);
        let (Some(tlv_type), Some(hex)) = (
            pair.and_then(|p| p.first()).and_then(Value::as_u64),
            pair.and_then(|p| p.get(1)).and_then(Value::as_str),
        ) else {
            errors.push(LldpError::NotAPair { index });
            continue;
        };
        let result = u8::try_from(tlv_type)
            .ok()
            .filter(|t| *t <= 127)
            .ok_or(LldpError::BadType(tlv_type))
            .and_then(|t| Ok((t, decode_hex(hex)?)))
            .and_then(|(t, value)| info.add_tlv(t, &value));
        if let Err(err) = result {
            errors.push(err);
        }
    }
    (info, errors)
}

/// Splits an LLDPDU (the Ethernet payload of an LLDP frame) into `(type, value)` TLVs,
/// stopping at the End TLV or at the end of the data.
pub fn split_lldpdu(frame: &[u8]) -> Result<Vec<(u8, &[u8])>, LldpError> {
    let mut tlvs = Vec::new();
    let mut offset = 0;
    while let Some(rest) = frame.get(offset..).filter(|rest| !rest.is_empty()) {
        let [hi, lo, ..] = *rest else {
            return Err(LldpError::Truncated { offset, needed: 2, left: rest.len() });
        };
        let word = u16::from_be_bytes([hi, lo]);
        // 7 bits of type, 9 of length.
        let tlv_type = hi >> 1;
        let len = usize::from(word & 0x01ff);
        let start = offset + 2;
        let value = frame.get(start..start + len).ok_or(LldpError::Truncated {
            offset,
            needed: len + 2,
            left: rest.len(),
        })?;
        if tlv_type == TLV_END {
            break;
        }
        tlvs.push((tlv_type, value));
        offset = start + len;
    }
    Ok(tlvs)
}

/// Parses a whole LLDPDU; the first malformed TLV is the error.
pub fn parse_lldpdu(frame: &[u8]) -> Result<LldpInfo, LldpError> {
    let mut info = LldpInfo::default();
    for (tlv_type, value) in split_lldpdu(frame)? {
        info.add_tlv(tlv_type, value)?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tlv_type: u8, hex: &str) -> Result<LldpInfo, LldpError> {
        let mut info = LldpInfo::default();
        info.add_tlv(tlv_type, &decode_hex(hex)?)?;
        Ok(info)
    }

    fn ok(tlv_type: u8, hex: &str) -> LldpInfo {
        tlv(tlv_type, hex).unwrap()
    }

    /// Single TLVs, written from the 802.1AB / 802.1Q / 802.3 layouts, and what they
    /// yield.
    #[test]
    fn tlv_table() {
        let id = |subtype, value| Some(LldpId { subtype, value });
        let text = |s: &str| IdValue::Text(s.to_owned());
        let cases: Vec<(&str, LldpInfo, LldpInfo)> = vec![
            (
                "chassis MAC",
                ok(1, "04001C73AABBCC"),
                LldpInfo {
                    chassis_id: id(4, IdValue::Mac([0, 0x1c, 0x73, 0xaa, 0xbb, 0xcc])),
                    ..Default::default()
                },
            ),
            (
                "chassis IPv4",
                ok(1, "05010a000002"),
                LldpInfo {
                    chassis_id: id(5, IdValue::Address("10.0.0.2".parse().unwrap())),
                    ..Default::default()
                },
            ),
            (
                "chassis IPv6",
                ok(1, "050220010db8000000000000000000000001"),
                LldpInfo {
                    chassis_id: id(5, IdValue::Address("2001:db8::1".parse().unwrap())),
                    ..Default::default()
                },
            ),
            (
                "chassis local",
                ok(1, "07737731"),
                LldpInfo { chassis_id: id(7, text("sw1")), ..Default::default() },
            ),
            (
                "port ifName",
                ok(2, "0565746831"),
                LldpInfo { port_id: id(5, text("eth1")), ..Default::default() },
            ),
            (
                "port MAC",
                ok(2, "03020000000001"),
                LldpInfo { port_id: id(3, IdValue::Mac([2, 0, 0, 0, 0, 1])), ..Default::default() },
            ),
            (
                "port ifAlias with NUL padding",
                ok(2, "0170310000"),
                LldpInfo { port_id: id(1, text("p1")), ..Default::default() },
            ),
            ("ttl", ok(3, "0078"), LldpInfo { ttl: Some(120), ..Default::default() }),
            (
                "system description",
                ok(6, "4e4f53"),
                LldpInfo { system_description: Some("NOS".into()), ..Default::default() },
            ),
            (
                "capabilities: other bit ignored",
                ok(7, "0015_0004".replace('_', "").as_str()),
                LldpInfo {
                    capabilities_supported: Some(vec!["Bridge", "Router"]),
                    capabilities_enabled: Some(vec!["Bridge"]),
                    ..Default::default()
                },
            ),
            (
                "management IPv6 with trailing ifIndex/OID",
                ok(8, "110220010db800000000000000000000000a0200000002020601"),
                LldpInfo { management_addresses: vec!["2001:db8::a".into()], ..Default::default() },
            ),
            (
                "802.1 protocol VLAN",
                ok(127, "0080c202060065"),
                LldpInfo {
                    protocol_vlan_supported: Some(true),
                    protocol_vlan_enabled: Some(true),
                    protocol_vlan_ids: vec![101],
                    ..Default::default()
                },
            ),
            (
                "802.1 management VID",
                ok(127, "0080c2060010"),
                LldpInfo { management_vlan_id: Some(16), ..Default::default() },
            ),
            (
                "802.1 link aggregation",
                ok(127, "0080c2070300000007"),
                LldpInfo {
                    link_aggregation: Some(LinkAggregation {
                        supported: true,
                        enabled: true,
                        port_id: 7,
                    }),
                    ..Default::default()
                },
            ),
            (
                "802.3 link aggregation",
                ok(127, "00120f030100000009"),
                LldpInfo {
                    link_aggregation: Some(LinkAggregation {
                        supported: true,
                        enabled: false,
                        port_id: 9,
                    }),
                    ..Default::default()
                },
            ),
            ("802.3 MAC/PHY is skipped", ok(127, "00120f01036c030010"), LldpInfo::default()),
            ("unknown OUI is skipped", ok(127, "aabbcc0100"), LldpInfo::default()),
            ("unknown TLV type is skipped", ok(9, "00"), LldpInfo::default()),
            ("End", ok(0, ""), LldpInfo::default()),
        ];
        for (label, got, want) in cases {
            assert_eq!(got, want, "{label}");
        }
    }

    #[test]
    fn malformed_tlvs_are_typed_errors() {
        let cases: [(u8, &str, LldpError); 14] = [
            (1, "", LldpError::TooShort { what: "chassis ID", min: 2, got: 0 }),
            (1, "04001c73aabb", LldpError::Length { what: "chassis ID", expected: 6, got: 5 }),
            (1, "08aa", LldpError::UnknownSubtype { what: "chassis ID", subtype: 8 }),
            (1, "0503aabb", LldpError::UnknownFamily { what: "chassis ID", family: 3 }),
            (1, "05010a00", LldpError::Length { what: "chassis ID", expected: 5, got: 3 }),
            (2, "06aa", LldpError::UnknownSubtype { what: "port ID", subtype: 6 }),
            (2, "05ff", LldpError::NotUtf8 { what: "port ID" }),
            (3, "00", LldpError::Length { what: "time to live", expected: 2, got: 1 }),
            (7, "001400", LldpError::Length { what: "system capabilities", expected: 4, got: 3 }),
            (8, "0901", LldpError::TooShort { what: "management address", min: 10, got: 2 }),
            (
                127,
                "0080",
                LldpError::TooShort { what: "organizationally specific TLV", min: 4, got: 2 },
            ),
            (
                127,
                "0080c20300640970",
                LldpError::TooShort { what: "802.1 VLAN name", min: 12, got: 4 },
            ),
            (127, "0080c203", LldpError::TooShort { what: "802.1 VLAN name", min: 3, got: 0 }),
            (
                127,
                "00120f04232800",
                LldpError::Length { what: "802.3 maximum frame size", expected: 2, got: 3 },
            ),
        ];
        for (tlv_type, hex, want) in cases {
            assert_eq!(tlv(tlv_type, hex), Err(want.clone()), "{tlv_type} {hex}");
            assert!(!want.to_string().is_empty());
        }
        assert_eq!(decode_hex("abc"), Err(LldpError::OddHex));
        assert_eq!(decode_hex("0g"), Err(LldpError::BadHex { position: 1 }));
        assert_eq!(decode_hex("é"), Err(LldpError::BadHex { position: 0 }));
        let long = vec![b'a'; MAX_TLV_VALUE_LEN + 1];
        assert_eq!(
            LldpInfo::default().add_tlv(5, &long),
            Err(LldpError::TooLong { what: "TLV", len: 512 })
        );
    }

    #[test]
    fn first_value_wins_and_lists_accumulate() {
        let tlvs = serde_json::json!([
            [5, "6131"],
            [5, "6232"],
            [127, "0080c20300010161"],
            [127, "0080c20300020162"],
            [8, "05010a000001"],
            [8, "05010a000002"],
            [5],
            [200, "00"],
            [4, "zz"]
        ]);
        let (info, errors) = parse_reported(tlvs.as_array().unwrap());
        assert_eq!(info.system_name.as_deref(), Some("a1"));
        assert_eq!(
            info.vlans,
            [Vlan { id: 1, name: "a".into() }, Vlan { id: 2, name: "b".into() }]
        );
        assert_eq!(info.management_addresses, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            errors,
            [
                LldpError::NotAPair { index: 6 },
                LldpError::BadType(200),
                LldpError::BadHex { position: 0 }
            ]
        );
    }

    #[test]
    fn lldpdu_framing() {
        // Chassis ID (type 1, length 7), port ID (type 2, length 5), TTL (type 3,
        // length 2), End (type 0, length 0), then bytes after End that are ignored.
        let frame = decode_hex("020704001c73aabbcc04050565746831060200780000ffff").unwrap();
        let tlvs = split_lldpdu(&frame).unwrap();
        assert_eq!(
            tlvs.iter().map(|(t, v)| (*t, v.len())).collect::<Vec<_>>(),
            [(1, 7), (2, 5), (3, 2)]
        );
        let info = parse_lldpdu(&frame).unwrap();
        assert_eq!(info.port_id.map(|id| id.value.to_string()).as_deref(), Some("eth1"));
        assert_eq!(info.ttl, Some(120));

        // Type 127 with the 9th length bit set: 0xff 0x01 is type 127, length 257.
        let mut long = vec![0xff, 0x01, 0xaa, 0xbb, 0xcc, 0x01];
        long.extend(std::iter::repeat_n(0, 253));
        assert_eq!(split_lldpdu(&long).unwrap(), [(127, &long[2..])]);

        assert_eq!(
            split_lldpdu(&[0x02]),
            Err(LldpError::Truncated { offset: 0, needed: 2, left: 1 })
        );
        assert_eq!(
            split_lldpdu(&[0x02, 0x07, 0x04]),
            Err(LldpError::Truncated { offset: 0, needed: 9, left: 3 })
        );
        assert_eq!(split_lldpdu(&[]), Ok(vec![]));
        assert_eq!(
            parse_lldpdu(&decode_hex("0201ff").unwrap()),
            Err(LldpError::UnknownSubtype { what: "chassis ID", subtype: 0xff })
        );
    }

    /// Every prefix and every single-byte corruption of a valid LLDPDU parses or fails
    /// with an error; none panics.
    #[test]
    fn corrupted_lldpdus_never_panic() {
        let frame = decode_hex(
            "020704001c73aabbcc0405056574683106020078fe060080c2010064fe0900120f030100000009\
             100c05010a0000010200000001000000",
        )
        .unwrap();
        assert!(parse_lldpdu(&frame).is_ok());
        for end in 0..frame.len() {
            let _ = parse_lldpdu(&frame[..end]);
        }
        for index in 0..frame.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut corrupt = frame.clone();
                corrupt[index] = byte;
                let _ = parse_lldpdu(&corrupt);
            }
        }
    }
}
