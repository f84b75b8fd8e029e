//! One cgroup per session: its cgroup v2 directory (whose inode number is the cgroup id that
//! `bpf_get_current_cgroup_id()` returns, so it scopes kernel collection), its resource limits
//! through whichever controllers the host offers (v2 where enabled, else the v1 `memory`, `cpu`,
//! `cpuacct`, `pids` and `freezer` hierarchies), freezing, usage and limit-hit counters, cleanup.
//!
//! Hosts are either pure cgroup v2 (`/sys/fs/cgroup` is `cgroup2` with controllers) or hybrid (v1
//! controller hierarchies under `/sys/fs/cgroup/<controller>`, a controller-less v2 hierarchy at
//! `/sys/fs/cgroup/unified`). [`detect`] reads `/proc/self/mountinfo` and handles both with one
//! driver: each controller is used from v2 when the session's v2 directory has it, else from its v1
//! hierarchy.
//!
//! sandtrail only ever touches cgroups it created: everything lives under a `sandtrail` directory
//! at the root of each hierarchy (`/sys/fs/cgroup/unified/sandtrail/<name>`,
//! `/sys/fs/cgroup/memory/sandtrail/<name>`, ...). Minimum kernel: 4.18 (cgroup ids); freezing
//! through v2 `cgroup.freeze` needs 5.2 (else the v1 freezer is used), `cgroup.kill` 5.14 (else
//! processes are killed one by one), `memory.peak` 5.19 (else `memory_peak` is 0 on v2).
//!
//! Files: `mounts` finds the hierarchies, `files` reads and parses interface files, `v1` and `v2`
//! hold the per-version file operations, `driver` implements [`CgroupDriver`] and `session`
//! implements [`SessionCgroup`].

mod driver;
pub mod files;
pub mod mounts;
mod session;
mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};

pub use driver::Driver;

/// Name of the directory, at the root of each cgroup hierarchy, under which sandtrail creates
/// all its cgroups. Nothing outside it is ever modified.
pub const SANDTRAIL_DIR: &str = "sandtrail";

/// Longest accepted session cgroup name.
pub const MAX_NAME_LEN: usize = 128;

/// Finds the host's cgroup hierarchies (hybrid or pure v2) from `/proc/self/mountinfo` and
/// returns the driver for them. Fails if no cgroup v2 hierarchy is mounted (sandtrail needs one
/// for session cgroup ids). Creates nothing.
pub fn detect() -> Result<Box<dyn CgroupDriver>, CgroupError> {
    Ok(Box::new(Driver::detect()?))
}

/// Creates, opens and sweeps session cgroups on one host.
pub trait CgroupDriver: Send + Sync {
    /// A one-line description of the layout, e.g. `hybrid: v2 at /sys/fs/cgroup/unified (ids,
    /// freeze), v1 memory,cpu,cpuacct,pids,freezer`.
    fn describe(&self) -> String;

    /// Creates the session cgroup `name` (`[A-Za-z0-9_-]+`, at most [`MAX_NAME_LEN`]) in every
    /// hierarchy and applies `limits`. Fails if it already exists, if a limit is invalid, or if a
    /// requested limit's controller is unavailable; on failure nothing is left behind.
    fn create(
        &self,
        name: &str,
        limits: &crate::Limits,
    ) -> Result<Box<dyn SessionCgroup>, CgroupError>;

    /// Opens an existing session cgroup that sandtrail created (e.g. to pause or resume it from
    /// another process). Fails if its directory is missing in any hierarchy it should be in.
    fn open(&self, name: &str) -> Result<Box<dyn SessionCgroup>, CgroupError>;

    /// Attaches to a cgroup that someone else (a sandbox provider's runtime) created: `path` is
    /// its directory in the v2 hierarchy (absolute, or relative to the v2 mount). On a hybrid
    /// host the v1 directories at the same relative path serve the controllers v2 lacks, where
    /// they exist. Its limits are left as they are; [`SessionCgroup::remove`] leaves its
    /// directories in place; freeze, thaw, kill and usage work as for sandtrail's own cgroups.
    /// Fails if `path` is not a cgroup v2 directory, is the v2 root, or lies in sandtrail's own
    /// subtree.
    fn attach(&self, path: &Path) -> Result<Box<dyn SessionCgroup>, CgroupError>;

    /// Removes leftover sandtrail cgroups whose name `keep` rejects, killing their processes
    /// first, in every hierarchy; returns the removed names, sorted. Tries every leftover; if any
    /// could not be removed, returns the first such error (the others are still removed).
    fn sweep(&self, keep: &dyn Fn(&str) -> bool) -> Result<Vec<String>, CgroupError>;
}

/// One session's cgroup, in the v2 hierarchy and in each v1 hierarchy the host uses.
pub trait SessionCgroup: Send + Sync {
    /// The session cgroup's name (its directory name in each hierarchy).
    fn name(&self) -> &str;

    /// The cgroup id: the inode number of the v2 directory, which is what
    /// `bpf_get_current_cgroup_id()` returns for its processes (kernel 4.18+).
    fn id(&self) -> u64;

    /// The v2 directory, for attaching cgroup BPF programs.
    fn v2_path(&self) -> &Path;

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy (v2 and each v1
    /// controller in use). Its future children inherit the cgroup.
    fn add_pid(&self, pid: i32) -> Result<(), CgroupError>;

    /// The processes in the cgroup (from the v2 `cgroup.procs`), sorted.
    fn procs(&self) -> Result<Vec<i32>, CgroupError>;

    /// Freezes every process: v2 `cgroup.freeze` (kernel 5.2+) where the v2 directory has it,
    /// else v1 `freezer.state` = `FROZEN`. Returns once the cgroup is frozen (error after 5 s).
    fn freeze(&self) -> Result<(), CgroupError>;

    /// Undoes [`SessionCgroup::freeze`]; returns once the processes run again.
    fn thaw(&self) -> Result<(), CgroupError>;

    /// Whether the cgroup is frozen (`false` when no freezer is available).
    fn is_frozen(&self) -> Result<bool, CgroupError>;

    /// Sends SIGKILL to every process in the cgroup (thawing it first if frozen): v2
    /// `cgroup.kill` where available (5.14+), else one by one until none is left. Waits up to 2 s
    /// for them to be gone; does not fail if some remain ([`SessionCgroup::remove`] will).
    fn kill_all(&self) -> Result<(), CgroupError>;

    /// Current usage, limits and limit-hit counters.
    fn usage(&self) -> Result<Usage, CgroupError>;

    /// Removes the cgroup directory in every hierarchy, waiting up to 2 s for its processes to be
    /// gone; fails (listing them) if they are not. Directories already gone are not an error.
    fn remove(&self) -> Result<(), CgroupError>;
}

/// A session cgroup's usage, limits and limit-hit counters, from whichever hierarchy serves each
/// controller. Counters of a controller the host lacks are 0 / `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time used, in ns: v1 `cpuacct.usage` / v2 `cpu.stat` `usage_usec` × 1000.
    pub cpu_ns: u64,
    /// Memory in use, bytes: v1 `memory.usage_in_bytes` / v2 `memory.current`.
    pub memory_current: u64,
    /// Highest memory use, bytes: v1 `memory.max_usage_in_bytes` / v2 `memory.peak` (0 if absent).
    pub memory_peak: u64,
    /// Memory limit, bytes (`None`: unlimited).
    pub memory_limit: Option<u64>,
    /// Processes killed by the OOM killer: v1 `memory.oom_control` / v2 `memory.events` `oom_kill`.
    pub oom_kills: u64,
    /// Processes and threads in the cgroup: `pids.current`.
    pub pids_current: u64,
    /// `pids.max` (`None`: unlimited).
    pub pids_limit: Option<u64>,
    /// Forks refused because of the pids limit: `pids.events` `max`.
    pub pids_max_events: u64,
    /// CFS enforcement periods elapsed: `cpu.stat` `nr_periods`.
    pub cpu_periods: u64,
    /// Periods in which the cgroup was throttled: `cpu.stat` `nr_throttled`.
    pub cpu_throttled_periods: u64,
    /// Time throttled, ns: v1 `cpu.stat` `throttled_time` / v2 `throttled_usec` × 1000.
    pub cpu_throttled_ns: u64,
    /// CPU quota as `(quota_us, period_us)` (`None`: unlimited).
    pub cpu_quota: Option<(u64, u64)>,
}

/// What went wrong, on which path, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 filesystem in `/proc/self/mountinfo`.
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo); sandtrail needs one for \
         session cgroup ids: mount it, e.g. `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none \
         /sys/fs/cgroup/unified` (kernel 4.5+)"
    )]
    NoV2,
    /// A system call on a cgroup file or directory failed.
    #[error("cannot {op} {path}: {source}{hint}")]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
        /// How to fix it (may be empty), starting with "; ".
        hint: String,
    },
    /// An interface file did not contain what the kernel documents.
    #[error("unexpected contents in {path}: expected {expected}, found {found:?}; is a cgroup filesystem mounted there?")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// What was found (truncated).
        found: String,
    },
    /// A controller needed for a requested limit or operation is not available.
    #[error("the {controller} controller is not available (needed for {needed}): {fix}")]
    ControllerMissing {
        /// `memory`, `cpu`, `pids` or `freezer`.
        controller: &'static str,
        /// What needed it (e.g. "the memory limit").
        needed: &'static str,
        /// How to make it available on this host.
        fix: String,
    },
    /// A session cgroup name outside `[A-Za-z0-9_-]{1,128}`.
    #[error("invalid session cgroup name {name:?}: use 1 to 128 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A limit value that cannot be applied.
    #[error("invalid {what} limit {value}: {why}")]
    InvalidLimit {
        /// `memory`, `cpus` or `pids`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// The accepted range.
        why: &'static str,
    },
    /// `create` of a name that already exists.
    #[error("session cgroup {name:?} already exists at {path}: choose another name, or remove the leftover (sweep)")]
    Exists {
        /// The name.
        name: String,
        /// The existing directory.
        path: PathBuf,
    },
    /// `open` of a name that does not exist (in some hierarchy).
    #[error(
        "no sandtrail session cgroup {name:?} at {path}: it was never created or has been removed"
    )]
    NotFound {
        /// The name.
        name: String,
        /// The missing directory.
        path: PathBuf,
    },
    /// `attach` to a path that is not a foreign cgroup v2 directory.
    #[error("cannot attach to cgroup {path}: {why}")]
    NotAttachable {
        /// The path given.
        path: PathBuf,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// `remove` while processes are still in the cgroup.
    #[error(
        "cannot remove {path}: processes {pids:?} are still in it after {waited_ms} ms; kill them \
         first (kill_all), and check for processes stuck in uninterruptible sleep (state D in ps)"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The processes still in it.
        pids: Vec<i32>,
        /// How long remove waited.
        waited_ms: u64,
    },
    /// Freezing or thawing did not complete in time.
    #[error("{path} did not become {state} within {waited_ms} ms: {hint}")]
    Timeout {
        /// The file that was polled.
        path: PathBuf,
        /// `frozen` or `thawed`.
        state: &'static str,
        /// How long it waited.
        waited_ms: u64,
        /// What may be going on.
        hint: &'static str,
    },
}

impl CgroupError {
    /// An I/O error with a hint chosen from its kind.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => {
                "; cgroup files are writable only by root: run sandtrail as root"
            }
            Some(libc::ENOENT) => {
                "; the cgroup or its interface file does not exist: it was removed by someone else, \
                 or its controller is not mounted/enabled"
            }
            Some(libc::EBUSY) => "; the cgroup still has processes or child cgroups",
            Some(libc::EROFS) => "; the cgroup filesystem is mounted read-only: remount it read-write",
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if op == "write" => {
                "; the kernel rejected the value (out of range, or the file is not writable here)"
            }
            Some(libc::ESRCH) => "; no such process (it has exited)",
            _ => "",
        };
        CgroupError::Io {
            op,
            path: path.to_path_buf(),
            source,
            hint: hint.to_string(),
        }
    }

    /// A parse error on `path`, keeping at most 80 characters of what was found.
    pub(crate) fn parse(path: &Path, expected: &'static str, found: &str) -> Self {
        CgroupError::Parse {
            path: path.to_path_buf(),
            expected,
            found: found.chars().take(80).collect(),
        }
    }
}

/// Checks a session cgroup name: `[A-Za-z0-9_-]{1,128}` (so it is one safe path component).
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "ses_01H-x", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_say_what_where_and_how() {
        let e = CgroupError::io(
            "write",
            Path::new("/sys/fs/cgroup/x/memory.max"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let s = e.to_string();
        assert!(
            s.contains("cannot write /sys/fs/cgroup/x/memory.max"),
            "{s}"
        );
        assert!(s.contains("run sandtrail as root"), "{s}");
    }
}
