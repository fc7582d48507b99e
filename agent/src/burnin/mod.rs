//! Burn-in steps: load the CPUs, the memory and the disks for a while and fail when the
//! hardware gives a wrong answer.
//!
//! ironic-python-agent runs `stress-ng` and `fio` for these; Ferric does the work itself
//! so the ramdisk needs no extra tools, and reads the same settings from the node's
//! `driver_info` (values may be numbers or the strings `baremetal node set
//! --driver-info` stores):
//!
//! | step | settings (default) |
//! |---|---|
//! | `burnin_cpu` | `agent_burnin_cpu_timeout` (86400 s), `agent_burnin_cpu_cpu` (0 = every CPU) |
//! | `burnin_memory` | `agent_burnin_vm_timeout` (86400 s), `agent_burnin_vm_vm-bytes` (98%), `agent_burnin_vm_vm` (0 = one worker per CPU) |
//! | `burnin_disk` | `agent_burnin_fio_disk_runtime` (0 = no time limit), `agent_burnin_fio_disk_loops` (4) |
//!
//! Each step's result says what was done and how many errors were found; any error fails
//! the step, naming where it was seen.

pub mod cpu;
pub mod disk;
pub mod memory;

use std::time::Duration;

use serde_json::Value;

/// Why a burn-in step failed.
#[derive(Debug, thiserror::Error)]
pub enum BurninError {
    #[error("driver_info {key} is {value}, expected {expected}")]
    BadSetting { key: &'static str, value: String, expected: &'static str },
    #[error("{workers} CPU workers computed {errors} wrong results in {rounds} rounds")]
    CpuErrors { workers: usize, rounds: u64, errors: u64 },
    #[error("cannot read the available memory from /proc/meminfo")]
    MemInfo,
    #[error("{bytes} bytes of memory is too little to test")]
    TooLittleMemory { bytes: u64 },
    #[error("cannot allocate {bytes} bytes of memory to test")]
    Allocate { bytes: u64 },
    #[error(
        "memory test found {errors} wrong words in {passes} passes over {bytes} bytes; the first \
         at byte {first_offset} of the test area (wrote {expected:#018x}, read {found:#018x})"
    )]
    MemoryErrors {
        bytes: u64,
        passes: u64,
        errors: u64,
        first_offset: u64,
        expected: u64,
        found: u64,
    },
    #[error("cannot list the host's disks")]
    Inventory(#[source] crate::inventory::InventoryError),
    #[error("the host has no disk to burn in")]
    NoDisks,
    #[error("disk burn-in failed on {}", .failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    Disks { failures: Vec<disk::DiskFailure> },
    #[error("the burn-in worker thread panicked")]
    WorkerPanicked,
}

/// The node's `driver_info`, or an empty object.
fn driver_info(node: Option<&Value>) -> &serde_json::Map<String, Value> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
    node.and_then(|n| n.get("driver_info"))
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new))
}

/// A non-negative number setting: a JSON number or a string holding one.
fn number_setting(
    node: Option<&Value>,
    key: &'static str,
    default: f64,
) -> Result<f64, BurninError> {
    let bad = |value: &Value| BurninError::BadSetting {
        key,
        value: value.to_string(),
        expected: "a non-negative number",
    };
    let Some(value) = driver_info(node).get(key) else { return Ok(default) };
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Null => return Ok(default),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(bad(value)),
    }
}

/// A whole-number setting (counts: CPUs, workers, loops).
fn count_setting(
    node: Option<&Value>,
    key: &'static str,
    default: u64,
) -> Result<u64, BurninError> {
    let n = number_setting(node, key, default as f64)?;
    if n.fract() != 0.0 || n > u32::MAX as f64 {
        return Err(BurninError::BadSetting {
            key,
            value: n.to_string(),
            expected: "a whole number",
        });
    }
    Ok(n as u64)
}

/// A duration in seconds that must be above zero: `stress-ng` reads 0 as "run forever",
/// which can never finish a step. Fractions are accepted.
fn timeout_setting(node: Option<&Value>, key: &'static str) -> Result<Duration, BurninError> {
    let seconds = number_setting(node, key, DEFAULT_TIMEOUT_S)?;
    if seconds <= 0.0 {
        return Err(BurninError::BadSetting {
            key,
            value: seconds.to_string(),
            expected: "a number of seconds above 0",
        });
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// ironic-python-agent's default burn-in length: a day.
pub const DEFAULT_TIMEOUT_S: f64 = 86400.0;

/// How many workers `0` means: one per CPU the agent may use.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_read_numbers_and_strings_and_refuse_the_rest() {
        let node = json!({"driver_info": {
            "agent_burnin_cpu_timeout": "600", "agent_burnin_cpu_cpu": 2,
            "agent_burnin_vm_timeout": 0.25, "bad": "ten", "neg": -1, "zero": 0,
            "half": 1.5, "list": [1]}});
        let n = Some(&node);
        assert_eq!(
            timeout_setting(n, "agent_burnin_cpu_timeout").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            timeout_setting(n, "agent_burnin_vm_timeout").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(timeout_setting(n, "absent").unwrap(), Duration::from_secs(86400));
        assert_eq!(timeout_setting(None, "absent").unwrap(), Duration::from_secs(86400));
        assert_eq!(count_setting(n, "agent_burnin_cpu_cpu", 0).unwrap(), 2);
        assert_eq!(count_setting(n, "absent", 4).unwrap(), 4);
        for (key, fragment) in [
            ("bad", "driver_info bad is \"ten\", expected a non-negative number"),
            ("neg", "driver_info neg is -1, expected a non-negative number"),
            ("list", "driver_info list is [1], expected a non-negative number"),
        ] {
            let err = count_setting(n, key, 0).unwrap_err();
            assert_eq!(err.to_string(), fragment);
        }
        assert!(count_setting(n, "half", 0).unwrap_err().to_string().contains("whole number"));
        let err = timeout_setting(n, "zero").unwrap_err();
        assert!(err.to_string().contains("above 0"), "{err}");
    }
}
