//! The burst detector: many blocked attempts in a short time make one `policy.violation`.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use sandtrail_event::{Decision, Event, Kind, PolicyInfo, Severity, Source};

use crate::policy::BurstConfig;

/// The rule name on burst violations.
pub const BURST_RULE: &str = "burst:blocked-egress";

/// A burst of blocked attempts: one `policy.violation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Unix time of the attempt that completed the burst, ns.
    pub time_ns: u64,
    /// Blocked attempts in the burst.
    pub count: u32,
    /// The window they fell in.
    pub window: Duration,
    /// The distinct things attempted, oldest first (at most 10).
    pub targets: Vec<String>,
    /// The rules that blocked them, distinct, oldest first.
    pub rules: Vec<String>,
}

impl Violation {
    /// What happened, in words (the event's `policy.what`).
    pub fn what(&self) -> String {
        format!(
            "{} blocked egress attempts within {} s: {}",
            self.count,
            self.window.as_secs_f64(),
            self.targets.join(", ")
        )
    }

    /// The `policy.violation` event (severity high).
    pub fn to_event(&self, session_id: &str, host_id: &str) -> Event {
        let mut e = Event::new(
            Kind::PolicyViolation,
            Source::Dns,
            Some(session_id.to_string()),
            host_id,
            self.time_ns,
        );
        e.severity = Severity::High;
        e.policy = Some(Box::new(PolicyInfo {
            decision: Decision::Deny,
            rule: Some(BURST_RULE.to_string()),
            what: Some(self.what()),
        }));
        e
    }
}

/// Counts blocked attempts in a sliding window; when `count` fall within `window` it returns one
/// [`Violation`] and starts counting afresh (so a sustained flood gives one violation per
/// `count` attempts, not one per attempt).
#[derive(Debug)]
pub struct BurstDetector {
    cfg: BurstConfig,
    recent: VecDeque<(Instant, String, String)>,
}

impl BurstDetector {
    /// A detector with `cfg`'s threshold.
    pub fn new(cfg: BurstConfig) -> BurstDetector {
        BurstDetector {
            cfg,
            recent: VecDeque::new(),
        }
    }

    /// Records one blocked attempt at `what` (a name, or `ip:port`) blocked by `rule`.
    pub fn blocked(&mut self, now: Instant, what: &str, rule: &str) -> Option<Violation> {
        while let Some((t, _, _)) = self.recent.front() {
            if now.saturating_duration_since(*t) >= self.cfg.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent
            .push_back((now, what.to_string(), rule.to_string()));
        if self.recent.len() < self.cfg.count as usize {
            return None;
        }
        let mut targets: Vec<String> = Vec::new();
        let mut rules: Vec<String> = Vec::new();
        for (_, w, r) in self.recent.drain(..) {
            if targets.len() < 10 && !targets.contains(&w) {
                targets.push(w);
            }
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        Some(Violation {
            time_ns: unix_ns(SystemTime::now()),
            count: self.cfg.count,
            window: self.cfg.window,
            targets,
            rules,
        })
    }
}

/// Unix time in ns (0 before 1970).
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_in_window_gives_one_violation() {
        let mut b = BurstDetector::new(BurstConfig {
            count: 3,
            window: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(b.blocked(t0, "a.invalid", "default:allowlist").is_none());
        assert!(b
            .blocked(t0 + s(1), "a.invalid", "default:allowlist")
            .is_none());
        // The first falls out of the window: still two.
        assert!(b
            .blocked(t0 + s(10), "b.invalid", "deny:metadata")
            .is_none());
        let v = b
            .blocked(
                t0 + Duration::from_millis(10_500),
                "c.invalid",
                "default:allowlist",
            )
            .unwrap();
        assert_eq!(v.count, 3);
        assert_eq!(v.targets, vec!["a.invalid", "b.invalid", "c.invalid"]);
        assert_eq!(v.rules, vec!["default:allowlist", "deny:metadata"]);
        assert_eq!(
            v.what(),
            "3 blocked egress attempts within 10 s: a.invalid, b.invalid, c.invalid"
        );
        // Counting starts afresh.
        assert!(b
            .blocked(t0 + s(12), "d.invalid", "default:allowlist")
            .is_none());
        assert!(b
            .blocked(t0 + s(12), "d.invalid", "default:allowlist")
            .is_none());
        assert!(b
            .blocked(t0 + s(12), "d.invalid", "default:allowlist")
            .is_some());

        let e = v.to_event("ses_1", "host-a");
        e.validate().unwrap();
        assert_eq!(e.kind, Kind::PolicyViolation);
        assert_eq!(e.policy.unwrap().rule.as_deref(), Some(BURST_RULE));
    }

    #[test]
    fn default_threshold_is_ten_in_ten_seconds() {
        let mut b = BurstDetector::new(BurstConfig::default());
        let t0 = Instant::now();
        for i in 0..9 {
            assert!(b.blocked(t0, &format!("n{i}.invalid"), "r").is_none());
        }
        assert!(b
            .blocked(t0 + Duration::from_millis(9999), "x", "r")
            .is_some());
    }
}
