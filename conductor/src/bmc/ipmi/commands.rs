//! The bodies of the RMCP+ session setup payloads (Open Session, RAKP 1–4) and of the IPMI
//! commands the driver sends, with parsers of the replies that never panic.

use std::net::Ipv4Addr;

use super::crypto::{CipherSuite, AES_CBC_128};

/// netFn Chassis.
pub const NETFN_CHASSIS: u8 = 0x00;
/// netFn Application.
pub const NETFN_APP: u8 = 0x06;
/// netFn Transport.
pub const NETFN_TRANSPORT: u8 = 0x0C;

pub const CMD_GET_DEVICE_ID: u8 = 0x01;
pub const CMD_GET_CHANNEL_AUTH_CAPABILITIES: u8 = 0x38;
pub const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3B;
pub const CMD_CLOSE_SESSION: u8 = 0x3C;
pub const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
pub const CMD_CHASSIS_CONTROL: u8 = 0x02;
pub const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
pub const CMD_GET_BOOT_OPTIONS: u8 = 0x09;
pub const CMD_GET_LAN_CONFIG: u8 = 0x02;

/// The boot flags parameter of Set/Get System Boot Options.
const BOOT_FLAGS_PARAM: u8 = 5;

/// Session privilege levels (the `ipmi_priv_level` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrivilegeLevel {
    Callback,
    User,
    Operator,
    Administrator,
}

impl PrivilegeLevel {
    pub const ALL: [PrivilegeLevel; 4] = [
        PrivilegeLevel::Administrator,
        PrivilegeLevel::Callback,
        PrivilegeLevel::Operator,
        PrivilegeLevel::User,
    ];

    pub fn number(self) -> u8 {
        match self {
            PrivilegeLevel::Callback => 1,
            PrivilegeLevel::User => 2,
            PrivilegeLevel::Operator => 3,
            PrivilegeLevel::Administrator => 4,
        }
    }

    /// The `driver_info` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegeLevel::Callback => "CALLBACK",
            PrivilegeLevel::User => "USER",
            PrivilegeLevel::Operator => "OPERATOR",
            PrivilegeLevel::Administrator => "ADMINISTRATOR",
        }
    }

    pub fn from_name(name: &str) -> Option<PrivilegeLevel> {
        PrivilegeLevel::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// Why a reply body could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{what} reply has {len} bytes, at least {needed} expected")]
    Short { what: &'static str, needed: usize, len: usize },
    #[error("{what} reply is for another session or exchange")]
    Mismatch { what: &'static str },
}

fn need(what: &'static str, data: &[u8], needed: usize) -> Result<(), ReplyError> {
    if data.len() < needed {
        return Err(ReplyError::Short { what, needed, len: data.len() });
    }
    Ok(())
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    for (dst, src) in word.iter_mut().zip(bytes.iter().skip(at)) {
        *dst = *src;
    }
    u32::from_le_bytes(word)
}

fn array16(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().zip(bytes.iter().skip(at)) {
        *dst = *src;
    }
    out
}

/// Get Channel Authentication Capabilities for "this channel", asking for the IPMI 2.0
/// extended data.
pub fn channel_auth_capabilities_request(privilege: PrivilegeLevel) -> Vec<u8> {
    vec![0x8E, privilege.number()]
}

/// What Get Channel Authentication Capabilities says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAuthCapabilities {
    pub channel: u8,
    /// The channel supports IPMI 2.0 (RMCP+) connections.
    pub ipmi_v2: bool,
}

pub fn parse_channel_auth_capabilities(data: &[u8]) -> Result<ChannelAuthCapabilities, ReplyError> {
    need("Get Channel Authentication Capabilities", data, 8)?;
    let extended = data[1] & 0x80 != 0;
    Ok(ChannelAuthCapabilities {
        channel: data[0] & 0x0F,
        ipmi_v2: extended && data[3] & 0x02 != 0,
    })
}

/// Open Session Request: the console's session id and the algorithms of `suite`.
pub fn open_session_request(
    tag: u8,
    privilege: PrivilegeLevel,
    console_session_id: u32,
    suite: CipherSuite,
) -> Vec<u8> {
    let mut out = vec![tag, privilege.number(), 0, 0];
    out.extend_from_slice(&console_session_id.to_le_bytes());
    for (kind, algorithm) in
        [(0x00, suite.auth.number()), (0x01, suite.integrity.number()), (0x02, AES_CBC_128)]
    {
        out.extend_from_slice(&[kind, 0, 0, 8, algorithm, 0, 0, 0]);
    }
    out
}

/// An Open Session Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub status: u8,
    pub bmc_session_id: u32,
    /// The authentication, integrity and confidentiality algorithm numbers the BMC chose
    /// (zero in an error answer).
    pub algorithms: [u8; 3],
}

pub fn parse_open_session_response(
    data: &[u8],
    tag: u8,
    console_session_id: u32,
) -> Result<OpenSessionResponse, ReplyError> {
    const WHAT: &str = "Open Session";
    need(WHAT, data, 2)?;
    if data[0] != tag {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    if data[1] != 0 {
        // An error answer may stop after the status.
        return Ok(OpenSessionResponse { status: data[1], bmc_session_id: 0, algorithms: [0; 3] });
    }
    // Three 8-byte algorithm payloads follow the session ids; the number is their 5th byte.
    need(WHAT, data, 36)?;
    if le32(data, 4) != console_session_id {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    Ok(OpenSessionResponse {
        status: 0,
        bmc_session_id: le32(data, 8),
        algorithms: [data[16] & 0x3F, data[24] & 0x3F, data[32] & 0x3F],
    })
}

/// RAKP message 1.
pub fn rakp1(
    tag: u8,
    bmc_session_id: u32,
    console_random: &[u8; 16],
    role: u8,
    username: &[u8],
) -> Vec<u8> {
    let mut out = vec![tag, 0, 0, 0];
    out.extend_from_slice(&bmc_session_id.to_le_bytes());
    out.extend_from_slice(console_random);
    out.push(role);
    out.extend_from_slice(&[0, 0]);
    // The session layer refuses names over 16 bytes.
    out.push(u8::try_from(username.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(username);
    out
}

/// RAKP message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub status: u8,
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

pub fn parse_rakp2(data: &[u8], tag: u8, console_session_id: u32) -> Result<Rakp2, ReplyError> {
    const WHAT: &str = "RAKP 2";
    need(WHAT, data, 2)?;
    if data[0] != tag {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    if data[1] != 0 {
        return Ok(Rakp2 {
            status: data[1],
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            auth_code: Vec::new(),
        });
    }
    need(WHAT, data, 40)?;
    if le32(data, 4) != console_session_id {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    Ok(Rakp2 {
        status: 0,
        bmc_random: array16(data, 8),
        bmc_guid: array16(data, 24),
        auth_code: data[40..].to_vec(),
    })
}

/// RAKP message 3 (status 0 and this console's key exchange code).
pub fn rakp3(tag: u8, bmc_session_id: u32, auth_code: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, 0, 0, 0];
    out.extend_from_slice(&bmc_session_id.to_le_bytes());
    out.extend_from_slice(auth_code);
    out
}

/// RAKP message 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    pub status: u8,
    pub check_value: Vec<u8>,
}

pub fn parse_rakp4(data: &[u8], tag: u8, console_session_id: u32) -> Result<Rakp4, ReplyError> {
    const WHAT: &str = "RAKP 4";
    need(WHAT, data, 2)?;
    if data[0] != tag {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    if data[1] != 0 {
        return Ok(Rakp4 { status: data[1], check_value: Vec::new() });
    }
    need(WHAT, data, 8)?;
    if le32(data, 4) != console_session_id {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    Ok(Rakp4 { status: 0, check_value: data[8..].to_vec() })
}

/// RMCP+ status codes of Open Session and RAKP answers (IPMI 2.0 table 13-15).
pub fn rmcp_plus_status_text(status: u8) -> &'static str {
    match status {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown RMCP+ status",
    }
}

/// Whether an Open Session status means "not this cipher suite" (so another may work).
pub fn status_rejects_suite(status: u8) -> bool {
    matches!(status, 0x04..=0x07 | 0x10 | 0x11)
}

/// Whether an RMCP+ status means the credentials or the role were refused.
pub fn status_rejects_credentials(status: u8) -> bool {
    matches!(status, 0x09 | 0x0A | 0x0C | 0x0D | 0x0F)
}

/// Completion codes (IPMI 2.0 table 5-2).
pub fn completion_code_text(code: u8) -> &'static str {
    match code {
        0x00 => "command completed normally",
        0x80 => "parameter not supported",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid reservation id",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data, or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        _ => "device-specific completion code",
    }
}

/// How a non-zero completion code should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionClass {
    /// Insufficient privilege: the session's privilege level is too low.
    Privilege,
    /// The BMC is busy or initialising: try again later.
    Busy,
    /// The BMC does not implement the command or parameter.
    Unsupported,
    /// Anything else: the request or the BMC is at fault.
    Failed,
}

pub fn classify_completion(code: u8) -> CompletionClass {
    match code {
        0xD4 => CompletionClass::Privilege,
        0xC0 | 0xC3 | 0xCE | 0xCF | 0xD0 | 0xD1 | 0xD2 => CompletionClass::Busy,
        0x80 | 0xC1 | 0xC2 | 0xD5 | 0xD6 => CompletionClass::Unsupported,
        _ => CompletionClass::Failed,
    }
}

/// Chassis Control sub-commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerOff,
    PowerOn,
    PowerCycle,
    HardReset,
    /// ACPI soft shutdown.
    SoftOff,
}

impl ChassisControl {
    pub fn request(self) -> Vec<u8> {
        vec![match self {
            ChassisControl::PowerOff => 0x00,
            ChassisControl::PowerOn => 0x01,
            ChassisControl::PowerCycle => 0x02,
            ChassisControl::HardReset => 0x03,
            ChassisControl::SoftOff => 0x05,
        }]
    }
}

/// Get Chassis Status: whether system power is on.
pub fn parse_chassis_status(data: &[u8]) -> Result<bool, ReplyError> {
    need("Get Chassis Status", data, 3)?;
    Ok(data[0] & 0x01 != 0)
}

/// The boot device selector of boot flags byte 2, bits 5:2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSelector {
    NoOverride,
    Pxe,
    Disk,
    DiskSafeMode,
    Cdrom,
    BiosSetup,
    /// Any other selector (diagnostic partition, floppy, …).
    Other(u8),
}

impl BootSelector {
    pub fn code(self) -> u8 {
        match self {
            BootSelector::NoOverride => 0x0,
            BootSelector::Pxe => 0x1,
            BootSelector::Disk => 0x2,
            BootSelector::DiskSafeMode => 0x3,
            BootSelector::Cdrom => 0x5,
            BootSelector::BiosSetup => 0x6,
            BootSelector::Other(code) => code & 0x0F,
        }
    }

    pub fn from_code(code: u8) -> BootSelector {
        match code & 0x0F {
            0x0 => BootSelector::NoOverride,
            0x1 => BootSelector::Pxe,
            0x2 => BootSelector::Disk,
            0x3 => BootSelector::DiskSafeMode,
            0x5 => BootSelector::Cdrom,
            0x6 => BootSelector::BiosSetup,
            other => BootSelector::Other(other),
        }
    }
}

/// The boot flags (parameter 5) as set and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// The flags are valid (the override applies).
    pub valid: bool,
    /// Applies to all future boots rather than the next one.
    pub persistent: bool,
    /// Boot in EFI mode rather than legacy BIOS.
    pub efi: bool,
    pub device: BootSelector,
}

/// Set System Boot Options, parameter 5.
pub fn set_boot_flags_request(flags: BootFlags) -> Vec<u8> {
    let mut byte1 = 0u8;
    if flags.valid {
        byte1 |= 0x80;
    }
    if flags.persistent {
        byte1 |= 0x40;
    }
    if flags.efi {
        byte1 |= 0x20;
    }
    vec![BOOT_FLAGS_PARAM, byte1, flags.device.code() << 2, 0, 0, 0]
}

/// Get System Boot Options, parameter 5, no set or block selector.
pub fn get_boot_flags_request() -> Vec<u8> {
    vec![BOOT_FLAGS_PARAM, 0, 0]
}

pub fn parse_boot_flags(data: &[u8]) -> Result<BootFlags, ReplyError> {
    const WHAT: &str = "Get System Boot Options";
    // version, parameter valid + selector, five bytes of boot flags.
    need(WHAT, data, 4)?;
    if data[1] & 0x7F != BOOT_FLAGS_PARAM {
        return Err(ReplyError::Mismatch { what: WHAT });
    }
    Ok(BootFlags {
        valid: data[2] & 0x80 != 0,
        persistent: data[2] & 0x40 != 0,
        efi: data[2] & 0x20 != 0,
        device: BootSelector::from_code(data[3] >> 2),
    })
}

/// What Get Device ID reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub device_id: u8,
    pub device_revision: u8,
    /// Major and minor (BCD) firmware revision.
    pub firmware: (u8, u8),
    /// IPMI version, e.g. (2, 0).
    pub ipmi_version: (u8, u8),
    pub manufacturer_id: u32,
    pub product_id: u16,
}

pub fn parse_device_id(data: &[u8]) -> Result<DeviceId, ReplyError> {
    need("Get Device ID", data, 11)?;
    Ok(DeviceId {
        device_id: data[0],
        device_revision: data[1] & 0x0F,
        firmware: (data[2] & 0x7F, data[3]),
        ipmi_version: (data[4] & 0x0F, data[4] >> 4),
        manufacturer_id: u32::from_le_bytes([data[6], data[7], data[8] & 0x0F, 0]),
        product_id: u16::from_le_bytes([data[9], data[10]]),
    })
}

/// LAN configuration parameter: station IP address.
pub const LAN_PARAM_IP: u8 = 3;
/// LAN configuration parameter: station MAC address.
pub const LAN_PARAM_MAC: u8 = 5;

pub fn get_lan_config_request(channel: u8, param: u8) -> Vec<u8> {
    vec![channel & 0x0F, param, 0, 0]
}

pub fn parse_lan_ip(data: &[u8]) -> Result<Ipv4Addr, ReplyError> {
    need("Get LAN Configuration (IP address)", data, 5)?;
    Ok(Ipv4Addr::new(data[1], data[2], data[3], data[4]))
}

pub fn parse_lan_mac(data: &[u8]) -> Result<[u8; 6], ReplyError> {
    need("Get LAN Configuration (MAC address)", data, 7)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&data[1..7]);
    Ok(mac)
}

/// Close Session for the BMC's session id.
pub fn close_session_request(bmc_session_id: u32) -> Vec<u8> {
    bmc_session_id.to_le_bytes().to_vec()
}

#[cfg(test)]
mod tests;
