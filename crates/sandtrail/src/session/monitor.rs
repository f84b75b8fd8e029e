//! Watching a session's cgroup counters and turning changes into `limit.hit` events.
//!
//! Counters are polled; each event says what was measured when the change was seen. CPU
//! throttling and network rate limiting are aggregated per window, so a busy session produces
//! one event per window, not one per throttled period or delayed packet.

use std::time::{Duration, Instant};

use sandtrail_event::{LimitAction, LimitInfo, LimitType};
use sandtrail_sandbox::cgroup::Usage;
use sandtrail_sandbox::net::RateStats;

use super::events::limit_info;

/// How often the counters are read.
pub const POLL: Duration = Duration::from_millis(100);
/// CPU throttling and network rate limiting are reported at most once per this window.
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

/// Watches a session's network rate limit (the `tc` shapers on the host side of its veth, read
/// with `SessionNet::rate_stats`) and reports `limit.hit` net_rate at most once per
/// [`THROTTLE_WINDOW`], for a window in which the shapers dropped or delayed packets:
///
/// - `measured`: the bit rate the limited traffic achieved in the window, in bits/s (link-layer
///   bytes, as the shaper counts them, so it is comparable with the limit). Both directions are
///   limited separately, each to the configured rate; this is the higher rate of the
///   directions that were dropped or delayed.
/// - `limit`: the configured rate, bits/s; `unit`: "bps".
/// - `action`: `deny` if any packet was dropped in the window (the shaper's queue was full),
///   else `throttle` (packets were only delayed).
/// - `periods`: packets dropped plus delay events in the window, both directions. The kernel
///   counts a delay each time the shaper finds too few tokens for the packet at the head of its
///   queue, so one packet can count more than once.
/// - `window_ns`: the window's length.
///
/// Reading the counters runs `tc` twice: read them once per window (e.g. every
/// [`THROTTLE_WINDOW`]), not at every [`POLL`].
#[derive(Debug)]
pub struct NetRateWatcher {
    limit_bps: u64,
    window_start: Instant,
    window_base: RateStats,
}

impl NetRateWatcher {
    /// Start from the first reading, taken now, of a session limited to `limit_bps`.
    pub fn new(first: RateStats, limit_bps: u64) -> Self {
        Self::starting_at(first, limit_bps, Instant::now())
    }

    /// Start from the first reading, taken at `at`.
    pub fn starting_at(first: RateStats, limit_bps: u64, at: Instant) -> Self {
        NetRateWatcher {
            limit_bps,
            window_start: at,
            window_base: first,
        }
    }

    /// Feed a reading taken now; returns the limit hit it completes, if any.
    pub fn observe(&mut self, now: RateStats) -> Option<LimitInfo> {
        self.observe_at(Instant::now(), now)
    }

    /// Feed a reading taken at `at`. Until [`THROTTLE_WINDOW`] has passed since the window
    /// began, nothing is reported; then the window closes, and reports a hit if the shapers
    /// dropped or delayed packets in it.
    pub fn observe_at(&mut self, at: Instant, now: RateStats) -> Option<LimitInfo> {
        let window = at.saturating_duration_since(self.window_start);
        if window < THROTTLE_WINDOW {
            return None;
        }
        // Increase of a counter the kernel keeps in 32 bits (tc's `drops` and `overlimits`),
        // across at most one wrap.
        let delta32 = |now: u64, base: u64| now.wrapping_sub(base) & u64::from(u32::MAX);
        let window_ns = window.as_nanos().max(1);
        let mut dropped = 0;
        let mut periods = 0;
        let mut measured: Option<u64> = None;
        for (d, b) in [
            (now.download, self.window_base.download),
            (now.upload, self.window_base.upload),
        ] {
            let drops = delta32(d.dropped, b.dropped);
            let delays = delta32(d.overlimits, b.overlimits);
            if drops + delays == 0 {
                continue;
            }
            dropped += drops;
            periods += drops + delays;
            let bytes = d.bytes_sent.saturating_sub(b.bytes_sent) as u128;
            let bps = (bytes * 8 * 1_000_000_000 / window_ns).min(u64::MAX as u128) as u64;
            measured = Some(measured.map_or(bps, |m| m.max(bps)));
        }
        self.window_start = at;
        self.window_base = now;
        let measured = measured?;
        let action = if dropped > 0 {
            LimitAction::Deny
        } else {
            LimitAction::Throttle
        };
        let mut l = limit_info(LimitType::NetRate, measured, self.limit_bps, "bps", action);
        l.periods = Some(periods);
        l.window_ns = Some(window_ns as u64);
        Some(l)
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
    use sandtrail_sandbox::net::ShaperStats;

    fn rate(down: (u64, u64, u64), up: (u64, u64, u64)) -> RateStats {
        let s = |(bytes_sent, dropped, overlimits)| ShaperStats {
            bytes_sent,
            packets_sent: 0,
            dropped,
            overlimits,
        };
        RateStats {
            download: s(down),
            upload: s(up),
        }
    }

    #[test]
    fn net_rate_is_reported_once_per_window_when_traffic_is_delayed_or_dropped() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = NetRateWatcher::starting_at(RateStats::default(), 1_000_000, t0);
        // Within the window: nothing, however much happens.
        assert!(w
            .observe_at(ms(100), rate((50_000, 0, 10), (0, 0, 0)))
            .is_none());
        assert!(w
            .observe_at(ms(900), rate((100_000, 0, 30), (0, 0, 0)))
            .is_none());
        // The window closes after 1 s: download was delayed 40 times, nothing dropped. Upload
        // moved bytes but was neither delayed nor dropped, so it does not set the rate.
        let hit = w
            .observe_at(ms(1000), rate((125_000, 0, 40), (90_000, 0, 0)))
            .unwrap();
        assert_eq!(hit.limit_type, LimitType::NetRate);
        assert_eq!((hit.measured, hit.limit), (1_000_000, 1_000_000));
        assert_eq!(hit.unit, "bps");
        assert_eq!(hit.action, LimitAction::Throttle);
        assert_eq!(hit.periods, Some(40));
        assert_eq!(hit.window_ns, Some(1_000_000_000));
        assert_eq!(hit.throttled_ns, None);
        // Next window, 1.5 s: both directions limited, download dropped 3 packets. Measured is
        // the faster of them: upload's 281_250 bytes in 1.5 s = 1_500_000 bit/s.
        assert!(w
            .observe_at(ms(1500), rate((200_000, 1, 45), (200_000, 0, 2)))
            .is_none());
        let hit = w
            .observe_at(ms(2500), rate((312_500, 3, 50), (371_250, 0, 5)))
            .unwrap();
        assert_eq!((hit.measured, hit.limit), (1_500_000, 1_000_000));
        assert_eq!(hit.action, LimitAction::Deny);
        assert_eq!(hit.periods, Some(3 + 10 + 5));
        assert_eq!(hit.window_ns, Some(1_500_000_000));
        // A window with traffic but no drops or delays: nothing, and the window still restarts.
        assert!(w
            .observe_at(ms(3500), rate((400_000, 3, 50), (400_000, 0, 5)))
            .is_none());
        // An upload-only window: 62_500 bytes in 1 s, 2 drops.
        let hit = w
            .observe_at(ms(4500), rate((400_000, 3, 50), (462_500, 2, 5)))
            .unwrap();
        assert_eq!(
            (hit.measured, hit.action, hit.periods),
            (500_000, LimitAction::Deny, Some(2))
        );
    }

    #[test]
    fn net_rate_without_drops_or_delays_is_quiet() {
        let s = rate((1_000, 0, 0), (2_000, 0, 0));
        let mut w = NetRateWatcher::new(s, 1_000_000);
        // Whenever the window closes: the counters did not move, so nothing is reported.
        assert!(w.observe(s).is_none());
        assert!(w.observe(rate((5_000, 0, 0), (9_000, 0, 0))).is_none());
    }

    #[test]
    fn net_rate_counters_that_wrap_at_32_bits_are_followed() {
        let t0 = Instant::now();
        let top = u64::from(u32::MAX);
        let mut w = NetRateWatcher::starting_at(rate((0, top - 1, top), (0, 0, 0)), 8_000, t0);
        let hit = w
            .observe_at(t0 + Duration::from_secs(2), rate((2_000, 1, 4), (0, 0, 0)))
            .unwrap();
        // 3 drops (2^32-2 → 2^32-1 → 0 → 1) and 5 delays (2^32-1 → 4); 2000 bytes in 2 s =
        // 8000 bit/s.
        assert_eq!(
            (hit.measured, hit.limit, hit.action, hit.periods),
            (8_000, 8_000, LimitAction::Deny, Some(8))
        );
        assert_eq!(hit.window_ns, Some(2_000_000_000));
    }

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
