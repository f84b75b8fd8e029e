//! Seccomp denials of a sandbox turned into `policy.violation` events, without letting an agent
//! that calls a denied syscall in a loop flood the log: the first denial of a syscall by a
//! process is logged at once; repeats within [`WINDOW`] are counted and logged as one summary
//! event when the window closes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sandtrail_event::{Decision, Event, Kind, PolicyInfo, ProcessRef, Severity, Source};
use sandtrail_sandbox::isolate::Denial;
use sandtrail_store::now_ns;

use super::events::Lifecycle;

/// Repeats of one syscall by one process within this window are summarized.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One violation to log: a denial, or a summary of `count` repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The (last) denial.
    pub denial: Denial,
    /// 1 for a single denial; the number of repeats for a summary.
    pub count: u64,
    /// Length of the summarized window.
    pub window: Option<Duration>,
}

struct Open {
    start: Instant,
    repeats: u64,
    last: Denial,
}

/// Rate-limits denials per (pid, syscall).
#[derive(Default)]
pub struct DenialLog {
    open: HashMap<(i32, i32), Open>,
}

impl DenialLog {
    /// Feed one denial seen at `now`; returns what to log now.
    pub fn observe(&mut self, d: Denial, now: Instant) -> Vec<Violation> {
        let mut out = self.flush(now, false);
        let key = (d.pid, d.nr);
        match self.open.get_mut(&key) {
            Some(o) => {
                o.repeats += 1;
                o.last = d;
            }
            None => {
                self.open.insert(
                    key,
                    Open {
                        start: now,
                        repeats: 0,
                        last: d.clone(),
                    },
                );
                out.push(Violation {
                    denial: d,
                    count: 1,
                    window: None,
                });
            }
        }
        out
    }

    /// Closes windows older than [`WINDOW`] (all of them with `all`); returns their summaries.
    pub fn flush(&mut self, now: Instant, all: bool) -> Vec<Violation> {
        let mut out = Vec::new();
        self.open.retain(|_, o| {
            let age = now.saturating_duration_since(o.start);
            if !all && age < WINDOW {
                return true;
            }
            if o.repeats > 0 {
                out.push(Violation {
                    denial: o.last.clone(),
                    count: o.repeats,
                    window: Some(age),
                });
            }
            false
        });
        out.sort_by_key(|v| (v.denial.pid, v.denial.nr));
        out
    }
}

/// The process of a denial, as /proc showed it while the call waited for its answer.
fn process_of(d: &Denial) -> Option<ProcessRef> {
    let ids = d.ids?;
    Some(ProcessRef {
        pid: d.pid as u32,
        ppid: ids.ppid,
        uid: ids.uid,
        euid: ids.euid,
        gid: ids.gid,
        egid: ids.egid,
        exe: d.exe.as_ref()?.display().to_string(),
        exec_id: format!("proc-{}-{}", d.pid, ids.start_ticks),
        comm: d.comm.clone(),
    })
}

impl Lifecycle {
    /// policy.violation for a seccomp denial (or a summary of repeats).
    pub fn violation(&self, v: &Violation) -> Event {
        let d = &v.denial;
        let name = d.name.unwrap_or("an x32 syscall");
        let who = d
            .comm
            .as_deref()
            .map(|c| format!("{c} (pid {})", d.pid))
            .unwrap_or_else(|| format!("pid {}", d.pid));
        let what = match v.window {
            None => format!("{name}() by {who} denied by the sandbox's seccomp policy (EPERM)"),
            Some(w) => format!(
                "{name}() by {who} denied {} more time(s) within {:.1} s by the sandbox's seccomp policy (EPERM)",
                v.count,
                w.as_secs_f64()
            ),
        };
        let mut e = Event::new(
            Kind::PolicyViolation,
            Source::Sandbox,
            Some(self.id.session_id.clone()),
            &self.host_id,
            now_ns(),
        );
        e.severity = Severity::High;
        e.process = process_of(d);
        e.policy = Some(Box::new(PolicyInfo {
            decision: Decision::Deny,
            rule: Some(format!("seccomp:{}", d.name.unwrap_or("x32"))),
            what: Some(what),
        }));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandtrail_sandbox::isolate::Arch;

    fn denial(pid: i32, nr: i32, name: &'static str) -> Denial {
        Denial {
            pid,
            nr,
            name: Some(name),
            arch: Arch::X86_64,
            args: [0; 6],
            time: std::time::SystemTime::UNIX_EPOCH,
            comm: Some("python3".into()),
            exe: None,
            ids: None,
        }
    }

    #[test]
    fn first_denial_at_once_repeats_summarized_per_window() {
        let mut log = DenialLog::default();
        let t0 = Instant::now();
        let v = log.observe(denial(7, 321, "bpf"), t0);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].count, v[0].window), (1, None));
        // Another syscall of the same process, and another process: logged at once too.
        assert_eq!(log.observe(denial(7, 425, "io_uring_setup"), t0).len(), 1);
        assert_eq!(log.observe(denial(8, 321, "bpf"), t0).len(), 1);
        // 999 repeats within the window: nothing now.
        for i in 0..999 {
            let at = t0 + Duration::from_micros(i);
            assert!(log.observe(denial(7, 321, "bpf"), at).is_empty());
        }
        assert!(log.flush(t0 + Duration::from_millis(999), false).is_empty());
        // The window closes: one summary, for the repeated one only.
        let s = log.flush(t0 + WINDOW, false);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].denial.pid, s[0].denial.nr, s[0].count), (7, 321, 999));
        assert_eq!(s[0].window, Some(WINDOW));
        // After the window, the next denial is logged at once again.
        assert_eq!(log.observe(denial(7, 321, "bpf"), t0 + WINDOW * 2).len(), 1);
        assert_eq!(log.observe(denial(7, 321, "bpf"), t0 + WINDOW * 2).len(), 0);
        let end = log.flush(t0 + WINDOW * 2, true);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].count, 1);
    }

    #[test]
    fn event_says_what_and_which_rule() {
        let lc = Lifecycle {
            id: super::super::events::Identity {
                session_id: "s".into(),
                ..Default::default()
            },
            host_id: "h".into(),
        };
        let e = lc.violation(&Violation {
            denial: denial(-1, 321, "bpf"),
            count: 1,
            window: None,
        });
        e.validate().unwrap();
        let p = e.policy.unwrap();
        assert_eq!(p.decision, Decision::Deny);
        assert_eq!(p.rule.as_deref(), Some("seccomp:bpf"));
        assert_eq!(
            p.what.as_deref(),
            Some("bpf() by python3 (pid -1) denied by the sandbox's seccomp policy (EPERM)")
        );
        assert_eq!(e.process, None, "ids unknown: no made-up ones");
    }
}
