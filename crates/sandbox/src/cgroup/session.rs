//! [`SessionCgroup`] implementation: one session's directories (v2, and each v1 hierarchy in use)
//! and which hierarchy serves each controller.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::files::{self, join};
use super::mounts::Mounts;
use super::{v1, v2, CgroupError, SessionCgroup, Usage, SANDTRAIL_DIR};
use crate::Limits;

/// CFS period sandtrail uses for CPU limits, in µs.
pub const CPU_PERIOD_US: u64 = 100_000;

/// How long `remove` and `kill_all` wait for processes to be gone.
const DRAIN: Duration = Duration::from_secs(2);

/// Which hierarchy serves a controller for this session, and the directory there.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ctl {
    /// The session's v2 directory.
    V2(PathBuf),
    /// The session's directory in the controller's v1 hierarchy.
    V1(PathBuf),
}

/// Validated limit values, computed before anything is created.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    memory: Option<u64>,
    cpu: Option<(u64, u64)>,
    pids: Option<u64>,
}

impl Plan {
    /// Checks `limits`: memory at least 1 MiB, cpus finite and at least 0.01 (1 ms per 100 ms
    /// period, the kernel's minimum quota), pids at least 1.
    pub(crate) fn new(limits: &Limits) -> Result<Self, CgroupError> {
        if let Some(m) = limits.memory_bytes {
            if m < 1 << 20 {
                return Err(CgroupError::InvalidLimit {
                    what: "memory",
                    value: m.to_string(),
                    why: "must be at least 1 MiB (1048576 bytes)",
                });
            }
        }
        let cpu = match limits.cpus {
            None => None,
            Some(c) if (0.01..=1e6).contains(&c) => {
                Some(((c * CPU_PERIOD_US as f64).round() as u64, CPU_PERIOD_US))
            }
            Some(c) => {
                return Err(CgroupError::InvalidLimit {
                    what: "cpus",
                    value: c.to_string(),
                    why: "must be a number of CPUs from 0.01 to 1000000",
                })
            }
        };
        if limits.pids == Some(0) {
            return Err(CgroupError::InvalidLimit {
                what: "pids",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        Ok(Plan {
            memory: limits.memory_bytes,
            cpu,
            pids: limits.pids,
        })
    }
}

/// One session cgroup. See [`SessionCgroup`].
#[derive(Debug)]
pub(crate) struct Session {
    name: String,
    id: u64,
    v2: PathBuf,
    memory: Option<Ctl>,
    cpu: Option<Ctl>,
    /// v1 `cpuacct` directory; `None`: CPU time from the v2 `cpu.stat`.
    cpuacct: Option<PathBuf>,
    pids: Option<Ctl>,
    /// How to freeze: v2 `cgroup.freeze`, v1 freezer, or not at all (`None`).
    freezer: Option<Ctl>,
    /// v1 freezer directory (also when v2 freezing is used), to thaw it before killing.
    v1_freezer: Option<PathBuf>,
    /// Every v1 directory of the session, deduplicated (co-mounted controllers share one).
    v1_dirs: Vec<PathBuf>,
    /// Whether sandtrail created the directories (and so may remove them).
    owned: bool,
}

impl Session {
    /// Works out the session's directories: each of memory/cpu/pids from v2 if the v2 directory
    /// `v2` has its interface file, else from its v1 hierarchy among `v1_in_use`
    /// (`<v1 mount>/sandtrail/<name>`).
    pub(crate) fn resolve(v2: PathBuf, name: &str, mounts: &Mounts, v1_in_use: &[&str]) -> Self {
        let v1_dir = |c: &str| {
            v1_in_use
                .contains(&c)
                .then(|| mounts.v1(c))
                .flatten()
                .map(|m| m.join(SANDTRAIL_DIR).join(name))
        };
        Self::resolve_with(v2, name, &v1_dir, true)
    }

    /// The cgroup someone else created at `v2` (`rel` below the v2 mount): each v1 controller in
    /// `v1_in_use` from `<v1 mount>/<rel>` where that directory exists. Never removed.
    pub(crate) fn resolve_foreign(
        v2: PathBuf,
        rel: &Path,
        mounts: &Mounts,
        v1_in_use: &[&str],
    ) -> Self {
        let v1_dir = |c: &str| {
            v1_in_use
                .contains(&c)
                .then(|| mounts.v1(c))
                .flatten()
                .map(|m| m.join(rel))
                .filter(|d| d.is_dir())
        };
        let name = rel.to_string_lossy().into_owned();
        Self::resolve_with(v2, &name, &v1_dir, false)
    }

    fn resolve_with(
        v2: PathBuf,
        name: &str,
        v1_dir: &dyn Fn(&str) -> Option<PathBuf>,
        owned: bool,
    ) -> Self {
        let pick = |c: &str, file: &str| {
            if v2.join(file).exists() {
                Some(Ctl::V2(v2.clone()))
            } else {
                v1_dir(c).map(Ctl::V1)
            }
        };
        let memory = pick("memory", "memory.max");
        let cpu = pick("cpu", "cpu.max");
        let pids = pick("pids", "pids.max");
        let cpuacct = match cpu {
            Some(Ctl::V2(_)) => None,
            _ => v1_dir("cpuacct"),
        };
        let v1_freezer = v1_dir("freezer");
        let freezer = if v2.join("cgroup.freeze").exists() {
            Some(Ctl::V2(v2.clone()))
        } else {
            v1_freezer.clone().map(Ctl::V1)
        };
        let mut v1_dirs: Vec<PathBuf> = Vec::new();
        let ctls = [&memory, &cpu, &pids].into_iter().filter_map(|c| match c {
            Some(Ctl::V1(d)) => Some(d.clone()),
            _ => None,
        });
        for d in ctls.chain(cpuacct.clone()).chain(v1_freezer.clone()) {
            if !v1_dirs.contains(&d) {
                v1_dirs.push(d);
            }
        }
        let id = std::fs::metadata(&v2).map(|m| m.ino()).unwrap_or(0);
        Session {
            name: name.to_string(),
            id,
            v2,
            memory,
            cpu,
            cpuacct,
            pids,
            freezer,
            v1_freezer,
            v1_dirs,
            owned,
        }
    }

    /// The session's v1 directories.
    pub(crate) fn v1_dirs(&self) -> &[PathBuf] {
        &self.v1_dirs
    }

    /// Applies the limits of `plan`; `missing(controller, needed)` makes the error for a limit
    /// whose controller is unavailable.
    pub(crate) fn apply(
        &self,
        plan: &Plan,
        missing: impl Fn(&'static str, &'static str) -> CgroupError,
    ) -> Result<(), CgroupError> {
        if let Some(bytes) = plan.memory {
            match &self.memory {
                Some(Ctl::V2(d)) => v2::set_memory(d, bytes)?,
                Some(Ctl::V1(d)) => v1::set_memory(d, bytes)?,
                None => return Err(missing("memory", "the memory limit")),
            }
        }
        if let Some((quota, period)) = plan.cpu {
            match &self.cpu {
                Some(Ctl::V2(d)) => v2::set_cpu(d, quota, period)?,
                Some(Ctl::V1(d)) => v1::set_cpu(d, quota, period)?,
                None => return Err(missing("cpu", "the cpus limit")),
            }
        }
        if let Some(max) = plan.pids {
            match &self.pids {
                Some(Ctl::V2(d) | Ctl::V1(d)) => v2::set_pids(d, max)?,
                None => return Err(missing("pids", "the pids limit")),
            }
        }
        Ok(())
    }

    /// Every directory of the session: v2 first, then v1.
    fn all_dirs(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.v2).chain(&self.v1_dirs)
    }

    /// The processes in any of the session's directories (missing directories skipped).
    fn all_procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for d in self.all_dirs() {
            if d.is_dir() {
                match files::read_procs(&join(d, "cgroup.procs")) {
                    Ok(p) => pids.extend(p),
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

impl SessionCgroup for Session {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn v2_path(&self) -> &Path {
        &self.v2
    }

    fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for d in self.all_dirs() {
            files::write(&join(d, "cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        files::read_procs(&join(&self.v2, "cgroup.procs"))
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        match &self.freezer {
            Some(Ctl::V2(d)) => v2::set_frozen(d, true),
            Some(Ctl::V1(d)) => v1::set_frozen(d, true),
            None => Err(no_freezer()),
        }
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        match &self.freezer {
            Some(Ctl::V2(d)) => v2::set_frozen(d, false),
            Some(Ctl::V1(d)) => v1::set_frozen(d, false),
            None => Err(no_freezer()),
        }
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.freezer {
            Some(Ctl::V2(d)) => v2::is_frozen(d),
            Some(Ctl::V1(d)) => v1::is_frozen(d),
            None => Ok(false),
        }
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        // Frozen v1 tasks do not die until thawed; thaw whichever freezer holds them.
        if let Some(Ctl::V2(d)) = &self.freezer {
            if d.is_dir() && v2::is_frozen(d)? {
                v2::set_frozen(d, false)?;
            }
        }
        if let Some(d) = &self.v1_freezer {
            if d.is_dir() && v1::is_frozen(d)? {
                v1::set_frozen(d, false)?;
            }
        }
        if self.v2.is_dir() {
            v2::kill(&self.v2)?;
        }
        let start = Instant::now();
        loop {
            let pids = self.all_procs()?;
            if pids.is_empty() || start.elapsed() > DRAIN {
                return Ok(());
            }
            for pid in pids {
                sigkill(pid);
            }
            sleep(Duration::from_millis(10));
        }
    }

    fn usage(&self) -> Result<Usage, CgroupError> {
        let mut u = Usage {
            cpu_ns: match &self.cpuacct {
                Some(d) => v1::cpuacct_ns(d)?,
                None => v2::cpu_ns(&self.v2)?,
            },
            ..Usage::default()
        };
        match &self.memory {
            Some(Ctl::V2(d)) => v2::memory_usage(d, &mut u)?,
            Some(Ctl::V1(d)) => v1::memory_usage(d, &mut u)?,
            None => {}
        }
        match &self.cpu {
            Some(Ctl::V2(d)) => v2::cpu_usage(d, &mut u)?,
            Some(Ctl::V1(d)) => v1::cpu_usage(d, &mut u)?,
            None => {}
        }
        if let Some(Ctl::V2(d) | Ctl::V1(d)) = &self.pids {
            v2::pids_usage(d, &mut u)?;
        }
        Ok(u)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        if !self.owned {
            return Ok(());
        }
        let start = Instant::now();
        let mut first_err = None;
        for d in self.all_dirs() {
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < DRAIN => {
                        sleep(Duration::from_millis(10));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        let pids = files::read_procs(&join(d, "cgroup.procs")).unwrap_or_default();
                        first_err.get_or_insert(CgroupError::Busy {
                            path: d.clone(),
                            pids,
                            waited_ms: start.elapsed().as_millis() as u64,
                        });
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(CgroupError::io("remove directory", d, e));
                        break;
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The error for freezing without any freezer.
fn no_freezer() -> CgroupError {
    CgroupError::ControllerMissing {
        controller: "freezer",
        needed: "pause/resume",
        fix: "use a kernel with cgroup v2 cgroup.freeze (5.2+) or mount the v1 freezer hierarchy \
              (`mkdir -p /sys/fs/cgroup/freezer && mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer`)"
            .to_string(),
    }
}

/// Sends SIGKILL to `pid`; a process that is already gone is not an error.
fn sigkill(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid > 0` so it
    // targets exactly one process, never a process group or every process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Polls `done` with growing sleeps (1 ms to 50 ms) until it returns true; a [`CgroupError::Timeout`]
/// naming `path` and `state` after `timeout`.
pub(crate) fn wait_for(
    path: &Path,
    state: &'static str,
    timeout: Duration,
    hint: &'static str,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Timeout {
                path: path.to_path_buf(),
                state,
                waited_ms: start.elapsed().as_millis() as u64,
                hint,
            });
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_checks_limits() {
        let ok = Plan::new(&Limits {
            memory_bytes: Some(32 << 20),
            cpus: Some(0.2),
            pids: Some(8),
        })
        .unwrap();
        assert_eq!(
            ok,
            Plan {
                memory: Some(32 << 20),
                cpu: Some((20_000, 100_000)),
                pids: Some(8)
            }
        );
        assert_eq!(
            Plan::new(&Limits::default()).unwrap(),
            Plan {
                memory: None,
                cpu: None,
                pids: None
            }
        );
        for bad in [
            Limits {
                memory_bytes: Some(4096),
                ..Limits::default()
            },
            Limits {
                cpus: Some(0.0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Limits::default()
            },
            Limits {
                cpus: Some(-1.0),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
        ] {
            let e = Plan::new(&bad).unwrap_err();
            assert!(
                matches!(e, CgroupError::InvalidLimit { .. }),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn resolve_hybrid_uses_v1_for_controllers() {
        let mounts = super::super::mounts::parse_mountinfo(
            "32 31 0:29 / /nonexistent/cpu rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /nonexistent/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /nonexistent/unified rw - cgroup2 cgroup2 rw\n",
        );
        let s = Session::resolve(
            PathBuf::from("/nonexistent/unified/sandtrail/s1"),
            "s1",
            &mounts,
            &["memory", "cpu", "cpuacct"],
        );
        assert_eq!(
            s.memory,
            Some(Ctl::V1("/nonexistent/memory/sandtrail/s1".into()))
        );
        assert_eq!(s.cpu, Some(Ctl::V1("/nonexistent/cpu/sandtrail/s1".into())));
        assert_eq!(s.cpuacct, Some("/nonexistent/cpu/sandtrail/s1".into()));
        assert_eq!(s.pids, None);
        assert_eq!(s.freezer, None);
        // cpu and cpuacct are co-mounted: one directory.
        assert_eq!(
            s.v1_dirs,
            vec![
                PathBuf::from("/nonexistent/memory/sandtrail/s1"),
                "/nonexistent/cpu/sandtrail/s1".into()
            ]
        );
    }
}
