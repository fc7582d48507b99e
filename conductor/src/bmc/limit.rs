//! A conductor-wide cap on BMC requests in flight.
//!
//! Each driver already keeps one request in flight per BMC; this bounds the sum over all
//! BMCs, so a sweep over thousands of nodes cannot flood the management network or the
//! conductor's own sockets. The drivers take one permit per request/reply exchange (an
//! IPMI datagram and its answer, retransmissions included; one HTTP request and its
//! body) and never hold one across a wait for the server to change state.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default cap (`[bmc] max_concurrent_requests`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

/// A shared cap on BMC requests in flight; clones share the same permits.
#[derive(Debug, Clone)]
pub struct RequestLimiter {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// One request's right to be in flight; released when dropped.
#[derive(Debug)]
pub struct RequestPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestLimiter {
    /// At most `limit` requests at once (at least 1).
    pub fn new(limit: usize) -> RequestLimiter {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        RequestLimiter { permits: Arc::new(Semaphore::new(limit)), limit }
    }

    /// A limiter that never makes anyone wait in practice (drivers built without one).
    pub fn unbounded() -> RequestLimiter {
        RequestLimiter::new(Semaphore::MAX_PERMITS)
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits().min(self.limit)
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> RequestPermit {
        // The semaphore is never closed, so acquiring only fails in theory; going ahead
        // unlimited then is better than failing a BMC call.
        RequestPermit { _permit: Arc::clone(&self.permits).acquire_owned().await.ok() }
    }
}

impl Default for RequestLimiter {
    fn default() -> Self {
        RequestLimiter::new(DEFAULT_MAX_CONCURRENT_REQUESTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_shared_by_clones_and_released_on_drop() {
        let limiter = RequestLimiter::new(2);
        let other = limiter.clone();
        let a = limiter.acquire().await;
        let _b = other.acquire().await;
        assert_eq!(limiter.in_flight(), 2);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), other.acquire());
        assert!(third.await.is_err(), "a third permit was granted over a cap of 2");
        drop(a);
        assert_eq!(limiter.in_flight(), 1);
        let _c = tokio::time::timeout(std::time::Duration::from_secs(1), other.acquire())
            .await
            .expect("a released permit is available again");
        assert_eq!(other.in_flight(), 2);
    }

    #[test]
    fn a_zero_limit_means_one() {
        assert_eq!(RequestLimiter::new(0).limit(), 1);
        assert_eq!(RequestLimiter::default().limit(), DEFAULT_MAX_CONCURRENT_REQUESTS);
    }
}
