//! `sandtrail run`, and `sandtrail pause|resume|stop` for a running session.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use sandtrail_sandbox::Limits;
use sandtrail_store::Layout;

use crate::output::{bytes, duration};
use crate::session::control::{self, Command};
use crate::session::events::Identity;
use crate::session::{self, Keep, OnTimeout, RunOptions};

/// Arguments of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Session id (default: a fresh `ses_...`); refused when the store already holds it.
    #[arg(long)]
    pub session_id: Option<String>,
    /// Tenant the session belongs to.
    #[arg(long)]
    pub tenant: Option<String>,
    /// User on whose behalf it runs (default: $SUDO_USER, else $USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Template or image name, recorded in session.create.
    #[arg(long)]
    pub template: Option<String>,
    /// Memory limit, e.g. 64M, 2G (the agent is OOM-killed above it).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Disk quota of the sandbox's writable layer (the changes to its `/`), e.g. 512M, 4G:
    /// writes beyond it fail with "No space left on device" and a `limit.hit` disk_quota event
    /// is logged. The layer is a tmpfs: its pages count against --memory. /tmp (256M),
    /// /dev/shm and /workspace are not part of it.
    #[arg(long, value_parser = parse_size)]
    pub disk: Option<u64>,
    /// Network rate limit, each direction, in bits per second: e.g. 500kbit, 10mbit, 1gbit
    /// (or a plain number of bit/s). Shaped with tc on the host end of the session's veth;
    /// delayed or dropped packets are logged as `limit.hit` net_rate, one event per second at
    /// most.
    #[arg(long, value_parser = parse_rate, value_name = "RATE")]
    pub net_rate: Option<u64>,
    /// Limit on running time, e.g. 30s, 10m, 1h (terminate reason `timeout`); time paused does
    /// not count.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// What --timeout does: `kill` (terminate reason `timeout`) or `pause` (freeze it:
    /// `session.pause` reason `timeout`; resume or stop it from another terminal).
    #[arg(long, value_enum, default_value = "kill", value_name = "ACTION")]
    pub on_timeout: OnTimeoutArg,
    /// Pause the session (`session.pause` reason `autopause`) once it has used no CPU for this
    /// long, e.g. 5m; `sandtrail resume` continues it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_pause: Option<Duration>,
    /// Host directory bind-mounted read-write at /workspace.
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Run as root inside the sandbox (still no_new_privs, seccomp, dangerous capabilities dropped).
    #[arg(long)]
    pub as_root: bool,
    /// Keep the session's filesystem changes in STATE/sessions/ID/upper.
    #[arg(long, conflicts_with = "snapshot")]
    pub keep: bool,
    /// Archive the filesystem changes to STATE/snapshots/ID.tar.zst (sha256 in the cleanup event).
    #[arg(long)]
    pub snapshot: bool,
    /// No network at all inside (not even loopback).
    #[arg(long)]
    pub no_network: bool,
    /// Egress policy file (TOML; see docs/network.md). Default: mode allowlist with the host's
    /// package registries (discovered from its package-manager configuration) allowed and cloud
    /// metadata addresses denied. Applied to every DNS query of the session (refused names get
    /// REFUSED at once) and, in the kernel, to every connect and datagram (blocked ones fail at
    /// once with EPERM; each is logged as net.connect, each socket's bytes as net.flow); a
    /// malformed file is rejected before the session starts.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Also log every read under this path one by one (repeatable): an absolute path
    /// (`/srv/keys`: it and everything below it) or names matched anywhere (`.pgpass`,
    /// `.config/gh`, one `*` per name: `*.pem`). Added to the defaults: /etc, /root,
    /// /run/secrets, /var/run/secrets, /workspace, .ssh, .aws, .config/gcloud, .docker, .kube,
    /// .netrc, .env, .env.*. Reads through /proc's view of a process (/proc/self/root/...,
    /// .../cwd/..., .../fd/N/...) and under a name a link or rename in the session gave to one
    /// of these paths are logged one by one too. Other reads are summarized (one event with a
    /// count per process and file).
    #[arg(long, value_name = "PATH")]
    pub sensitive_path: Vec<String>,
    /// Most argv bytes recorded per exec (NULs included), e.g. 4K; at most and by default 64K.
    /// Longer argument lists are cut and marked `argv_truncated`. Applies to the whole
    /// process (every session it records).
    #[arg(long, value_name = "SIZE", value_parser = parse_argv_cap)]
    pub argv_cap: Option<u32>,
    /// Size of the ring buffer the kernel programs write process and file records to (a power
    /// of two, 4K to 1G; default 8M). Records that find it full are counted and reported as
    /// `audit.loss` events; the session summary has their total (`usage.events_lost`).
    #[arg(long, value_name = "SIZE", value_parser = parse_ring)]
    pub kernel_ring: Option<u32>,
    /// Allow a domain (wildcards: `*.example.org` for its subdomains); repeatable.
    #[arg(long, value_name = "DOMAIN")]
    pub allow_domain: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--on-timeout`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OnTimeoutArg {
    /// Kill the session.
    Kill,
    /// Pause (freeze) it.
    Pause,
}

impl From<OnTimeoutArg> for OnTimeout {
    fn from(a: OnTimeoutArg) -> Self {
        match a {
            OnTimeoutArg::Kill => OnTimeout::Kill,
            OnTimeoutArg::Pause => OnTimeout::Pause,
        }
    }
}

/// Session to control.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// The session id.
    pub session: String,
}

/// Parse `64M`, `2G`, `512K`, `1048576` (binary units).
/// `--kernel-ring`: a power of two from 4K to 1G.
pub fn parse_ring(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() || !(4096..=1 << 30).contains(&n) {
        return Err(format!(
            "{s:?}: the kernel ring buffer must be a power of two from 4K to 1G, e.g. 8M"
        ));
    }
    Ok(n as u32)
}

/// `--argv-cap`: a size from 16 bytes to 64K.
pub fn parse_argv_cap(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    let max = u64::from(sandtrail_bpf::ARGV_MAX);
    if !(16..=max).contains(&n) {
        return Err(format!(
            "{s:?}: the argv cap must be between 16 bytes and 64K (the kernel programs' buffer)"
        ));
    }
    Ok(n as u32)
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((0, _)) => return Err(format!("{s:?} is not a size: write e.g. 64M or 2G")),
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1u64,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?}: use K, M, G or T")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write e.g. 64M or 2G"))?;
    if n <= 0.0 {
        return Err(format!("size {s:?} must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// Parse a rate in bits per second: `500kbit`, `10mbit`, `1gbit` (decimal units, as tc), or a
/// plain number of bit/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let n: f64 = t[..split].parse().map_err(|_| {
        format!("{s:?} is not a rate: write e.g. 500kbit, 10mbit or 1gbit (bits per second)")
    })?;
    let mult = match &t[split..] {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        other => {
            return Err(format!(
                "unknown rate unit {other:?} in {s:?}: use kbit, mbit or gbit (bits per second; bytes are not accepted, to avoid a factor-8 mistake)"
            ))
        }
    };
    if n.is_nan() || n <= 0.0 || n.is_infinite() {
        return Err(format!("rate {s:?} must be positive"));
    }
    Ok((n * mult).round() as u64)
}

/// Parse `500ms`, `30s`, `10m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let n: f64 = t[..split]
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 30s, 10m or 1h"))?;
    let secs = match &t[split..] {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    if secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Run `run`.
pub fn run(layout: &Layout, a: RunArgs) -> Result<ExitCode> {
    if let Some(cap) = a.argv_cap {
        crate::sources::kernel::set_argv_cap(cap);
    }
    if let Some(bytes) = a.kernel_ring {
        crate::sources::kernel::set_ring_bytes(bytes);
    }
    if let Some(c) = a.cpus {
        if c.is_nan() || c <= 0.0 {
            bail!("--cpus {c} must be positive, e.g. 0.5 for half a CPU");
        }
    }
    if a.pids == Some(0) {
        bail!("--pids 0 would not even allow the command itself; give at least 1");
    }
    let identity = Identity {
        session_id: a.session_id.unwrap_or_else(session::new_session_id),
        tenant: a.tenant,
        user: a
            .user
            .or_else(|| std::env::var("SUDO_USER").ok())
            .or_else(|| std::env::var("USER").ok()),
        template: a.template,
    };
    let opts = RunOptions {
        identity,
        argv: a.command,
        limits: Limits {
            memory_bytes: a.memory,
            cpus: a.cpus,
            pids: a.pids,
        },
        timeout: a.timeout,
        on_timeout: a.on_timeout.into(),
        idle_pause: a.idle_pause,
        workspace: a.workspace,
        as_root: a.as_root,
        network: !a.no_network,
        disk_bytes: a.disk,
        net_rate_bps: a.net_rate,
        policy: session_policy(a.policy.as_deref(), &a.allow_domain, a.no_network)?,
        files: sandtrail_collector::FilePolicy::with_extra(&a.sensitive_path)
            .map_err(|e| anyhow!("--sensitive-path: {e}"))?,
        keep: if a.snapshot {
            Keep::Snapshot
        } else if a.keep {
            Keep::Preserve
        } else {
            Keep::Delete
        },
        on_start: None,
    };
    session::precheck(&opts)?;
    // A SIGTERM/SIGINT/SIGHUP to sandtrail stops the session cleanly (logged, cleaned up).
    let signals = crate::signals::block();
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = RunOptions {
        on_start: Some(tx),
        ..opts
    };
    std::thread::Builder::new()
        .name("sandtrail-signals".into())
        .spawn(move || stop_on_signal(rx, signals))?;
    let writer = Mutex::new(super::open_session_writer(layout)?);
    eprintln!("sandtrail: session {} starting", opts.identity.session_id);
    let outcome = session::run(layout, &writer, opts);
    let commit = writer
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .close()?;
    let outcome = outcome?;
    let u = &outcome.usage;
    eprintln!(
        "sandtrail: session {} ended: reason {}, {}, ran {}, cpu {}, peak memory {}, {} limit hit(s), {} policy violation(s), {} record(s) lost; log size {} (signed)",
        outcome.session_id,
        outcome.reason.as_str(),
        crate::output::exit_text(outcome.exit),
        duration(u.duration_ns.unwrap_or(0)),
        duration(u.cpu_ns.unwrap_or(0)),
        bytes(u.peak_memory_bytes.unwrap_or(0)),
        outcome.limit_hits,
        outcome.violations,
        u.events_lost.unwrap_or(0),
        commit.size
    );
    if let Some(s) = &outcome.snapshot {
        eprintln!(
            "sandtrail: snapshot {} ({}, sha256 {})",
            s.path,
            bytes(s.bytes),
            s.sha256
        );
    }
    eprintln!("sandtrail: see `sandtrail timeline {}`", outcome.session_id);
    crate::sources::kernel::detach_in_background();
    Ok(ExitCode::from(outcome.exit_status().clamp(0, 255) as u8))
}

/// The egress policy of a session: the file and flags, plus the host's package registries;
/// `None` without a network.
pub fn session_policy(
    file: Option<&std::path::Path>,
    allow_domains: &[String],
    no_network: bool,
) -> Result<Option<std::sync::Arc<sandtrail_net::policy::Policy>>> {
    let mut p = sandtrail_net::policy::Policy::from_run_flags(file, allow_domains, no_network)?;
    if no_network {
        return Ok(None);
    }
    p.add_registries(sandtrail_net::registries::discover().registries);
    Ok(Some(std::sync::Arc::new(p)))
}

/// Once the session has started, turns the first termination signal into a stop request
/// (terminate reason `api`, actor `sandtrail run (SIGTERM)`).
fn stop_on_signal(started: Receiver<session::StartReport>, signals: libc::sigset_t) {
    let Ok(Ok(s)) = started.recv() else {
        return;
    };
    let sig = crate::signals::wait(&signals);
    let name = sandtrail_event::signal_name(sig).unwrap_or("a signal");
    let (reply, _answer) = std::sync::mpsc::channel();
    let _ = s.control.send(control::Request {
        command: Command::Stop,
        actor: format!("sandtrail run ({name})"),
        reply,
    });
    // stderr may be gone (a closed terminal, SIGHUP): the stop above must not depend on it.
    let _ = writeln!(std::io::stderr(), "sandtrail: {name}: stopping the session");
}

/// Run `pause`, `resume` or `stop`.
pub fn control_cmd(layout: &Layout, a: ControlArgs, cmd: Command) -> Result<ExitCode> {
    control::request(layout.root(), &a.session, cmd).map_err(|e| anyhow!("{e:#}"))?;
    println!("{}: ok", a.session);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(
            parse_size("12Q").unwrap_err(),
            "unknown size unit in \"12Q\": use K, M, G or T"
        );
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("1mbps")
            .unwrap_err()
            .starts_with("unknown rate unit \"mbps\""));
        assert!(parse_rate("fast").unwrap_err().contains("is not a rate"));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("is not a duration"));
    }
}
