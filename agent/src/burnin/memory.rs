//! `burnin_memory`: take a share of the available memory (`agent_burnin_vm_vm-bytes`,
//! default 98% of `MemAvailable`, never more than is available) and, until the timeout,
//! fill it with a pattern that changes with every word and every pass, then read it all
//! back. Workers (one per CPU unless `agent_burnin_vm_vm` says otherwise) each own a
//! slice, so the memory bus is loaded from every CPU at once.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::host::HostRoot;

use super::{count_setting, cpu_count, driver_info, timeout_setting, BurninError};

const WORD: u64 = std::mem::size_of::<u64>() as u64;

/// How much memory to test, as `agent_burnin_vm_vm-bytes` says it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VmBytes {
    /// A share of the available memory, `0 < f <= 1`.
    Fraction(f64),
    /// A byte count (`stress-ng` reads a bare number, or one with a `k`/`m`/`g`/`t`
    /// suffix, as bytes).
    Bytes(u64),
}

impl VmBytes {
    pub const DEFAULT: VmBytes = VmBytes::Fraction(0.98);

    /// Parses `98%`, `512m`, `1G`, `1048576` (or a JSON number of bytes).
    pub fn parse(value: &Value) -> Option<VmBytes> {
        let text = match value {
            Value::String(s) => s.trim().to_ascii_lowercase(),
            Value::Number(n) => return n.as_u64().map(VmBytes::Bytes),
            _ => return None,
        };
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent.trim().parse().ok()?;
            return (p > 0.0 && p <= 100.0).then_some(VmBytes::Fraction(p / 100.0));
        }
        let text = text.strip_suffix('b').unwrap_or(&text);
        let (digits, unit) = match text.char_indices().last() {
            Some((i, 'k')) => (&text[..i], 1u64 << 10),
            Some((i, 'm')) => (&text[..i], 1 << 20),
            Some((i, 'g')) => (&text[..i], 1 << 30),
            Some((i, 't')) => (&text[..i], 1 << 40),
            _ => (text, 1),
        };
        digits.trim().parse::<u64>().ok()?.checked_mul(unit).map(VmBytes::Bytes)
    }

    /// The bytes to test given what is available: never more than that.
    pub fn resolve(self, available: u64) -> u64 {
        match self {
            VmBytes::Fraction(f) => (available as f64 * f) as u64,
            VmBytes::Bytes(b) => b.min(available),
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// The word pass `pass` writes at word `index`: different for neighbouring words,
/// different between passes, and with every bit both set and clear across passes.
pub fn pattern(pass: u64, index: u64) -> u64 {
    const SEEDS: [u64; 4] = [0, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa];
    let seed = SEEDS[(pass % 4) as usize];
    index.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left((pass % 64) as u32) ^ seed
}

/// Fills `words` (word `base` of the test area onwards) with pass `pass`'s pattern.
pub fn fill(words: &mut [u64], base: u64, pass: u64) {
    for (i, w) in words.iter_mut().enumerate() {
        *w = pattern(pass, base + i as u64);
    }
}

/// Words that do not read back as pass `pass` wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatches {
    pub count: u64,
    /// Index in the test area of the first wrong word, with what was expected and found.
    pub first: (u64, u64, u64),
}

/// Reads `words` back and compares with pass `pass`'s pattern.
pub fn check(words: &[u64], base: u64, pass: u64) -> Option<Mismatches> {
    let mut found: Option<Mismatches> = None;
    for (i, w) in words.iter().enumerate() {
        // Volatile: the compiler must not assume the value written is still there.
        // SAFETY: `w` is a valid, aligned reference into the slice.
        let value = unsafe { std::ptr::read_volatile(w) };
        let index = base + i as u64;
        let expected = pattern(pass, index);
        if value != expected {
            match &mut found {
                Some(m) => m.count += 1,
                None => found = Some(Mismatches { count: 1, first: (index, expected, value) }),
            }
        }
    }
    found
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    pub bytes: u64,
    pub workers: usize,
    pub passes: u64,
    pub duration_s: f64,
    pub errors: u64,
}

/// Tests `bytes` of memory with `workers` threads until `duration` has passed (at least
/// one full write-and-verify pass).
pub fn stress(bytes: u64, workers: usize, duration: Duration) -> Result<MemoryReport, BurninError> {
    let words = usize::try_from(bytes / WORD).map_err(|_| BurninError::Allocate { bytes })?;
    if words == 0 {
        return Err(BurninError::TooLittleMemory { bytes });
    }
    let mut area: Vec<u64> = Vec::new();
    area.try_reserve_exact(words).map_err(|_| BurninError::Allocate { bytes })?;
    area.resize(words, 0);
    let workers = workers.clamp(1, words.max(1));
    let per_worker = words.div_ceil(workers).max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let mut passes = 0u64;
    let mut errors = 0u64;
    let mut first: Option<(u64, u64, u64)> = None;
    loop {
        let pass = passes;
        let results: Vec<Option<Option<Mismatches>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = area
                .chunks_mut(per_worker)
                .enumerate()
                .map(|(n, chunk)| {
                    let base = (n * per_worker) as u64;
                    scope.spawn(move || {
                        fill(chunk, base, pass);
                        check(chunk, base, pass)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().ok()).collect()
        });
        for result in results {
            match result {
                None => return Err(BurninError::WorkerPanicked),
                Some(Some(m)) => {
                    errors += m.count;
                    first.get_or_insert(m.first);
                }
                Some(None) => {}
            }
        }
        passes += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    if let Some((index, expected, found)) = first {
        return Err(BurninError::MemoryErrors {
            bytes: words as u64 * WORD,
            passes,
            errors,
            first_offset: index * WORD,
            expected,
            found,
        });
    }
    Ok(MemoryReport {
        bytes: words as u64 * WORD,
        workers,
        passes,
        duration_s: started.elapsed().as_secs_f64(),
        errors,
    })
}

/// The `burnin_memory` step with the node's settings, sized from the host's
/// `/proc/meminfo`.
pub fn burnin_memory(host: &HostRoot, node: Option<&Value>) -> Result<Value, BurninError> {
    let timeout = timeout_setting(node, "agent_burnin_vm_timeout")?;
    let workers = match count_setting(node, "agent_burnin_vm_vm", 0)? {
        0 => cpu_count(),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let share = match driver_info(node).get("agent_burnin_vm_vm-bytes") {
        None | Some(Value::Null) => VmBytes::DEFAULT,
        Some(v) => VmBytes::parse(v).ok_or_else(|| BurninError::BadSetting {
            key: "agent_burnin_vm_vm-bytes",
            value: v.to_string(),
            expected: "a percentage (98%) or a byte count (512M)",
        })?,
    };
    let available = host
        .read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_mem_available(&t))
        .ok_or(BurninError::MemInfo)?;
    let report = stress(share.resolve(available), workers, timeout)?;
    Ok(serde_json::to_value(report).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vm_bytes_spellings() {
        let table = [
            (json!("98%"), Some(VmBytes::Fraction(0.98))),
            (json!(" 25 % "), Some(VmBytes::Fraction(0.25))),
            (json!("512m"), Some(VmBytes::Bytes(512 << 20))),
            (json!("1G"), Some(VmBytes::Bytes(1 << 30))),
            (json!("64KB"), Some(VmBytes::Bytes(64 << 10))),
            (json!("4096"), Some(VmBytes::Bytes(4096))),
            (json!(8192), Some(VmBytes::Bytes(8192))),
            (json!("0%"), None),
            (json!("150%"), None),
            (json!("lots"), None),
            (json!(-1), None),
            (json!(true), None),
        ];
        for (value, expected) in table {
            assert_eq!(VmBytes::parse(&value), expected, "{value}");
        }
        assert_eq!(VmBytes::Fraction(0.5).resolve(1000), 500);
        assert_eq!(VmBytes::Bytes(5000).resolve(1000), 1000);
        assert_eq!(VmBytes::Bytes(500).resolve(1000), 500);
    }

    #[test]
    fn mem_available_from_meminfo() {
        let text = "MemTotal:  2048 kB\nMemFree:   100 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(parse_mem_available(text), Some(1 << 20));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: many kB\n"), None);
    }

    #[test]
    fn a_corrupted_word_is_found_where_it_is() {
        let mut words = vec![0u64; 1024];
        fill(&mut words, 100, 3);
        assert_eq!(check(&words, 100, 3), None);
        // Another pass's pattern differs everywhere.
        assert_eq!(check(&words, 100, 4).map(|m| m.count), Some(1024));
        words[17] ^= 1 << 40;
        let m = check(&words, 100, 3).unwrap();
        assert_eq!(m.count, 1);
        assert_eq!(m.first, (117, pattern(3, 117), pattern(3, 117) ^ (1 << 40)));
        let err = BurninError::MemoryErrors {
            bytes: 8192,
            passes: 1,
            errors: m.count,
            first_offset: m.first.0 * WORD,
            expected: m.first.1,
            found: m.first.2,
        };
        assert!(err.to_string().contains("1 wrong words"), "{err}");
        assert!(err.to_string().contains("at byte 936"), "{err}");
    }

    #[test]
    fn the_step_tests_its_share_of_the_available_memory() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(host.path("/proc")).unwrap();
        std::fs::write(host.path("/proc/meminfo"), "MemAvailable:    4096 kB\n").unwrap();
        let node = json!({"driver_info": {"agent_burnin_vm_timeout": "0.05",
                                          "agent_burnin_vm_vm": "2",
                                          "agent_burnin_vm_vm-bytes": "50%"}});
        let result = burnin_memory(&host, Some(&node)).unwrap();
        assert_eq!(result["bytes"], 2048 * 1024);
        assert_eq!(result["workers"], 2);
        assert_eq!(result["errors"], 0);
        assert!(result["passes"].as_u64().unwrap() >= 1, "{result}");

        // Asking for more than is available tests what is available.
        let node = json!({"driver_info": {"agent_burnin_vm_timeout": 0.01,
                                          "agent_burnin_vm_vm-bytes": "1T"}});
        let result = burnin_memory(&host, Some(&node)).unwrap();
        assert_eq!(result["bytes"], 4096 * 1024);

        let bad = json!({"driver_info": {"agent_burnin_vm_timeout": 0.01,
                                         "agent_burnin_vm_vm-bytes": "most"}});
        let err = burnin_memory(&host, Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("agent_burnin_vm_vm-bytes is \"most\""), "{err}");

        let tiny = json!({"driver_info": {"agent_burnin_vm_timeout": 0.01,
                                          "agent_burnin_vm_vm-bytes": "7"}});
        let err = burnin_memory(&host, Some(&tiny)).unwrap_err();
        assert_eq!(err.to_string(), "7 bytes of memory is too little to test");

        std::fs::write(host.path("/proc/meminfo"), "MemTotal: 1 kB\n").unwrap();
        let node = json!({"driver_info": {"agent_burnin_vm_timeout": 0.01}});
        assert!(matches!(burnin_memory(&host, Some(&node)), Err(BurninError::MemInfo)));
    }
}
