//! What an erase did to one disk: the record a step result and `ferric-agent erase`
//! report, and the conductor stores on the node.

use serde::{Deserialize, Serialize};

/// How a disk was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseMethod {
    /// Signatures and partition tables removed; data left in place.
    Metadata,
    /// NVMe Format with Secure Erase Settings = cryptographic erase.
    NvmeCryptoErase,
    /// NVMe Format with Secure Erase Settings = user data erase.
    NvmeUserDataErase,
    /// ATA SECURITY ERASE UNIT in enhanced mode.
    AtaEnhancedSecurityErase,
    /// ATA SECURITY ERASE UNIT in normal mode.
    AtaSecurityErase,
    /// `BLKSECDISCARD` over the whole device.
    SecureDiscard,
    /// `BLKZEROOUT` over the whole device.
    ZeroFill,
    /// Shred-style passes of random data, optionally followed by zeros.
    Overwrite,
}

/// Whether the result was read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verification {
    /// Every sampled block read back as the method guarantees (zeros).
    Verified { samples: u32, bytes_checked: u64 },
    /// The method guarantees no particular content (e.g. crypto erase without zeroing,
    /// random passes without a zero pass), so nothing was compared.
    NotApplicable { reason: String },
    /// A sample did not read back as expected; the step fails.
    Failed { offset: u64, detail: String },
}

/// One disk's erase record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    /// The device as the host names it (`/dev/sda`).
    pub device: String,
    pub method: EraseMethod,
    /// Wall time of the erase and its verification, in seconds.
    pub duration_s: f64,
    /// Bytes the method covered (the disk's size for whole-disk methods; the bytes
    /// zeroed for a metadata erase).
    pub bytes: u64,
    /// Overwrite passes done (1 for single-pass methods).
    pub passes: u32,
    pub verification: Verification,
    /// Methods tried first and why they were passed over, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}
