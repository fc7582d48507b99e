//! `cpu` from `/proc/cpuinfo`, cpufreq and the kernel's architecture name.

use std::collections::BTreeSet;

use ferric_shared::inventory::Cpu;

use super::{attr, read_text, InventoryError};
use crate::host::HostRoot;

const CPUINFO: &str = "/proc/cpuinfo";
const MAX_FREQ_KHZ: &str = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq";
const ARCH: &str = "/proc/sys/kernel/arch";

/// What `/proc/cpuinfo` says, before units and fallbacks are applied.
#[derive(Debug, Default, PartialEq)]
pub struct CpuInfo {
    pub model_name: Option<String>,
    /// The first processor's `cpu MHz` (current, not maximum, frequency).
    pub mhz: Option<f64>,
    /// Number of `processor` entries: logical CPUs.
    pub logical: u32,
    /// Distinct `physical id` values.
    pub physical_ids: BTreeSet<String>,
    pub flags: Vec<String>,
}

/// Parses `/proc/cpuinfo`. The first processor's model and flags stand for all
/// (lscpu does the same); x86 spells flags `flags`, arm64 spells them `Features`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut flags_seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.trim();
        let value = value.trim();
        match key {
            "processor" => info.logical = info.logical.saturating_add(1),
            "model name" if info.model_name.is_none() && !value.is_empty() => {
                info.model_name = Some(value.to_owned());
            }
            "cpu MHz" if info.mhz.is_none() => {
                info.mhz = value.parse::<f64>().ok().filter(|m| m.is_finite() && *m > 0.0);
            }
            "physical id" => {
                info.physical_ids.insert(value.to_owned());
            }
            "flags" | "Features" if !flags_seen => {
                flags_seen = true;
                info.flags = value.split_whitespace().map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    info
}

/// lscpu's MHz form: four decimals.
pub fn format_mhz(mhz: f64) -> String {
    format!("{mhz:.4}")
}

/// Parses cpufreq's `cpuinfo_max_freq` (kHz) into MHz.
pub fn parse_khz(text: &str) -> Option<f64> {
    let khz: u64 = text.trim().parse().ok()?;
    (khz > 0).then(|| khz as f64 / 1000.0)
}

pub fn collect(host: &HostRoot) -> Result<Cpu, InventoryError> {
    let text = read_text(host, CPUINFO)
        .map_err(|source| InventoryError::Read { path: CPUINFO.to_owned(), source })?;
    let info = parse_cpuinfo(&text);
    // lscpu reports "CPU max MHz" when cpufreq knows it, else the current "CPU MHz".
    let mhz = attr(host, MAX_FREQ_KHZ).and_then(|s| parse_khz(&s)).or(info.mhz);
    let architecture = attr(host, ARCH).unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let sockets = u32::try_from(info.physical_ids.len()).unwrap_or(u32::MAX).max(1);
    Ok(Cpu {
        model_name: info.model_name,
        frequency: mhz.map(format_mhz),
        count: info.logical,
        architecture,
        flags: info.flags,
        socket_count: sockets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SOCKETS: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
model name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\ncpu MHz\t\t: 1000.123\n\
physical id\t: 0\nflags\t\t: fpu vme sse2\n\n\
processor\t: 1\nmodel name\t: other\ncpu MHz\t\t: 2000.0\nphysical id\t: 1\nflags\t\t: fpu\n\n\
processor\t: 2\nphysical id\t: 0\n\nprocessor\t: 3\nphysical id\t: 1\n";

    #[test]
    fn parses_x86_cpuinfo() {
        let info = parse_cpuinfo(TWO_SOCKETS);
        assert_eq!(info.logical, 4);
        assert_eq!(info.model_name.as_deref(), Some("Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz"));
        assert_eq!(info.mhz, Some(1000.123));
        assert_eq!(info.physical_ids.len(), 2);
        assert_eq!(info.flags, vec!["fpu", "vme", "sse2"]);
    }

    #[test]
    fn parses_arm_cpuinfo_without_model_or_sockets() {
        let text = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\n\
CPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp\n";
        let info = parse_cpuinfo(text);
        assert_eq!(info.logical, 2);
        assert_eq!(info.model_name, None);
        assert_eq!(info.mhz, None);
        assert!(info.physical_ids.is_empty());
        assert_eq!(info.flags, vec!["fp", "asimd", "evtstrm"]);
    }

    #[test]
    fn garbage_cpuinfo_yields_nothing() {
        let info = parse_cpuinfo("cpu MHz: NaN\ncpu MHz: fast\n:::\n\u{0}\nmodel name:\n");
        assert_eq!(info, CpuInfo::default());
    }

    #[test]
    fn frequency_formats() {
        let cases = [
            ("2400000", Some("2400.0000")),
            ("3701000\n", Some("3701.0000")),
            ("2100500", Some("2100.5000")),
            ("0", None),
            ("-5", None),
            ("x", None),
        ];
        for (khz, want) in cases {
            assert_eq!(parse_khz(khz).map(format_mhz).as_deref(), want, "{khz}");
        }
        assert_eq!(format_mhz(1000.123), "1000.1230");
    }
}
