//! A session's kernel events on their way to the store, on the kernel reader's CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

use anyhow::{anyhow, Result};
use sandtrail_event::Event;

use super::monitor::POLL;
use super::{executed, lost_in, EventLog};

/// A thread of the session's that takes the kernel events waiting for it every [`POLL`] and
/// logs them straight from the channel ([`EventLog::log_all`], up to [`CHUNK`] a call). It pins
/// itself beside the kernel reader (`sandtrail_bpf::pin_reader_thread`), where the store's
/// threads run too: the events are then made, handed over and sealed on one CPU. On the 2-vCPU benchmark host the whole pipeline cost
/// +4.4 % with this thread pinned against +8.1 % with it on any CPU in one run; in another
/// +6.4 % either way by the medians, +4.9 against +6.9 % by the fastest quarter
/// (docs/benchmarks.md, tenth session). The session's own thread, which starts the sandbox,
/// stays unpinned.
/// Dropped without [`KernelForwarder::finish`] (the session ended by an error), the thread
/// logs what waits and stops, so that the scope it runs in can end.
pub(super) struct KernelForwarder<'scope> {
    stop: Arc<AtomicBool>,
    thread: Option<ScopedJoinHandle<'scope, Result<Counts>>>,
}

/// Most events logged in one call ([`EventLog::log_all`] holds the store meanwhile).
const CHUNK: usize = 8192;

/// What the forwarded events said: records lost, images executed.
pub(super) type Counts = (u64, u64);

impl<'scope> KernelForwarder<'scope> {
    /// Starts forwarding `rx` to `log`.
    pub(super) fn start<'env>(
        s: &'scope Scope<'scope, 'env>,
        log: &'env dyn EventLog,
        rx: Receiver<Event>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = s.spawn(move || {
            if let Err(why) = sandtrail_bpf::pin_reader_thread() {
                eprintln!(
                    "sandtrail: a session's kernel events are handed to the store on any CPU (pinning beside the kernel reader failed: {why}); sealing takes a little more of the workload's time"
                );
            }
            let (mut lost, mut execs) = (0, 0);
            loop {
                // Read before draining: once `finish` has set it, every event the reader
                // delivered for the session is already on the channel.
                let last = flag.load(Ordering::SeqCst);
                // In chunks, so that a session whose events keep coming does not hold the
                // store (shared with the other sessions) for the whole pass.
                loop {
                    let mut n = 0;
                    log.log_all(&mut rx.try_iter().take(CHUNK).inspect(|e| {
                        n += 1;
                        lost += lost_in(e);
                        execs += executed(e);
                    }))?;
                    if n < CHUNK {
                        break;
                    }
                }
                if last {
                    return Ok((lost, execs));
                }
                std::thread::park_timeout(POLL);
            }
        });
        KernelForwarder {
            stop,
            thread: Some(thread),
        }
    }

    /// Logs what is left, once the kernel source has delivered the session's last event
    /// (`KernelSource::finish`), and returns what the events said.
    pub(super) fn finish(mut self) -> Result<Counts> {
        self.stop();
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(counts)) => counts,
            Some(Err(_)) => Err(anyhow!(
                "the thread logging the session's kernel events panicked"
            )),
            None => Err(anyhow!("the session's kernel events were already finished")),
        }
    }

    /// Tells the thread to log what waits and stop.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for KernelForwarder<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Mutex};

    use sandtrail_event::{ExecInfo, Kind, LossInfo, Source};

    use super::*;

    /// Keeps what it is given and the size of every `log_all` call.
    #[derive(Default)]
    struct Kept {
        events: Mutex<Vec<u64>>,
        calls: Mutex<Vec<usize>>,
    }

    impl EventLog for Kept {
        fn log(&self, ev: Event) -> Result<()> {
            self.events.lock().unwrap().push(ev.ts_ns);
            Ok(())
        }

        fn log_all(&self, evs: &mut dyn Iterator<Item = Event>) -> Result<()> {
            let before = self.events.lock().unwrap().len();
            for ev in evs {
                self.log(ev)?;
            }
            let n = self.events.lock().unwrap().len() - before;
            self.calls.lock().unwrap().push(n);
            Ok(())
        }
    }

    #[test]
    fn every_event_waiting_at_the_end_is_logged_in_order_in_bounded_calls() {
        // More than two chunks wait when the session ends: all of them are logged, in order,
        // no call larger than a chunk, and the losses and execs they report are counted.
        let (tx, rx) = mpsc::channel();
        let total = 2 * CHUNK as u64 + 1000;
        for ts in 1..=total {
            let kind = match ts {
                5 => Kind::ProcessExec,
                9000 => Kind::AuditLoss,
                _ => Kind::FileOpen,
            };
            let mut e = Event::new(kind, Source::Kernel, Some("ses_t".into()), "h", ts);
            if ts == 5 {
                e.exec = Some(Box::new(ExecInfo {
                    result: Some("ok".into()),
                    ..Default::default()
                }));
            }
            if ts == 9000 {
                e.loss = Some(Box::new(LossInfo {
                    source: "kernel".into(),
                    count: 7,
                    window_ns: None,
                }));
            }
            tx.send(e).unwrap();
        }
        let kept = Kept::default();
        let counts = std::thread::scope(|s| {
            let f = KernelForwarder::start(s, &kept, rx);
            f.finish()
        })
        .unwrap();
        assert_eq!(counts, (7, 1));
        let events = kept.events.into_inner().unwrap();
        assert_eq!(events, (1..=total).collect::<Vec<_>>());
        let calls = kept.calls.into_inner().unwrap();
        assert!(calls.iter().all(|&n| n <= CHUNK), "{calls:?}");
        assert_eq!(calls.iter().sum::<usize>() as u64, total);
    }
}
