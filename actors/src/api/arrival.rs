//! How late a peer's request arrives, judged without trusting its clock.
//!
//! A request a peer gave up on must never run: the peer may have handed it
//! to another replica meanwhile, and a write run late would be stamped
//! with a context newer than the one it was sent against, replacing writes
//! acknowledged after it. Wall clocks cannot tell lateness (they are
//! skewed, and they step); each frame instead carries when it was sent by
//! its sender's monotonic clock. On one connection, the smallest gap seen
//! between that and this node's monotonic clock is the two clocks' offset
//! plus the quickest delivery; a frame's gap above that smallest one is
//! how long it waited on the way: in a cut link's retransmissions, in a
//! paused process's socket. The offset cancels out, so skew does not
//! matter, and lateness is never overestimated.

use std::sync::OnceLock;
use std::time::Duration;

/// This process's monotonic clock in µs from its first reading (signed:
/// simulated nodes of one process may read clocks that started apart).
/// It reads tokio's clock, the node's time source, which the simulator
/// pauses and moves by hand.
pub fn mono_us() -> i64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let now = tokio::time::Instant::now().into_std();
    let epoch = SIMULATED_EPOCH.with(|e| e.get()).unwrap_or_else(|| *EPOCH.get_or_init(|| now));
    match now.checked_duration_since(epoch) {
        Some(after) => after.as_micros() as i64,
        None => -(epoch.duration_since(now).as_micros() as i64),
    }
}

thread_local! {
    /// The simulator's epoch for its thread, so a run sends the same
    /// bytes whatever ran in the process before it.
    static SIMULATED_EPOCH: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Counts this thread's monotonic clock from now (the simulator).
pub fn simulate_epoch() {
    SIMULATED_EPOCH.with(|e| e.set(Some(tokio::time::Instant::now().into_std())));
}

/// One connection's measure of delivery: the smallest gap seen so far.
#[derive(Debug, Default, Clone)]
pub struct Lateness {
    least_gap_us: Option<i64>,
}

impl Lateness {
    /// How long a frame sent at `sent_us` (the sender's clock) and
    /// received at `received_us` (this node's) waited beyond the quickest
    /// delivery seen on this connection; the frame itself counts.
    pub fn of(&mut self, sent_us: i64, received_us: i64) -> Duration {
        let gap = received_us.saturating_sub(sent_us);
        let least = self.least_gap_us.map_or(gap, |least| least.min(gap));
        self.least_gap_us = Some(least);
        Duration::from_micros(gap.saturating_sub(least) as u64)
    }

    /// What is left of a budget of `budget_ms` given on sending, for a
    /// frame that waited `late`; None when nothing is.
    pub fn left(budget_ms: u32, late: Duration) -> Option<Duration> {
        Duration::from_millis(budget_ms.into()).checked_sub(late).filter(|left| !left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_held_on_the_way_is_late_by_the_time_it_was_held() {
        let mut lateness = Lateness::default();
        // The sender's clock runs far ahead of ours: skew cancels out.
        let skew = 9_000_000_000;
        assert_eq!(lateness.of(skew + 1_000, 1_100), Duration::ZERO, "the first frame sets the measure");
        assert_eq!(lateness.of(skew + 2_000, 2_100), Duration::ZERO, "delivered as quickly");
        assert_eq!(lateness.of(skew + 3_000, 3_400), Duration::from_micros(300));
        assert_eq!(lateness.of(skew + 4_000, 2_504_100), Duration::from_millis(2_500), "held 2.5 s in a cut link");
        assert_eq!(lateness.of(skew + 5_000, 5_050), Duration::ZERO, "quicker than ever: the new measure");
        assert_eq!(lateness.of(skew + 6_000, 6_150), Duration::from_micros(100));
    }

    #[test]
    fn a_sender_behind_our_clock_is_measured_the_same() {
        let mut lateness = Lateness::default();
        assert_eq!(lateness.of(5_000_000, -100), Duration::ZERO);
        assert_eq!(lateness.of(5_001_000, 1_500), Duration::from_micros(600));
    }

    #[test]
    fn what_is_left_of_a_budget() {
        assert_eq!(Lateness::left(300, Duration::from_millis(100)), Some(Duration::from_millis(200)));
        assert_eq!(Lateness::left(300, Duration::from_millis(300)), None, "given up on at this moment");
        assert_eq!(Lateness::left(300, Duration::from_secs(2)), None);
        assert_eq!(Lateness::left(0, Duration::ZERO), None);
    }
}
