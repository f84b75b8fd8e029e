//! sandtrail's sandbox: everything that isolates an agent session from the host and from the
//! audit trail, and the kernel resource controls that bound it.
//!
//! - [`cgroup`]: one cgroup per session (v2 for its id, which scopes kernel collection; v1 or v2
//!   controllers for limits), freezing, usage and limit-hit counters, cleanup;
//! - [`isolate`]: starting the session's first process in new namespaces on an overlay of the
//!   host's root, with seccomp, no_new_privs and an unprivileged uid;
//! - [`net`]: the per-session network: a veth pair to the host with NAT (iproute2 and nftables);
//! - [`sys`]: the raw system calls, in one place.
//!
//! Everything here needs root and Linux; each public type says its minimum kernel version.

pub mod cgroup;
pub mod isolate;
pub mod mountinfo;
pub mod net;
pub mod sys;

/// Resource limits of a session. `None`: unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (OOM kill above it).
    pub memory_bytes: Option<u64>,
    /// CPU limit in CPUs (0.2 = a fifth of one CPU), enforced by CFS quota.
    pub cpus: Option<f64>,
    /// Maximum number of processes/threads.
    pub pids: Option<u64>,
}
