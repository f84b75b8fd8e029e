//! `sandtrail`: a kernel-level, tamper-evident audit trail for AI agent sandboxes.

mod cli;
mod daemon;
mod output;
mod session;
mod signals;
mod sources;
mod timearg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sandtrail records what an AI agent did in its sandbox into a signed, tamper-evident log,
/// and answers questions about it.
#[derive(Parser, Debug)]
#[command(name = "sandtrail", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// State directory holding the store, keys and index.
    #[arg(
        long,
        global = true,
        env = "SANDTRAIL_STATE_DIR",
        default_value = "/var/lib/sandtrail"
    )]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Append events given as JSON lines (sandtrail.event/1) to the store.
    ///
    /// `seq` is assigned by the ledger (a seq in the input is replaced); `ledger.*` events are
    /// refused (only the ledger writes them). The first invalid line stops the ingest with an
    /// error naming the line and the field; every line before it is committed and signed.
    Ingest(cli::ingest::IngestArgs),
    /// Run COMMAND as one audited agent session in a sandbox; exit with its status (128+N
    /// when killed by signal N).
    ///
    /// The session gets new pid, mount, network, uts, ipc and cgroup namespaces, the host's
    /// root read-only under a private writable overlay, a private /tmp, no view of the
    /// sandtrail state directory, seccomp, no_new_privs and (unless --as-root) an unprivileged
    /// uid. Limits: --memory, --cpus, --pids, --timeout, --disk (a quota on the writable
    /// overlay) and --net-rate. Its lifecycle, every limit hit (memory_oom, cpu_throttle, pids,
    /// disk_quota, net_rate, timeout) and every seccomp denial (policy.violation) are recorded
    /// in the store, and so is what the session does, from the kernel: every process (exec with
    /// argv, parent and ancestors; exit code or signal) and file operation (absolute paths;
    /// sensitive reads logged, other reads summarized). Networking: a veth pair to the host with
    /// NAT (needs iproute2 and nftables; bytes in and out are recorded), every DNS query through
    /// the session's forwarder and every connect and datagram decided in the kernel under the
    /// egress policy (--policy, --allow-domain), each logged with its process (dns.query,
    /// net.connect, net.flow with bytes, domain and TLS SNI / HTTP host); --no-network gives
    /// none.
    /// SIGTERM/SIGINT/SIGHUP to sandtrail stop the session (reason `api`), logged and cleaned
    /// up. Needs root.
    Run(cli::run::RunArgs),
    /// Serve the session API (many sessions at once) until SIGTERM/SIGINT.
    ///
    /// HTTP/1.1 + JSON on a Unix socket (default STATE/run/api.sock, root only), optionally on
    /// TCP with bearer tokens (--listen, --token-file). Endpoints: GET /v1/health,
    /// GET /v1/sessions, POST /v1/sessions with {"command": [...], "memory": "64M", "cpus": 0.5,
    /// "pids": 64, "disk": "1G", "net_rate": "10mbit", "timeout": "10m", "workspace": DIR, "as_root": false,
    /// "network": true, "policy": FILE, "allow_domains": [...], "sensitive_paths": [...], "on_timeout": "kill|pause",
    /// "idle_pause": "5m", "keep": "delete|preserve|snapshot", "session_id", "tenant", "user",
    /// "template"} to run a sandbox, or {"cgroup": "/sys/fs/cgroup/.../agent-1", "timeout",
    /// "on_timeout", "idle_pause", "sensitive_paths"} to
    /// attach to a cgroup a sandbox provider created (audited until its last process ends),
    /// GET /v1/sessions/ID, POST /v1/sessions/ID/pause|resume|stop. Sessions log the same
    /// lifecycle events as `run`. Stopping the daemon stops its sessions. Needs root. See
    /// docs/daemon.md.
    Daemon(cli::daemon::DaemonArgs),
    /// Pause (freeze) a running session.
    Pause(cli::run::ControlArgs),
    /// Resume a paused session.
    Resume(cli::run::ControlArgs),
    /// Stop a running session (terminate reason `api`).
    Stop(cli::run::ControlArgs),
    /// Generate a demo agent session, ingest it, print its timeline and verify the store.
    Demo(cli::demo::DemoArgs),
    /// List events, filtered.
    Query(cli::query::QueryArgs),
    /// List sessions, filtered: the incident questions (which sessions touched P, D, V, ended with R).
    Sessions(cli::query::SessionsArgs),
    /// Tell the story of one session: processes, files, network, packages, tools, limits, alerts.
    Timeline(cli::timeline::TimelineArgs),
    /// Verify the whole store, an exported bundle (--bundle) or a consistency proof (--consistency).
    ///
    /// Exit status: 0 when everything verifies, 1 when tampering or damage is found (each
    /// finding names the record or checkpoint and what it means), 2 when the command itself
    /// fails (bad arguments, unreadable files).
    Verify(cli::verify::VerifyArgs),
    /// Export one session as a self-contained bundle that verifies offline.
    Export(cli::verify::ExportArgs),
    /// Prove that the newest checkpoint extends an older one you kept (an RFC 9162
    /// consistency proof, checked offline by `verify --consistency`).
    Consistency(cli::verify::ConsistencyArgs),
    /// Show or rotate the signing keys.
    #[command(subcommand)]
    Key(cli::key::KeyCommand),
    /// Sign a checkpoint of the log now and print it.
    Checkpoint,
    /// List the signed checkpoints of the store.
    Checkpoints(cli::key::CheckpointsArgs),
    /// Print the JSON Schema of sandtrail.event/1.
    Schema,
}

/// mimalloc rather than glibc's malloc: the collector makes ~10 small allocations per event,
/// and with glibc they took a third of its time (docs/benchmarks.md, "the allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandtrail: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
