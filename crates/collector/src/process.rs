//! The process table and the `process.exec` / `process.exit` events built from it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sandtrail_bpf::{ExitStatus, IdMap, RawRecord, Task, WaitStatus};
use sandtrail_event::{
    Ancestor, Event, ExecInfo, ExitInfo, Kind, ParentRef, ProcessRef, Severity, Source,
};

use crate::errno::errno_name;
use crate::file::{Aliases, FilePolicy, Flush, ReadSummaries};

/// Where a watched cgroup's events go: its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Session id of the events.
    pub session_id: String,
    /// Host id of the events.
    pub host_id: String,
}

/// One process image the table knows.
#[derive(Clone, Debug)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    ppid: u32,
    /// cgroup id of the session it belongs to.
    pub(crate) session: u64,
    exe: String,
    pub(crate) exec_id: String,
    uid: u32,
    euid: u32,
    gid: u32,
    egid: u32,
    comm: String,
    /// ktime of its exec (or fork, until it execs); `exec_id` is made of the pid and this.
    pub(crate) start_ktime: u64,
    /// Working directory: from `chdir`/`fchdir` records, else from `/proc` at first sighting or
    /// the exec record, else inherited at fork; `None` while unknown.
    pub(crate) cwd: Option<PathBuf>,
    /// Absolute paths of the fds its successful opens returned (inherited at fork; never
    /// forgotten, since `close` is not traced: an fd reused by `dup2`/`socket`/`pipe` keeps
    /// its old path until an open returns it again).
    pub(crate) fds: IdMap<i32, PathBuf>,
    /// sandtrail's own code: the tree's root (the sandbox's init) and its forks until they
    /// exec. Their file calls (the sandbox's mounts, /dev nodes, pivot_root) are the sandbox
    /// being built, not the agent: tracked for cwd and fds, not logged.
    pub(crate) setup: bool,
}

impl Proc {
    pub(crate) fn process_ref(&self) -> ProcessRef {
        ProcessRef {
            pid: self.pid,
            ppid: self.ppid,
            uid: self.uid,
            euid: self.euid,
            gid: self.gid,
            egid: self.egid,
            exe: self.exe.clone(),
            exec_id: self.exec_id.clone(),
            comm: (!self.comm.is_empty()).then(|| self.comm.clone()),
        }
    }
}

/// A process that was running before its session began, as /proc shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Its executable.
    pub exe: String,
    /// Its argument list.
    pub argv: Vec<String>,
    /// Its working directory.
    pub cwd: Option<String>,
    /// Its `comm`.
    pub comm: String,
    /// When it started, `CLOCK_MONOTONIC` ns (boot-time based).
    pub start_ktime: u64,
}

/// How long an exited process stays known to [`Collector::process_ref`] (at least).
pub const GONE_KEEP_NS: u64 = 30_000_000_000;
/// Exited processes remembered before those older than [`GONE_KEEP_NS`] are forgotten.
const GONE_MAX: usize = 4096;

/// Processes that exited lately, for the events of other sources read after an exit (network
/// records often are): each stays known [`GONE_KEEP_NS`] at least, and beyond that only while
/// more than [`GONE_MAX`] are known. Forgotten oldest first, in O(1) per exit however many
/// processes a session churns through.
struct Gone {
    /// pid → (session, process, exit ktime).
    map: IdMap<u32, (u64, ProcessRef, u64)>,
    /// (exit ktime, pid), in the order the exits came (oldest first).
    order: std::collections::VecDeque<(u64, u32)>,
}

impl Default for Gone {
    fn default() -> Self {
        Gone {
            map: IdMap::with_capacity_and_hasher(GONE_MAX, Default::default()),
            order: std::collections::VecDeque::with_capacity(GONE_MAX),
        }
    }
}

impl Gone {
    fn insert(&mut self, pid: u32, session: u64, process: ProcessRef, ktime: u64) {
        self.map.insert(pid, (session, process, ktime));
        self.order.push_back((ktime, pid));
        let keep_after = ktime.saturating_sub(GONE_KEEP_NS);
        while self.order.len() > GONE_MAX {
            let (t, old) = self.order[0];
            if t > keep_after {
                break;
            }
            self.order.pop_front();
            // A pid the kernel gave out again has a later entry in place: that one stays.
            if self.map.get(&old).is_some_and(|e| e.2 == t) {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, pid: u32) -> Option<&(u64, ProcessRef, u64)> {
        self.map.get(&pid)
    }
}

/// An exit whose status the tracepoints did not show, waiting for the parent's `wait`.
struct Parked {
    proc: Proc,
    ktime: u64,
}

/// Records in, events out; see the crate docs.
pub struct Collector {
    /// Wall-clock ns minus `CLOCK_MONOTONIC` ns.
    offset_ns: i128,
    scopes: IdMap<u64, Scope>,
    pub(crate) procs: IdMap<u32, Proc>,
    parked: IdMap<u32, Parked>,
    /// Processes that exited lately.
    gone: Gone,
    /// Which reads are logged one by one (see [`FilePolicy`]).
    pub(crate) file_policy: FilePolicy,
    /// Sessions with a policy of their own ([`Collector::set_session_file_policy`]).
    pub(crate) session_file_policies: IdMap<u64, FilePolicy>,
    /// Summarized reads waiting for their process's exit or the session's end.
    pub(crate) reads: ReadSummaries,
    /// Per session: the names its links and renames gave to sensitive paths.
    pub(crate) aliases: IdMap<u64, Aliases>,
    /// The working directory of a pid at its first sighting (`/proc/<pid>/cwd`; tests swap it).
    pub(crate) cwd_of: fn(u32) -> Option<PathBuf>,
}

/// The exec id of the image `pid` started at `ktime`: unique on this host across pid reuse.
fn exec_id(pid: u32, ktime: u64) -> String {
    format!("{pid}-{ktime}")
}

/// `path` made absolute against `cwd` and normalized (`.` and `..` removed, `//` and a trailing
/// `/` dropped) without touching the file system; relative without a `cwd`.
pub(crate) fn absolute(path: &Path, cwd: Option<&Path>) -> String {
    // Most paths (a loader's library opens, say) are absolute and normal already: one pass
    // checks that, and they are copied as they are.
    let bytes = path.as_os_str().as_bytes();
    if is_normal_absolute(bytes) {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_owned();
        }
    }
    normalize(bytes, cwd)
}

/// [`absolute`] of a path the caller gives up: a path that is absolute, normal and UTF-8 already
/// (most of them) becomes the string without a copy.
pub(crate) fn absolute_owned(path: PathBuf, cwd: Option<&Path>) -> String {
    match path.into_os_string().into_string() {
        Ok(s) if is_normal_absolute(s.as_bytes()) => s,
        Ok(s) => absolute(Path::new(&s), cwd),
        Err(os) => absolute(Path::new(&os), cwd),
    }
}

/// Whether `p` is absolute with nothing to normalize: no empty, `.` or `..` component and no
/// trailing `/` (`/` itself is normal).
fn is_normal_absolute(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    if p.len() == 1 {
        return true;
    }
    p[1..]
        .split(|&b| b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Text of a path: as it is when it is UTF-8 (validated by the fast check first), else with
/// U+FFFD for what is not.
fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// [`absolute`] the long way: components applied one by one.
fn normalize(path: &[u8], cwd: Option<&Path>) -> String {
    let path = lossy(path);
    let mut out = String::with_capacity(path.len() + cwd.map_or(0, |c| c.as_os_str().len() + 1));
    let rooted = match cwd {
        Some(c) if !path.starts_with('/') => {
            let c = lossy(c.as_os_str().as_bytes());
            push_normalized(&mut out, &c);
            c.starts_with('/')
        }
        _ => path.starts_with('/'),
    };
    push_normalized(&mut out, &path);
    if rooted && out.is_empty() {
        out.push('/');
    } else if !rooted && out.starts_with('/') {
        out.remove(0);
    }
    out
}

/// Appends `p`'s components to `out` (`""` or `/a/b`), applying `.` and `..` lexically.
fn push_normalized(out: &mut String, p: &str) {
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                let keep = out.rfind('/').unwrap_or(0);
                out.truncate(keep);
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    /// A collector whose clock offset is measured now.
    pub fn new() -> Self {
        Self::with_offset(clock_offset_ns())
    }

    /// A collector with a given wall-minus-monotonic offset (for tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Collector {
            offset_ns,
            scopes: IdMap::default(),
            procs: IdMap::default(),
            parked: IdMap::default(),
            gone: Gone::default(),
            file_policy: FilePolicy::default(),
            session_file_policies: IdMap::default(),
            reads: ReadSummaries::default(),
            aliases: IdMap::default(),
            cwd_of: procfs_cwd,
        }
    }

    /// Sets which read-only opens are logged one by one (the rest are summarized).
    pub fn set_file_policy(&mut self, policy: FilePolicy) {
        self.file_policy = policy;
    }

    /// Gives session `cgroup_id` its own read policy (until it is unwatched).
    pub fn set_session_file_policy(&mut self, cgroup_id: u64, policy: FilePolicy) {
        self.session_file_policies.insert(cgroup_id, policy);
    }

    /// The read policy of session `cgroup_id`.
    pub(crate) fn file_policy_of(&self, cgroup_id: u64) -> &FilePolicy {
        self.session_file_policies
            .get(&cgroup_id)
            .unwrap_or(&self.file_policy)
    }

    /// Replaces how the working directory of a process first seen is found (default: the
    /// `/proc/<pid>/cwd` link); for tests.
    pub fn set_cwd_lookup(&mut self, lookup: fn(u32) -> Option<PathBuf>) {
        self.cwd_of = lookup;
    }

    /// The process `pid` of session `cgroup_id` as the table knows it now (for events of other
    /// sources: network, DNS); `None` when it is not one of the session's.
    /// A process that exited in the last [`GONE_KEEP_NS`] is still found (its network records
    /// are often read after its exit).
    pub fn process_ref(&self, cgroup_id: u64, pid: u32) -> Option<ProcessRef> {
        match self.procs.get(&pid) {
            Some(p) => (p.session == cgroup_id).then(|| p.process_ref()),
            None => self
                .gone
                .get(pid)
                .filter(|(session, _, _)| *session == cgroup_id)
                .map(|(_, r, _)| r.clone()),
        }
    }

    fn remember_gone(&mut self, p: &Proc, ktime: u64) {
        self.gone.insert(p.pid, p.session, p.process_ref(), ktime);
    }

    /// Routes the records of processes in cgroup `cgroup_id` (and of their descendants) to
    /// `scope`.
    pub fn watch(&mut self, cgroup_id: u64, scope: Scope) {
        self.scopes.insert(cgroup_id, scope);
    }

    /// Makes a process that is not in the cgroup (the sandbox's init, which launches the
    /// session's first process) known as the root of the session's process tree, so that the
    /// first process names it as its parent.
    pub fn add_root(&mut self, cgroup_id: u64, pid: u32, exe: &str, comm: &str, ktime: u64) {
        self.procs.insert(
            pid,
            Proc {
                pid,
                ppid: 0,
                session: cgroup_id,
                exe: exe.to_string(),
                exec_id: exec_id(pid, ktime),
                uid: 0,
                euid: 0,
                gid: 0,
                egid: 0,
                comm: comm.to_string(),
                start_ktime: ktime,
                cwd: None,
                fds: IdMap::default(),
                setup: true,
            },
        );
    }

    /// Takes up a process that was already running when the session began (read from /proc by
    /// the caller): it joins the table, so its children name it as their parent, and a
    /// `process.exec` with source `sandbox` (not seen by the kernel programs: read from /proc)
    /// and the process's start time records that it was there.
    pub fn adopt(&mut self, cgroup_id: u64, p: Adopted) -> Vec<(u64, Event)> {
        let proc = Proc {
            pid: p.pid,
            ppid: p.ppid,
            session: cgroup_id,
            exe: p.exe.clone(),
            exec_id: exec_id(p.pid, p.start_ktime),
            uid: p.uid,
            euid: p.euid,
            gid: p.gid,
            egid: p.egid,
            comm: p.comm.clone(),
            start_ktime: p.start_ktime,
            cwd: p.cwd.as_ref().map(PathBuf::from),
            fds: IdMap::default(),
            setup: false,
        };
        let process = proc.process_ref();
        self.procs.insert(p.pid, proc);
        let (parent, ancestors) = self.lineage(p.ppid);
        let Some(mut e) = self.event(Kind::ProcessExec, cgroup_id, p.start_ktime) else {
            return Vec::new();
        };
        e.source = Source::Sandbox;
        e.process = Some(process);
        e.exec = Some(Box::new(ExecInfo {
            path: p.exe,
            argv: p.argv,
            argv_truncated: false,
            cwd: p.cwd,
            result: Some("ok".into()),
        }));
        e.parent = parent.map(Box::new);
        e.ancestors = ancestors;
        vec![(cgroup_id, e)]
    }

    /// Stops routing `cgroup_id`; forgets its processes. Exits still waiting for a status are
    /// returned with an unknown status.
    pub fn unwatch(&mut self, cgroup_id: u64) -> Vec<(u64, Event)> {
        let mut out = self.flush_reads(Flush::Session(cgroup_id), 0);
        self.session_file_policies.remove(&cgroup_id);
        self.aliases.remove(&cgroup_id);
        let parked: Vec<u32> = self
            .parked
            .iter()
            .filter(|(_, p)| p.proc.session == cgroup_id)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in parked {
            let p = self.parked.remove(&pid).expect("listed above");
            out.extend(self.exit_event(&p.proc, p.ktime, None));
        }
        self.procs.retain(|_, p| p.session != cgroup_id);
        self.scopes.remove(&cgroup_id);
        out
    }

    pub(crate) fn ts(&self, ktime: u64) -> u64 {
        (ktime as i128 + self.offset_ns).max(0) as u64
    }

    /// The session a task belongs to: its process's, else its cgroup's.
    pub(crate) fn session_of(&self, task: &Task) -> Option<u64> {
        self.procs
            .get(&task.pid)
            .map(|p| p.session)
            .or_else(|| {
                self.scopes
                    .contains_key(&task.cgroup_id)
                    .then_some(task.cgroup_id)
            })
            .or_else(|| {
                // A descendant cgroup of a watched one: unambiguous when one session is watched.
                (self.scopes.len() == 1).then(|| *self.scopes.keys().next().expect("one"))
            })
    }

    pub(crate) fn event(&self, kind: Kind, session: u64, ktime: u64) -> Option<Event> {
        let scope = self.scopes.get(&session)?;
        Some(Event::new(
            kind,
            Source::Kernel,
            Some(scope.session_id.clone()),
            &scope.host_id,
            self.ts(ktime),
        ))
    }

    /// The process of a task, from the table or (first sighting) from the task itself.
    pub(crate) fn proc_for(&mut self, task: &Task, session: u64) -> &mut Proc {
        let cwd_of = self.cwd_of;
        self.procs.entry(task.pid).or_insert_with(|| Proc {
            pid: task.pid,
            ppid: task.ppid,
            session,
            exe: String::new(),
            exec_id: exec_id(task.pid, task.ktime_ns),
            uid: task.uid,
            euid: task.uid,
            gid: task.gid,
            egid: task.gid,
            comm: task.comm.clone(),
            start_ktime: task.ktime_ns,
            cwd: cwd_of(task.pid),
            fds: IdMap::default(),
            setup: false,
        })
    }

    /// The table's entry of a pid known to be there (after `proc_for`).
    pub(crate) fn procs_get(&self, pid: u32) -> &Proc {
        &self.procs[&pid]
    }

    /// Parent and ancestors (nearest first) of a process with parent `ppid`, as far as the
    /// table knows them.
    fn lineage(&self, ppid: u32) -> (Option<ParentRef>, Vec<Ancestor>) {
        let Some(parent) = self.procs.get(&ppid) else {
            return (None, Vec::new());
        };
        let mut ancestors = Vec::new();
        let mut next = parent.ppid;
        while let Some(a) = self.procs.get(&next) {
            if ancestors.len() >= 64 || a.pid == parent.pid {
                break;
            }
            ancestors.push(Ancestor {
                pid: a.pid,
                exe: a.exe.clone(),
            });
            next = a.ppid;
        }
        let parent_ref = ParentRef {
            pid: parent.pid,
            exe: parent.exe.clone(),
            exec_id: parent.exec_id.clone(),
        };
        (Some(parent_ref), ancestors)
    }

    /// Feeds one record; returns the events it completes, with the cgroup id of their session.
    pub fn record(&mut self, r: RawRecord) -> Vec<(u64, Event)> {
        match r {
            RawRecord::Fork { parent, child_pid } => {
                let Some(session) = self.session_of(&parent) else {
                    return Vec::new();
                };
                let p = self.proc_for(&parent, session).clone();
                // The same image as its parent, but a process of its own: its own exec_id, so
                // that its exit (e.g. a subshell's) is not taken for its parent's.
                self.procs.insert(
                    child_pid,
                    Proc {
                        pid: child_pid,
                        ppid: p.pid,
                        exec_id: exec_id(child_pid, parent.ktime_ns),
                        start_ktime: parent.ktime_ns,
                        ..p
                    },
                );
                Vec::new()
            }
            RawRecord::Exec {
                task,
                args,
                euid,
                egid,
                cwd,
                ..
            } => {
                let Some(session) = self.session_of(&task) else {
                    return Vec::new();
                };
                // The cwd tracked from chdir/fchdir records (exact unless one was lost), else the
                // /proc read when the record was decoded (racy).
                let cwd = self
                    .procs
                    .get(&task.pid)
                    .and_then(|p| p.cwd.clone())
                    .or(cwd);
                let cwd_s = cwd.as_deref().map(|c| c.to_string_lossy().into_owned());
                let (path, argv, truncated) = match &args {
                    Some(a) => (
                        absolute(&a.filename, cwd.as_deref()),
                        a.argv_lossy(),
                        a.argv_truncated || a.filename_truncated || a.argv_fault,
                    ),
                    None => (String::new(), Vec::new(), false),
                };
                let p = self.proc_for(&task, session);
                let ppid = if task.ppid != 0 { task.ppid } else { p.ppid };
                p.ppid = ppid;
                p.exe = if path.is_empty() {
                    format!("[{}]", task.comm)
                } else {
                    path.clone()
                };
                p.exec_id = exec_id(task.pid, task.ktime_ns);
                p.uid = task.uid;
                p.gid = task.gid;
                // From /proc when the process was still there to read (a setuid binary's new
                // euid); else what its set*id calls and its parent's left it with.
                p.euid = euid.unwrap_or(p.euid);
                p.egid = egid.unwrap_or(p.egid);
                p.comm = task.comm.clone();
                p.start_ktime = task.ktime_ns;
                if p.cwd.is_none() {
                    p.cwd = cwd.clone();
                }
                p.setup = false;
                let process = p.process_ref();
                let (parent, ancestors) = self.lineage(ppid);
                let Some(mut e) = self.event(Kind::ProcessExec, session, task.ktime_ns) else {
                    return Vec::new();
                };
                e.process = Some(process.clone());
                e.exec = Some(Box::new(ExecInfo {
                    path: process.exe,
                    argv,
                    argv_truncated: truncated,
                    cwd: cwd_s,
                    result: Some("ok".into()),
                }));
                e.parent = parent.map(Box::new);
                e.ancestors = ancestors;
                vec![(session, e)]
            }
            RawRecord::ExecFailed { task, args, errno } => {
                let Some(session) = self.session_of(&task) else {
                    return Vec::new();
                };
                let p = self.proc_for(&task, session).clone();
                let cwd = p.cwd.clone().or_else(|| (self.cwd_of)(task.pid));
                let (parent, ancestors) = self.lineage(p.ppid);
                let Some(mut e) = self.event(Kind::ProcessExec, session, task.ktime_ns) else {
                    return Vec::new();
                };
                e.severity = Severity::Low;
                let mut process = p.process_ref();
                if process.exe.is_empty() {
                    process.exe = format!("[{}]", task.comm);
                }
                e.process = Some(process);
                e.exec = Some(match args {
                    Some(a) => Box::new(ExecInfo {
                        path: absolute(&a.filename, cwd.as_deref()),
                        argv: a.argv_lossy(),
                        argv_truncated: a.argv_truncated || a.filename_truncated || a.argv_fault,
                        cwd: cwd.map(|c| c.to_string_lossy().into_owned()),
                        result: Some(errno_name(errno)),
                    }),
                    None => Box::new(ExecInfo {
                        result: Some(errno_name(errno)),
                        ..Default::default()
                    }),
                });
                e.parent = parent.map(Box::new);
                e.ancestors = ancestors;
                vec![(session, e)]
            }
            RawRecord::Cred { task, call } => {
                if let Some(p) = self.procs.get_mut(&task.pid) {
                    p.uid = task.uid;
                    p.gid = task.gid;
                    if let Some(u) = call.new_euid() {
                        p.euid = u;
                    }
                    if let Some(g) = call.new_egid() {
                        p.egid = g;
                    }
                }
                Vec::new()
            }
            RawRecord::Exit { task, status } => {
                let Some(session) = self.session_of(&task) else {
                    return Vec::new();
                };
                self.proc_for(&task, session);
                let p = self
                    .procs
                    .remove(&task.pid)
                    .expect("proc_for made the entry");
                self.remember_gone(&p, task.ktime_ns);
                // Its summarized reads first: they happened before it ended.
                let mut out = self.flush_reads(Flush::Pid(task.pid), 1);
                out.extend(match status {
                    ExitStatus::Unknown => {
                        // The parent's wait may still tell; until then it is parked.
                        self.parked.insert(
                            task.pid,
                            Parked {
                                proc: p,
                                ktime: task.ktime_ns,
                            },
                        );
                        Vec::new()
                    }
                    s => self.exit_event(&p, task.ktime_ns, Some(s)),
                });
                out
            }
            RawRecord::File { task, call, result } => self.file(task, call, result),
            RawRecord::Reaped {
                child_pid, status, ..
            } => match self.parked.remove(&child_pid) {
                Some(p) => {
                    let s = match status {
                        WaitStatus::Exited(c) => ExitStatus::Code(c),
                        WaitStatus::Signaled {
                            signal,
                            core_dumped,
                        } => ExitStatus::Signal {
                            signal,
                            core_signal: core_dumped,
                        },
                    };
                    self.exit_event(&p.proc, p.ktime, Some(s))
                }
                None => Vec::new(),
            },
        }
    }

    fn exit_event(&self, p: &Proc, ktime: u64, status: Option<ExitStatus>) -> Vec<(u64, Event)> {
        let Some(mut e) = self.event(Kind::ProcessExit, p.session, ktime) else {
            return Vec::new();
        };
        let mut process = p.process_ref();
        if process.exe.is_empty() {
            process.exe = format!("[{}]", p.comm);
        }
        e.process = Some(process);
        let duration_ns = Some(ktime.saturating_sub(p.start_ktime));
        e.exit = Some(match status {
            Some(ExitStatus::Code(c)) => Box::new(ExitInfo {
                code: Some(c),
                duration_ns,
                ..Default::default()
            }),
            Some(ExitStatus::Signal {
                signal,
                core_signal,
            }) => {
                e.severity = Severity::Low;
                Box::new(ExitInfo {
                    signal: Some(signal as i32),
                    core_dumped: core_signal,
                    duration_ns,
                    ..Default::default()
                })
            }
            Some(ExitStatus::Unknown) | None => Box::new(ExitInfo {
                duration_ns,
                ..Default::default()
            }),
        });
        vec![(p.session, e)]
    }
}

/// The working directory of `pid`, best effort.
pub(crate) fn procfs_cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Wall-clock minus `CLOCK_MONOTONIC`, in ns.
pub(crate) fn clock_offset_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let mono = read(libc::CLOCK_MONOTONIC);
    let real = read(libc::CLOCK_REALTIME);
    real - mono
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandtrail_bpf::{CredCall, ExecArgs, FileCall, FileOp};

    const CG: u64 = 4242;

    /// Exited processes stay known 30 s at least; past GONE_MAX the oldest of those older than
    /// that go first, and a reused pid's later entry is not taken with its earlier one.
    #[test]
    fn exited_processes_are_forgotten_oldest_first_after_their_time() {
        let r = |pid: u32| ProcessRef {
            pid,
            ppid: 1,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            exe: "/bin/true".into(),
            exec_id: format!("e{pid}"),
            comm: None,
        };
        let mut g = Gone::default();
        let n = GONE_MAX as u32;
        // More than GONE_MAX exits within 30 s: all kept.
        for pid in 1..=n + 10 {
            g.insert(pid, CG, r(pid), u64::from(pid));
        }
        assert_eq!(g.map.len(), GONE_MAX + 10);
        // pid 5 exits again (reused) at t = 20 s.
        g.insert(5, CG, r(5), 20_000_000_000);
        // At t = 30 s + 12 ns, exits at t <= 12 ns are old enough; the oldest go until GONE_MAX
        // remain in the order (the reused pid counts twice there).
        g.insert(n + 11, CG, r(n + 11), GONE_KEEP_NS + 12);
        assert_eq!(g.order.len(), GONE_MAX);
        assert!(
            g.get(1).is_none() && g.get(12).is_none(),
            "pids 1..=12 forgotten"
        );
        assert_eq!(
            g.get(5).map(|e| e.2),
            Some(20_000_000_000),
            "the reused pid stays"
        );
        assert_eq!(g.get(13).map(|e| (e.0, e.1.pid, e.2)), Some((CG, 13, 13)));
        // 4,107 pids known before, 11 forgotten (1..=12 but the reused 5).
        assert_eq!(g.map.len(), GONE_MAX);
    }

    fn task(pid: u32, ppid: u32, ktime: u64, comm: &str) -> Task {
        Task {
            tid: pid,
            pid,
            ppid,
            uid: 65534,
            gid: 65534,
            cgroup_id: CG,
            ktime_ns: ktime,
            comm: comm.into(),
        }
    }

    fn exec(pid: u32, ppid: u32, ktime: u64, file: &str, argv: &[&str], cwd: &str) -> RawRecord {
        RawRecord::Exec {
            task: task(
                pid,
                ppid,
                ktime,
                Path::new(file).file_name().unwrap().to_str().unwrap(),
            ),
            old_tid: pid,
            args: Some(ExecArgs {
                filename: file.into(),
                argv: argv.iter().map(|a| a.into()).collect(),
                argv_truncated: false,
                filename_truncated: false,
                argv_fault: false,
                at: None,
            }),
            euid: None,
            egid: None,
            cwd: Some(cwd.into()),
        }
    }

    fn collector() -> Collector {
        let mut c = Collector::with_offset(1_000_000_000_000);
        c.watch(
            CG,
            Scope {
                session_id: "s1".into(),
                host_id: "h".into(),
            },
        );
        c.add_root(CG, 10, "/usr/bin/sandtrail", "sandtrail-init", 100);
        c.set_cwd_lookup(|_| None);
        c
    }

    fn one(v: Vec<(u64, Event)>) -> Event {
        assert_eq!(v.len(), 1, "{v:#?}");
        let (cg, e) = v.into_iter().next().unwrap();
        assert_eq!(cg, CG);
        e.validate().unwrap();
        e
    }

    #[test]
    fn a_shell_pipeline_has_exact_lineage_and_statuses() {
        let mut c = collector();
        // init (10) forks the command (11), which execs bash.
        assert!(c
            .record(RawRecord::Fork {
                parent: task(10, 1, 150, "sandtrail-init"),
                child_pid: 11
            })
            .is_empty());
        let e = one(c.record(exec(11, 10, 200, "/bin/bash", &["bash", "-c", "x"], "/tmp")));
        assert_eq!(e.kind, Kind::ProcessExec);
        assert_eq!(e.ts_ns, 1_000_000_000_200);
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        let p = e.process.as_ref().unwrap();
        assert_eq!((p.pid, p.ppid, p.exe.as_str()), (11, 10, "/bin/bash"));
        assert_eq!(p.exec_id, "11-200");
        assert_eq!(e.exec.as_ref().unwrap().argv, ["bash", "-c", "x"]);
        assert_eq!(e.exec.as_ref().unwrap().cwd.as_deref(), Some("/tmp"));
        assert_eq!(e.exec.as_ref().unwrap().result.as_deref(), Some("ok"));
        let parent = e.parent.as_ref().unwrap();
        assert_eq!(
            (parent.pid, parent.exe.as_str(), parent.exec_id.as_str()),
            (10, "/usr/bin/sandtrail", "10-100")
        );
        assert!(e.ancestors.is_empty());

        // bash cds (the tracked cwd), forks 12, which runs a relative path.
        assert!(c
            .record(RawRecord::File {
                task: task(11, 10, 250, "bash"),
                call: FileCall {
                    op: FileOp::Chdir,
                    path: "/work/src".into(),
                    path2: None,
                    dirfd: -100,
                    dirfd2: -100,
                    fd: None,
                    flags: 0,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    length: 0,
                    fstype: None,
                    path_fault: false,
                },
                result: Some(0),
            })
            .is_empty());
        c.record(RawRecord::Fork {
            parent: task(11, 10, 300, "bash"),
            child_pid: 12,
        });
        // The /proc cwd read at decode time is stale ("/"): the tracked one wins.
        let e = one(c.record(exec(12, 11, 400, "../bin/./tool", &["tool"], "/")));
        assert_eq!(e.exec.as_ref().unwrap().path, "/work/bin/tool");
        assert_eq!(e.exec.as_ref().unwrap().cwd.as_deref(), Some("/work/src"));
        assert_eq!(e.parent.as_ref().unwrap().exec_id, "11-200");
        assert_eq!(
            e.ancestors,
            [Ancestor {
                pid: 10,
                exe: "/usr/bin/sandtrail".into()
            }]
        );
        // It becomes root through setresuid, then exits 3 after 600 ns.
        c.record(RawRecord::Cred {
            task: task(12, 11, 450, "tool"),
            call: CredCall::SetResUid(None, Some(0), None),
        });
        let e = one(c.record(RawRecord::Exit {
            task: task(12, 11, 1000, "tool"),
            status: ExitStatus::Code(3),
        }));
        assert_eq!(e.kind, Kind::ProcessExit);
        let p = e.process.as_ref().unwrap();
        assert_eq!((p.uid, p.euid, p.exec_id.as_str()), (65534, 0, "12-400"));
        assert_eq!(
            e.exit,
            Some(Box::new(ExitInfo {
                code: Some(3),
                duration_ns: Some(600),
                ..Default::default()
            }))
        );
    }

    #[test]
    fn failed_execs_and_unknown_exits_resolved_by_the_parents_wait() {
        let mut c = collector();
        c.record(RawRecord::Fork {
            parent: task(10, 1, 150, "sandtrail-init"),
            child_pid: 11,
        });
        c.record(exec(11, 10, 200, "/bin/sh", &["sh"], "/"));
        let e = one(c.record(RawRecord::ExecFailed {
            task: task(11, 10, 300, "sh"),
            args: Some(ExecArgs {
                filename: "/no/such/binary".into(),
                argv: vec!["/no/such/binary".into()],
                argv_truncated: false,
                filename_truncated: false,
                argv_fault: false,
                at: None,
            }),
            errno: libc::ENOENT,
        }));
        assert_eq!(e.exec.as_ref().unwrap().result.as_deref(), Some("ENOENT"));
        assert_eq!(e.exec.as_ref().unwrap().path, "/no/such/binary");
        assert_eq!(
            e.process.as_ref().unwrap().exe,
            "/bin/sh",
            "the old image stays"
        );

        // 13 dies without its status showing; its parent's wait gives it: SIGKILL.
        c.record(RawRecord::Fork {
            parent: task(11, 10, 400, "sh"),
            child_pid: 13,
        });
        c.record(exec(13, 11, 500, "/bin/sleep", &["sleep", "5"], "/"));
        assert!(c
            .record(RawRecord::Exit {
                task: task(13, 11, 900, "sleep"),
                status: ExitStatus::Unknown
            })
            .is_empty());
        let e = one(c.record(RawRecord::Reaped {
            reaper: task(11, 10, 950, "sh"),
            child_pid: 13,
            status: WaitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
        }));
        let x = e.exit.as_ref().unwrap();
        assert_eq!(
            (x.code, x.signal, x.duration_ns),
            (None, Some(9), Some(400))
        );

        // One nobody waits for: reported with an unknown status when the session ends.
        c.record(RawRecord::Exit {
            task: task(11, 10, 2000, "sh"),
            status: ExitStatus::Unknown,
        });
        let e = one(c.unwatch(CG));
        assert_eq!(e.exit.as_ref().unwrap().code, None);
        assert_eq!(e.exit.as_ref().unwrap().signal, None);
        // Unwatched: nothing more for it.
        assert!(c
            .record(exec(20, 1, 3000, "/bin/true", &["true"], "/"))
            .is_empty());
    }

    #[test]
    fn adopted_processes_are_parents_of_what_they_start() {
        let mut c = collector();
        let e = one(c.adopt(
            CG,
            Adopted {
                pid: 30,
                ppid: 1,
                uid: 1000,
                euid: 1000,
                gid: 1000,
                egid: 1000,
                exe: "/usr/bin/python3".into(),
                argv: vec!["python3".into(), "agent.py".into()],
                cwd: Some("/work".into()),
                comm: "python3".into(),
                start_ktime: 50,
            },
        ));
        assert_eq!(e.source, Source::Sandbox);
        assert_eq!(e.ts_ns, 1_000_000_000_050);
        assert_eq!(e.exec.as_ref().unwrap().argv, ["python3", "agent.py"]);
        c.record(RawRecord::Fork {
            parent: task(30, 1, 60, "python3"),
            child_pid: 31,
        });
        let e = one(c.record(exec(31, 30, 70, "/bin/ls", &["ls"], "/work")));
        let parent = e.parent.unwrap();
        assert_eq!((parent.pid, parent.exec_id.as_str()), (30, "30-50"));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(
            absolute(Path::new("a/../b/./c"), Some(Path::new("/x/y"))),
            "/x/y/b/c"
        );
        assert_eq!(absolute(Path::new("/a/b/../../.."), None), "/");
        assert_eq!(absolute(Path::new("rel"), None), "rel");
        assert_eq!(absolute(Path::new("../rel/./x/"), None), "rel/x");
        assert_eq!(
            absolute(Path::new("//a//b/"), Some(Path::new("/c"))),
            "/a/b"
        );
        assert_eq!(absolute(Path::new("x"), Some(Path::new("/"))), "/x");
        assert_eq!(absolute(Path::new("../../.."), Some(Path::new("/a"))), "/");
        assert_eq!(absolute(Path::new("."), Some(Path::new("/a/b/"))), "/a/b");
        assert_eq!(absolute(Path::new(".."), Some(Path::new("/a/b"))), "/a");
        // The fast path (absolute and normal) agrees with the long way on near misses.
        for p in [
            "/",
            "/a",
            "/a/b.c",
            "/a/.b",
            "/a/..b",
            "/a/b.",
            "/.../x",
            "//",
            "//a",
            "/a//b",
            "/a/",
            "/a/.",
            "/a/./b",
            "/a/..",
            "/a/../b",
            "/..",
            "/.",
            "/a/b/c/d/e/f",
            "/caf\u{e9}/x",
        ] {
            let path = Path::new(p);
            assert_eq!(
                is_normal_absolute(p.as_bytes()),
                normalize(p.as_bytes(), None) == p,
                "{p}"
            );
            assert_eq!(absolute(path, None), normalize(p.as_bytes(), None), "{p}");
            assert_eq!(
                absolute(path, Some(Path::new("/w"))),
                normalize(p.as_bytes(), Some(Path::new("/w"))),
                "{p}"
            );
            // The owned form gives the same strings, with or without a cwd.
            for cwd in [None, Some(Path::new("/w"))] {
                assert_eq!(
                    absolute_owned(path.to_path_buf(), cwd),
                    absolute(path, cwd),
                    "{p}"
                );
            }
        }
        // Not UTF-8: the long way, with U+FFFD.
        let bad = std::ffi::OsStr::from_bytes(b"/a/\xff/b");
        assert_eq!(absolute(Path::new(bad), None), "/a/\u{fffd}/b");
        assert_eq!(absolute_owned(PathBuf::from(bad), None), "/a/\u{fffd}/b");
        let bad_rel = std::ffi::OsStr::from_bytes(b"x/\xff");
        assert_eq!(
            absolute_owned(PathBuf::from(bad_rel), Some(Path::new("/w"))),
            "/w/x/\u{fffd}"
        );
    }
}
