//! The phi accrual failure detector (Hayashibara et al., 2004, as Akka and
//! Cassandra use it). Instead of "silent for X ms means dead", it keeps the
//! recent intervals between a member's heartbeats and says how unlikely the
//! current silence is under them: phi = -log10(P(an interval this long)).
//! phi 1 is a 10% chance of being wrong, phi 8 one in 10^8. The threshold
//! adapts to how heartbeats really arrive (gossip is irregular), so a
//! steady member is never suspected for its usual jitter and a stopped one
//! is suspected within a few of its usual intervals. Pure: time comes in
//! as an argument.

use std::collections::VecDeque;

/// Intervals remembered per member.
const WINDOW: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiSettings {
    /// Suspect a member once phi exceeds this.
    pub threshold: f64,
    /// The interval assumed before any was measured (the gossip interval).
    pub first_estimate_ms: f64,
    /// A floor under the measured deviation, so a very regular member is
    /// not suspected for a few milliseconds' delay.
    pub min_std_dev_ms: f64,
    /// Silence taken as usual beyond the mean (Akka's acceptable heartbeat
    /// pause): a member is heard when either end picks the other, and a
    /// period in which neither did, or a paused process, is no failure.
    pub acceptable_pause_ms: f64,
}

impl PhiSettings {
    /// Settings for heartbeats that arrive about every `interval_ms`.
    pub fn for_interval(threshold: f64, interval_ms: u64) -> Self {
        let interval = interval_ms as f64;
        PhiSettings {
            threshold,
            first_estimate_ms: interval,
            min_std_dev_ms: (interval / 4.0).max(50.0),
            acceptable_pause_ms: interval,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PhiDetector {
    intervals: VecDeque<f64>,
    sum: f64,
    sum_of_squares: f64,
    last_ms: Option<u64>,
}

impl PhiDetector {
    /// A detector that has heard nothing yet, its history seeded (as Akka
    /// does) with two intervals around the first estimate.
    pub fn new(settings: &PhiSettings) -> Self {
        let mut d = PhiDetector { intervals: VecDeque::new(), sum: 0.0, sum_of_squares: 0.0, last_ms: None };
        let (mean, spread) = (settings.first_estimate_ms, settings.first_estimate_ms / 4.0);
        d.push(mean - spread);
        d.push(mean + spread);
        d
    }

    fn push(&mut self, interval: f64) {
        if self.intervals.len() == WINDOW {
            let old = self.intervals.pop_front().unwrap_or_default();
            self.sum -= old;
            self.sum_of_squares -= old * old;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_of_squares += interval * interval;
    }

    /// A heartbeat arrived at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) {
        if let Some(last) = self.last_ms {
            self.push(now_ms.saturating_sub(last) as f64);
        }
        self.last_ms = Some(now_ms);
    }

    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// How suspicious the silence since the last heartbeat is at `now_ms`;
    /// infinite when nothing was ever heard.
    pub fn phi(&self, now_ms: u64, settings: &PhiSettings) -> f64 {
        let Some(last) = self.last_ms else { return f64::INFINITY };
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let variance = (self.sum_of_squares / n - mean * mean).max(0.0);
        let std_dev = variance.sqrt().max(settings.min_std_dev_ms);
        phi_of(now_ms.saturating_sub(last) as f64, mean + settings.acceptable_pause_ms, std_dev)
    }

    pub fn is_suspect(&self, now_ms: u64, settings: &PhiSettings) -> bool {
        self.phi(now_ms, settings) > settings.threshold
    }
}

/// -log10 of the chance that a normal(mean, std_dev) interval is longer
/// than `elapsed`, by the logistic approximation of the normal CDF that
/// Akka uses (exact enough, and no erf needed).
fn phi_of(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed > mean {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn settings() -> PhiSettings {
        PhiSettings::for_interval(8.0, 1000)
    }

    #[test]
    fn phi_rises_with_silence() {
        let s = settings();
        let mut d = PhiDetector::new(&s);
        assert!(d.phi(0, &s).is_infinite(), "never heard: suspect");
        for t in 1..=10 {
            d.heartbeat(t * 1000);
        }
        let at = |ms: u64| d.phi(10_000 + ms, &s);
        assert!(at(0) < 0.5 && at(1000) < 1.0, "on time is not suspicious");
        assert!(at(1000) < at(2000) && at(2000) < at(3000));
        assert!(at(5000) > 8.0, "five missed beats are: {}", at(5000));
    }

    /// Heartbeats every second with up to 300 ms of jitter, for a simulated
    /// hour, checked every 10 ms: never suspected. Then they stop: suspected
    /// within a bounded time. Both figures are printed.
    #[test]
    fn an_hour_of_jittery_heartbeats_has_no_false_suspicion_and_a_stop_is_caught() {
        let s = settings();
        let mut d = PhiDetector::new(&s);
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let hour_ms = 3_600_000u64;
        let mut next_beat = 0u64;
        let mut max_phi: f64 = 0.0;
        let mut now = 0u64;
        while now <= hour_ms {
            if now >= next_beat {
                d.heartbeat(now);
                next_beat = (now / 1000 + 1) * 1000 + rng.gen_range(0..=300);
            }
            if d.last_heartbeat_ms().is_some() {
                max_phi = max_phi.max(d.phi(now, &s));
            }
            now += 10;
        }
        assert!(max_phi < s.threshold, "a false suspicion: phi reached {max_phi:.2}");
        let last = d.last_heartbeat_ms().unwrap();
        let mut t = last;
        while !d.is_suspect(t, &s) {
            t += 10;
            assert!(t - last < 10_000, "not suspected 10 s after the last heartbeat");
        }
        println!(
            "phi accrual (1 s heartbeats, jitter up to 300 ms, threshold {}): highest phi in an hour {max_phi:.2}; \
             suspected {} ms after the last heartbeat",
            s.threshold,
            t - last
        );
        assert!(t - last <= 4000, "suspected only {} ms after the last heartbeat", t - last);
    }
}
