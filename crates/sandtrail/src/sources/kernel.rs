//! Kernel collection for every session of this process: one [`Probe`] (the BPF programs) and
//! one [`Collector`] (the process table), on one thread that reads the ring buffer and sends
//! each session its events.
//!
//! Control calls ([`KernelSource::watch`], [`KernelSource::add_root`],
//! [`KernelSource::finish`]) are synchronous: when `watch` returns, the cgroup is watched, so a
//! command started afterwards is recorded from its first exec.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{anyhow, Result};
use sandtrail_bpf::net::NetProbe;
use sandtrail_bpf::{CgroupRef, Losses, Probe, ProbeOptions};
use sandtrail_collector::{Adopted, Collector, FilePolicy, NetCollector, Scope};
use sandtrail_event::{Event, Kind, LossInfo, Severity, Source};
use sandtrail_net::dns::NetRecord as DnsChannelRecord;
use sandtrail_net::resolved::ResolvedIps;

use super::egress::EgressRules;

/// How long the reader waits for a record before it looks at control requests again.
const TICK: Duration = Duration::from_millis(20);
/// How often loss counters are read.
const LOSS_PERIOD: Duration = Duration::from_secs(1);

enum Cmd {
    Watch {
        cgroup_id: u64,
        scope: Scope,
        files: FilePolicy,
        events: Sender<Event>,
        reply: Sender<Result<(), String>>,
    },
    AddRoot {
        cgroup_id: u64,
        pid: u32,
        reply: Sender<()>,
    },
    /// Take up processes that were there before the session began.
    Adopt {
        cgroup_id: u64,
        procs: Vec<Adopted>,
        reply: Sender<()>,
    },
    /// Read the session's egress programs and DNS forwarder too.
    WatchNet {
        cgroup_id: u64,
        net: Box<NetSession>,
        reply: Sender<()>,
    },
    /// Read everything in the ring buffer, stop watching, report exits still unresolved.
    Finish {
        cgroup_id: u64,
        reply: Sender<Option<u64>>,
    },
}

/// A session's egress sources, read on the kernel thread so that their events name the
/// processes of the collector's table.
pub struct NetSession {
    /// The egress programs attached to the session's cgroup.
    pub probe: NetProbe,
    /// Joins their records (and the forwarder's) into events.
    pub collector: NetCollector,
    /// The DNS forwarder's records.
    pub dns: Receiver<DnsChannelRecord>,
    /// The answer-derived allow entries, expired here.
    pub rules: Arc<EgressRules>,
    /// The session's answers.
    pub resolved: Arc<ResolvedIps>,
    /// Egress records lost so far (kernel ring buffers, forwarder channel).
    pub lost: u64,
}

/// The kernel source of this process; see the module docs.
pub struct KernelSource {
    cmds: Sender<Cmd>,
}

static SOURCE: OnceLock<Result<KernelSource, String>> = OnceLock::new();

/// The argv cap the programs are loaded with (set before the first session).
static ARGV_CAP: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(sandtrail_bpf::ARGV_MAX);

/// Sets the most argv bytes recorded per exec; takes effect when the programs are loaded, at
/// the first session of the process.
pub fn set_argv_cap(bytes: u32) {
    ARGV_CAP.store(bytes, std::sync::atomic::Ordering::SeqCst);
}

/// The process programs' ring buffer size (0: the default).
static RING_BYTES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Sets the process programs' ring buffer size in bytes (a power of two, at least a page);
/// takes effect when the programs are loaded, at the first session of the process.
pub fn set_ring_bytes(bytes: u32) {
    RING_BYTES.store(bytes, std::sync::atomic::Ordering::SeqCst);
}

/// The process-wide kernel source, loaded on first use (root only).
pub fn get() -> Result<&'static KernelSource> {
    SOURCE
        .get_or_init(|| KernelSource::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("kernel collection is unavailable: {e}"))
}

/// Lets this process exit without waiting for the kernel to detach its programs.
///
/// Detaching syscall tracepoints waits for RCU grace periods: seconds on a small VM, paid when
/// the last descriptor of each program's link is closed. A forked child holds the same
/// descriptors and outlives this process (it waits for the end of a pipe this process holds
/// open until it exits), so this process's exit detaches nothing; the child has closed its
/// standard streams (nobody waiting for this process's output waits for it) and the detach
/// happens in its exit, in the background. Call it last, when nothing more is to be recorded.
pub fn detach_in_background() {
    if SOURCE.get().is_none_or(|s| s.is_err()) {
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [read_end, write_end] = fds;
    // SAFETY: fork in a multithreaded process is sound when the child only makes
    // async-signal-safe calls, as it does below: close, read, _exit; no allocation, no locks.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: close, read and _exit are async-signal-safe; `byte` is a valid one-byte
        // buffer; nothing of the copied Rust state is touched.
        unsafe {
            libc::close(write_end);
            libc::close(0);
            libc::close(1);
            libc::close(2);
            let mut byte = 0u8;
            // Returns 0 (end of file) once the parent, the last holder of the write end, exits.
            while libc::read(read_end, (&mut byte as *mut u8).cast(), 1) < 0 {}
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the read end, a descriptor this function created.
    unsafe { libc::close(read_end) };
    // The write end stays open until this process exits.
}

fn ktime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl KernelSource {
    fn start() -> Result<KernelSource> {
        let defaults = ProbeOptions::default();
        let ring = RING_BYTES.load(std::sync::atomic::Ordering::SeqCst);
        let probe = Probe::load(ProbeOptions {
            argv_cap: ARGV_CAP.load(std::sync::atomic::Ordering::SeqCst),
            ring_buffer_bytes: if ring == 0 {
                defaults.ring_buffer_bytes
            } else {
                ring
            },
            ..defaults
        })?;
        if probe.mounted_tracefs() {
            eprintln!(
                "sandtrail: mounted tracefs at {} (the kernel programs attach to tracepoints)",
                sandtrail_bpf::TRACEFS
            );
        }
        if let Err(why) = probe.calls_at_exit() {
            eprintln!(
                "sandtrail: file calls and waits are recorded by entry/exit program pairs (the same records, at a higher cost per call): {why}"
            );
        }
        if let Err(why) = probe.received_fds() {
            eprintln!(
                "sandtrail: descriptors passed between processes (SCM_RIGHTS, pidfd_getfd) are not recorded; a path relative to one may name a directory an earlier descriptor with its number had: {why}"
            );
        }
        if let Err(why) = probe.new_fds() {
            eprintln!(
                "sandtrail: descriptors made without a path (sockets, pipes, memfds, ...) are not recorded; a call through one by its number (ftruncate, fchmod, a relative path) may be logged under a file an earlier descriptor with its number had: {why}"
            );
        }
        if let Err(why) = probe.exec_creds() {
            eprintln!(
                "sandtrail: the euid/egid after an exec of a setuid/setgid file are read from /proc (best effort, racy): {why}"
            );
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sandtrail-kernel".into())
            .spawn(move || {
                // On one CPU, where its tables stay in cache, instead of following its wakeups
                // onto the workload's CPU (see `pin_reader_thread`).
                if let Err(why) = sandtrail_bpf::pin_reader_thread() {
                    eprintln!(
                        "sandtrail: the kernel reader runs on any CPU (pinning it to one failed: {why}); collection takes a little more of the workload's time"
                    );
                }
                Reader::new(probe).run(rx)
            })?;
        Ok(KernelSource { cmds: tx })
    }

    /// Starts recording cgroup `cgroup_id` (and its descendants) for `scope`, with `files`
    /// deciding which reads are logged one by one; its events arrive on the returned receiver.
    pub fn watch(
        &self,
        cgroup_id: u64,
        scope: Scope,
        files: FilePolicy,
    ) -> Result<Receiver<Event>> {
        let (events, rx) = mpsc::channel();
        let (reply, answer) = mpsc::channel();
        self.cmds
            .send(Cmd::Watch {
                cgroup_id,
                scope,
                files,
                events,
                reply,
            })
            .map_err(|_| anyhow!("the kernel reader has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the kernel reader has stopped"))?
            .map_err(|e| anyhow!("watching cgroup {cgroup_id}: {e}"))?;
        Ok(rx)
    }

    /// Makes `pid` (outside the cgroup: the sandbox's init) the root of the session's process
    /// tree.
    pub fn add_root(&self, cgroup_id: u64, pid: u32) {
        let (reply, answer) = mpsc::channel();
        if self
            .cmds
            .send(Cmd::AddRoot {
                cgroup_id,
                pid,
                reply,
            })
            .is_ok()
        {
            let _ = answer.recv();
        }
    }

    /// Takes up the processes `pids` that were in the cgroup before it was watched (attach
    /// mode): read from /proc, oldest first, so that parents come before their children.
    pub fn adopt(&self, cgroup_id: u64, pids: &[i32]) {
        let mut procs: Vec<Adopted> = pids.iter().filter_map(|p| read_proc(*p as u32)).collect();
        procs.sort_by_key(|p| (p.start_ktime, p.pid));
        let (reply, answer) = mpsc::channel();
        if self
            .cmds
            .send(Cmd::Adopt {
                cgroup_id,
                procs,
                reply,
            })
            .is_ok()
        {
            let _ = answer.recv();
        }
    }

    /// Reads the session's egress programs and DNS forwarder from now on (its events arrive
    /// with the others of [`KernelSource::watch`]); they are detached at `finish`.
    pub fn watch_net(&self, cgroup_id: u64, net: NetSession) {
        let (reply, answer) = mpsc::channel();
        let cmd = Cmd::WatchNet {
            cgroup_id,
            net: Box::new(net),
            reply,
        };
        if self.cmds.send(cmd).is_ok() {
            let _ = answer.recv();
        }
    }

    /// Delivers everything recorded for the session so far and stops watching it. Returns the
    /// egress attempts its policy blocked, the first time for a session whose network was
    /// watched.
    pub fn finish(&self, cgroup_id: u64) -> Option<u64> {
        let (reply, answer) = mpsc::channel();
        if self.cmds.send(Cmd::Finish { cgroup_id, reply }).is_ok() {
            return answer.recv().ok().flatten();
        }
        None
    }
}

struct Reader {
    probe: Probe,
    collector: Collector,
    routes: std::collections::HashMap<u64, (Scope, Sender<Event>)>,
    nets: std::collections::HashMap<u64, Box<NetSession>>,
    losses: Losses,
    next_loss_check: Instant,
}

impl Reader {
    fn new(probe: Probe) -> Self {
        let losses = probe.losses().unwrap_or_default();
        Reader {
            probe,
            collector: Collector::new(),
            routes: Default::default(),
            nets: Default::default(),
            losses,
            next_loss_check: Instant::now() + LOSS_PERIOD,
        }
    }

    fn deliver(&self, events: Vec<(u64, Event)>) {
        for (cg, e) in events {
            if let Some((_, tx)) = self.routes.get(&cg) {
                let _ = tx.send(e);
            }
        }
    }

    /// Reads and routes every record now in the ring buffer.
    fn drain(&mut self, wait: Duration) {
        let mut wait = wait;
        loop {
            match self.probe.next_record(wait) {
                Ok(Some(r)) => {
                    let ev = self.collector.record(r);
                    self.deliver(ev);
                    wait = Duration::ZERO;
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("sandtrail: kernel record unreadable: {e}");
                    return;
                }
            }
        }
    }

    /// Reads session `cg`'s egress programs and DNS records and routes their events (`last`:
    /// the session is ending, nothing waits for a later look); `housekeeping` also expires
    /// lapsed DNS-derived allow entries and reports egress losses. Returns the blocked-egress
    /// count.
    fn drain_net(&mut self, cg: u64, last: bool, housekeeping: bool) -> Option<u64> {
        let net = self.nets.get_mut(&cg)?;
        let p = &mut net.probe;
        let attempts = take_all(|| p.next_record(Duration::ZERO), "egress");
        for payload in take_all(|| p.next_payload(Duration::ZERO), "payload") {
            net.collector.payload(&payload);
        }
        let p = &mut net.probe;
        let inbound = take_all(|| p.next_inbound(Duration::ZERO), "inbound");
        let flows = take_all(|| p.next_flow(Duration::ZERO), "flow");
        let dns: Vec<DnsChannelRecord> = net.dns.try_iter().collect();
        // The execs before these connects are in the process ring: read them first, so that
        // each connect names the image that made it.
        self.drain(Duration::ZERO);
        let net = self.nets.get_mut(&cg)?;
        let collector = &self.collector;
        let process_of = |pid: u32| collector.process_ref(cg, pid);
        let mut out = Vec::new();
        for r in &attempts {
            out.extend(net.collector.attempt(r, process_of(r.task.pid)));
        }
        for r in &inbound {
            out.extend(net.collector.inbound(r, &process_of));
        }
        for f in &flows {
            out.extend(net.collector.flow(f, &process_of));
        }
        out.extend(net.collector.expire(last));
        for r in dns {
            match r {
                DnsChannelRecord::Dns(q) => net.collector.dns(q),
                DnsChannelRecord::Violation(v) => {
                    if let Some((scope, _)) = self.routes.get(&cg) {
                        out.push(v.to_event(&scope.session_id, &scope.host_id));
                    }
                }
            }
        }
        if net.collector.dns_pending() {
            let live = net.probe.flows().unwrap_or_default();
            out.extend(net.collector.drain_dns(&live, &process_of, last));
        }
        if housekeeping {
            net.rules.expire(&net.resolved, Instant::now());
            let lost = net
                .probe
                .losses()
                .map(|l| {
                    l.ring_buffer_full
                        + l.flow_ring_buffer_full
                        + l.payload_ring_buffer_full
                        + l.inbound_ring_buffer_full
                })
                .unwrap_or(0);
            if lost > net.lost {
                if let Some((scope, _)) = self.routes.get(&cg) {
                    out.push(loss_event(scope, "kernel.net", lost - net.lost));
                }
                net.lost = lost;
            }
        }
        let blocked = net.collector.blocked();
        if let Some((_, tx)) = self.routes.get(&cg) {
            for e in out {
                let _ = tx.send(e);
            }
        }
        Some(blocked)
    }

    /// New losses since the last look become an `audit.loss` for every watched session (the
    /// kernel counts them per CPU, not per session).
    fn check_losses(&mut self) {
        let Ok(now) = self.probe.losses() else {
            return;
        };
        let lost = now.total().saturating_sub(self.losses.total());
        if lost > 0 {
            for (scope, tx) in self.routes.values() {
                let _ = tx.send(loss_event(scope, "kernel", lost));
            }
        }
        self.losses = now;
    }

    fn run(mut self, cmds: Receiver<Cmd>) {
        loop {
            loop {
                match cmds.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.drain(TICK);
            let ids: Vec<u64> = self.nets.keys().copied().collect();
            let second = Instant::now() >= self.next_loss_check;
            for cg in ids {
                self.drain_net(cg, false, second);
            }
            if second {
                self.next_loss_check = Instant::now() + LOSS_PERIOD;
                self.check_losses();
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Watch {
                cgroup_id,
                scope,
                files,
                events,
                reply,
            } => {
                let r = self
                    .probe
                    .watch_cgroup(CgroupRef::Id(cgroup_id))
                    .map(drop)
                    .map_err(|e| e.to_string());
                if r.is_ok() {
                    self.collector.watch(cgroup_id, scope.clone());
                    self.collector.set_session_file_policy(cgroup_id, files);
                    self.routes.insert(cgroup_id, (scope, events));
                }
                let _ = reply.send(r);
            }
            Cmd::AddRoot {
                cgroup_id,
                pid,
                reply,
            } => {
                let exe = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "sandtrail".into());
                self.collector
                    .add_root(cgroup_id, pid, &exe, "sandtrail-init", ktime_now());
                let _ = reply.send(());
            }
            Cmd::Adopt {
                cgroup_id,
                procs,
                reply,
            } => {
                for p in procs {
                    let ev = self.collector.adopt(cgroup_id, p);
                    self.deliver(ev);
                }
                let _ = reply.send(());
            }
            Cmd::WatchNet {
                cgroup_id,
                net,
                reply,
            } => {
                self.nets.insert(cgroup_id, net);
                let _ = reply.send(());
            }
            Cmd::Finish { cgroup_id, reply } => {
                // Records of the session's last moments may still be in flight.
                self.drain(TICK);
                let blocked = self.drain_net(cgroup_id, true, true);
                // Dropping the probe detaches the egress programs.
                self.nets.remove(&cgroup_id);
                self.check_losses();
                let _ = self.probe.unwatch(CgroupRef::Id(cgroup_id));
                let ev = self.collector.unwatch(cgroup_id);
                self.deliver(ev);
                self.routes.remove(&cgroup_id);
                let _ = reply.send(blocked);
            }
        }
    }
}

/// Every record `next` has now; an unreadable one ends the batch (and is said on stderr).
fn take_all<T>(
    mut next: impl FnMut() -> Result<Option<T>, sandtrail_bpf::net::NetError>,
    what: &str,
) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        match next() {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return out,
            Err(e) => {
                eprintln!("sandtrail: {what} record unreadable: {e}");
                return out;
            }
        }
    }
}

/// An `audit.loss` of `count` records of `source` in the last [`LOSS_PERIOD`].
fn loss_event(scope: &Scope, source: &str, count: u64) -> Event {
    let mut e = Event::new(
        Kind::AuditLoss,
        Source::Kernel,
        Some(scope.session_id.clone()),
        &scope.host_id,
        sandtrail_store::now_ns(),
    );
    e.severity = Severity::High;
    e.loss = Some(Box::new(LossInfo {
        source: source.into(),
        count,
        window_ns: Some(LOSS_PERIOD.as_nanos() as u64),
    }));
    e
}

/// A running process as /proc shows it; `None` if it is gone.
fn read_proc(pid: u32) -> Option<Adopted> {
    let dir = format!("/proc/{pid}");
    let ids = sandtrail_sandbox::isolate::ProcIds::read(pid as i32)?;
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let argv = std::fs::read(format!("{dir}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let link = |name: &str| {
        std::fs::read_link(format!("{dir}/{name}"))
            .ok()
            .map(|p| p.display().to_string())
    };
    Some(Adopted {
        pid,
        ppid: ids.ppid,
        uid: ids.uid,
        euid: ids.euid,
        gid: ids.gid,
        egid: ids.egid,
        exe: link("exe").unwrap_or_else(|| "[unknown]".into()),
        argv,
        cwd: link("cwd"),
        comm: std::fs::read_to_string(format!("{dir}/comm"))
            .unwrap_or_default()
            .trim_end()
            .to_string(),
        start_ktime: ids.start_ticks * 1_000_000_000 / hz,
    })
}
