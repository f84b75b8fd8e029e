//! Watching a session's cgroup counters and turning changes into `limit.hit` events.
//!
//! Counters are polled; each event says what was measured when the change was seen. CPU
//! throttling is aggregated per window, so a busy session produces one event per window, not
//! one per throttled period.

use std::time::{Duration, Instant};

use sandtrail_event::{LimitAction, LimitInfo, LimitType};
use sandtrail_sandbox::cgroup::Usage;

use super::events::limit_info;

/// How often the counters are read.
pub const POLL: Duration = Duration::from_millis(100);
/// CPU throttling is reported at most once per this window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(1);

/// Turns successive usage readings into limit hits.
pub struct LimitWatcher {
    last: Usage,
    window_start: Instant,
    window_base: Usage,
    /// Highest process count seen.
    pub peak_pids: u64,
}

impl LimitWatcher {
    /// Start from the first reading.
    pub fn new(first: Usage) -> Self {
        LimitWatcher {
            peak_pids: first.pids_current,
            window_base: first.clone(),
            last: first,
            window_start: Instant::now(),
        }
    }

    /// The latest reading.
    pub fn last(&self) -> &Usage {
        &self.last
    }

    /// Feed a new reading; returns the limit hits it shows.
    pub fn observe(&mut self, now: Usage) -> Vec<LimitInfo> {
        let mut hits = Vec::new();
        self.peak_pids = self.peak_pids.max(now.pids_current);
        if now.oom_kills > self.last.oom_kills {
            let mut l = limit_info(
                LimitType::MemoryOom,
                now.memory_peak.max(now.memory_current),
                now.memory_limit.unwrap_or(0),
                "bytes",
                LimitAction::Kill,
            );
            l.periods = Some(now.oom_kills - self.last.oom_kills);
            hits.push(l);
        }
        if now.pids_max_events > self.last.pids_max_events {
            let mut l = limit_info(
                LimitType::Pids,
                now.pids_current,
                now.pids_limit.unwrap_or(0),
                "processes",
                LimitAction::Deny,
            );
            l.periods = Some(now.pids_max_events - self.last.pids_max_events);
            hits.push(l);
        }
        if self.window_start.elapsed() >= THROTTLE_WINDOW {
            let periods = now
                .cpu_throttled_periods
                .saturating_sub(self.window_base.cpu_throttled_periods);
            if periods > 0 {
                let window = self.window_start.elapsed();
                let cpu = now.cpu_ns.saturating_sub(self.window_base.cpu_ns);
                // Measured: CPU used in the window, in millicpus; limit: the quota in millicpus.
                let measured = cpu * 1000 / window.as_nanos().max(1) as u64;
                let limit = now.cpu_quota.map(|(q, p)| q * 1000 / p.max(1)).unwrap_or(0);
                let mut l = limit_info(
                    LimitType::CpuThrottle,
                    measured,
                    limit,
                    "millicpus",
                    LimitAction::Throttle,
                );
                l.periods = Some(periods);
                l.throttled_ns = Some(
                    now.cpu_throttled_ns
                        .saturating_sub(self.window_base.cpu_throttled_ns),
                );
                l.window_ns = Some(window.as_nanos() as u64);
                hits.push(l);
            }
            self.window_start = Instant::now();
            self.window_base = now.clone();
        }
        self.last = now;
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_and_pids_are_reported_once_per_change() {
        let base = Usage {
            memory_limit: Some(64 << 20),
            pids_limit: Some(32),
            ..Default::default()
        };
        let mut w = LimitWatcher::new(base.clone());
        assert!(w.observe(base.clone()).is_empty());
        let oom = Usage {
            oom_kills: 1,
            memory_peak: 67_100_000,
            pids_current: 3,
            pids_max_events: 4,
            ..base.clone()
        };
        let hits = w.observe(oom.clone());
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].limit_type, LimitType::MemoryOom);
        assert_eq!((hits[0].measured, hits[0].limit), (67_100_000, 64 << 20));
        assert_eq!(hits[0].action, LimitAction::Kill);
        assert_eq!(hits[1].limit_type, LimitType::Pids);
        assert_eq!(
            (hits[1].measured, hits[1].limit, hits[1].periods),
            (3, 32, Some(4))
        );
        assert!(w.observe(oom).is_empty(), "no change, no event");
        assert_eq!(w.peak_pids, 3);
    }
}
