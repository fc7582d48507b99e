//! Erasing disks between tenants: the `erase_devices*` steps and `ferric-agent erase`.
//!
//! - [`devices`] decides which block devices may be erased (never the ramdisk's boot
//!   medium, read-only and special-filesystem rules, `skip_block_devices`, RAID members).
//! - [`metadata`] removes every signature `wipefs --all` would remove, plus both GPT
//!   areas, leaving the data between them.
//! - [`full`] erases a whole disk with the fastest method that can be verified: NVMe
//!   Format ([`nvme`]), ATA Security Erase ([`ata`]), secure discard, or zero-fill; then
//!   [`verify`] reads samples back.
//! - [`pstore`] empties the kernel's persistent-store records.
//! - [`run`] carries out a whole step over the host's devices and builds its result.
//! - [`report`] is the per-disk record every method produces.

pub mod ata;
pub mod devices;
pub mod full;
pub mod metadata;
pub mod nvme;
pub mod pstore;
pub mod report;
pub mod run;
pub mod verify;
