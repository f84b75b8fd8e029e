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
/// logs them straight from the channel ([`EventLog::log_all`], up to [`CHUNK`] a call). It pins itself beside the kernel reader
/// (`sandtrail_bpf::pin_reader_thread`), where the store's threads run too: the events are then
/// made, handed over and sealed on one CPU. On the 2-vCPU benchmark host the whole pipeline cost
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
