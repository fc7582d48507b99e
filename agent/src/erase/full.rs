//! Erasing one whole disk with the fastest method that can be verified.
//!
//! The order, as ironic-python-agent's `erase_block_device`:
//! 1. NVMe Format with a secure erase (crypto erase when the controller offers it) for
//!    NVMe namespaces, unless `agent_enable_nvme_secure_erase` is false;
//! 2. ATA SECURITY ERASE UNIT for other disks, unless `agent_enable_ata_secure_erase` is
//!    false;
//! 3. `BLKSECDISCARD`, when discard erase is enabled — accepted only if every sample
//!    then reads back as zeros (a "verified discard"; the kernel's `discard_zeroes_data`
//!    is always 0 nowadays, so only reading tells);
//! 4. overwriting, shred-style.
//!
//! A hardware method that is unavailable (not NVMe, no pass-through, no security
//! feature set) is passed over; one that is available but fails ends the erase with an
//! error unless `agent_continue_if_secure_erase_failed` is set, as in IPA. Every method
//! passed over is recorded, with the reason, in [`DiskReport::fallbacks`].
//!
//! Overwriting maps IPA's `shred --iterations N [--zero]` like this:
//! - `iterations` passes of random data, then one pass of zeros when `zeroize`;
//! - with `iterations` 0 and `zeroize` (the fast path) the single zero pass is
//!   `BLKZEROOUT` over the whole device ([`EraseMethod::ZeroFill`]); any random pass
//!   makes the method [`EraseMethod::Overwrite`];
//! - `iterations` 0 without `zeroize` asks for nothing to be written, which is refused
//!   rather than reported as an erase.
//!
//! `BLKZEROOUT` from user space never unmaps (the kernel passes `BLKDEV_ZERO_NOUNMAP`):
//! the device writes zeros, or executes WRITE ZEROES, which also guarantees them. A
//! regular file standing in for a disk has its blocks punched out (zeros written where
//! the filesystem cannot punch).
//!
//! Afterwards [`super::verify`] reads samples back. Zeros are required after zero-fill,
//! after a zeroing overwrite, after a verified discard and after a normal-mode ATA erase
//! (ACS: it writes binary zeros). After an NVMe format or an enhanced ATA erase the
//! content is the drive's choice: the samples are still read, and the report says
//! `verified` when they are zeros and `not_applicable` (with what was found) otherwise.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use super::ata::{self, AtaErase, AtaError, SgIoChannel};
use super::nvme::{self, IoctlController, NvmeError, SecureErase};
use super::report::{DiskReport, EraseMethod, Verification};
use super::run::EraseConfig;
use super::verify::{self, VerifyError, DEFAULT_SAMPLES};
use crate::image::sink::{zero_range, TargetKind};

/// How a full erase is done; from the node's `driver_internal_info` and the agent's own
/// erase settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullEraseOptions {
    /// `agent_erase_devices_iterations`: random passes (default 1).
    pub iterations: u32,
    /// `agent_erase_devices_zeroize`: a final pass of zeros (default true).
    pub zeroize: bool,
    /// `agent_continue_if_secure_erase_failed` (legacy
    /// `agent_continue_if_ata_erase_failed`): overwrite when a hardware erase failed.
    pub continue_if_secure_erase_failed: bool,
    /// `agent_enable_nvme_secure_erase` (default true).
    pub enable_nvme_secure_erase: bool,
    /// `agent_enable_ata_secure_erase` (default true).
    pub enable_ata_secure_erase: bool,
    /// The agent's `ipa-enable-discard-erase`, or the node's `agent_enable_discard_erase`.
    pub enable_discard_erase: bool,
}

impl Default for FullEraseOptions {
    fn default() -> Self {
        Self {
            iterations: 1,
            zeroize: true,
            continue_if_secure_erase_failed: false,
            enable_nvme_secure_erase: true,
            enable_ata_secure_erase: true,
            enable_discard_erase: false,
        }
    }
}

impl FullEraseOptions {
    /// Reads the options from `node.driver_internal_info`; absent keys keep IPA's
    /// defaults, keys of the wrong type are an error naming the key.
    pub fn from_node(node: Option<&Value>, config: &EraseConfig) -> Result<Self, FullEraseError> {
        let info = node.and_then(|n| n.get("driver_internal_info")).filter(|v| !v.is_null());
        let info = match info {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(FullEraseError::Option {
                    key: "driver_internal_info",
                    expected: "an object",
                    found: other.to_string(),
                })
            }
        };
        let get = |key: &str| info.and_then(|m| m.get(key)).filter(|v| !v.is_null());
        let flag = |key: &'static str, default: bool| -> Result<bool, FullEraseError> {
            get(key).map_or(Ok(default), |v| parse_bool(key, v))
        };
        let defaults = Self::default();
        let iterations = match get("agent_erase_devices_iterations") {
            None => defaults.iterations,
            Some(v) => parse_count("agent_erase_devices_iterations", v)?,
        };
        let legacy = flag("agent_continue_if_ata_erase_failed", false)?;
        Ok(Self {
            iterations,
            zeroize: flag("agent_erase_devices_zeroize", defaults.zeroize)?,
            continue_if_secure_erase_failed: flag("agent_continue_if_secure_erase_failed", legacy)?,
            enable_nvme_secure_erase: flag("agent_enable_nvme_secure_erase", true)?,
            enable_ata_secure_erase: flag("agent_enable_ata_secure_erase", true)?,
            enable_discard_erase: flag("agent_enable_discard_erase", config.enable_discard_erase)?,
        })
    }
}

/// Booleans as Ironic stores them: JSON booleans, or the strings oslo's `bool_from_string`
/// accepts (the conductor passes some settings through as text).
fn parse_bool(key: &'static str, v: &Value) -> Result<bool, FullEraseError> {
    let bad = || FullEraseError::Option { key, expected: "a boolean", found: v.to_string() };
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" | "t" => Ok(true),
            "false" | "0" | "no" | "n" | "off" | "f" => Ok(false),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn parse_count(key: &'static str, v: &Value) -> Result<u32, FullEraseError> {
    let bad =
        || FullEraseError::Option { key, expected: "a non-negative integer", found: v.to_string() };
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad),
        Value::String(s) => s.trim().parse::<u32>().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Why a disk was not (fully) erased.
#[derive(Debug, thiserror::Error)]
pub enum FullEraseError {
    #[error("driver_internal_info.{key} must be {expected}, got {found}")]
    Option { key: &'static str, expected: &'static str, found: String },
    #[error(
        "{device}: nothing to write (agent_erase_devices_iterations is 0 and \
         agent_erase_devices_zeroize is false)"
    )]
    NothingToWrite { device: String },
    #[error("{device} is read-only")]
    ReadOnly { device: String },
    #[error("cannot open {device} ({})", path.display())]
    Open {
        device: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{device} is neither a block device nor a regular file")]
    NotADisk { device: String },
    #[error("cannot read the size of {device}")]
    Size {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("{device} is empty")]
    Empty { device: String },
    #[error("{device}: NVMe secure erase failed")]
    Nvme {
        device: String,
        #[source]
        source: NvmeError,
    },
    #[error("{device}: ATA security erase failed")]
    Ata {
        device: String,
        #[source]
        source: AtaError,
    },
    #[error("{device}: {action} at byte {offset}")]
    Write {
        device: String,
        action: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{device}: reading the disk back")]
    Verify {
        device: String,
        #[source]
        source: VerifyError,
    },
    #[error("{device}: erased with {method:?} but verification failed at byte {offset}: {detail}")]
    NotVerified {
        device: String,
        method: EraseMethod,
        offset: u64,
        detail: String,
        /// The record of what was done, for the step result.
        report: Box<DiskReport>,
    },
}

/// Progress callback: bytes done, bytes in total (over all passes).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// `_IO(0x12, 94)`: is the device read-only.
const BLKROGET: u64 = 0x125e;
/// `_IO(0x12, 125)`: secure discard of a byte range.
const BLKSECDISCARD: u64 = 0x127d;
/// Each `BLKZEROOUT` / discard / punch covers at most this much, so progress moves.
const RANGE_BYTES: u64 = 256 << 20;
/// Random passes write in pieces of this size.
const WRITE_BYTES: usize = 4 << 20;
const ALIGN: usize = 4096;

/// An open disk (or file standing in for one).
#[derive(Debug)]
struct Disk {
    device: String,
    path: PathBuf,
    file: File,
    block: bool,
    size: u64,
}

impl Disk {
    fn open(device: &str, path: &Path) -> Result<Disk, FullEraseError> {
        let open_err = |source| FullEraseError::Open {
            device: device.to_owned(),
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let block = meta.file_type().is_block_device();
        if !block && !meta.file_type().is_file() {
            return Err(FullEraseError::NotADisk { device: device.to_owned() });
        }
        if block {
            let probe = File::open(path).map_err(open_err)?;
            let mut ro: libc::c_int = 0;
            // SAFETY: BLKROGET writes one int through the pointer, which points at `ro`.
            let rc = unsafe {
                libc::ioctl(probe.as_raw_fd(), BLKROGET as libc::Ioctl, &mut ro as *mut libc::c_int)
            };
            if rc == 0 && ro != 0 {
                return Err(FullEraseError::ReadOnly { device: device.to_owned() });
            }
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        // Exclusive: the kernel refuses a block device that is mounted or otherwise
        // claimed.
        options.custom_flags(libc::O_CLOEXEC | if block { libc::O_EXCL } else { 0 });
        let file = options.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EROFS) | Some(libc::EACCES) if block => {
                FullEraseError::ReadOnly { device: device.to_owned() }
            }
            _ => open_err(e),
        })?;
        let size = if block {
            crate::disk::geometry(&file).map(|g| g.len).map_err(|e| FullEraseError::Size {
                device: device.to_owned(),
                source: io::Error::other(e),
            })?
        } else {
            meta.len()
        };
        if size == 0 {
            return Err(FullEraseError::Empty { device: device.to_owned() });
        }
        Ok(Disk { device: device.to_owned(), path: path.to_owned(), file, block, size })
    }

    fn write_err(&self, action: &'static str, offset: u64, source: io::Error) -> FullEraseError {
        if source.raw_os_error() == Some(libc::EROFS) || source.raw_os_error() == Some(libc::EPERM)
        {
            return FullEraseError::ReadOnly { device: self.device.clone() };
        }
        FullEraseError::Write { device: self.device.clone(), action, offset, source }
    }

    fn is_nvme(&self) -> bool {
        let base = Path::new(&self.device).file_name().and_then(|n| n.to_str()).unwrap_or("");
        self.block && base.starts_with("nvme")
    }

    fn sync(&self) -> Result<(), FullEraseError> {
        self.file.sync_all().map_err(|e| self.write_err("flushing the device", 0, e))
    }
}

fn range_ioctl(file: &File, request: u64, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKSECDISCARD reads two u64 (start, length) through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, range.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A heap buffer aligned for `O_DIRECT`.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { raw, start }
    }
    fn slice(&mut self, n: usize) -> &mut [u8] {
        let end = (self.start + n).min(self.raw.len());
        &mut self.raw[self.start..end]
    }
}

/// Writes `[0, size)` through `write` in pieces, with `O_DIRECT` where possible.
struct PassWriter<'d> {
    disk: &'d Disk,
    direct: Option<File>,
    buf: Aligned,
}

impl<'d> PassWriter<'d> {
    fn new(disk: &'d Disk) -> Self {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(&disk.path)
            .ok();
        PassWriter { disk, direct, buf: Aligned::new(WRITE_BYTES) }
    }

    fn random_pass(
        &mut self,
        rng: &mut fastrand::Rng,
        base: u64,
        total: u64,
        progress: Progress<'_>,
    ) -> Result<(), FullEraseError> {
        let size = self.disk.size;
        let mut offset = 0u64;
        while offset < size {
            let n = (WRITE_BYTES as u64).min(size - offset) as usize;
            let data = self.buf.slice(n);
            rng.fill(data);
            let aligned = n % ALIGN == 0 && offset % ALIGN as u64 == 0;
            let mut done = false;
            if let (true, Some(direct)) = (aligned, &self.direct) {
                match direct.write_all_at(data, offset) {
                    Ok(()) => done = true,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                    Err(e) => return Err(self.disk.write_err("writing random data", offset, e)),
                }
            }
            if !done {
                self.disk
                    .file
                    .write_all_at(data, offset)
                    .map_err(|e| self.disk.write_err("writing random data", offset, e))?;
            }
            offset += n as u64;
            progress(base + offset, total);
        }
        self.disk.sync()
    }
}

/// Makes the whole disk read back as zeros.
fn zero_fill(
    disk: &Disk,
    base: u64,
    total: u64,
    progress: Progress<'_>,
) -> Result<(), FullEraseError> {
    let mut offset = 0u64;
    while offset < disk.size {
        let len = RANGE_BYTES.min(disk.size - offset);
        let kind = if disk.block { TargetKind::BlockDevice } else { TargetKind::RegularFile };
        zero_range(&disk.file, kind, offset, len)
            .map_err(|e| disk.write_err("zeroing", offset, e))?;
        offset += len;
        progress(base + offset, total);
    }
    disk.sync()
}

fn secure_discard(disk: &Disk) -> io::Result<()> {
    if !disk.block {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let mut offset = 0u64;
    while offset < disk.size {
        let len = RANGE_BYTES.min(disk.size - offset);
        range_ioctl(&disk.file, BLKSECDISCARD, offset, len)?;
        offset += len;
    }
    Ok(())
}

fn seed() -> u64 {
    fastrand::u64(..)
}

fn read_back(disk: &Disk) -> Result<Verification, FullEraseError> {
    verify::verify_zeros(&disk.path, disk.size, DEFAULT_SAMPLES, seed())
        .map_err(|source| FullEraseError::Verify { device: disk.device.clone(), source })
}

/// What a hardware method left: zeros guaranteed, or content of the drive's choosing.
fn hardware_verification(disk: &Disk, method: EraseMethod) -> Result<Verification, FullEraseError> {
    let guaranteed = method == EraseMethod::AtaSecurityErase;
    match read_back(disk)? {
        Verification::Failed { offset, detail } if !guaranteed => Ok(Verification::NotApplicable {
            reason: format!(
                "{method:?} leaves content of the drive's choosing; read back: {detail} \
                     (offset {offset})"
            ),
        }),
        other => Ok(other),
    }
}

/// Tries the disk's hardware erase. `Ok(None)`: none available, or one failed and the
/// options allow going on (the reasons are in `fallbacks`).
fn hardware_erase(
    disk: &Disk,
    options: &FullEraseOptions,
    fallbacks: &mut Vec<String>,
) -> Result<Option<EraseMethod>, FullEraseError> {
    if !disk.block {
        fallbacks.push("hardware erase: a regular file has none".to_owned());
        return Ok(None);
    }
    if disk.is_nvme() {
        if !options.enable_nvme_secure_erase {
            fallbacks.push("nvme secure erase: disabled (agent_enable_nvme_secure_erase)".into());
            return Ok(None);
        }
        let mut ch = IoctlController::new(&disk.file);
        return match nvme::secure_format(&mut ch) {
            Ok(SecureErase::Crypto) => Ok(Some(EraseMethod::NvmeCryptoErase)),
            Ok(SecureErase::UserData) => Ok(Some(EraseMethod::NvmeUserDataErase)),
            Err(e @ (NvmeError::FormatUnsupported | NvmeError::NamespaceId(_))) => {
                fallbacks.push(format!("nvme secure erase: unavailable: {}", chain(&e)));
                Ok(None)
            }
            Err(e) if options.continue_if_secure_erase_failed => {
                fallbacks.push(format!("nvme secure erase: failed: {}", chain(&e)));
                Ok(None)
            }
            Err(source) => Err(FullEraseError::Nvme { device: disk.device.clone(), source }),
        };
    }
    if !options.enable_ata_secure_erase {
        fallbacks.push("ata secure erase: disabled (agent_enable_ata_secure_erase)".into());
        return Ok(None);
    }
    let mut ch = SgIoChannel::new(&disk.file);
    match ata::security_erase(&mut ch) {
        Ok(AtaErase::Enhanced) => Ok(Some(EraseMethod::AtaEnhancedSecurityErase)),
        Ok(AtaErase::Normal) => Ok(Some(EraseMethod::AtaSecurityErase)),
        Err(e @ (AtaError::NoPassThrough(_) | AtaError::NotAta | AtaError::Unsupported)) => {
            fallbacks.push(format!("ata secure erase: unavailable: {}", chain(&e)));
            Ok(None)
        }
        // A device that rejects IDENTIFY through the pass-through is not an ATA disk
        // behind a SAT (virtio, SAS, USB bridges without SAT).
        Err(e @ AtaError::Command { command: ata::ATA_IDENTIFY_DEVICE, .. }) => {
            fallbacks.push(format!("ata secure erase: unavailable: {}", chain(&e)));
            Ok(None)
        }
        Err(e) if options.continue_if_secure_erase_failed => {
            fallbacks.push(format!("ata secure erase: failed: {}", chain(&e)));
            Ok(None)
        }
        Err(source) => Err(FullEraseError::Ata { device: disk.device.clone(), source }),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn finish(
    disk: &Disk,
    method: EraseMethod,
    passes: u32,
    verification: Verification,
    fallbacks: Vec<String>,
    started: Instant,
) -> Result<DiskReport, FullEraseError> {
    let report = DiskReport {
        device: disk.device.clone(),
        method,
        duration_s: started.elapsed().as_secs_f64(),
        bytes: disk.size,
        passes,
        verification,
        fallbacks,
    };
    if let Verification::Failed { offset, detail } = &report.verification {
        return Err(FullEraseError::NotVerified {
            device: disk.device.clone(),
            method,
            offset: *offset,
            detail: detail.clone(),
            report: Box::new(report.clone()),
        });
    }
    Ok(report)
}

/// Erases the disk `name` (as the host names it; opened at `path`) with the fastest
/// verified method, reading samples back afterwards. A sample that is not what the
/// method guarantees is [`FullEraseError::NotVerified`], which carries the report.
pub fn erase_disk(
    name: &str,
    path: &Path,
    options: &FullEraseOptions,
    progress: Progress<'_>,
) -> Result<DiskReport, FullEraseError> {
    let started = Instant::now();
    let disk = Disk::open(name, path)?;
    let mut fallbacks = Vec::new();
    if let Some(method) = hardware_erase(&disk, options, &mut fallbacks)? {
        progress(disk.size, disk.size);
        let verification = hardware_verification(&disk, method)?;
        return finish(&disk, method, 1, verification, fallbacks, started);
    }
    if options.enable_discard_erase {
        match secure_discard(&disk) {
            Ok(()) => match read_back(&disk)? {
                v @ Verification::Verified { .. } => {
                    progress(disk.size, disk.size);
                    return finish(&disk, EraseMethod::SecureDiscard, 1, v, fallbacks, started);
                }
                other => fallbacks.push(format!(
                    "secure discard: did not read back as zeros ({})",
                    match other {
                        Verification::Failed { detail, .. } => detail,
                        _ => "not checked".to_owned(),
                    }
                )),
            },
            Err(e) => fallbacks.push(format!("secure discard: {e}")),
        }
    } else {
        fallbacks.push("secure discard: not enabled".to_owned());
    }
    if options.iterations == 0 && !options.zeroize {
        return Err(FullEraseError::NothingToWrite { device: disk.device.clone() });
    }
    let passes = options.iterations + u32::from(options.zeroize);
    let total = disk.size.saturating_mul(u64::from(passes));
    progress(0, total);
    let mut writer = PassWriter::new(&disk);
    let mut rng = fastrand::Rng::new();
    for pass in 0..options.iterations {
        let base = disk.size.saturating_mul(u64::from(pass));
        writer.random_pass(&mut rng, base, total, progress)?;
    }
    drop(writer);
    let (method, verification) = if options.zeroize {
        let base = disk.size.saturating_mul(u64::from(options.iterations));
        zero_fill(&disk, base, total, progress)?;
        let method =
            if options.iterations == 0 { EraseMethod::ZeroFill } else { EraseMethod::Overwrite };
        (method, read_back(&disk)?)
    } else {
        let reason = format!(
            "{} random pass(es) without a zero pass leave no content to compare",
            options.iterations
        );
        (EraseMethod::Overwrite, Verification::NotApplicable { reason })
    };
    finish(&disk, method, passes, verification, fallbacks, started)
}

/// The hardware erase alone (`erase_devices_express`): `None` when the disk has none
/// usable (the caller then erases its metadata). A hardware erase that fails is an error
/// unless `continue_if_secure_erase_failed`, in which case it is `None` as well.
pub fn express_erase_disk(
    name: &str,
    path: &Path,
    options: &FullEraseOptions,
    progress: Progress<'_>,
) -> Result<Option<DiskReport>, FullEraseError> {
    let started = Instant::now();
    let disk = Disk::open(name, path)?;
    let mut fallbacks = Vec::new();
    let Some(method) = hardware_erase(&disk, options, &mut fallbacks)? else {
        return Ok(None);
    };
    progress(disk.size, disk.size);
    let verification = hardware_verification(&disk, method)?;
    finish(&disk, method, 1, verification, fallbacks, started).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MIB: u64 = 1 << 20;

    fn opts(node: Value) -> Result<FullEraseOptions, FullEraseError> {
        FullEraseOptions::from_node(Some(&node), &EraseConfig::default())
    }

    #[test]
    fn options_default_to_ipa() {
        assert_eq!(
            FullEraseOptions::from_node(None, &EraseConfig::default()).unwrap(),
            FullEraseOptions::default()
        );
        let d = opts(json!({"driver_internal_info": {}})).unwrap();
        assert_eq!((d.iterations, d.zeroize, d.continue_if_secure_erase_failed), (1, true, false));
        assert!(d.enable_nvme_secure_erase && d.enable_ata_secure_erase && !d.enable_discard_erase);
        let config = EraseConfig { enable_discard_erase: true, ..EraseConfig::default() };
        assert!(FullEraseOptions::from_node(None, &config).unwrap().enable_discard_erase);
    }

    #[test]
    fn options_from_driver_internal_info() {
        let o = opts(json!({"driver_internal_info": {
            "agent_erase_devices_iterations": 3,
            "agent_erase_devices_zeroize": false,
            "agent_continue_if_secure_erase_failed": true,
            "agent_enable_nvme_secure_erase": "False",
            "agent_enable_ata_secure_erase": false,
            "agent_enable_discard_erase": "true",
        }}))
        .unwrap();
        assert_eq!(
            o,
            FullEraseOptions {
                iterations: 3,
                zeroize: false,
                continue_if_secure_erase_failed: true,
                enable_nvme_secure_erase: false,
                enable_ata_secure_erase: false,
                enable_discard_erase: true,
            }
        );
        let legacy = opts(json!({"driver_internal_info": {
            "agent_continue_if_ata_erase_failed": true}}))
        .unwrap();
        assert!(legacy.continue_if_secure_erase_failed);
        let both = opts(json!({"driver_internal_info": {
            "agent_continue_if_ata_erase_failed": true,
            "agent_continue_if_secure_erase_failed": false}}))
        .unwrap();
        assert!(!both.continue_if_secure_erase_failed, "the new key wins");
    }

    #[test]
    fn bad_option_types_name_the_key() {
        let table = [
            ("agent_erase_devices_iterations", json!(-1)),
            ("agent_erase_devices_iterations", json!(1.5)),
            ("agent_erase_devices_iterations", json!("many")),
            ("agent_erase_devices_zeroize", json!("perhaps")),
            ("agent_continue_if_secure_erase_failed", json!(1)),
            ("agent_enable_nvme_secure_erase", json!([])),
            ("agent_enable_ata_secure_erase", json!({})),
            ("agent_continue_if_ata_erase_failed", json!(2)),
        ];
        for (key, value) in table {
            let err = opts(json!({"driver_internal_info": {key: value}})).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key), "{text}");
            assert!(matches!(err, FullEraseError::Option { .. }));
        }
        let err = opts(json!({"driver_internal_info": "x"})).unwrap_err();
        assert!(err.to_string().contains("driver_internal_info"), "{err}");
    }

    fn patterned_file(dir: &Path, size: u64) -> PathBuf {
        let path = dir.join("disk.img");
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn zero_fill_of_a_regular_file_reads_zero_and_keeps_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * MIB + 512;
        let path = patterned_file(dir.path(), size);
        let options = FullEraseOptions { iterations: 0, ..FullEraseOptions::default() };
        let last = AtomicU64::new(0);
        let report = erase_disk("disk.img", &path, &options, &|done, total| {
            assert_eq!(total, size);
            last.store(done, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(report.method, EraseMethod::ZeroFill);
        assert_eq!(report.bytes, size);
        assert_eq!(report.passes, 1);
        assert!(matches!(report.verification, Verification::Verified { .. }), "{report:?}");
        assert_eq!(last.load(Ordering::SeqCst), size);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, size);
        assert!(data.iter().all(|b| *b == 0));
        assert!(report.fallbacks.iter().any(|f| f.contains("regular file")), "{report:?}");
    }

    #[test]
    fn random_passes_then_zeros_is_an_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let size = 2 * MIB + 4096;
        let path = patterned_file(dir.path(), size);
        let options = FullEraseOptions { iterations: 2, ..FullEraseOptions::default() };
        let max = AtomicU64::new(0);
        let report = erase_disk("d", &path, &options, &|done, total| {
            assert_eq!(total, 3 * size);
            max.fetch_max(done, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!((report.method, report.passes), (EraseMethod::Overwrite, 3));
        assert!(matches!(report.verification, Verification::Verified { .. }));
        assert_eq!(max.load(Ordering::SeqCst), 3 * size);
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn random_passes_without_zeroize_replace_the_content_unverified() {
        let dir = tempfile::tempdir().unwrap();
        let size = MIB;
        let path = patterned_file(dir.path(), size);
        let before = std::fs::read(&path).unwrap();
        let options =
            FullEraseOptions { iterations: 1, zeroize: false, ..FullEraseOptions::default() };
        let report = erase_disk("d", &path, &options, &|_, _| {}).unwrap();
        assert_eq!((report.method, report.passes), (EraseMethod::Overwrite, 1));
        assert!(matches!(report.verification, Verification::NotApplicable { .. }));
        let after = std::fs::read(&path).unwrap();
        let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert!(same < size as usize / 64, "{same} bytes unchanged");
    }

    #[test]
    fn no_pass_at_all_is_refused_and_leaves_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = patterned_file(dir.path(), MIB);
        let options =
            FullEraseOptions { iterations: 0, zeroize: false, ..FullEraseOptions::default() };
        let err = erase_disk("d", &path, &options, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FullEraseError::NothingToWrite { .. }), "{err}");
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b != 0));
    }

    #[test]
    fn express_has_nothing_for_a_file_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = patterned_file(dir.path(), MIB);
        let r = express_erase_disk("d", &path, &FullEraseOptions::default(), &|_, _| {});
        assert!(r.unwrap().is_none());
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b != 0));
    }

    #[test]
    fn directories_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let o = FullEraseOptions::default();
        let err = erase_disk("d", dir.path(), &o, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FullEraseError::NotADisk { .. }), "{err}");
        let err = erase_disk("d", &dir.path().join("none"), &o, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FullEraseError::Open { .. }), "{err}");
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        let err = erase_disk("d", &empty, &o, &|_, _| {}).unwrap_err();
        assert!(matches!(err, FullEraseError::Empty { .. }), "{err}");
    }
}
