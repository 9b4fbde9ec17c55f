//! Counters shared by the node's actors and reported by `stats`. Atomics,
//! so no request path waits for a stats actor.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency buckets: powers of two in microseconds, up to ~33 s.
const LATENCY_BUCKETS: usize = 26;

/// A lock-free latency histogram with power-of-two buckets: coarse, but
/// enough for `stats` to say p50/p99/p99.9 without costing the hot path.
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().max(1) as u64;
        let i = (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }

    /// The upper bound, in microseconds, of the bucket holding quantile `q`.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return 1u64 << i;
            }
        }
        1u64 << (LATENCY_BUCKETS - 1)
    }
}

#[derive(Default)]
pub struct NodeStats {
    // memcache face
    pub curr_connections: AtomicI64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_touch: AtomicU64,
    pub cmd_flush: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    // store
    pub curr_items: AtomicI64,
    pub bytes: AtomicI64,
    pub total_items: AtomicU64,
    pub reaped_versions: AtomicU64,
    // coordinator
    pub siblings_served: AtomicU64,
    pub unreconciled_get: AtomicU64,
    pub read_repairs: AtomicU64,
    pub quorum_failures: AtomicU64,
    pub get_latency: Latency,
    pub set_latency: Latency,
    // supervision
    pub actor_restarts: AtomicU64,
}

impl NodeStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let l = Latency::default();
        for _ in 0..990 {
            l.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            l.record(Duration::from_millis(10));
        }
        assert_eq!(l.quantile_micros(0.5), 128);
        assert_eq!(l.quantile_micros(0.99), 128);
        assert_eq!(l.quantile_micros(0.999), 16384);
    }
}
