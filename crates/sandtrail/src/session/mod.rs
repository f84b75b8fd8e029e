//! One audited agent session from start to end: the lifecycle that `sandtrail run` drives
//! (and that the daemon will drive for attached sessions).
//!
//! create → cgroup with limits → sandboxed first process → start → (pause/resume/stop from the
//! control socket, limit hits from the cgroup counters, timeout) → terminate with the reason
//! and a usage summary → cleanup (filesystem deleted, preserved or snapshotted).

pub mod control;
pub mod events;
pub mod liveness;
pub mod monitor;
pub mod snapshot;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandtrail_event::{
    FsState, LimitAction, LimitType, PauseReason, Snapshot, TerminateReason, Usage,
};
use sandtrail_sandbox::cgroup::{self, SessionCgroup};
use sandtrail_sandbox::isolate::{self, Exit, SandboxSpec};
use sandtrail_sandbox::net::{self, NetConfig, SessionNet};
use sandtrail_sandbox::Limits;
use sandtrail_store::{Layout, Writer};

use control::Command;
use events::{limit_info, resources, Identity, Lifecycle};
use monitor::{DiskWatcher, LimitWatcher, POLL};

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

/// Everything `run` needs to know.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Who the session is.
    pub identity: Identity,
    /// The command.
    pub argv: Vec<String>,
    /// Limits.
    pub limits: Limits,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Bind-mounted at /workspace.
    pub workspace: Option<PathBuf>,
    /// Root inside the sandbox.
    pub as_root: bool,
    /// Networking inside: loopback up and a veth pair to the host with NAT (false: no
    /// interface up).
    pub network: bool,
    /// Disk quota of the sandbox's writable layer, bytes (`limit.hit` disk_quota when full).
    pub disk_bytes: Option<u64>,
    /// Cleanup mode.
    pub keep: Keep,
}

/// How a session ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Session id.
    pub session_id: String,
    /// The command's exit.
    pub exit: Exit,
    /// Why it ended.
    pub reason: TerminateReason,
    /// Usage summary.
    pub usage: Usage,
    /// Limit hits logged.
    pub limit_hits: usize,
    /// Snapshot written at cleanup.
    pub snapshot: Option<Snapshot>,
}

impl Outcome {
    /// The exit status `run` reports: the command's, or 128+N when it was killed by signal N.
    pub fn exit_status(&self) -> i32 {
        match self.exit {
            Exit::Code(c) => c,
            Exit::Signal { signal, .. } => 128 + signal,
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

/// Run one session to its end. Every step is logged in the store; what was created on the
/// host (cgroups, mounts, directories) is removed again, also when a step fails.
pub fn run(layout: &Layout, writer: &mut Writer, opts: RunOptions) -> Result<Outcome> {
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("sandtrail run needs root (it creates namespaces, mounts and cgroups): run it with sudo");
    }
    let driver = cgroup::detect().context("cgroups")?;
    // This session's liveness lock, then sweep what crashed sessions left behind.
    let _alive = liveness::hold(&opts.identity.session_id)?;
    sweep::sweep(
        layout.root(),
        driver.as_ref(),
        opts.network,
        writer,
        &format!("sweep by session {}", opts.identity.session_id),
    )?;
    let lc = Lifecycle {
        id: opts.identity.clone(),
        host_id: sandtrail_store::recovery::default_host_id(),
    };
    let id = lc.id.session_id.clone();
    let timeout_s = opts.timeout.map(|t| t.as_secs().max(1));
    writer.append(lc.create(resources(&opts.limits, opts.disk_bytes, timeout_s)))?;

    let cg = driver
        .create(&id, &opts.limits)
        .with_context(|| format!("creating the cgroup of session {id}"))?;
    let dir = session_dir(layout, &id);
    let mut session_net = None;
    let result = run_in(
        layout,
        writer,
        &lc,
        &opts,
        cg.as_ref(),
        &dir,
        timeout_s,
        &mut session_net,
    );
    // Whatever happened, leave nothing behind on the host.
    let _ = cg.kill_all();
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
    let keep_dir = fs_state == FsState::Preserved;
    isolate::cleanup(&dir, keep_dir).context("removing the session's mounts")?;
    writer.append(lc.cleanup(fs_state, snap.clone()))?;
    removed.with_context(|| format!("removing the cgroup of session {id}"))?;
    if let Some(down) = net_down {
        down.with_context(|| format!("removing the network of session {id}"))?;
    }
    let mut outcome = result?;
    outcome.snapshot = snap;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn run_in(
    layout: &Layout,
    writer: &mut Writer,
    lc: &Lifecycle,
    opts: &RunOptions,
    cg: &dyn SessionCgroup,
    dir: &Path,
    timeout_s: Option<u64>,
    session_net: &mut Option<SessionNet>,
) -> Result<Outcome> {
    let id = &lc.id.session_id;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let requests = control::serve(layout.root(), id)?;
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
    let started = Instant::now();
    let net_cfg = opts.network.then(|| NetConfig::for_session(id));
    // The caller tears the network down, also when a later step fails.
    let mut child = isolate::spawn(&spec, &mut |pid| {
        cg.add_pid(pid).map_err(|e| e.to_string())?;
        if let Some(cfg) = &net_cfg {
            let n = SessionNet::setup(cfg, pid).map_err(|e| e.to_string())?;
            if n.enabled_ip_forward() {
                eprintln!("sandtrail: set net.ipv4.ip_forward to 1 (it was 0) so that sessions can reach the network; the last session switches it back");
            }
            *session_net = Some(n);
        }
        Ok(())
    })
    .with_context(|| format!("starting {:?} in the sandbox", opts.argv[0]))?;
    writer.append(lc.start(resources(&opts.limits, opts.disk_bytes, timeout_s)))?;

    let mut watcher = LimitWatcher::new(cg.usage()?);
    let mut disk = DiskWatcher::new();
    let mut limit_hits = 0usize;
    let mut reason: Option<TerminateReason> = None;
    let mut stopped_by: Option<String> = None;
    let deadline = opts.timeout.map(|t| started + t);
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
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
                    reason = Some(TerminateReason::Api);
                    stopped_by = Some(req.actor.clone());
                    cg.kill_all().map(|_| None)
                }
            };
            let reply = match r {
                Ok(Some(ev)) => writer.append(ev).map_err(|e| e.to_string()),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            let _ = req.reply.send(reply);
        }
        // Timeout.
        if reason.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            reason = Some(TerminateReason::Timeout);
            let t = opts.timeout.expect("deadline implies timeout");
            writer.append(lc.limit(limit_info(
                LimitType::Timeout,
                started.elapsed().as_millis() as u64,
                t.as_millis() as u64,
                "ms",
                LimitAction::Kill,
            )))?;
            limit_hits += 1;
            cg.kill_all()?;
        }
        // Limit counters.
        for hit in watcher.observe(cg.usage()?) {
            writer.append(lc.limit(hit))?;
            limit_hits += 1;
        }
        if let Some(hit) = disk.observe(isolate::disk_usage(dir)) {
            writer.append(lc.limit(hit))?;
            limit_hits += 1;
        }
        std::thread::sleep(POLL);
    };
    // The layer stays mounted until cleanup: a quota filled just before the end still counts.
    if let Some(hit) = disk.observe(isolate::disk_usage(dir)) {
        writer.append(lc.limit(hit))?;
        limit_hits += 1;
    }
    let last = cg.usage()?;
    for hit in watcher.observe(last.clone()) {
        writer.append(lc.limit(hit))?;
        limit_hits += 1;
    }
    let oom = last.oom_kills > 0 && matches!(exit, Exit::Signal { signal: 9, .. });
    let reason = reason.unwrap_or(match exit {
        _ if oom => TerminateReason::Oom,
        Exit::Code(_) => TerminateReason::Exit,
        Exit::Signal { .. } => TerminateReason::Signal,
    });
    let (code, signal) = match exit {
        Exit::Code(c) => (Some(c), None),
        Exit::Signal { signal, .. } => (None, Some(signal)),
    };
    // The network namespace is held open until teardown, so the counters are final.
    let (bytes_out, bytes_in) = match session_net.as_ref().map(SessionNet::counters) {
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
        processes: Some(watcher.peak_pids),
        bytes_in,
        bytes_out,
        ..Default::default()
    };
    writer.append(lc.terminate(reason, code, signal, stopped_by.as_deref(), usage.clone()))?;
    let _ = std::fs::remove_file(control::socket_path(layout.root(), id));
    Ok(Outcome {
        session_id: id.clone(),
        exit,
        reason,
        usage,
        limit_hits,
        snapshot: None,
    })
}
