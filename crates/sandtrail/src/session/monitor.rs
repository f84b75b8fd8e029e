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

/// Watches the fill level of a session's disk quota (the tmpfs of its writable layer) and
/// reports `limit.hit` disk_quota when free space drops below max(1 MiB, 1% of the quota).
/// It reports again only after free space has recovered above 10% of the quota, so a session
/// that stays full produces one event.
#[derive(Debug, Default)]
pub struct DiskWatcher {
    armed: bool,
}

impl DiskWatcher {
    /// A watcher that reports the first time the quota is reached.
    pub fn new() -> Self {
        DiskWatcher { armed: true }
    }

    /// Feed a reading (used, limit) in bytes, as from `isolate::disk_usage`; returns the
    /// limit hit it shows, if any.
    pub fn observe(&mut self, reading: Option<(u64, u64)>) -> Option<LimitInfo> {
        let (used, limit) = reading?;
        if limit == 0 {
            return None;
        }
        let free = limit.saturating_sub(used);
        if self.armed && free < (1u64 << 20).max(limit / 100) {
            self.armed = false;
            return Some(limit_info(
                LimitType::DiskQuota,
                used,
                limit,
                "bytes",
                LimitAction::Deny,
            ));
        }
        if !self.armed && free > limit / 10 {
            self.armed = true;
        }
        None
    }
}

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
    fn disk_quota_is_reported_once_until_it_recovers() {
        let q = 32u64 << 20;
        let mut w = DiskWatcher::new();
        assert!(w.observe(None).is_none(), "no quota, no event");
        assert!(w.observe(Some((q / 2, q))).is_none());
        // Below max(1 MiB, 1%) free: reported.
        let hit = w.observe(Some((q - (1 << 19), q))).unwrap();
        assert_eq!(hit.limit_type, LimitType::DiskQuota);
        assert_eq!((hit.measured, hit.limit), (q - (1 << 19), q));
        assert_eq!(hit.unit, "bytes");
        assert_eq!(hit.action, LimitAction::Deny);
        // Still full, or only slightly recovered: nothing new.
        assert!(w.observe(Some((q, q))).is_none());
        assert!(w.observe(Some((q - (2 << 20), q))).is_none());
        assert!(w.observe(Some((q, q))).is_none());
        // Recovered above 10% free, then full again: a second event.
        assert!(w.observe(Some((q / 2, q))).is_none());
        assert!(w.observe(Some((q, q))).is_some());
        // A large quota: 1% is the threshold.
        let big = 10u64 << 30;
        let mut w = DiskWatcher::new();
        assert!(w.observe(Some((big - big / 50, big))).is_none());
        assert!(w.observe(Some((big - big / 200, big))).is_some());
    }

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
