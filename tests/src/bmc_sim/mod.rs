//! Simulated BMCs by the thousand, for the power-sync sweep benchmark and its tests.
//!
//! - [`ipmi`]: an IPMI 2.0 (RMCP+) responder, one UDP socket per BMC on `127.0.0.1`,
//!   cipher suites 3 and 17 with integrity and AES-CBC-128 confidentiality, good enough
//!   for `ipmitool -I lanplus`.
//! - [`redfish`]: an HTTP Redfish service (basic authentication) exposing many
//!   `ComputerSystem`s over one or more loopback listeners.
//!
//! Both count, per BMC, the most requests they saw in flight at once (from receipt to
//! reply) and the same over all BMCs, which is how the benchmark proves "at most one
//! request in flight per BMC" and the conductor-wide cap.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

pub mod ipmi;
pub mod redfish;

/// Requests in flight now, and the most seen at once since the last reset.
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    /// `n` requests arrived.
    pub fn enter(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    /// `n` requests were answered (or dropped).
    pub fn leave(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Forgets the maximum (requests in flight now still count).
    pub fn reset(&self) {
        self.max.store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// What a simulator saw since its counters were last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests answered (IPMI: datagrams, session setup included; Redfish: HTTP requests).
    pub requests: u64,
    /// Sessions established (IPMI RAKP 4 with status 0); always 0 for Redfish.
    pub sessions_opened: u64,
    /// Requests rejected for bad credentials.
    pub auth_failures: u64,
    /// The most requests one BMC had in flight at once.
    pub max_in_flight_per_bmc: usize,
    /// The most requests all BMCs together had in flight at once.
    pub max_in_flight_total: usize,
}
