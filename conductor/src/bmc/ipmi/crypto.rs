//! RMCP+ key exchange and packet protection (IPMI 2.0 §13.28–13.32): the RAKP message
//! authentication codes, the session integrity key (SIK) and the keys K1 (integrity) and
//! K2 (confidentiality) derived from it, the integrity trailer's HMAC and AES-CBC-128.
//!
//! Pure functions over byte slices; the session layer supplies the random numbers.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};

/// The authentication algorithm negotiated in Open Session (RAKP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAlgorithm {
    /// RAKP-HMAC-SHA1 (algorithm number 0x01).
    HmacSha1,
    /// RAKP-HMAC-SHA256 (algorithm number 0x03).
    HmacSha256,
}

impl AuthAlgorithm {
    /// The algorithm number carried in the Open Session authentication payload.
    pub fn number(self) -> u8 {
        match self {
            AuthAlgorithm::HmacSha1 => 0x01,
            AuthAlgorithm::HmacSha256 => 0x03,
        }
    }

    /// Length of the RAKP 2/3 key exchange authentication codes, the SIK and K1/K2.
    pub fn digest_len(self) -> usize {
        match self {
            AuthAlgorithm::HmacSha1 => 20,
            AuthAlgorithm::HmacSha256 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value: the HMAC truncated to the integrity
    /// algorithm's length (HMAC-SHA1-96 → 12, HMAC-SHA256-128 → 16).
    pub fn rakp4_len(self) -> usize {
        match self {
            AuthAlgorithm::HmacSha1 => 12,
            AuthAlgorithm::HmacSha256 => 16,
        }
    }

    /// HMAC over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            AuthAlgorithm::HmacSha1 => hmac_sha1(key, parts),
            AuthAlgorithm::HmacSha256 => hmac_sha256(key, parts),
        }
    }
}

/// The integrity algorithm protecting session packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlgorithm {
    /// HMAC-SHA1-96 (0x01): 12-byte AuthCode.
    HmacSha1_96,
    /// HMAC-SHA256-128 (0x04): 16-byte AuthCode.
    HmacSha256_128,
}

impl IntegrityAlgorithm {
    pub fn number(self) -> u8 {
        match self {
            IntegrityAlgorithm::HmacSha1_96 => 0x01,
            IntegrityAlgorithm::HmacSha256_128 => 0x04,
        }
    }

    /// Length of the AuthCode field that ends an authenticated packet.
    pub fn auth_code_len(self) -> usize {
        match self {
            IntegrityAlgorithm::HmacSha1_96 => 12,
            IntegrityAlgorithm::HmacSha256_128 => 16,
        }
    }

    /// The AuthCode: HMAC keyed with K1 over `data`, truncated.
    pub fn auth_code(self, k1: &[u8], data: &[u8]) -> Vec<u8> {
        let mut full = match self {
            IntegrityAlgorithm::HmacSha1_96 => hmac_sha1(k1, &[data]),
            IntegrityAlgorithm::HmacSha256_128 => hmac_sha256(k1, &[data]),
        };
        full.truncate(self.auth_code_len());
        full
    }
}

/// The confidentiality algorithm number of AES-CBC-128.
pub const AES_CBC_128: u8 = 0x01;

/// A cipher suite this driver speaks: authentication, integrity, AES-CBC-128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    pub id: u8,
    pub auth: AuthAlgorithm,
    pub integrity: IntegrityAlgorithm,
}

impl CipherSuite {
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    pub const SUITE_3: CipherSuite = CipherSuite {
        id: 3,
        auth: AuthAlgorithm::HmacSha1,
        integrity: IntegrityAlgorithm::HmacSha1_96,
    };
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    pub const SUITE_17: CipherSuite = CipherSuite {
        id: 17,
        auth: AuthAlgorithm::HmacSha256,
        integrity: IntegrityAlgorithm::HmacSha256_128,
    };

    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(Self::SUITE_3),
            17 => Some(Self::SUITE_17),
            _ => None,
        }
    }
}

/// What both sides know after RAKP 2: the values the key exchange codes cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RakpExchange {
    /// SID_M: the session id this console chose (Open Session Request).
    pub console_session_id: u32,
    /// SID_C: the session id the BMC chose (Open Session Response).
    pub bmc_session_id: u32,
    /// R_M: this console's random number (RAKP 1).
    pub console_random: [u8; 16],
    /// R_C: the BMC's random number (RAKP 2).
    pub bmc_random: [u8; 16],
    /// GUID_C: the BMC's GUID (RAKP 2).
    pub bmc_guid: [u8; 16],
    /// Role_M: the privilege byte sent in RAKP 1, lookup bit included.
    pub role: u8,
    /// UName_M: the user name sent in RAKP 1 (at most 16 bytes).
    pub username: Vec<u8>,
}

impl RakpExchange {
    fn username_len(&self) -> [u8; 1] {
        // The session layer refuses names over 16 bytes, so this never truncates.
        [u8::try_from(self.username.len()).unwrap_or(u8::MAX)]
    }

    /// The key exchange authentication code the BMC must send in RAKP 2:
    /// HMAC_Kuid(SID_M, SID_C, R_M, R_C, GUID_C, Role_M, ULength_M, UName_M).
    pub fn rakp2_auth_code(&self, alg: AuthAlgorithm, kuid: &[u8]) -> Vec<u8> {
        alg.hmac(
            kuid,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role],
                &self.username_len(),
                &self.username,
            ],
        )
    }

    /// The code this console sends in RAKP 3:
    /// HMAC_Kuid(R_C, SID_M, Role_M, ULength_M, UName_M).
    pub fn rakp3_auth_code(&self, alg: AuthAlgorithm, kuid: &[u8]) -> Vec<u8> {
        alg.hmac(
            kuid,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role],
                &self.username_len(),
                &self.username,
            ],
        )
    }

    /// The session integrity key: HMAC_Kg(R_M, R_C, Role_M, ULength_M, UName_M), where
    /// Kg is the BMC key or, when the BMC has none, Kuid.
    pub fn sik(&self, alg: AuthAlgorithm, kg: &[u8]) -> Vec<u8> {
        alg.hmac(
            kg,
            &[
                &self.console_random,
                &self.bmc_random,
                &[self.role],
                &self.username_len(),
                &self.username,
            ],
        )
    }

    /// The integrity check value the BMC must send in RAKP 4:
    /// HMAC_SIK(R_M, SID_C, GUID_C), truncated.
    pub fn rakp4_check_value(&self, alg: AuthAlgorithm, sik: &[u8]) -> Vec<u8> {
        let mut code = alg
            .hmac(sik, &[&self.console_random, &self.bmc_session_id.to_le_bytes(), &self.bmc_guid]);
        code.truncate(alg.rakp4_len());
        code
    }
}

/// K_n = HMAC_SIK(constant of 20 bytes, each `n`): K1 keys the integrity HMAC, the first
/// 16 bytes of K2 are the AES key. The constants are 20 bytes for every algorithm.
pub fn derive_key(alg: AuthAlgorithm, sik: &[u8], n: u8) -> Vec<u8> {
    alg.hmac(sik, &[&[n; 20]])
}

/// AES-CBC-128 with IPMI's padding: the plaintext is followed by pad bytes 1, 2, 3, …
/// and a pad-length byte so the whole is a multiple of 16; the IV goes in front.
pub fn encrypt_payload(key: &[u8; 16], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let pad_len = (16 - (plaintext.len() + 1) % 16) % 16;
    let mut block = Vec::with_capacity(16 + plaintext.len() + pad_len + 1);
    block.extend_from_slice(plaintext);
    // pad_len < 16, so the cast is exact.
    block.extend((1..=pad_len).map(|i| i as u8));
    block.push(pad_len as u8);
    let total = block.len();
    let encryptor = cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into());
    let ciphertext = match encryptor.encrypt_padded_mut::<NoPadding>(&mut block, total) {
        Ok(ciphertext) => ciphertext.to_vec(),
        // Unreachable: the buffer is a whole number of blocks by construction.
        Err(_) => Vec::new(),
    };
    let mut out = Vec::with_capacity(16 + ciphertext.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ciphertext);
    out
}

/// Why an encrypted payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("encrypted payload of {0} bytes is not an IV plus whole AES blocks")]
    Length(usize),
    #[error("confidentiality padding is malformed")]
    Padding,
}

/// Reverses [`encrypt_payload`]: strips the IV, decrypts and checks the padding.
pub fn decrypt_payload(key: &[u8; 16], payload: &[u8]) -> Result<Vec<u8>, DecryptError> {
    if payload.len() < 32 || payload.len() % 16 != 0 {
        return Err(DecryptError::Length(payload.len()));
    }
    let (iv, ciphertext) = payload.split_at(16);
    let mut iv_block = [0u8; 16];
    iv_block.copy_from_slice(iv);
    let mut buf = ciphertext.to_vec();
    let decryptor = cbc::Decryptor::<aes::Aes128>::new(key.into(), (&iv_block).into());
    let plain_len = decryptor
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| DecryptError::Length(payload.len()))?
        .len();
    buf.truncate(plain_len);
    let pad_len = usize::from(*buf.last().ok_or(DecryptError::Padding)?);
    if pad_len >= 16 || pad_len + 1 > buf.len() {
        return Err(DecryptError::Padding);
    }
    let data_len = buf.len() - 1 - pad_len;
    let pad_ok = buf
        .get(data_len..buf.len() - 1)
        .is_some_and(|pad| pad.iter().enumerate().all(|(i, &b)| usize::from(b) == i + 1));
    if !pad_ok {
        return Err(DecryptError::Padding);
    }
    buf.truncate(data_len);
    Ok(buf)
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` never fails.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Compares two codes in time independent of where they differ.
pub fn codes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
