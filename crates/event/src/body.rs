//! Kind-specific bodies of an [`Event`](crate::Event) and the closed vocabularies they use.
//!
//! Every struct denies unknown fields (a misspelt field is an error naming its path) and derives
//! `Default`, so callers can write `FileInfo { path, ..Default::default() }` and keep compiling
//! when optional fields are added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

macro_rules! vocab {
    ($(#[doc = $tdoc:literal])* $name:ident { $( $(#[doc = $doc:literal])* $variant:ident => $wire:literal, )* }) => {
        $(#[doc = $tdoc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $( $(#[doc = $doc])* #[serde(rename = $wire)] $variant, )*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire name.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $wire,)* }
            }

            /// Looks a value up by its wire name.
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($wire => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::EventError;

            /// Parses the wire name; the error lists the valid ones.
            fn from_str(s: &str) -> Result<$name, crate::EventError> {
                $name::from_name(s).ok_or_else(|| {
                    let valid: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    crate::EventError::invalid(
                        stringify!($name),
                        format!("unknown value {s:?}; use one of {}", valid.join(", ")),
                    )
                })
            }
        }
    };
}

macro_rules! vocab_default {
    ($name:ident, $variant:ident) => {
        impl Default for $name {
            /// The default value.
            fn default() -> Self {
                $name::$variant
            }
        }
    };
}

vocab! {
    /// How bad an event is, for triage and alert routing (ordered: info < low < ... < critical).
    Severity {
        /// Routine activity.
        Info => "info",
        /// Worth a look in aggregate.
        Low => "low",
        /// Suspicious on its own.
        Medium => "medium",
        /// Likely malicious or a policy breach.
        High => "high",
        /// Act now.
        Critical => "critical",
    }
}

vocab_default!(Severity, Info);

vocab! {
    /// Which part of sandtrail produced the event.
    Source {
        /// Host kernel: eBPF tracepoints and cgroup hooks (below the sandbox).
        Kernel => "kernel",
        /// The sandbox manager: lifecycle, cgroup limits, mounts it performs.
        Sandbox => "sandbox",
        /// The DNS forwarder.
        Dns => "dns",
        /// The HTTP API / orchestrator (tool and model calls, lifecycle requests).
        Api => "api",
        /// The ledger itself (checkpoints, rotations, recovery, pruning).
        Ledger => "ledger",
        /// The detection engine (alerts).
        Detect => "detect",
        /// `sandtrail ingest` of externally produced JSON lines.
        Ingest => "ingest",
    }
}

vocab_default!(Source, Kernel);

vocab! {
    /// Why a session ended.
    TerminateReason {
        /// The agent's command exited by itself.
        Exit => "exit",
        /// The session timeout elapsed.
        Timeout => "timeout",
        /// The kernel OOM killer ended it.
        Oom => "oom",
        /// Stopped through the API / CLI.
        Api => "api",
        /// Stopped because a policy rule was violated.
        PolicyViolation => "policy_violation",
        /// Killed by an unexpected signal.
        Signal => "signal",
        /// sandtrail itself failed.
        InternalError => "internal_error",
    }
}

vocab! {
    /// Why a session was paused.
    PauseReason {
        /// Paused through the API / CLI.
        Api => "api",
        /// An idle or wall-clock timeout.
        Timeout => "timeout",
        /// The platform paused an idle session.
        Autopause => "autopause",
    }
}

vocab! {
    /// The value of `session.reason`: a terminate reason for session.terminate, a pause
    /// reason for session.pause / session.resume. In Rust, build it with `.into()` from a
    /// `TerminateReason` or a `PauseReason`.
    SessionReason {
        /// The agent's command exited by itself (terminate).
        Exit => "exit",
        /// Terminate or pause timeout.
        Timeout => "timeout",
        /// The kernel OOM killer ended it (terminate).
        Oom => "oom",
        /// Terminate or pause through the API.
        Api => "api",
        /// Stopped because a policy rule was violated (terminate).
        PolicyViolation => "policy_violation",
        /// Killed by an unexpected signal (terminate).
        Signal => "signal",
        /// sandtrail itself failed (terminate).
        InternalError => "internal_error",
        /// The platform paused an idle session (pause).
        Autopause => "autopause",
    }
}

impl From<TerminateReason> for SessionReason {
    fn from(r: TerminateReason) -> Self {
        match r {
            TerminateReason::Exit => SessionReason::Exit,
            TerminateReason::Timeout => SessionReason::Timeout,
            TerminateReason::Oom => SessionReason::Oom,
            TerminateReason::Api => SessionReason::Api,
            TerminateReason::PolicyViolation => SessionReason::PolicyViolation,
            TerminateReason::Signal => SessionReason::Signal,
            TerminateReason::InternalError => SessionReason::InternalError,
        }
    }
}

impl From<PauseReason> for SessionReason {
    fn from(r: PauseReason) -> Self {
        match r {
            PauseReason::Api => SessionReason::Api,
            PauseReason::Timeout => SessionReason::Timeout,
            PauseReason::Autopause => SessionReason::Autopause,
        }
    }
}

impl SessionReason {
    /// This reason as a terminate reason, if it is one.
    pub fn as_terminate(&self) -> Option<TerminateReason> {
        TerminateReason::from_name(self.as_str())
    }

    /// This reason as a pause reason, if it is one.
    pub fn as_pause(&self) -> Option<PauseReason> {
        PauseReason::from_name(self.as_str())
    }
}

vocab! {
    /// What the session's filesystem became at cleanup.
    FsState {
        /// Kept in place.
        Preserved => "preserved",
        /// Removed.
        Deleted => "deleted",
        /// Archived to `session.snapshot`, then removed.
        Snapshot => "snapshot",
    }
}

vocab! {
    /// How a file was opened.
    Access {
        /// Read only.
        Read => "read",
        /// Write only.
        Write => "write",
        /// Read and write.
        Readwrite => "readwrite",
    }
}

vocab! {
    /// Outcome of a network operation.
    NetResult {
        /// Succeeded.
        Ok => "ok",
        /// The peer refused or reset.
        Refused => "refused",
        /// sandtrail's egress policy blocked it.
        Blocked => "blocked",
        /// Any other failure.
        Error => "error",
    }
}

vocab! {
    /// Direction of a connection relative to the sandbox.
    Direction {
        /// Initiated from inside the sandbox.
        Outbound => "outbound",
        /// Initiated from outside.
        Inbound => "inbound",
    }
}

vocab! {
    /// Result status of a tool call.
    ToolStatus {
        /// Completed successfully.
        Success => "success",
        /// Completed with an error.
        Error => "error",
        /// Did not complete in time.
        Timeout => "timeout",
    }
}

vocab_default!(ToolStatus, Success);

vocab! {
    /// Which resource limit was hit.
    LimitType {
        /// CPU quota throttling (cgroup cpu.max / cfs_quota).
        CpuThrottle => "cpu_throttle",
        /// The OOM killer fired (memory.max).
        MemoryOom => "memory_oom",
        /// Memory pressure above memory.high (reclaim / throttle).
        MemoryHigh => "memory_high",
        /// The pids limit refused a fork.
        Pids => "pids",
        /// The disk quota was reached.
        DiskQuota => "disk_quota",
        /// The network rate limit delayed or dropped traffic.
        NetRate => "net_rate",
        /// The session timeout.
        Timeout => "timeout",
    }
}

vocab_default!(LimitType, CpuThrottle);

vocab! {
    /// What the system did when a limit was hit.
    LimitAction {
        /// Slowed the session down.
        Throttle => "throttle",
        /// Killed a process or the session.
        Kill => "kill",
        /// Only recorded.
        Warn => "warn",
        /// Refused the operation (fork, write, packet).
        Deny => "deny",
    }
}

vocab_default!(LimitAction, Warn);

vocab! {
    /// A policy decision.
    Decision {
        /// Allowed.
        Allow => "allow",
        /// Denied / blocked.
        Deny => "deny",
        /// Allowed but flagged.
        Log => "log",
    }
}

vocab_default!(Decision, Log);

/// The acting process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessRef {
    /// Process id as seen from the host.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Effective user id (0 = root privileges).
    pub euid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective group id.
    pub egid: u32,
    /// Absolute path of the executable image.
    pub exe: String,
    /// Unique id of this process image (stable across events, unique across pid reuse).
    pub exec_id: String,
    /// Kernel task name (`comm`, at most 15 bytes), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
}

/// Resource configuration (`session.resources`) or assigned limits (`session.limits`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in CPUs (1.5 = one and a half cores); finite, not negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Maximum number of processes / threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Disk quota in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Network rate limit in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rate_bps: Option<u64>,
    /// Session timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// Resource usage of a whole session, reported at `session.terminate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Wall-clock duration from start to terminate, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// CPU time consumed, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// Peak memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes received from the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes sent to the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Number of processes executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// Number of egress attempts the policy blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_blocked: Option<u64>,
    /// Records the session's collection lost (the sum of its `audit.loss` counts); 0 when
    /// nothing was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_lost: Option<u64>,
}

/// A filesystem snapshot taken at cleanup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Where the snapshot archive was written (absolute host path).
    pub path: String,
    /// SHA-256 of the archive, 64 lower-case hex digits.
    pub sha256: String,
    /// Size of the archive in bytes.
    pub bytes: u64,
}

/// Session lifecycle details (`session.*` kinds). Which fields each kind uses:
/// create: tenant_id, user, template, resources; start: host_id, limits; pause: reason, actor;
/// resume: actor, reason; terminate: reason, exit_code, signal, usage; cleanup: fs_state, snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionInfo {
    /// Tenant the session belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// User on whose behalf the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Template or image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Requested resource configuration (session.create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Host the session runs on (session.start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Limits actually assigned (session.start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    /// Pause reason (api|timeout|autopause) or terminate reason
    /// (exit|timeout|oom|api|policy_violation|signal|internal_error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SessionReason>,
    /// Who paused / resumed / stopped the session (user, token name, "system").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Exit status of the agent's command (session.terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number that ended the agent's command, if any (session.terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Resource usage of the whole session (session.terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Filesystem state at cleanup (session.cleanup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_state: Option<FsState>,
    /// The snapshot, when fs_state is "snapshot".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// A program execution (`process.exec`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecInfo {
    /// Path of the executed file as resolved (absolute when known).
    pub path: String,
    /// Full argument list, `argv[0]` first.
    pub argv: Vec<String>,
    /// True when argv was cut short (too many or too long arguments).
    #[serde(default, skip_serializing_if = "is_false")]
    pub argv_truncated: bool,
    /// Working directory at exec time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// "ok", or the errno name of a failed exec such as "ENOENT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// The parent of an executing process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    /// Parent pid.
    pub pid: u32,
    /// Parent executable path.
    pub exe: String,
    /// Parent exec_id (joins to that process's own events).
    pub exec_id: String,
}

/// One step of the ancestor chain (nearest first, after the parent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ancestor {
    /// Ancestor pid.
    pub pid: u32,
    /// Ancestor executable path.
    pub exe: String,
}

/// A process exit (`process.exit`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitInfo {
    /// Exit code when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// True when the process dumped core.
    #[serde(default, skip_serializing_if = "is_false")]
    pub core_dumped: bool,
    /// Time from exec to exit, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
}

/// A filesystem operation (`file.*` kinds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    /// Absolute path the operation applied to (for mounts: the mount point).
    pub path: String,
    /// Absolute destination for file.rename and file.link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// How the file was opened (file.open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// True when this open created the file.
    #[serde(default, skip_serializing_if = "is_false")]
    pub created: bool,
    /// Raw flags of the call: open(2) O_* flags, mount(2) MS_* flags, or
    /// 1 for a symbolic link in file.link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// "ok", or the errno name of a failed call such as "EACCES".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// How many identical operations this event stands for (repeats summarised); absent = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// File mode bits (decimal in JSON: 493 = 0o755) for file.chmod, creating opens,
    /// file.mkdir (the mode argument as passed, before the umask) and file.mknod (with the
    /// file type bits: 4480 = 0o10600 is a FIFO, 8630 = 0o20666 a character device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// New owner for file.chown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// New group for file.chown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Filesystem type for file.mount (e.g. "tmpfs", "overlay").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Mount source for file.mount (device, directory or pseudo name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Device number ("major:minor") of a character or block device node made by file.mknod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// One end of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// IPv4 or IPv6 address in text form.
    pub ip: String,
    /// Port (0 where the protocol has none).
    pub port: u16,
    /// Domain name this address was resolved from (dst only), lower-case, no trailing dot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Application-layer details of a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L7Info {
    /// Application protocol: "tls", "http", "dns", "ssh", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// TLS server name indication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// HTTP Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A network operation (`net.*` kinds). `src` is the initiator and `dst` the responder; for
/// net.listen `dst` is the local listening address, for net.accept `src` is the remote peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetInfo {
    /// Transport protocol, lower-case: "tcp", "udp", "icmp", ...
    pub protocol: String,
    /// Initiating end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Endpoint>,
    /// Responding end (the egress destination for outbound traffic).
    pub dst: Endpoint,
    /// Outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<NetResult>,
    /// Bytes sent by the sandbox side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Bytes received by the sandbox side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Packets sent by the sandbox side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_out: Option<u64>,
    /// Packets received by the sandbox side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_in: Option<u64>,
    /// Flow duration, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Application-layer details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Info>,
    /// Direction relative to the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// One DNS answer record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsAnswer {
    /// Record type ("A", "AAAA", "CNAME", ...). JSON name `type`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Record data in presentation form (an address, a name, ...).
    pub data: String,
    /// Time to live, seconds.
    pub ttl: u32,
}

/// A DNS query (`dns.query`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsInfo {
    /// Queried name, lower-case, no trailing dot.
    pub name: String,
    /// Query type ("A", "AAAA", "TXT", ...). JSON name `type`.
    #[serde(rename = "type")]
    pub qtype: String,
    /// Response code ("NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// Answer records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<DnsAnswer>,
    /// Resolver the query was sent to (or that answered it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

/// A policy decision, on its own (`policy.violation`) or attached to net.* / dns.query events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInfo {
    /// What the policy decided.
    pub decision: Decision,
    /// Name of the rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What was attempted, in words (required for policy.violation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

/// Where a package came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageSource {
    /// Source URL (registry index, direct URL, VCS URL or local path).
    pub url: String,
    /// "registry", "url", "vcs", "path" or "mirror".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A package checksum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageHash {
    /// Algorithm: "sha256", "sha512", ...
    pub algo: String,
    /// Digest, lower-case hex (or the manager's own encoding).
    pub value: String,
}

/// A package install (`package.install`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageInfo {
    /// Package manager: "pip", "npm", "apt", "cargo", ...
    pub manager: String,
    /// Package name.
    pub name: String,
    /// Requested version or specifier as given (e.g. "==2.32.3", "^4.0", "latest").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// Resolved version actually installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PackageSource>,
    /// Checksum of the installed artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<PackageHash>,
    /// Whether the source is on the approved list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// "ok", "error" or "blocked".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// A tool invocation (`tool.invoke`), recorded when the call completes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolInfo {
    /// Tool name ("bash", "read_file", "web_search", ...).
    pub name: String,
    /// The orchestrator's call id (events during the call carry it as `tool_call_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Result status.
    pub status: ToolStatus,
    /// Call duration, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Summary of the input parameters (never secrets in full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_summary: Option<String>,
    /// Summary of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_summary: Option<String>,
    /// Reference to the full detail kept under access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_ref: Option<String>,
}

/// A model call (`model.call`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Call duration, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Summary of the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_summary: Option<String>,
    /// Summary of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_summary: Option<String>,
    /// Reference to the full detail kept under access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_ref: Option<String>,
}

/// A resource limit hit (`limit.hit`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitInfo {
    /// Which limit. JSON name `type`.
    #[serde(rename = "type")]
    pub limit_type: LimitType,
    /// Value measured when the limit was hit, in `unit`.
    pub measured: u64,
    /// Configured limit, in `unit`.
    pub limit: u64,
    /// Unit of `measured` and `limit`: "bytes", "ns", "s", "pids", "bps", "millicpus", ...
    pub unit: String,
    /// What the system did.
    pub action: LimitAction,
    /// cpu_throttle: throttled periods in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<u64>,
    /// cpu_throttle: time throttled in the window, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_ns: Option<u64>,
    /// Length of the measurement window, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ns: Option<u64>,
}

/// A detection (`alert`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertInfo {
    /// Id of the rule that fired.
    pub rule_id: String,
    /// Human-readable title.
    pub title: String,
    /// Severity of the finding.
    pub severity: Severity,
    /// Tags (e.g. ATT&CK technique ids, "exfiltration").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Sequence numbers of the events that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched_seq: Vec<u64>,
    /// Free-text explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Lost events (`audit.loss`): never silent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LossInfo {
    /// Where events were lost ("kernel.ringbuf", "dns.forwarder", "sink.siem", ...).
    pub source: String,
    /// How many events were lost (at least 1).
    pub count: u64,
    /// Window over which they were counted, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ns: Option<u64>,
}

/// A signed checkpoint (`ledger.checkpoint`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    /// Tree size the checkpoint covers.
    pub size: u64,
    /// Merkle root, base64 (as in the C2SP checkpoint body).
    pub root: String,
}

/// A signing-key rotation (`ledger.key_rotation`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationInfo {
    /// The new epoch number.
    pub epoch: u64,
    /// Verifier key of the next signing key (C2SP signed-note verifier-key form).
    pub next_key: String,
    /// Tree size at the rotation.
    pub tree_size: u64,
}

/// Crash recovery (`ledger.recovered`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveredInfo {
    /// Bytes cut from the end of the log.
    pub truncated_bytes: u64,
    /// Partially written records discarded.
    pub torn_records: u64,
    /// Last intact sequence number (absent when the log was empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_seq: Option<u64>,
    /// Sequence number the index was rebuilt from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_rebuilt_from: Option<u64>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Retention pruning (`ledger.pruned`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrunedInfo {
    /// Events with seq below this were pruned from hot storage.
    pub before_seq: u64,
    /// How many events were pruned.
    pub count: u64,
}

/// Ledger housekeeping (`ledger.*` kinds): exactly the member matching the kind is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerInfo {
    /// ledger.checkpoint
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointInfo>,
    /// ledger.key_rotation
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationInfo>,
    /// ledger.recovered
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<RecoveredInfo>,
    /// ledger.pruned
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PrunedInfo>,
}

/// Name of a Linux signal number ("SIGKILL" for 9), for display.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => Some(NAMES[sig as usize]),
        _ => None,
    }
}
