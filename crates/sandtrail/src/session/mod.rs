//! One audited agent session from start to end: the lifecycle that `sandtrail run` and the
//! daemon drive.
//!
//! [`run`]: create → cgroup with limits → sandboxed first process → start → (pause/resume/stop
//! from the control socket or the API, limit hits from the cgroup counters, timeout) →
//! terminate with the reason and a usage summary → cleanup (filesystem deleted, preserved or
//! snapshotted).
//!
//! [`attach`]: the same story for a cgroup a sandbox provider created: create → start → ... →
//! terminate when its last process has gone (or on stop/timeout) → cleanup (the provider's
//! filesystem and cgroup are left as they are: `preserved`).

pub mod control;
pub mod events;
mod forward;
pub mod liveness;
pub mod monitor;
pub mod snapshot;
pub mod sweep;
pub mod violations;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandtrail_event::{
    Event, FsState, LimitAction, LimitType, PauseReason, Snapshot, TerminateReason, Usage,
};
use sandtrail_net::dns::{Forwarder, ForwarderConfig, NetRecord};
use sandtrail_net::policy::Policy;
use sandtrail_sandbox::cgroup::{self, SessionCgroup};
use sandtrail_sandbox::isolate::{self, Exit, SandboxSpec};
use sandtrail_sandbox::net::{self, NetConfig, SessionNet};
use sandtrail_sandbox::Limits;
use sandtrail_store::{Layout, Writer};

use crate::sources::{egress, kernel};
use control::{Command, Request};
use events::{limit_info, resources, Identity, Lifecycle};
use monitor::{DiskWatcher, LimitWatcher, NetRateWatcher, POLL, THROTTLE_WINDOW};
use sandtrail_collector::{FilePolicy, NetCollector};
use violations::{DenialLog, Violation};

/// What to do with the session's filesystem changes at cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Delete them.
    Delete,
    /// Leave the session directory in place.
    Preserve,
    /// Archive them (tar + zstd) and delete the directory.
    Snapshot,
}

/// What a session's timeout does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnTimeout {
    /// Kill it: terminate reason `timeout`.
    #[default]
    Kill,
    /// Freeze it: `session.pause` reason `timeout`; it ends only when stopped (or resumed and
    /// done).
    Pause,
}

/// CPU time below which a poll interval counts as idle for `idle_pause` (1 % of [`POLL`]).
const IDLE_CPU_NS: u64 = 1_000_000;

/// Everything `run` needs to know.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Who the session is.
    pub identity: Identity,
    /// The command.
    pub argv: Vec<String>,
    /// Limits.
    pub limits: Limits,
    /// Limit on running time (pauses do not count).
    pub timeout: Option<Duration>,
    /// What the timeout does.
    pub on_timeout: OnTimeout,
    /// Pause the session (reason `autopause`) once it has used no CPU for this long.
    pub idle_pause: Option<Duration>,
    /// Bind-mounted at /workspace.
    pub workspace: Option<PathBuf>,
    /// Root inside the sandbox.
    pub as_root: bool,
    /// Networking inside: loopback up and a veth pair to the host with NAT (false: no
    /// interface up).
    pub network: bool,
    /// Disk quota of the sandbox's writable layer, bytes (`limit.hit` disk_quota when full).
    pub disk_bytes: Option<u64>,
    /// Rate limit of the sandbox's network, bits per second, each direction (`limit.hit`
    /// net_rate when it delays or drops packets).
    pub net_rate_bps: Option<u64>,
    /// Egress policy; with a network, the session's DNS forwarder applies it to every query.
    pub policy: Option<Arc<Policy>>,
    /// Which reads are logged one by one (the others are summarized).
    pub files: FilePolicy,
    /// Cleanup mode.
    pub keep: Keep,
    /// Told once the session has started (or why it could not).
    pub on_start: Option<Sender<StartReport>>,
}

/// Everything `attach` needs to know.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Who the session is.
    pub identity: Identity,
    /// The provider's cgroup v2 directory (absolute, or relative to the v2 mount).
    pub cgroup: PathBuf,
    /// Limit on running time (pauses do not count).
    pub timeout: Option<Duration>,
    /// What the timeout does.
    pub on_timeout: OnTimeout,
    /// Pause the session (reason `autopause`) once it has used no CPU for this long.
    pub idle_pause: Option<Duration>,
    /// Which reads are logged one by one (the others are summarized).
    pub files: FilePolicy,
    /// Told once the session has started (or why it could not).
    pub on_start: Option<Sender<StartReport>>,
}

/// What a caller (the daemon) learns when a session has started: how to reach it.
#[derive(Clone, Debug)]
pub struct Started {
    /// Session id.
    pub session_id: String,
    /// The cgroup v2 id that scopes its kernel collection.
    pub cgroup_id: u64,
    /// Where its pause/resume/stop requests go.
    pub control: Sender<Request>,
    /// Whether it is paused now.
    pub paused: Arc<AtomicBool>,
}

/// `Ok` once started, `Err(message)` when the session could not start.
pub type StartReport = Result<Started, String>;

/// Where a session's events go: the store's single writer, shared by every session of the
/// process.
pub trait EventLog: Sync {
    /// Append one event (sealed into the ledger in order).
    fn log(&self, ev: Event) -> Result<()>;

    /// Append the events `evs` yields, in order; a store takes them in messages of up to
    /// 1,024 events (`Writer::append_all`: one wakeup of its ledger thread per message, not
    /// per event), filled straight from the iterator (an event is several hundred bytes:
    /// gathering them in a growing vector first cost the forwarding thread more than the rest
    /// of its work).
    fn log_all(&self, evs: &mut dyn Iterator<Item = Event>) -> Result<()> {
        for ev in evs {
            self.log(ev)?;
        }
        Ok(())
    }
}

impl EventLog for Mutex<Writer> {
    fn log(&self, ev: Event) -> Result<()> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(ev)
            .context("writing to the store")?;
        Ok(())
    }

    fn log_all(&self, evs: &mut dyn Iterator<Item = Event>) -> Result<()> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append_all(evs)
            .context("writing to the store")?;
        Ok(())
    }
}

/// How a session ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Session id.
    pub session_id: String,
    /// The first process's exit (`None` for an attached cgroup: it has no single first
    /// process whose status sandtrail could collect).
    pub exit: Option<Exit>,
    /// Why it ended.
    pub reason: TerminateReason,
    /// Usage summary.
    pub usage: Usage,
    /// Limit hits logged.
    pub limit_hits: usize,
    /// policy.violation events logged (seccomp denials; repeats summarized).
    pub violations: usize,
    /// Snapshot written at cleanup.
    pub snapshot: Option<Snapshot>,
}

impl Outcome {
    /// The exit status `run` reports: the command's, or 128+N when it was killed by signal N.
    pub fn exit_status(&self) -> i32 {
        match self.exit {
            Some(Exit::Code(c)) => c,
            Some(Exit::Signal { signal, .. }) => 128 + signal,
            None => 0,
        }
    }
}

/// A fresh session id: `ses_` + time + randomness.
pub fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!(
        "ses_{:x}{:06x}",
        sandtrail_store::now_ns() / 1_000_000,
        h.finish() & 0xff_ffff
    )
}

/// Checks a session id given by a user or a client: 1 to 100 characters of letters, digits,
/// `_` and `-` (it names a cgroup, a socket, a network and a directory).
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("session id {id:?} must be 1 to 100 characters of letters, digits, '_' and '-'");
    }
    Ok(())
}

/// Refuses a session id the store already has events of: two sessions under one id would be one
/// story in every query, timeline and export.
fn ensure_new_id(layout: &Layout, id: &str) -> Result<()> {
    let index = match sandtrail_store::index::Index::open(&layout.index()) {
        Ok(i) => i,
        // A new store has no index yet, and so no sessions.
        Err(sandtrail_store::StoreError::NoIndex(_)) => return Ok(()),
        Err(e) => return Err(e).context("reading the store's index of sessions"),
    };
    if index.sid(id)?.is_some() {
        bail!(
            "session id {id:?} is already in the store at {}: choose another --session-id (or leave it out for a fresh one)",
            layout.root().display()
        );
    }
    Ok(())
}

/// Whether the unprivileged sandbox user may write `dir` (owner or other write+search bits).
fn writable_by_sandbox_user(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| {
        let mode = m.mode();
        (m.uid() == isolate::SANDBOX_UID && mode & 0o300 == 0o300) || mode & 0o003 == 0o003
    })
}

fn session_dir(layout: &Layout, id: &str) -> PathBuf {
    layout.root().join("sessions").join(id)
}

/// Serializes sweeps: sessions of one daemon start concurrently, and two sweeps of the same
/// leftover would race.
static SWEEP: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Checks what can be checked before anything is created: the command, the workspace, the
/// session id, root.
pub fn precheck(opts: &RunOptions) -> Result<()> {
    validate_id(&opts.identity.session_id)?;
    if opts.argv.is_empty() {
        bail!("no command given: use `sandtrail run [OPTIONS] -- COMMAND [ARGS...]`");
    }
    if let Some(ws) = &opts.workspace {
        if !ws.is_dir() {
            bail!(
                "workspace {} does not exist or is not a directory: create it or pass another --workspace",
                ws.display()
            );
        }
        if !opts.as_root && !writable_by_sandbox_user(ws) {
            bail!(
                "workspace {} is not writable by the sandbox's user (uid {}): `chown {} {}` or `chmod o+rwx {}`, or use --as-root",
                ws.display(),
                isolate::SANDBOX_UID,
                isolate::SANDBOX_UID,
                ws.display(),
                ws.display()
            );
        }
    }
    if opts.network {
        net::validate_session(&opts.identity.session_id)?;
    }
    if let Some(bps) = opts.net_rate_bps {
        if !opts.network {
            bail!("a network rate limit needs a network: drop --no-network or --net-rate");
        }
        net::validate_rate(bps)?;
    }
    if !is_root() {
        bail!("sandtrail run needs root (it creates namespaces, mounts and cgroups): run it with sudo");
    }
    Ok(())
}

/// Sweep what crashed sessions left behind (one sweep at a time in this process).
fn sweep_leftovers(
    layout: &Layout,
    driver: &dyn cgroup::CgroupDriver,
    network: bool,
    log: &dyn EventLog,
    id: &str,
) -> Result<()> {
    let _one = SWEEP.lock().unwrap_or_else(PoisonError::into_inner);
    sweep::sweep(
        layout.root(),
        driver,
        network,
        log,
        &format!("sweep by session {id}"),
        id,
    )
}

fn lifecycle(identity: &Identity) -> Lifecycle {
    Lifecycle {
        id: identity.clone(),
        host_id: sandtrail_store::recovery::default_host_id(),
    }
}

/// Tell the caller that the session could not start, if it waits for that.
fn report_failure<T>(on_start: &Option<Sender<StartReport>>, r: Result<T>) -> Result<T> {
    if let (Err(e), Some(tx)) = (&r, on_start) {
        let _ = tx.send(Err(format!("{e:#}")));
    }
    r
}

/// Run one session to its end. Every step is logged in the store; what was created on the
/// host (cgroups, mounts, directories) is removed again, also when a step fails.
pub fn run(layout: &Layout, log: &dyn EventLog, opts: RunOptions) -> Result<Outcome> {
    let on_start = opts.on_start.clone();
    report_failure(&on_start, run_session(layout, log, opts))
}

fn run_session(layout: &Layout, log: &dyn EventLog, opts: RunOptions) -> Result<Outcome> {
    precheck(&opts)?;
    ensure_new_id(layout, &opts.identity.session_id)?;
    let driver = cgroup::detect().context("cgroups")?;
    let kernel = kernel::get()?;
    // This session's liveness lock, then sweep what crashed sessions left behind.
    let _alive = liveness::hold(&opts.identity.session_id)?;
    let id = opts.identity.session_id.clone();
    sweep_leftovers(layout, driver.as_ref(), opts.network, log, &id)?;
    let lc = lifecycle(&opts.identity);
    let timeout_s = opts.timeout.map(|t| t.as_secs().max(1));
    let res = resources(&opts.limits, opts.disk_bytes, opts.net_rate_bps, timeout_s);
    log.log(lc.create(res.clone()))?;

    let cg = driver
        .create(&id, &opts.limits)
        .with_context(|| format!("creating the cgroup of session {id}"))?;
    let dir = session_dir(layout, &id);
    let mut session_net = None;
    let mut forwarder: Option<Forwarder> = None;
    let mut start_logged = false;
    let cg_id = cg.id();
    let result = (|| {
        // Watched before anything runs in it: the command is recorded from its first exec.
        let kernel_events = kernel.watch(cg_id, scope(&lc), opts.files.clone())?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let spec = SandboxSpec {
            argv: opts.argv.clone(),
            env: isolate::default_env(opts.as_root),
            session_dir: dir.to_path_buf(),
            workspace: opts.workspace.clone(),
            hidden: vec![layout.root().to_path_buf(), liveness::dir()],
            hostname: "sandbox".into(),
            as_root: opts.as_root,
            network: opts.network,
            tmp_bytes: None,
            disk_bytes: opts.disk_bytes,
        };
        let net_cfg = opts.network.then(|| NetConfig {
            rate_bps: opts.net_rate_bps,
            dns_redirect: opts.policy.is_some(),
            ..NetConfig::for_session(&id)
        });
        // The forwarder's records go to the kernel thread, which joins them with the sockets.
        let mut dns_records = Some(mpsc::channel());
        // The caller tears the network down, also when a later step fails.
        let child = isolate::spawn(&spec, &mut |pid| {
            cg.add_pid(pid).map_err(|e| e.to_string())?;
            kernel.add_root(cg_id, pid as u32);
            if let Some(cfg) = &net_cfg {
                let n = SessionNet::setup(cfg, pid).map_err(|e| e.to_string())?;
                if n.enabled_ip_forward() {
                    eprintln!("sandtrail: set net.ipv4.ip_forward to 1 (it was 0) so that sessions can reach the network; the last session switches it back");
                }
                let host_ip = n.host_ip();
                session_net = Some(n);
                // Enforced and answering before the command's first connect or query.
                if let (Some(policy), Some((tx, rx))) = (&opts.policy, dns_records.take()) {
                    let (f, net) = start_egress(cg.v2_path(), host_ip, policy.clone(), tx, rx, &lc)
                        .map_err(|e| format!("{e:#}"))?;
                    forwarder = Some(f);
                    kernel.watch_net(cg_id, net);
                }
            }
            // Logged before the command runs, so its first exec comes after the start.
            log.log(lc.start(res.clone())).map_err(|e| format!("{e:#}"))?;
            start_logged = true;
            Ok(())
        })
        .with_context(|| format!("starting {:?} in the sandbox", opts.argv[0]))?;
        let mut child = child;
        let denials = child.take_denials();
        let agent = Agent::Sandboxed(child);
        supervise(
            layout,
            log,
            &lc,
            cg.as_ref(),
            agent,
            Watch {
                start: None,
                timeout: opts.timeout,
                on_timeout: opts.on_timeout,
                idle_pause: opts.idle_pause,
                disk_dir: opts.disk_bytes.map(|_| dir.clone()),
                net: session_net.as_ref(),
                on_start: opts.on_start.as_ref(),
                denials,
                kernel: Some((kernel, kernel_events)),
            },
        )
    })();
    // Whatever happened, leave nothing behind on the host.
    let _ = cg.kill_all();
    kernel.finish(cg_id);
    if let Some(f) = forwarder {
        f.stop();
    }
    let net_down = session_net.map(SessionNet::teardown);
    let removed = cg.remove();
    let (fs_state, snap) = match (&result, opts.keep) {
        (Ok(_), Keep::Snapshot) => {
            let out = snapshot::path(layout.root(), &id);
            match snapshot::write(&isolate::upper_dir(&dir), &out) {
                Ok((bytes, sha256)) => (
                    FsState::Snapshot,
                    Some(Snapshot {
                        path: out.display().to_string(),
                        sha256,
                        bytes,
                    }),
                ),
                Err(e) => {
                    eprintln!("sandtrail: snapshot failed, the session directory is kept: {e:#}");
                    (FsState::Preserved, None)
                }
            }
        }
        (_, Keep::Preserve) => (FsState::Preserved, None),
        _ => (FsState::Deleted, None),
    };
    if let (Err(e), true) = (&result, start_logged) {
        // Started, then failed before its end could be logged: say how it ended.
        let _ = log.log(lc.terminate(
            TerminateReason::InternalError,
            None,
            None,
            Some(&format!("sandtrail ({e:#})")),
            Usage::default(),
        ));
    }
    let keep_dir = fs_state == FsState::Preserved;
    isolate::cleanup(&dir, keep_dir).context("removing the session's mounts")?;
    log.log(lc.cleanup(fs_state, snap.clone()))?;
    removed.with_context(|| format!("removing the cgroup of session {id}"))?;
    if let Some(down) = net_down {
        down.with_context(|| format!("removing the network of session {id}"))?;
    }
    let mut outcome = result?;
    outcome.snapshot = snap;
    Ok(outcome)
}

/// Audit a cgroup that a sandbox provider created and runs its agent in, until its last
/// process has gone (or it is stopped, or times out). Limits are the provider's; the cgroup and
/// the filesystem are left as they are.
pub fn attach(layout: &Layout, log: &dyn EventLog, opts: AttachOptions) -> Result<Outcome> {
    let on_start = opts.on_start.clone();
    report_failure(&on_start, attach_session(layout, log, opts))
}

fn attach_session(layout: &Layout, log: &dyn EventLog, opts: AttachOptions) -> Result<Outcome> {
    validate_id(&opts.identity.session_id)?;
    ensure_new_id(layout, &opts.identity.session_id)?;
    if !is_root() {
        bail!("attaching to a cgroup needs root (sandtrail freezes, kills and watches its processes): run the daemon as root");
    }
    let driver = cgroup::detect().context("cgroups")?;
    let kernel = kernel::get()?;
    let cg = driver.attach(&opts.cgroup)?;
    let _alive = liveness::hold(&opts.identity.session_id)?;
    let lc = lifecycle(&opts.identity);
    let first = cg.usage()?;
    let res = sandtrail_event::Resources {
        memory_bytes: first.memory_limit,
        cpus: first.cpu_quota.map(|(q, p)| q as f64 / p.max(1) as f64),
        pids: first.pids_limit,
        timeout_s: opts.timeout.map(|t| t.as_secs().max(1)),
        ..Default::default()
    };
    log.log(lc.create(res.clone()))?;
    let kernel_events = kernel.watch(cg.id(), scope(&lc), opts.files.clone())?;
    // The provider's network: observed (connections, flows), not enforced.
    kernel.watch_net(cg.id(), observe_egress(cg.v2_path(), &lc)?);
    // Watched first, then listed: a process started in between is seen by both, and the
    // collector's table takes the later word.
    kernel.adopt(cg.id(), &cg.procs()?);
    let result = supervise(
        layout,
        log,
        &lc,
        cg.as_ref(),
        Agent::Attached { seen: false },
        Watch {
            start: Some(res),
            timeout: opts.timeout,
            on_timeout: opts.on_timeout,
            idle_pause: opts.idle_pause,
            disk_dir: None,
            net: None,
            on_start: opts.on_start.as_ref(),
            denials: None,
            kernel: Some((kernel, kernel_events)),
        },
    );
    kernel.finish(cg.id());
    // The provider's filesystem is not ours to delete.
    log.log(lc.cleanup(FsState::Preserved, None))?;
    result
}

/// The session's first process (sandboxed) or the provider's cgroup (attached).
enum Agent {
    Sandboxed(isolate::Sandboxed),
    Attached { seen: bool },
}

impl Agent {
    /// `Some(exit)` once the session's processes have ended.
    fn ended(&mut self, cg: &dyn SessionCgroup) -> Result<Option<Option<Exit>>> {
        match self {
            Agent::Sandboxed(child) => Ok(child.try_wait()?.map(Some)),
            Agent::Attached { seen } => {
                if !cg.v2_path().is_dir() {
                    return Ok(Some(None));
                }
                let procs = cg.procs()?;
                *seen |= !procs.is_empty();
                Ok((*seen && procs.is_empty()).then_some(None))
            }
        }
    }
}

/// What the supervision loop watches besides the cgroup.
struct Watch<'a> {
    /// The limits logged in session.start.
    start: Option<sandtrail_event::Resources>,
    timeout: Option<Duration>,
    on_timeout: OnTimeout,
    idle_pause: Option<Duration>,
    /// Session directory whose writable layer has a disk quota.
    disk_dir: Option<PathBuf>,
    net: Option<&'a SessionNet>,
    on_start: Option<&'a Sender<StartReport>>,
    /// Seccomp denials of the sandbox.
    denials: Option<Receiver<isolate::Denial>>,
    /// The kernel source and the session's events from it.
    kernel: Option<(&'a kernel::KernelSource, Receiver<Event>)>,
}

/// From session.start to session.terminate: control requests, timeout, limit hits; the
/// kernel's events logged by a thread of their own ([`forward::KernelForwarder`]).
fn supervise(
    layout: &Layout,
    log: &dyn EventLog,
    lc: &Lifecycle,
    cg: &dyn SessionCgroup,
    agent: Agent,
    mut w: Watch<'_>,
) -> Result<Outcome> {
    let kernel = w.kernel.take();
    // session.start (an attached session's) before the forwarder logs any kernel event.
    if let Some(res) = w.start.take() {
        log.log(lc.start(res))?;
    }
    std::thread::scope(|s| {
        let kernel = kernel.map(|(k, rx)| (k, forward::KernelForwarder::start(s, log, rx)));
        supervise_with(layout, log, lc, cg, agent, w, kernel)
    })
}

/// [`supervise`] with the kernel's events being forwarded.
fn supervise_with(
    layout: &Layout,
    log: &dyn EventLog,
    lc: &Lifecycle,
    cg: &dyn SessionCgroup,
    mut agent: Agent,
    w: Watch<'_>,
    kernel: Option<(&kernel::KernelSource, forward::KernelForwarder<'_>)>,
) -> Result<Outcome> {
    let from_kernel = kernel.is_some();
    let id = &lc.id.session_id;
    let (tx, requests): (Sender<Request>, Receiver<Request>) = mpsc::channel();
    let _control = control::serve(layout.root(), id, tx.clone())?;
    let started = Instant::now();
    let paused = Arc::new(AtomicBool::new(false));
    if let Some(s) = w.on_start {
        let _ = s.send(Ok(Started {
            session_id: id.clone(),
            cgroup_id: cg.id(),
            control: tx,
            paused: paused.clone(),
        }));
    }

    let first = cg.usage()?;
    let mut watcher = LimitWatcher::new(first.clone());
    let mut disk = DiskWatcher::new();
    // Rate counters cost two `tc` runs: read once per window.
    let rate_stats = || {
        w.net
            .filter(|n| n.rate_bps().is_some())
            .map(|n| n.rate_stats())
    };
    let mut net_rate = match rate_stats() {
        Some(first) => Some(NetRateWatcher::new(
            first?,
            w.net.and_then(|n| n.rate_bps()).unwrap_or(0),
        )),
        None => None,
    };
    let mut next_rate_read = Instant::now() + THROTTLE_WINDOW;
    let disk_usage = || w.disk_dir.as_deref().and_then(isolate::disk_usage);
    let mut limit_hits = 0usize;
    let mut reason: Option<TerminateReason> = None;
    let mut stopped_by: Option<String> = None;
    let mut deadline = w.timeout.map(|t| started + t);
    let mut paused_since: Option<Instant> = None;
    let mut idle_since = Instant::now();
    let mut last_cpu = first.cpu_ns;
    let mut denial_log = DenialLog::default();
    let mut violations = 0usize;
    let mut lost = 0u64;
    let mut execs = 0u64;
    let exit = loop {
        // Seccomp denials.
        if let Some(rx) = &w.denials {
            let now = Instant::now();
            let mut found: Vec<Violation> = rx
                .try_iter()
                .flat_map(|d| denial_log.observe(d, now))
                .collect();
            found.extend(denial_log.flush(now, false));
            for v in found {
                log.log(lc.violation(&v))?;
                violations += 1;
            }
        }
        if let Some(exit) = agent.ended(cg)? {
            break exit;
        }
        // Control requests.
        while let Ok(req) = requests.try_recv() {
            let r = match req.command {
                Command::Pause => cg
                    .freeze()
                    .map(|_| Some(lc.pause_resume(true, PauseReason::Api, &req.actor))),
                Command::Resume => cg
                    .thaw()
                    .map(|_| Some(lc.pause_resume(false, PauseReason::Api, &req.actor))),
                Command::Stop => {
                    // The first reason to end stands (a second stop, or one after a timeout,
                    // does not rewrite who ended it).
                    if reason.is_none() {
                        reason = Some(TerminateReason::Api);
                        stopped_by = Some(req.actor.clone());
                    }
                    cg.kill_all().map(|_| None)
                }
            };
            let reply = match r {
                Ok(Some(ev)) => {
                    // The timeout counts running time: a pause moves the deadline on.
                    match req.command {
                        Command::Pause => {
                            paused_since.get_or_insert_with(Instant::now);
                        }
                        _ => {
                            if let (Some(p), Some(d)) = (paused_since.take(), deadline.as_mut()) {
                                *d += p.elapsed();
                            }
                        }
                    }
                    paused.store(req.command == Command::Pause, Ordering::SeqCst);
                    idle_since = Instant::now();
                    log.log(ev).map_err(|e| format!("{e:#}"))
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            let _ = req.reply.send(reply);
        }
        // Timeout.
        if reason.is_none()
            && paused_since.is_none()
            && deadline.is_some_and(|d| Instant::now() >= d)
        {
            let t = w.timeout.expect("deadline implies timeout");
            match w.on_timeout {
                OnTimeout::Kill => {
                    reason = Some(TerminateReason::Timeout);
                    log.log(lc.limit(limit_info(
                        LimitType::Timeout,
                        started.elapsed().as_millis() as u64,
                        t.as_millis() as u64,
                        "ms",
                        LimitAction::Kill,
                    )))?;
                    limit_hits += 1;
                    cg.kill_all()?;
                }
                OnTimeout::Pause => {
                    deadline = None;
                    if !paused.load(Ordering::SeqCst) {
                        cg.freeze()?;
                        paused.store(true, Ordering::SeqCst);
                        let actor = format!(
                            "sandtrail (timeout {})",
                            crate::output::duration(t.as_nanos() as u64)
                        );
                        log.log(lc.pause_resume(true, PauseReason::Timeout, &actor))?;
                    }
                }
            }
        }
        let usage = cg.usage()?;
        // Idle: pause a session that has used no CPU for `idle_pause`.
        if usage.cpu_ns.saturating_sub(last_cpu) > IDLE_CPU_NS {
            idle_since = Instant::now();
        }
        last_cpu = usage.cpu_ns;
        if let Some(idle) = w.idle_pause {
            if reason.is_none() && !paused.load(Ordering::SeqCst) && idle_since.elapsed() >= idle {
                cg.freeze()?;
                paused.store(true, Ordering::SeqCst);
                paused_since.get_or_insert_with(Instant::now);
                let actor = format!(
                    "sandtrail (idle {})",
                    crate::output::duration(idle.as_nanos() as u64)
                );
                log.log(lc.pause_resume(true, PauseReason::Autopause, &actor))?;
            }
        }
        // Limit counters.
        for hit in watcher.observe(usage) {
            log.log(lc.limit(hit))?;
            limit_hits += 1;
        }
        if let Some(hit) = disk.observe(disk_usage()) {
            log.log(lc.limit(hit))?;
            limit_hits += 1;
        }
        if let (Some(watcher), true) = (&mut net_rate, Instant::now() >= next_rate_read) {
            next_rate_read = Instant::now() + THROTTLE_WINDOW;
            if let Some(hit) = rate_stats().transpose()?.and_then(|r| watcher.observe(r)) {
                log.log(lc.limit(hit))?;
                limit_hits += 1;
            }
        }
        std::thread::sleep(POLL);
    };
    // Every kernel record of the session, up to its last exit, before its end is logged.
    let mut egress_blocked = None;
    if let Some((k, forwarder)) = kernel {
        egress_blocked = k.finish(cg.id());
        let (l, x) = forwarder.finish()?;
        lost += l;
        execs += x;
    }
    // The denial channel ends once the sandbox has been reaped; what is queued still counts.
    if let Some(rx) = &w.denials {
        let mut found = Vec::new();
        while let Ok(d) = rx.recv_timeout(Duration::from_secs(1)) {
            found.extend(denial_log.observe(d, Instant::now()));
        }
        found.extend(denial_log.flush(Instant::now(), true));
        for v in found {
            log.log(lc.violation(&v))?;
            violations += 1;
        }
    }
    if let Agent::Sandboxed(child) = &agent {
        let denials_lost = child.denials_lost();
        if denials_lost > 0 {
            log.log(lc.loss("seccomp.denials", denials_lost))?;
            lost += denials_lost;
        }
    }
    // The layer stays mounted until cleanup: a quota filled just before the end still counts.
    if let Some(hit) = disk.observe(disk_usage()) {
        log.log(lc.limit(hit))?;
        limit_hits += 1;
    }
    // An attached cgroup may be gone by now: its last reading stands.
    let last = cg.usage().unwrap_or_else(|_| watcher.last().clone());
    for hit in watcher.observe(last.clone()) {
        log.log(lc.limit(hit))?;
        limit_hits += 1;
    }
    let oom_killed = last.oom_kills > first.oom_kills;
    let reason = reason.unwrap_or(match exit {
        Some(Exit::Signal { signal: 9, .. }) if oom_killed => TerminateReason::Oom,
        None if oom_killed => TerminateReason::Oom,
        Some(Exit::Code(_)) | None => TerminateReason::Exit,
        Some(Exit::Signal { .. }) => TerminateReason::Signal,
    });
    let (code, signal) = match exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal { signal, .. }) => (None, Some(signal)),
        None => (None, None),
    };
    // The network namespace is held open until teardown, so the counters are final.
    let (bytes_out, bytes_in) = match w.net.map(SessionNet::counters) {
        Some(Ok((out, inb))) => (Some(out), Some(inb)),
        Some(Err(e)) => {
            eprintln!("sandtrail: network byte counters unavailable: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let usage = Usage {
        duration_ns: Some(started.elapsed().as_nanos() as u64),
        cpu_ns: Some(last.cpu_ns),
        peak_memory_bytes: Some(last.memory_peak.max(watcher.last().memory_peak)),
        // Images executed, from the kernel; without it, the most processes alive at once.
        processes: Some(if from_kernel {
            execs
        } else {
            watcher.peak_pids
        }),
        bytes_in,
        bytes_out,
        egress_blocked,
        events_lost: Some(lost),
    };
    log.log(lc.terminate(reason, code, signal, stopped_by.as_deref(), usage.clone()))?;
    Ok(Outcome {
        session_id: id.clone(),
        exit,
        reason,
        usage,
        limit_hits,
        violations,
        snapshot: None,
    })
}

/// Puts the session's egress policy in the kernel (programs on its cgroup v2 directory) and
/// starts its DNS forwarder on port 53 of the host end of its veth, forwarding to the host's
/// resolvers (from /etc/resolv.conf); what the kernel thread needs to read both.
fn start_egress(
    cgroup_dir: &Path,
    host_ip: std::net::Ipv4Addr,
    policy: Arc<Policy>,
    tx: Sender<NetRecord>,
    rx: Receiver<NetRecord>,
    lc: &Lifecycle,
) -> Result<(Forwarder, kernel::NetSession)> {
    let upstreams = sandtrail_net::dns::upstreams_from_resolv_conf(Path::new("/etc/resolv.conf"))
        .context("the session's DNS forwarder")?;
    let egress = egress::setup(cgroup_dir, policy.clone(), host_ip)?;
    let listen = std::net::SocketAddr::from((host_ip, egress::DNS_PORT));
    let cfg = ForwarderConfig::new(listen, upstreams, policy, tx);
    egress.rules.listen(&cfg.resolved);
    let collector = NetCollector::new(
        scope(lc),
        egress.rule_names,
        cfg.resolved.clone(),
        cfg.burst.clone(),
    );
    let resolved = cfg.resolved.clone();
    let f = Forwarder::start(cfg)
        .with_context(|| format!("starting the session's DNS forwarder on {listen}"))?;
    let net = kernel::NetSession {
        probe: egress.probe,
        collector,
        dns: rx,
        rules: egress.rules,
        resolved,
        lost: 0,
    };
    Ok((f, net))
}

/// The kernel egress programs on a provider's cgroup, observe-only (no forwarder: its DNS is
/// the provider's).
fn observe_egress(cgroup_dir: &Path, lc: &Lifecycle) -> Result<kernel::NetSession> {
    let egress = egress::observe(cgroup_dir)?;
    let resolved = Arc::new(sandtrail_net::resolved::ResolvedIps::new());
    let burst = Arc::new(Mutex::new(sandtrail_net::burst::BurstDetector::new(
        Default::default(),
    )));
    // No forwarder: the channel's sender is gone at once.
    let (_, dns) = mpsc::channel();
    Ok(kernel::NetSession {
        probe: egress.probe,
        collector: NetCollector::new(scope(lc), egress.rule_names, resolved.clone(), burst),
        dns,
        rules: egress.rules,
        resolved,
        lost: 0,
    })
}

/// 1 for a successful `process.exec` (a process image the session ran), else 0.
fn executed(e: &Event) -> u64 {
    let ok = e.kind == sandtrail_event::Kind::ProcessExec
        && e.exec.as_ref().and_then(|x| x.result.as_deref()) == Some("ok");
    u64::from(ok)
}

/// The records an `audit.loss` event says were lost (0 for other events).
fn lost_in(e: &Event) -> u64 {
    e.loss.as_ref().map_or(0, |l| l.count)
}

/// Where the kernel source sends a session's events.
fn scope(lc: &Lifecycle) -> sandtrail_collector::Scope {
    sandtrail_collector::Scope {
        session_id: lc.id.session_id.clone(),
        host_id: lc.host_id.clone(),
    }
}
