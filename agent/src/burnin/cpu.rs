//! `burnin_cpu`: every CPU (or `agent_burnin_cpu_cpu` of them) computes the same
//! integer and floating-point workload over and over until the timeout, and each result
//! is compared with the one computed before the run started. A CPU that miscomputes
//! under sustained load shows up as an error count instead of a silent wrong answer.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{count_setting, cpu_count, timeout_setting, BurninError};

/// Iterations of one round; long enough that the clock is read rarely.
const ROUND_ITERATIONS: u32 = 50_000;

/// One round of the workload from `seed`: 64-bit multiply/rotate/xor mixing and a
/// floating-point recurrence, folded into one digest.
pub fn round(seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut f = 1.000_001_f64;
    for i in 0..ROUND_ITERATIONS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i % 63);
        f = (f * 1.000_000_3 + (x & 0xffff) as f64 * 1e-9).sqrt() + 0.5;
    }
    x ^ f.to_bits()
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuReport {
    pub workers: usize,
    pub duration_s: f64,
    pub rounds: u64,
    pub errors: u64,
}

/// Runs `workers` threads for `duration`; each compares every round with `expected`.
pub fn stress(workers: usize, duration: Duration) -> Result<CpuReport, BurninError> {
    let seed = black_box(0x0123_4567_89ab_cdef_u64);
    let expected = round(seed);
    let started = Instant::now();
    let deadline = started + duration;
    let rounds = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let panicked = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    // At least one round each, however short the timeout.
                    loop {
                        if round(black_box(seed)) != expected {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            if handle.join().is_err() {
                panicked.store(true, Ordering::Relaxed);
            }
        }
    });
    if panicked.load(Ordering::Relaxed) {
        return Err(BurninError::WorkerPanicked);
    }
    let report = CpuReport {
        workers,
        duration_s: started.elapsed().as_secs_f64(),
        rounds: rounds.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    };
    if report.errors > 0 {
        return Err(BurninError::CpuErrors {
            workers,
            rounds: report.rounds,
            errors: report.errors,
        });
    }
    Ok(report)
}

/// The `burnin_cpu` step with the node's settings.
pub fn burnin_cpu(node: Option<&Value>) -> Result<Value, BurninError> {
    let timeout = timeout_setting(node, "agent_burnin_cpu_timeout")?;
    let workers = match count_setting(node, "agent_burnin_cpu_cpu", 0)? {
        0 => cpu_count(),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let report = stress(workers, timeout)?;
    Ok(serde_json::to_value(report).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_workload_depends_on_its_seed() {
        assert_eq!(round(7), round(7));
        assert_ne!(round(7), round(8));
    }

    #[test]
    fn every_worker_runs_until_the_timeout() {
        let started = Instant::now();
        let node = json!({"driver_info": {"agent_burnin_cpu_timeout": "0.2",
                                          "agent_burnin_cpu_cpu": 3}});
        let result = burnin_cpu(Some(&node)).unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        assert_eq!(result["workers"], 3);
        assert_eq!(result["errors"], 0);
        assert!(result["rounds"].as_u64().unwrap() >= 3, "{result}");
        assert!(result["duration_s"].as_f64().unwrap() >= 0.2, "{result}");
    }

    #[test]
    fn zero_cpus_means_all_of_them() {
        let node = json!({"driver_info": {"agent_burnin_cpu_timeout": 0.01}});
        let result = burnin_cpu(Some(&node)).unwrap();
        assert_eq!(result["workers"], cpu_count());
        let bad = json!({"driver_info": {"agent_burnin_cpu_timeout": 0}});
        assert!(matches!(burnin_cpu(Some(&bad)), Err(BurninError::BadSetting { .. })));
    }
}
