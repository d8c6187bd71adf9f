//! Delivery counters, shared by `publish` and the lanes; exported as metrics by the daemon.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of the sink's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Events accepted by `publish` (queued).
    pub accepted: u64,
    /// Events the receiver acknowledged with 2xx.
    pub delivered: u64,
    /// Retry attempts (5xx, timeouts, transport errors).
    pub retried: u64,
    /// Events refused by `publish` because the queue was full.
    pub dropped: u64,
    /// Events given up: refused with 4xx, not encodable, or retried for longer than allowed.
    pub failed: u64,
    /// Events accepted and not yet delivered or given up (the queue's current length).
    pub queued: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicUsize,
}

impl Counters {
    /// Takes a queue slot if fewer than `capacity` are taken; counts a drop otherwise.
    pub(crate) fn try_reserve(&self, capacity: usize) -> bool {
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < capacity).then_some(q + 1)
            })
            .is_ok();
        if reserved {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        reserved
    }

    /// Gives a slot back (after delivery or giving up).
    pub(crate) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Gives back a slot whose event never reached a lane.
    pub(crate) fn unreserve(&self) {
        self.accepted.fetch_sub(1, Ordering::Relaxed);
        self.release();
    }

    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> DeliveryStats {
        DeliveryStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Acquire) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_respects_capacity_and_counts_drops() {
        let c = Counters::default();
        assert!(c.try_reserve(2));
        assert!(c.try_reserve(2));
        assert!(!c.try_reserve(2));
        c.release();
        assert!(c.try_reserve(2));
        c.unreserve();
        let s = c.snapshot();
        assert_eq!((s.accepted, s.dropped, s.queued), (2, 1, 1));
    }

    #[test]
    fn concurrent_reservations_never_exceed_capacity() {
        let c = std::sync::Arc::new(Counters::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).filter(|_| c.try_reserve(100)).count())
            })
            .collect();
        let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(taken, 100);
        let s = c.snapshot();
        assert_eq!((s.accepted, s.dropped, s.queued), (100, 7900, 100));
    }
}
