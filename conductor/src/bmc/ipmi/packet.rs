//! IPMI over LAN framing as pure functions: the RMCP header, the IPMI 1.5 session wrapper
//! (only for the pre-session Get Channel Authentication Capabilities), the IPMI 2.0 /
//! RMCP+ session wrapper with its integrity trailer and AES-CBC-128 payloads, and the IPMI
//! message inside (addresses, netFn/LUN, sequence, command, two checksums).
//!
//! Every parser takes bytes from the network and returns a typed error, never panics.

use super::crypto::{self, CipherSuite, DecryptError};

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// Session auth type "none" of the IPMI 1.5 wrapper.
const AUTH_TYPE_NONE: u8 = 0x00;
/// The auth type / format byte that marks an IPMI 2.0 / RMCP+ session header.
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// The "next header" byte of the integrity trailer.
const NEXT_HEADER: u8 = 0x07;
/// The BMC's slave address (responder).
pub const BMC_ADDRESS: u8 = 0x20;
/// Remote console software id used as requester address.
pub const CONSOLE_ADDRESS: u8 = 0x81;

/// RMCP+ payload types (IPMI 2.0 table 13-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
}

impl PayloadType {
    pub fn number(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
        }
    }

    pub fn from_number(n: u8) -> Option<PayloadType> {
        Some(match n {
            0x00 => PayloadType::Ipmi,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            _ => return None,
        })
    }
}

/// Why a received datagram is not a usable IPMI packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{what} needs {needed} bytes, the packet has {len}")]
    Truncated { what: &'static str, needed: usize, len: usize },
    #[error("not an RMCP IPMI packet (header {0:02x?})")]
    NotRmcp([u8; 4]),
    #[error("session auth type {0:#04x} is not the one expected")]
    AuthType(u8),
    #[error("unknown RMCP+ payload type {0:#04x}")]
    PayloadType(u8),
    #[error("an authenticated packet arrived before keys were negotiated")]
    UnexpectedProtection,
    #[error("a packet of an active session arrived without integrity protection")]
    Unprotected,
    #[error("the integrity trailer is malformed")]
    Trailer,
    #[error("the integrity AuthCode does not match")]
    Integrity,
    #[error("the encrypted payload cannot be opened")]
    Decrypt(#[source] DecryptError),
    #[error("IPMI message header checksum is wrong")]
    HeaderChecksum,
    #[error("IPMI message data checksum is wrong")]
    DataChecksum,
}

/// The keys of an established session and the algorithms they serve.
#[derive(Clone)]
pub struct SessionKeys {
    pub suite: CipherSuite,
    pub k1: Vec<u8>,
    pub aes_key: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 and the AES key from the session integrity key.
    pub fn from_sik(suite: CipherSuite, sik: &[u8]) -> SessionKeys {
        let k1 = crypto::derive_key(suite.auth, sik, 0x01);
        let k2 = crypto::derive_key(suite.auth, sik, 0x02);
        let mut aes_key = [0u8; 16];
        for (dst, src) in aes_key.iter_mut().zip(&k2) {
            *dst = *src;
        }
        SessionKeys { suite, k1, aes_key }
    }
}

/// An IPMI request message (LUN 0 on both sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiRequest {
    pub netfn: u8,
    pub cmd: u8,
    /// Six-bit request sequence, matched against the response.
    pub rq_seq: u8,
    pub data: Vec<u8>,
}

/// An IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    /// The response netFn (request netFn + 1).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion_code: u8,
    pub data: Vec<u8>,
}

/// Two's complement checksum: the bytes plus the checksum sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)).wrapping_neg()
}

/// Encodes an IPMI request message.
pub fn encode_request(req: &IpmiRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + req.data.len());
    let header = [BMC_ADDRESS, req.netfn << 2];
    out.extend_from_slice(&header);
    out.push(checksum(&header));
    let body_start = out.len();
    out.push(CONSOLE_ADDRESS);
    out.push((req.rq_seq & 0x3F) << 2);
    out.push(req.cmd);
    out.extend_from_slice(&req.data);
    let sum = checksum(&out[body_start..]);
    out.push(sum);
    out
}

/// Decodes an IPMI response message, checking both checksums.
pub fn decode_response(msg: &[u8]) -> Result<IpmiResponse, PacketError> {
    // rqAddr, netFn/LUN, chk1, rsAddr, rqSeq/LUN, cmd, completion code, chk2.
    if msg.len() < 8 {
        return Err(PacketError::Truncated { what: "IPMI response", needed: 8, len: msg.len() });
    }
    let (header, rest) = msg.split_at(3);
    if checksum(header) != 0 {
        return Err(PacketError::HeaderChecksum);
    }
    if checksum(rest) != 0 {
        return Err(PacketError::DataChecksum);
    }
    let body = &rest[..rest.len() - 1];
    Ok(IpmiResponse {
        netfn: header[1] >> 2,
        rq_seq: body[1] >> 2,
        cmd: body[2],
        completion_code: body[3],
        data: body[4..].to_vec(),
    })
}

/// Wraps an IPMI message in RMCP + an unauthenticated IPMI 1.5 session header.
pub fn encode_v15(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + message.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&0u32.to_le_bytes()); // session sequence
    out.extend_from_slice(&0u32.to_le_bytes()); // session id
                                                // Pre-session messages are a few bytes long; longer ones never go through here.
    out.push(u8::try_from(message.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(message);
    out
}

/// The IPMI message inside an IPMI 1.5 packet without authentication.
pub fn decode_v15(packet: &[u8]) -> Result<&[u8], PacketError> {
    let body = strip_rmcp(packet)?;
    let auth_type = *body.first().ok_or(PacketError::Truncated {
        what: "IPMI 1.5 session header",
        needed: 10,
        len: body.len(),
    })?;
    if auth_type != AUTH_TYPE_NONE {
        return Err(PacketError::AuthType(auth_type));
    }
    // auth type, sequence (4), session id (4), length (1).
    let len = usize::from(*body.get(9).ok_or(PacketError::Truncated {
        what: "IPMI 1.5 session header",
        needed: 10,
        len: body.len(),
    })?);
    body.get(10..10 + len).ok_or(PacketError::Truncated {
        what: "IPMI 1.5 payload",
        needed: 10 + len,
        len: body.len(),
    })
}

fn strip_rmcp(packet: &[u8]) -> Result<&[u8], PacketError> {
    let Some((header, body)) = packet.split_first_chunk::<4>() else {
        return Err(PacketError::Truncated { what: "RMCP header", needed: 4, len: packet.len() });
    };
    if *header != RMCP_HEADER {
        return Err(PacketError::NotRmcp(*header));
    }
    Ok(body)
}

/// An RMCP+ packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Packet {
    pub payload_type: PayloadType,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub sequence: u32,
    /// The payload, decrypted when it was encrypted.
    pub payload: Vec<u8>,
}

/// Encodes an RMCP+ packet. With `keys`, the payload is encrypted with `iv` and the
/// packet carries the integrity trailer; without, it goes in clear (session setup).
pub fn encode_v2(
    payload_type: PayloadType,
    session_id: u32,
    sequence: u32,
    payload: &[u8],
    keys: Option<(&SessionKeys, &[u8; 16])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    let protection = if keys.is_some() { 0xC0 } else { 0x00 };
    out.push(protection | payload_type.number());
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    let body = match keys {
        Some((keys, iv)) => crypto::encrypt_payload(&keys.aes_key, iv, payload),
        None => payload.to_vec(),
    };
    // Payloads are at most a few hundred bytes; a u16 always holds the length.
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    if let Some((keys, _)) = keys {
        // The span from the auth type byte to the next-header byte is padded to a
        // multiple of four.
        let covered = out.len() - RMCP_HEADER.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        // pad < 4: exact.
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = keys.suite.integrity.auth_code(&keys.k1, &out[RMCP_HEADER.len()..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Parses an RMCP+ packet: checks the integrity trailer with `keys` and decrypts the
/// payload. A packet that is protected when no keys exist yet, or unprotected when they
/// do, is refused: an attacker must not be able to strip the protection.
pub fn decode_v2(packet: &[u8], keys: Option<&SessionKeys>) -> Result<V2Packet, PacketError> {
    let body = strip_rmcp(packet)?;
    const HEADER: usize = 12; // auth type, payload type, session id, sequence, length
    if body.len() < HEADER {
        return Err(PacketError::Truncated {
            what: "RMCP+ session header",
            needed: HEADER,
            len: body.len(),
        });
    }
    if body[0] != AUTH_TYPE_RMCP_PLUS {
        return Err(PacketError::AuthType(body[0]));
    }
    let type_byte = body[1];
    let encrypted = type_byte & 0x80 != 0;
    let authenticated = type_byte & 0x40 != 0;
    let payload_type = PayloadType::from_number(type_byte & 0x3F)
        .ok_or(PacketError::PayloadType(type_byte & 0x3F))?;
    let session_id = u32::from_le_bytes([body[2], body[3], body[4], body[5]]);
    let sequence = u32::from_le_bytes([body[6], body[7], body[8], body[9]]);
    let len = usize::from(u16::from_le_bytes([body[10], body[11]]));
    let payload = body.get(HEADER..HEADER + len).ok_or(PacketError::Truncated {
        what: "RMCP+ payload",
        needed: HEADER + len,
        len: body.len(),
    })?;
    match (keys, authenticated || encrypted) {
        (None, true) => return Err(PacketError::UnexpectedProtection),
        (Some(_), false) => return Err(PacketError::Unprotected),
        _ => {}
    }
    if let Some(keys) = keys {
        if !authenticated {
            return Err(PacketError::Unprotected);
        }
        let code_len = keys.suite.integrity.auth_code_len();
        let trailer = &body[HEADER + len..];
        if trailer.len() < code_len + 2 {
            return Err(PacketError::Trailer);
        }
        let covered_len = body.len() - code_len;
        let (covered, code) = body.split_at(covered_len);
        let pad = usize::from(covered[covered_len - 2]);
        if covered[covered_len - 1] != NEXT_HEADER
            || pad > 3
            || HEADER + len + pad + 2 != covered_len
            || covered[HEADER + len..HEADER + len + pad].iter().any(|&b| b != 0xFF)
        {
            return Err(PacketError::Trailer);
        }
        let expected = keys.suite.integrity.auth_code(&keys.k1, covered);
        if !crypto::codes_equal(&expected, code) {
            return Err(PacketError::Integrity);
        }
    }
    let payload = match (keys, encrypted) {
        (Some(keys), true) => {
            crypto::decrypt_payload(&keys.aes_key, payload).map_err(PacketError::Decrypt)?
        }
        _ => payload.to_vec(),
    };
    Ok(V2Packet { payload_type, encrypted, authenticated, session_id, sequence, payload })
}

#[cfg(test)]
mod tests;
