//! `memory`: usable bytes from `/proc/meminfo`, installed MiB from SMBIOS.

use ferric_shared::inventory::Memory;

use super::{read_text, smbios};
use crate::host::HostRoot;

const MEMINFO: &str = "/proc/meminfo";
const DMI_TABLE: &str = "/sys/firmware/dmi/tables/DMI";

/// `MemTotal` from `/proc/meminfo`, in bytes (the file says kB, meaning KiB).
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Installed memory estimated from usable memory, for hosts whose firmware publishes
/// no memory devices (most VMs).
///
/// The kernel keeps part of RAM for itself, so `MemTotal` sits a little below the
/// installed size; we round it *up* to a multiple of a granule that is the largest
/// power of two not above one eighth of the total. That granule is coarse enough to
/// swallow the reservation yet fine enough to keep non-power-of-two sizes: 62.7 GiB →
/// 64 GiB (4 GiB granule), 94 GiB → 96 GiB (8 GiB), 1.9 GiB → 2 GiB (128 MiB).
pub fn estimate_physical_mb(total_bytes: u64) -> u64 {
    let total_mib = total_bytes.div_ceil(1024 * 1024);
    if total_mib == 0 {
        return 0;
    }
    let eighth = (total_mib / 8).max(1);
    let granule = 1u64 << (63 - eighth.leading_zeros());
    total_mib.div_ceil(granule).saturating_mul(granule)
}

pub fn collect(host: &HostRoot) -> Memory {
    let total = read_text(host, MEMINFO).ok().and_then(|t| parse_meminfo_total(&t));
    let from_smbios = host
        .read_bytes(DMI_TABLE)
        .ok()
        .and_then(|table| match smbios::memory_device_sizes_mib(&table) {
            Ok(sizes) => Some(sizes),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable SMBIOS table; estimating installed memory");
                None
            }
        })
        .map(|sizes| sizes.iter().fold(0u64, |a, s| a.saturating_add(*s)))
        .filter(|mib| *mib > 0);
    Memory { total, physical_mb: from_smbios.or_else(|| total.map(estimate_physical_mb)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       65652008 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(65652008 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 5 MB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 99999999999999999999 kB\n"), None);
    }

    #[test]
    fn estimate_rounds_up_to_installed_size() {
        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;
        let cases = [
            (GIB * 627 / 10, 65536), // 62.7 GiB on a 64 GiB server
            (GIB * 94, 98304),       // 96 GiB (6 x 16 GiB)
            (GIB * 251, 262144),     // 256 GiB
            (GIB * 376, 393216),     // 384 GiB
            (MIB * 1946, 2048),      // 2 GiB VM
            (MIB * 985, 1024),       // 1 GiB VM
            (GIB * 64, 65536),       // already exact
            (1, 1),
            (0, 0),
        ];
        for (bytes, want) in cases {
            assert_eq!(estimate_physical_mb(bytes), want, "{bytes}");
        }
    }
}
