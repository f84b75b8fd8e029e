//! `file.*` events from the file records: absolute paths (per-process cwd and directory fds),
//! and the read policy (reads under sensitive paths logged one by one, the others summarized
//! per process and path with a count).

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use sandtrail_bpf::{FileCall, FileOp, IdMap, Task};
use sandtrail_event::{Access, Event, FileInfo, Kind, ProcessRef};

use crate::errno::errno_name;
use crate::process::{absolute, absolute_owned, Collector, Proc};

const AT_FDCWD: i32 = -100;
/// The path of an event whose path argument could not be read from the process's memory
/// (neither at the call's entry nor at its exit).
const UNREADABLE: &str = "/(unreadable)";
const O_ACCMODE: u64 = 0o3;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

/// Which read-only opens are logged one by one: those whose absolute path matches one of the
/// patterns. Every other read-only open is summarized: one `file.open` event per (process
/// image, path, result) with `file.count`, emitted when the process exits or the session ends.
/// Writes, creates, truncates, deletes, renames, links, chmod/chown and mounts are always logged.
///
/// Pattern syntax:
/// - starting with `/`: that directory or file and everything under it (`/etc`);
/// - otherwise: one or more path components (`.ssh`, `.config/gcloud`) matched as a run of
///   whole components anywhere in the path; a component may hold one `*` wildcard (`.env.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePolicy {
    /// The patterns, as given.
    sensitive: Vec<String>,
    /// The `/`-rooted patterns without their trailing `/` (`""` for `/` itself).
    prefixes: Vec<String>,
    /// The other patterns, each split into its run of components.
    runs: Vec<Vec<Component>>,
    /// Bit `b` set: a run's first component can match a name that starts with byte `b`.
    starts: [u64; 4],
    /// Bit `b` set: a prefix's first name starts with byte `b` (all bits for the prefix `/`).
    prefix_starts: [u64; 4],
    /// `/` and the one byte every run starts with, when there is one (`/.` for the defaults):
    /// a path without it (and not starting with that byte) matches no run.
    lead: Option<String>,
}

/// Whether bit `b` is set in a byte set.
fn has(set: &[u64; 4], b: u8) -> bool {
    set[usize::from(b / 64)] & (1 << (b % 64)) != 0
}

/// Sets bit `b` in a byte set.
fn put(set: &mut [u64; 4], b: u8) {
    set[usize::from(b / 64)] |= 1 << (b % 64);
}

/// One component of a pattern: a name, or a name with one `*` (`pre*post`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Component {
    Exact(String),
    Wild(String, String),
}

impl Component {
    /// The first byte of every name it matches, if one.
    fn first_byte(&self) -> Option<u8> {
        match self {
            Component::Exact(n) | Component::Wild(n, _) => n.bytes().next(),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Component::Exact(n) => n == name,
            Component::Wild(pre, post) => {
                name.len() >= pre.len() + post.len()
                    && name.starts_with(pre.as_str())
                    && name.ends_with(post.as_str())
            }
        }
    }
}

impl Default for FilePolicy {
    /// `/etc`, `/root`, `/run/secrets`, `/var/run/secrets`, `/workspace`, and anywhere: `.ssh`,
    /// `.aws`, `.config/gcloud`, `.docker`, `.kube`, `.netrc`, `.env`, `.env.*`.
    fn default() -> Self {
        FilePolicy::new(
            [
                "/etc",
                "/root",
                "/run/secrets",
                "/var/run/secrets",
                "/workspace",
                ".ssh",
                ".aws",
                ".config/gcloud",
                ".docker",
                ".kube",
                ".netrc",
                ".env",
                ".env.*",
            ]
            .map(String::from)
            .to_vec(),
        )
    }
}

impl FilePolicy {
    /// A policy of exactly these patterns (unchecked: see [`FilePolicy::check_pattern`]).
    pub fn new(patterns: Vec<String>) -> FilePolicy {
        let mut p = FilePolicy {
            sensitive: Vec::new(),
            prefixes: Vec::new(),
            runs: Vec::new(),
            starts: [0; 4],
            prefix_starts: [0; 4],
            lead: None,
        };
        for pat in patterns {
            p.add(pat);
        }
        p
    }

    fn add(&mut self, pat: String) {
        if pat.starts_with('/') {
            let prefix = pat.trim_end_matches('/').to_string();
            match prefix.as_bytes().get(1) {
                Some(&b) => put(&mut self.prefix_starts, b),
                None => self.prefix_starts = [u64::MAX; 4],
            }
            self.prefixes.push(prefix);
        } else {
            let run: Vec<Component> = pat
                .split('/')
                .filter(|c| !c.is_empty())
                .map(|c| match c.split_once('*') {
                    Some((pre, post)) => Component::Wild(pre.into(), post.into()),
                    None => Component::Exact(c.into()),
                })
                .collect();
            if !run.is_empty() {
                match run[0].first_byte() {
                    Some(b) => put(&mut self.starts, b),
                    None => self.starts = [u64::MAX; 4],
                }
                self.set_lead();
                self.runs.push(run);
            }
        }
        self.sensitive.push(pat);
    }

    /// Sets [`FilePolicy::lead`] from the runs' first bytes (by [`FilePolicy::add`], which
    /// alone changes them, so the two never disagree).
    fn set_lead(&mut self) {
        let ones: u32 = self.starts.iter().map(|w| w.count_ones()).sum();
        self.lead = (ones == 1)
            .then(|| (0..=255u8).find(|&b| has(&self.starts, b)))
            .flatten()
            .filter(u8::is_ascii)
            .map(|b| format!("/{}", b as char));
    }

    /// The default patterns plus `extra` (each checked with [`FilePolicy::check_pattern`]).
    pub fn with_extra(extra: &[String]) -> Result<FilePolicy, String> {
        let mut p = FilePolicy::default();
        for pat in extra {
            FilePolicy::check_pattern(pat)?;
            if !p.sensitive.contains(pat) {
                p.add(pat.clone());
            }
        }
        Ok(p)
    }

    /// Whether `pat` is a usable pattern: an absolute path, or components (`.ssh`,
    /// `.config/gcloud`) with at most one `*` each.
    pub fn check_pattern(pat: &str) -> Result<(), String> {
        let comps: Vec<&str> = pat.split('/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() && pat != "/" {
            return Err(format!(
                "sensitive path {pat:?} is empty: give an absolute path (/srv/keys) or a name (.pgpass)"
            ));
        }
        if let Some(c) = comps.iter().find(|c| c.matches('*').count() > 1) {
            return Err(format!(
                "sensitive path {pat:?}: {c:?} has more than one `*` (one wildcard per component)"
            ));
        }
        if comps.iter().any(|c| *c == "." || *c == "..") {
            return Err(format!(
                "sensitive path {pat:?}: `.` and `..` never appear in the normalized paths it is matched against"
            ));
        }
        Ok(())
    }

    /// Whether reads of the absolute, normalized `path` are logged one by one.
    pub fn is_sensitive(&self, path: &str) -> bool {
        // Called for every read-only open: no allocation, each pattern compiled beforehand;
        // the prefixes are compared only when one starts with the path's first name's first
        // byte, and a run of components only where a name starts as its first component can.
        let bytes = path.as_bytes();
        let candidate = match bytes {
            [b'/', b, ..] => has(&self.prefix_starts, *b),
            _ => true, // `/`, or relative (no cwd known): every prefix is compared
        };
        if candidate
            && self.prefixes.iter().any(|pat| {
                pat.is_empty()
                    || path == pat
                    || (path.starts_with(pat.as_str()) && bytes.get(pat.len()) == Some(&b'/'))
            })
        {
            return true;
        }
        if self.runs.is_empty() {
            return false;
        }
        if let Some(lead) = &self.lead {
            // Most paths (a program's libraries and locale files) have no name that starts
            // as a run does: one substring search (vectorized) rules them out.
            if bytes.first() != lead.as_bytes().get(1) && !path.contains(lead.as_str()) {
                return false;
            }
        }
        let mut after_slash = true;
        for (i, &b) in bytes.iter().enumerate() {
            let starts_name = after_slash && b != b'/';
            after_slash = b == b'/';
            if !starts_name || !has(&self.starts, b) {
                continue;
            }
            // `i` starts a name (after a `/`, or the path's start) a run can begin with.
            let (name, after) = match bytes[i..].iter().position(|&c| c == b'/') {
                Some(n) => (&path[i..i + n], &path[i + n + 1..]),
                None => (&path[i..], ""),
            };
            for run in &self.runs {
                if !run[0].matches(name) {
                    continue;
                }
                let mut names = after.split('/').filter(|c| !c.is_empty());
                if run[1..]
                    .iter()
                    .all(|want| names.next().is_some_and(|n| want.matches(n)))
                {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a link to, or a rename of, `target` can give a sensitive file a name of its
    /// own: `target` is sensitive; or a `/`-rooted pattern lies under it (`/`, or `/run` for
    /// `/run/secrets`); or it ends with the first components of a pattern of several
    /// (`~/.config` for `.config/gcloud`). One-component patterns match anywhere in a path and
    /// need nothing more.
    pub fn reaches(&self, target: &str) -> bool {
        if self.is_sensitive(target) || self.prefixes.iter().any(|p| under(p, target)) {
            return true;
        }
        let names: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        self.runs.iter().any(|run| {
            (1..run.len()).any(|k| {
                names.len() >= k
                    && run[..k]
                        .iter()
                        .zip(&names[names.len() - k..])
                        .all(|(want, n)| want.matches(n))
            })
        })
    }
}

/// Whether `path` is `dir` or lies under it (both absolute and normalized).
fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || dir == "/")
}

/// Whether `path` names a file through another process's view in `/proc` (its root, cwd, or
/// one of its fds: `/proc/self/root/etc/shadow`, `/proc/7/cwd/key`, `/dev/fd/5/id_rsa`), which
/// the patterns cannot see through. The collector's own names for bases it does not know
/// (`/proc/<pid>/fd/<n>/…`, `/proc/<pid>/cwd/…`) are of this kind. Listing a process's fds
/// (`/proc/self/fd`) is not.
fn through_proc(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("/dev/fd/") {
        return !rest.is_empty();
    }
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let mut names = rest.split('/');
    let who = names.next().unwrap_or("");
    let a_task = who == "self"
        || who == "thread-self"
        || (!who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()));
    if !a_task {
        return false;
    }
    let mut what = names.next();
    if what == Some("task") {
        names.next();
        what = names.next();
    }
    match what {
        Some("root" | "cwd") => true,
        Some("fd" | "map_files") => names.next().is_some_and(|n| !n.is_empty()),
        _ => false,
    }
}

/// Most aliases one session keeps; past them, every read-only open of the session is logged
/// one by one (so that making many links cannot push a sensitive one out).
const ALIASES_MAX: usize = 1024;

/// The names a session's links and renames gave to sensitive paths (or to directories above
/// them): `ln -s /etc /tmp/e` makes `/tmp/e` stand for `/etc`, so that reading
/// `/tmp/e/shadow` is logged like reading `/etc/shadow`. Only links and renames made in the
/// session, seen by the file programs, are known; an alias stays after its link is removed
/// (which can only make more reads logged one by one, never fewer).
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    /// (the new name, the absolute path it stands for), both normalized.
    links: Vec<(String, String)>,
    /// More than [`ALIASES_MAX`] were made.
    overflow: bool,
}

impl Aliases {
    /// What `path` stands for when it is or lies under an alias (the longest that applies).
    fn resolve(&self, path: &str) -> Option<String> {
        let (link, target) = self
            .links
            .iter()
            .filter(|(link, _)| under(path, link))
            .max_by_key(|(link, _)| link.len())?;
        let rest = &path[link.len()..];
        Some(match (target.as_str(), rest) {
            ("/", "") => "/".to_string(),
            ("/", rest) => rest.to_string(),
            (target, rest) => format!("{target}{rest}"),
        })
    }

    fn add(&mut self, link: String, target: String) {
        if let Some(slot) = self.links.iter_mut().find(|(l, _)| *l == link) {
            slot.1 = target;
        } else if self.links.len() < ALIASES_MAX {
            self.links.push((link, target));
        } else {
            self.overflow = true;
        }
    }
}

/// The summarized reads of one process image (pid and the ktime its `exec_id` is made of,
/// which names the same image without cloning that string at every read), by path and result
/// (0 for any fd, else `-errno`; named when the summary is emitted), in the order of their
/// first read: emitting them needs no sort, and a process's exit touches its own reads only.
struct ImageReads {
    session: u64,
    image_ktime: u64,
    map: IndexMap<(String, Option<i64>), ReadSummary>,
}

#[derive(Clone, Debug)]
struct ReadSummary {
    process: ProcessRef,
    first_ktime: u64,
    flags: u32,
    count: u64,
}

/// Which summarized reads [`Collector::flush_reads`] emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Every one (the table is full).
    All,
    /// Those of a session (it ends).
    Session(u64),
    /// Those of a process (it exits).
    Pid(u32),
}

/// Summarized reads, by process; at most `cap` of them wait (then all are emitted early, with
/// the counts so far, so that a process reading millions of distinct files cannot grow the
/// table without bound).
pub(crate) struct ReadSummaries {
    /// Per pid, its images' reads, oldest image first (almost always one).
    by_pid: IdMap<u32, Vec<ImageReads>>,
    /// Summaries waiting, in all.
    len: usize,
    pub(crate) cap: usize,
}

impl Default for ReadSummaries {
    fn default() -> Self {
        ReadSummaries {
            by_pid: IdMap::default(),
            len: 0,
            cap: 65536,
        }
    }
}

fn kind_of(op: FileOp) -> Option<Kind> {
    Some(match op {
        FileOp::Open => Kind::FileOpen,
        FileOp::Unlink | FileOp::Rmdir => Kind::FileDelete,
        FileOp::Rename => Kind::FileRename,
        FileOp::Chmod => Kind::FileChmod,
        FileOp::Chown => Kind::FileChown,
        FileOp::Link | FileOp::Symlink => Kind::FileLink,
        FileOp::Truncate | FileOp::Ftruncate => Kind::FileTruncate,
        FileOp::Mount => Kind::FileMount,
        FileOp::Umount => Kind::FileUnmount,
        FileOp::Mkdir => Kind::FileMkdir,
        FileOp::Mknod => Kind::FileMknod,
        // No event for these (cwd and fd tracking only).
        FileOp::Chdir | FileOp::Fchdir | FileOp::Dup => return None,
    })
}

/// File type bits of a mode (`S_IFMT`), and the two device types among them.
const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// "major:minor" of the device number `dev` a mknod call passed, for a character or block
/// device node (the kernel's `new_decode_dev`: 12 bits of major, 20 of minor).
fn device_of(mode: u32, dev: u64) -> Option<String> {
    let kind = mode & S_IFMT;
    if kind != S_IFCHR && kind != S_IFBLK {
        return None;
    }
    let dev = dev as u32;
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    Some(format!("{major}:{minor}"))
}

/// A call's result as `file.result` names it: `ok`, or the errno's name.
fn result_name(r: i64) -> String {
    if r >= 0 {
        "ok".to_string()
    } else {
        errno_name((-r) as i32)
    }
}

/// The directory `dirfd` stands for in process `p`: its cwd for `AT_FDCWD`, else the path an
/// earlier open returned that fd for; when unknown, the `/proc` path that names it.
fn base(p: &Proc, dirfd: i32) -> Cow<'_, Path> {
    let known = if dirfd == AT_FDCWD {
        p.cwd.as_deref()
    } else {
        p.fds.get(&dirfd).map(PathBuf::as_path)
    };
    match known {
        Some(dir) => Cow::Borrowed(dir),
        None if dirfd == AT_FDCWD => Cow::Owned(PathBuf::from(format!("/proc/{}/cwd", p.pid))),
        None => Cow::Owned(PathBuf::from(format!("/proc/{}/fd/{dirfd}", p.pid))),
    }
}

/// The process reference of `p`; a process not seen exec'ing is named `[comm]`, as in
/// `process.exit`.
fn named_ref(p: &Proc) -> ProcessRef {
    let mut r = p.process_ref();
    if r.exe.is_empty() {
        r.exe = format!("[{}]", r.comm.as_deref().unwrap_or("?"));
    }
    r
}

/// `path` of process `p` made absolute against `dirfd` (no copy when it is absolute and normal
/// already; the base looked up only for a relative path).
fn resolve(p: &Proc, dirfd: i32, path: PathBuf) -> String {
    let base = (path.as_os_str().as_bytes().first() != Some(&b'/')).then(|| base(p, dirfd));
    absolute_owned(path, base.as_deref())
}

impl Collector {
    /// One file call: updates the process's cwd and fd table, returns its event (none for a
    /// summarized read, chdir, fchdir).
    pub(crate) fn file(
        &mut self,
        task: Task,
        mut call: FileCall,
        result: Option<i64>,
    ) -> Vec<(u64, Event)> {
        let Some(session) = self.session_of(&task) else {
            return Vec::new();
        };
        let cwd_of = self.cwd_of;
        let p = self.proc_for(&task, session);
        if p.cwd.is_none() {
            p.cwd = cwd_of(task.pid);
        }
        let ok = result.is_some_and(|r| r >= 0);
        let path = match call.fd {
            Some(fd) => p
                .fds
                .get(&fd)
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("/proc/{}/fd/{fd}", p.pid)),
            None if call.path_fault && call.path.as_os_str().is_empty() => UNREADABLE.to_string(),
            // A symlink's target is resolved again below, against the link's directory.
            None if call.op == FileOp::Symlink => resolve(p, call.dirfd, call.path.clone()),
            None => resolve(p, call.dirfd, std::mem::take(&mut call.path)),
        };
        let new_path = match call.path2.as_deref() {
            Some(p2) => Some(resolve(p, call.dirfd2, p2.to_path_buf())),
            None if call.path_fault && matches!(call.op, FileOp::Rename | FileOp::Link) => {
                Some(UNREADABLE.to_string())
            }
            None => None,
        };
        match call.op {
            FileOp::Open if ok && path != UNREADABLE => {
                // Written over the fd's earlier path in place (fd numbers are reused at once).
                let slot = p.fds.entry(result.unwrap_or(-1) as i32).or_default();
                let s = slot.as_mut_os_string();
                s.clear();
                s.push(&path);
            }
            FileOp::Chdir if ok => {
                p.cwd = if path == UNREADABLE {
                    cwd_of(task.pid)
                } else {
                    Some(PathBuf::from(&path))
                };
            }
            FileOp::Dup if ok => {
                // The new fd names what the old one named; unknown stays unknown (not a
                // stale path an earlier file left under that number).
                let new_fd = result.unwrap_or(-1) as i32;
                match call.fd.and_then(|fd| p.fds.get(&fd).cloned()) {
                    Some(path) => p.fds.insert(new_fd, path),
                    None => p.fds.remove(&new_fd),
                };
            }
            FileOp::Fchdir if ok => {
                p.cwd = p
                    .fds
                    .get(&call.fd.unwrap_or(-1))
                    .cloned()
                    .or_else(|| cwd_of(task.pid));
            }
            _ => {}
        }
        let Some(kind) = kind_of(call.op) else {
            return Vec::new();
        };
        if p.setup {
            return Vec::new();
        }
        let mut info = FileInfo {
            path,
            ..Default::default()
        };
        let flags = (call.flags != 0).then_some(call.flags as u32);
        match call.op {
            FileOp::Open => {
                info.access = Some(match call.flags & O_ACCMODE {
                    O_WRONLY => Access::Write,
                    O_RDWR => Access::Readwrite,
                    _ => Access::Read,
                });
                info.created = ok && call.flags & O_CREAT != 0;
                info.flags = Some(call.flags as u32);
                if call.flags & O_CREAT != 0 {
                    info.mode = Some(call.mode & 0o7777);
                }
                let read_only =
                    info.access == Some(Access::Read) && call.flags & (O_CREAT | O_TRUNC) == 0;
                if read_only && !self.logs_read(session, &info.path) {
                    let p = &self.procs[&task.pid];
                    let images = self.reads.by_pid.entry(task.pid).or_default();
                    let at = images
                        .iter()
                        .rposition(|i| i.image_ktime == p.start_ktime && i.session == session)
                        .unwrap_or_else(|| {
                            // Room for most of what a short-lived program reads (libc, the
                            // locale's files, ~20 paths and results per coreutils process
                            // here): growing from empty reallocated the entries and their
                            // index several times (collector replay: 525 -> 490 ns per record).
                            images.push(ImageReads {
                                session,
                                image_ktime: p.start_ktime,
                                map: IndexMap::with_capacity(16),
                            });
                            images.len() - 1
                        });
                    let image = &mut images[at];
                    let key = (info.path, result.map(|r| r.min(0)));
                    // The process reference is built for a new summary only (repeats just count).
                    let len = image.map.len();
                    image
                        .map
                        .entry(key)
                        .or_insert_with(|| ReadSummary {
                            process: named_ref(p),
                            first_ktime: task.ktime_ns,
                            flags: call.flags as u32,
                            count: 0,
                        })
                        .count += 1;
                    self.reads.len += image.map.len() - len;
                    if self.reads.len >= self.reads.cap {
                        return self.flush_reads(Flush::All, 0);
                    }
                    return Vec::new();
                }
            }
            FileOp::Rename | FileOp::Link => {
                info.new_path = new_path;
                info.flags = flags;
            }
            FileOp::Symlink => {
                // The target is stored as written; a relative one is relative to the link's
                // directory, which is where it is resolved here.
                let link = new_path.unwrap_or_default();
                let dir = Path::new(&link).parent().map(Path::to_path_buf);
                info.path = absolute(&call.path, dir.as_deref());
                info.new_path = Some(link);
                info.flags = Some(1);
            }
            FileOp::Chmod => {
                info.mode = Some(call.mode & 0o7777);
                info.flags = flags; // fchmodat2's AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH
            }
            // The mode as passed (the umask applies after).
            FileOp::Mkdir => info.mode = Some(call.mode & 0o7777),
            FileOp::Mknod => {
                // The type bits as well: a FIFO, socket, device node or regular file.
                info.mode = Some(call.mode & (S_IFMT | 0o7777));
                info.device = device_of(call.mode, call.flags);
            }
            FileOp::Chown => {
                info.uid = (call.uid != u32::MAX).then_some(call.uid);
                info.gid = (call.gid != u32::MAX).then_some(call.gid);
                if info.uid.is_none() && info.gid.is_none() {
                    return Vec::new(); // chown(path, -1, -1) changes nothing
                }
            }
            FileOp::Mount => {
                info.source = call.path2.map(|s| s.to_string_lossy().into_owned());
                info.fstype = call.fstype;
                info.flags = Some(call.flags as u32);
            }
            FileOp::Unlink | FileOp::Rmdir | FileOp::Umount => info.flags = flags,
            _ => {}
        }
        if ok && matches!(call.op, FileOp::Rename | FileOp::Link | FileOp::Symlink) {
            if let Some(link) = &info.new_path {
                self.alias(session, link, &info.path);
            }
        }
        info.result = result.map(result_name);
        let process = named_ref(self.procs_get(task.pid));
        let Some(mut e) = self.event(kind, session, task.ktime_ns) else {
            return Vec::new();
        };
        e.process = Some(process);
        e.file = Some(info);
        vec![(session, e)]
    }

    /// Whether a read-only open of `path` in `session` is logged one by one: the path is
    /// sensitive, or reaches its file through `/proc` ([`through_proc`]: the patterns cannot
    /// tell where it leads), or lies under a name the session gave to a sensitive path
    /// ([`Aliases`]).
    fn logs_read(&self, session: u64, path: &str) -> bool {
        let policy = self.file_policy_of(session);
        if policy.is_sensitive(path) || through_proc(path) {
            return true;
        }
        self.aliases
            .get(&session)
            .is_some_and(|a| a.overflow || a.resolve(path).is_some_and(|t| policy.is_sensitive(&t)))
    }

    /// Records that `link` (the new name a link or rename made) stands for `target`, when
    /// that can name a sensitive file ([`FilePolicy::reaches`]); `target` itself may be an
    /// alias already (`ln -s /tmp/e /tmp/f` after `ln -s /etc /tmp/e`).
    fn alias(&mut self, session: u64, link: &str, target: &str) {
        let resolved = self.aliases.get(&session).and_then(|a| a.resolve(target));
        let target = resolved.as_deref().unwrap_or(target);
        let policy = self.file_policy_of(session);
        // A sensitive new name needs no alias (everything under it is sensitive too): renames
        // inside /etc or the workspace, which editors and builds make all the time, add none.
        if policy.reaches(target) && !policy.is_sensitive(link) {
            let (link, target) = (link.to_string(), target.to_string());
            self.aliases.entry(session).or_default().add(link, target);
        }
    }

    /// Emits (and forgets) the summarized reads `which` selects, each process's oldest first,
    /// in a vector with room for `room` more events (the caller's own, so that adding them
    /// does not move every event into a vector twice the size).
    pub(crate) fn flush_reads(&mut self, which: Flush, room: usize) -> Vec<(u64, Event)> {
        let mut images: Vec<ImageReads> = Vec::new();
        match which {
            Flush::Pid(pid) => images = self.reads.by_pid.remove(&pid).unwrap_or_default(),
            Flush::All => {
                let mut pids: Vec<u32> = self.reads.by_pid.keys().copied().collect();
                pids.sort_unstable();
                for pid in pids {
                    images.extend(self.reads.by_pid.remove(&pid).unwrap_or_default());
                }
            }
            Flush::Session(session) => {
                let mut pids: Vec<u32> = self.reads.by_pid.keys().copied().collect();
                pids.sort_unstable();
                for pid in pids {
                    let list = self.reads.by_pid.get_mut(&pid).expect("listed above");
                    let (done, kept): (Vec<_>, Vec<_>) =
                        list.drain(..).partition(|i| i.session == session);
                    *list = kept;
                    if list.is_empty() {
                        self.reads.by_pid.remove(&pid);
                    }
                    images.extend(done);
                }
            }
        }
        let n: usize = images.iter().map(|i| i.map.len()).sum();
        self.reads.len -= n;
        let several = images.len() > 1;
        // Built in place in a vector of the right size: an event is large, and a growing
        // vector would copy every one made so far at each doubling.
        let mut out = Vec::with_capacity(n + room);
        for mut image in images {
            // In the order of their first reads; by time and path where a process's threads'
            // records came in out of order (their CPUs' clocks race).
            if !image.map.values().is_sorted_by_key(|v| v.first_ktime) {
                image
                    .map
                    .sort_by(|ka, a, kb, b| (a.first_ktime, &ka.0).cmp(&(b.first_ktime, &kb.0)));
            }
            for ((path, result), v) in image.map {
                let Some(e) = self.event(Kind::FileOpen, image.session, v.first_ktime) else {
                    continue;
                };
                // Filled in where it lies (one copy of the large event fewer).
                out.push((image.session, e));
                let (_, e) = out.last_mut().expect("just pushed");
                e.process = Some(v.process);
                e.file = Some(FileInfo {
                    path,
                    access: Some(Access::Read),
                    flags: Some(v.flags),
                    count: Some(v.count),
                    result: result.map(result_name),
                    ..Default::default()
                });
            }
        }
        if several {
            // Oldest first across processes too (a session's end, a full table): rare, so the
            // large events may move.
            let key = |e: &Event| (e.ts_ns, e.file.as_ref().map(|f| f.path.clone()));
            out.sort_by_cached_key(|(_, e)| key(e));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scope;
    use sandtrail_bpf::{ExitStatus, RawRecord};

    const CG: u64 = 77;
    const O_DIRECTORY: u64 = 0o200000;

    fn task(pid: u32, ktime: u64) -> Task {
        Task {
            tid: pid,
            pid,
            ppid: 10,
            uid: 1000,
            gid: 1000,
            cgroup_id: CG,
            ktime_ns: ktime,
            comm: "bash".into(),
        }
    }

    fn call(op: FileOp, dirfd: i32, path: &str) -> FileCall {
        FileCall {
            op,
            path: path.into(),
            path2: None,
            dirfd,
            dirfd2: AT_FDCWD,
            fd: None,
            flags: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            length: 0,
            fstype: None,
            path_fault: false,
        }
    }

    fn open(dirfd: i32, path: &str, flags: u64, mode: u32) -> FileCall {
        FileCall {
            flags,
            mode,
            ..call(FileOp::Open, dirfd, path)
        }
    }

    fn collector() -> Collector {
        let mut c = Collector::with_offset(0);
        c.watch(
            CG,
            Scope {
                session_id: "s".into(),
                host_id: "h".into(),
            },
        );
        c.set_cwd_lookup(|_| Some(PathBuf::from("/work")));
        c
    }

    /// Feeds a file record; returns its events' `file` parts (validated).
    fn feed(c: &mut Collector, pid: u32, k: u64, fc: FileCall, res: i64) -> Vec<(Kind, FileInfo)> {
        c.record(RawRecord::File {
            task: task(pid, k),
            call: fc,
            result: Some(res),
        })
        .into_iter()
        .map(|(cg, e)| {
            assert_eq!(cg, CG);
            e.validate().unwrap();
            assert_eq!(e.process.as_ref().unwrap().pid, pid);
            (e.kind, e.file.unwrap())
        })
        .collect()
    }

    fn info(path: &str) -> FileInfo {
        FileInfo {
            path: path.into(),
            result: Some("ok".into()),
            ..Default::default()
        }
    }

    /// A read-only open of `path` by pid 11: its events (none when summarized).
    fn read(c: &mut Collector, k: u64, path: &str) -> Vec<(Kind, FileInfo)> {
        feed(c, 11, k, open(AT_FDCWD, path, 0, 0), 3)
    }

    /// A link (`op` Symlink, Link or Rename) from `from` to the new name `to`, with `res`.
    fn link(c: &mut Collector, k: u64, op: FileOp, from: &str, to: &str, res: i64) {
        let mut l = call(op, AT_FDCWD, from);
        l.path2 = Some(to.into());
        assert_eq!(feed(c, 11, k, l, res).len(), 1);
    }

    /// Asserts that reading `path` made exactly one event, logged one by one.
    fn logged(ev: Vec<(Kind, FileInfo)>, path: &str) {
        assert_eq!(
            ev,
            [(
                Kind::FileOpen,
                FileInfo {
                    access: Some(Access::Read),
                    flags: Some(0),
                    ..info(path)
                }
            )],
            "{path}"
        );
    }

    #[test]
    fn reads_of_sensitive_files_under_other_names_are_logged_one_by_one() {
        let mut c = collector();
        assert!(read(&mut c, 1, "/tmp/e/shadow").is_empty());
        // ln -s /etc /tmp/e: /tmp/e/shadow is /etc/shadow now.
        link(&mut c, 2, FileOp::Symlink, "/etc", "/tmp/e", 0);
        logged(read(&mut c, 3, "/tmp/e/shadow"), "/tmp/e/shadow");
        // A relative target, resolved against the link's directory (cwd /work).
        link(&mut c, 4, FileOp::Symlink, "../root", "r", 0);
        logged(read(&mut c, 5, "/work/r/.bashrc"), "/work/r/.bashrc");
        // A link to a link.
        link(&mut c, 6, FileOp::Symlink, "/tmp/e", "/tmp/f", 0);
        logged(read(&mut c, 7, "/tmp/f/passwd"), "/tmp/f/passwd");
        // A link to / reaches everything; only what lies under a pattern is logged.
        link(&mut c, 8, FileOp::Symlink, "/", "/tmp/rootfs", 0);
        logged(
            read(&mut c, 9, "/tmp/rootfs/etc/hostname"),
            "/tmp/rootfs/etc/hostname",
        );
        assert!(read(&mut c, 10, "/tmp/rootfs/usr/lib/os-release").is_empty());
        // A directory above a pattern, renamed.
        link(&mut c, 11, FileOp::Rename, "/run", "/tmp/run", 0);
        logged(
            read(&mut c, 12, "/tmp/run/secrets/token"),
            "/tmp/run/secrets/token",
        );
        assert!(read(&mut c, 13, "/tmp/run/utmp").is_empty());
        // A hard link to a sensitive file.
        link(&mut c, 14, FileOp::Link, "/etc/shadow", "/tmp/x", 0);
        logged(read(&mut c, 15, "/tmp/x"), "/tmp/x");
        // The first component of a pattern of two.
        link(&mut c, 16, FileOp::Symlink, "/home/u/.config", "/tmp/c", 0);
        logged(
            read(&mut c, 17, "/tmp/c/gcloud/adc.json"),
            "/tmp/c/gcloud/adc.json",
        );
        assert!(read(&mut c, 18, "/tmp/c/git/config").is_empty());
        // Links to ordinary places, failed links, and sensitive new names make no alias.
        link(&mut c, 19, FileOp::Symlink, "/usr/lib", "/tmp/l", 0);
        assert!(read(&mut c, 20, "/tmp/l/os-release").is_empty());
        link(&mut c, 21, FileOp::Symlink, "/etc", "/tmp/g", -17);
        assert!(read(&mut c, 22, "/tmp/g/shadow").is_empty());
        link(&mut c, 23, FileOp::Rename, "/etc/sedX1", "/etc/hosts", 0);
        link(
            &mut c,
            24,
            FileOp::Rename,
            "/workspace/a.tmp",
            "/workspace/a",
            0,
        );
        let names: Vec<&str> = c.aliases[&CG]
            .links
            .iter()
            .map(|(l, _)| l.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "/tmp/e",
                "/work/r",
                "/tmp/f",
                "/tmp/rootfs",
                "/tmp/run",
                "/tmp/x",
                "/tmp/c"
            ]
        );
        assert_eq!(c.aliases[&CG].links[2].1, "/etc");
        // The aliases go with the session.
        c.unwatch(CG);
        assert!(c.aliases.is_empty());
    }

    #[test]
    fn reads_through_proc_views_and_unknown_bases_are_logged_one_by_one() {
        let mut c = collector();
        for path in [
            "/proc/self/root/etc/shadow",
            "/proc/11/cwd/notes.txt",
            "/proc/thread-self/root/srv/key",
            "/proc/self/task/11/cwd/x",
            "/proc/11/fd/3",
            "/dev/fd/5/id_rsa",
        ] {
            logged(read(&mut c, 1, path), path);
        }
        for path in [
            "/proc/self/fd",
            "/proc/self/status",
            "/proc/cpuinfo",
            "/dev/null",
        ] {
            assert!(read(&mut c, 2, path).is_empty(), "{path}");
        }
        // Relative to an fd no traced open returned (received over a socket, say).
        logged(
            feed(&mut c, 11, 3, open(7, "id_rsa", 0, 0), 4),
            "/proc/11/fd/7/id_rsa",
        );
    }

    #[test]
    fn past_the_most_aliases_every_read_is_logged() {
        let mut c = collector();
        assert!(read(&mut c, 1, "/usr/lib/os-release").is_empty());
        for i in 0..ALIASES_MAX {
            link(&mut c, 2, FileOp::Symlink, "/etc", &format!("/tmp/l{i}"), 0);
        }
        assert!(!c.aliases[&CG].overflow);
        assert!(read(&mut c, 3, "/usr/lib/os-release").is_empty());
        link(&mut c, 4, FileOp::Symlink, "/etc", "/tmp/one-more", 0);
        assert!(c.aliases[&CG].overflow);
        logged(
            read(&mut c, 5, "/usr/lib/os-release"),
            "/usr/lib/os-release",
        );
    }

    #[test]
    fn a_policy_knows_which_targets_can_reach_a_sensitive_file() {
        let p = FilePolicy::default();
        for yes in [
            "/",
            "/etc",
            "/etc/ssh",
            "/run",
            "/var",
            "/var/run",
            "/home/u/.ssh",
            "/home/u/.config",
            "/x/.env.prod",
        ] {
            assert!(p.reaches(yes), "{yes}");
        }
        for no in [
            "/usr",
            "/usr/lib",
            "/home/u",
            "/home/u/.configs",
            "/tmp",
            "/var/lib",
            "/running",
        ] {
            assert!(!p.reaches(no), "{no}");
        }
    }

    #[test]
    fn dup_copies_a_directory_fd_and_forgets_what_it_overwrites() {
        let mut c = collector();
        assert!(feed(&mut c, 11, 1, open(AT_FDCWD, "/srv/a", O_DIRECTORY, 0), 5).is_empty());
        assert!(feed(&mut c, 11, 2, open(AT_FDCWD, "/srv/b", O_DIRECTORY, 0), 6).is_empty());
        // dup2(6, 5): fd 5 is now /srv/b.
        let mut d = call(FileOp::Dup, AT_FDCWD, "");
        d.fd = Some(6);
        assert!(feed(&mut c, 11, 3, d.clone(), 5).is_empty());
        let ev = feed(&mut c, 11, 4, open(5, "x", O_WRONLY | O_CREAT, 0o600), 7);
        assert_eq!(ev[0].1.path, "/srv/b/x");
        // A failed dup changes nothing.
        let mut bad = call(FileOp::Dup, AT_FDCWD, "");
        bad.fd = Some(9);
        assert!(feed(&mut c, 11, 5, bad.clone(), -9).is_empty());
        let ev = feed(&mut c, 11, 6, open(5, "y", O_WRONLY | O_CREAT, 0o600), 8);
        assert_eq!(ev[0].1.path, "/srv/b/y");
        // dup of an fd the collector does not know onto fd 5: fd 5 is unknown now, and named
        // by /proc rather than by the directory it used to be.
        assert!(feed(&mut c, 11, 7, bad, 5).is_empty());
        let ev = feed(&mut c, 11, 8, open(5, "z", O_WRONLY | O_CREAT, 0o600), 10);
        assert_eq!(ev[0].1.path, "/proc/11/fd/5/z");
    }

    #[test]
    fn paths_are_absolute_through_cwd_chdir_dirfds_and_dotdot() {
        let mut c = collector();
        // echo > out.txt in /work (cwd from the first sighting).
        let flags = O_WRONLY | O_CREAT | O_TRUNC;
        assert_eq!(
            feed(&mut c, 11, 1, open(AT_FDCWD, "out.txt", flags, 0o666), 3),
            [(
                Kind::FileOpen,
                FileInfo {
                    access: Some(Access::Write),
                    created: true,
                    flags: Some(flags as u32),
                    mode: Some(0o666),
                    ..info("/work/out.txt")
                }
            )]
        );
        // cd sub/../src: no event, new cwd.
        assert!(feed(
            &mut c,
            11,
            2,
            call(FileOp::Chdir, AT_FDCWD, "sub/../src"),
            0
        )
        .is_empty());
        // A failed chdir changes nothing.
        assert!(feed(&mut c, 11, 3, call(FileOp::Chdir, AT_FDCWD, "nope"), -2).is_empty());
        // A directory fd (a read: summarized), then openat relative to it.
        assert!(feed(&mut c, 11, 4, open(AT_FDCWD, "./pkg", O_DIRECTORY, 0), 5).is_empty());
        let ev = feed(&mut c, 11, 5, open(5, "mod.py", O_RDWR | O_CREAT, 0o600), 6);
        assert_eq!(ev[0].1.path, "/work/src/pkg/mod.py");
        assert_eq!(ev[0].1.access, Some(Access::Readwrite));
        // rename a → (dirfd 5) ../pkg/b
        let mut r = call(FileOp::Rename, AT_FDCWD, "a");
        r.path2 = Some("../pkg/b".into());
        r.dirfd2 = 5;
        assert_eq!(
            feed(&mut c, 11, 6, r, 0),
            [(
                Kind::FileRename,
                FileInfo {
                    new_path: Some("/work/src/pkg/b".into()),
                    ..info("/work/src/a")
                }
            )]
        );
        // A failed delete keeps its errno; rmdir through unlinkat's AT_REMOVEDIR.
        let ev = feed(&mut c, 11, 7, call(FileOp::Unlink, AT_FDCWD, "../gone"), -2);
        assert_eq!(
            ev,
            [(
                Kind::FileDelete,
                FileInfo {
                    result: Some("ENOENT".into()),
                    ..info("/work/gone")
                }
            )]
        );
        let mut rd = call(FileOp::Rmdir, 5, "..");
        rd.flags = 0x200;
        assert_eq!(
            feed(&mut c, 11, 8, rd, 0),
            [(
                Kind::FileDelete,
                FileInfo {
                    flags: Some(0x200),
                    ..info("/work/src")
                }
            )]
        );
        // A child inherits cwd and fds; fchdir to a directory fd.
        c.record(RawRecord::Fork {
            parent: task(11, 9),
            child_pid: 12,
        });
        let ev = feed(
            &mut c,
            12,
            10,
            open(5, "c.txt", O_WRONLY | O_CREAT, 0o644),
            3,
        );
        assert_eq!(ev[0].1.path, "/work/src/pkg/c.txt");
        let mut fchdir = call(FileOp::Fchdir, AT_FDCWD, "");
        fchdir.fd = Some(5);
        assert!(feed(&mut c, 12, 11, fchdir, 0).is_empty());
        let ev = feed(
            &mut c,
            12,
            12,
            open(AT_FDCWD, "z", O_WRONLY | O_TRUNC, 0),
            7,
        );
        assert_eq!(ev[0].1.path, "/work/src/pkg/z");
        assert!(!ev[0].1.created, "O_TRUNC without O_CREAT creates nothing");
        // The parent's cwd did not move.
        let ev = feed(&mut c, 11, 13, open(AT_FDCWD, "y", O_WRONLY, 0), 8);
        assert_eq!(ev[0].1.path, "/work/src/y");
        // An fd nobody opened: named by /proc (absolute, honest).
        let ev = feed(&mut c, 11, 14, open(42, "q", O_WRONLY, 0), 9);
        assert_eq!(ev[0].1.path, "/proc/11/fd/42/q");
    }

    #[test]
    fn other_operations() {
        let mut c = collector();
        let mut s = call(FileOp::Symlink, AT_FDCWD, "../target");
        s.path2 = Some("d/link".into());
        assert_eq!(
            feed(&mut c, 11, 1, s, 0),
            [(
                Kind::FileLink,
                FileInfo {
                    new_path: Some("/work/d/link".into()),
                    flags: Some(1),
                    ..info("/work/target")
                }
            )]
        );
        let mut l = call(FileOp::Link, AT_FDCWD, "f");
        l.path2 = Some("/tmp/g".into());
        assert_eq!(
            feed(&mut c, 11, 2, l, 0)[0].1.new_path.as_deref(),
            Some("/tmp/g")
        );
        let mut m = call(FileOp::Chmod, AT_FDCWD, "f");
        m.mode = 0o100755;
        assert_eq!(feed(&mut c, 11, 3, m, 0)[0].1.mode, Some(0o755));
        // fchmod: the path of the fd an earlier open returned.
        feed(&mut c, 11, 3, open(AT_FDCWD, "../e/x", O_WRONLY, 0), 9);
        let mut fm = call(FileOp::Chmod, AT_FDCWD, "");
        (fm.fd, fm.mode) = (Some(9), 0o600);
        assert_eq!(
            feed(&mut c, 11, 3, fm, 0),
            [(
                Kind::FileChmod,
                FileInfo {
                    mode: Some(0o600),
                    ..info("/e/x")
                }
            )]
        );
        let mut o = call(FileOp::Chown, AT_FDCWD, "f");
        (o.uid, o.gid) = (0, u32::MAX);
        let ev = feed(&mut c, 11, 4, o.clone(), -1);
        assert_eq!((ev[0].1.uid, ev[0].1.gid), (Some(0), None));
        assert_eq!(ev[0].1.result.as_deref(), Some("EPERM"));
        o.uid = u32::MAX;
        assert!(
            feed(&mut c, 11, 5, o, 0).is_empty(),
            "chown -1 -1: no change"
        );
        feed(&mut c, 11, 6, open(AT_FDCWD, "t", O_WRONLY, 0), 4);
        let mut ft = call(FileOp::Ftruncate, AT_FDCWD, "");
        ft.fd = Some(4);
        assert_eq!(
            feed(&mut c, 11, 7, ft, 0),
            [(Kind::FileTruncate, info("/work/t"))]
        );
        let mut mnt = call(FileOp::Mount, AT_FDCWD, "mnt");
        mnt.path2 = Some("none".into());
        mnt.fstype = Some("tmpfs".into());
        mnt.flags = 6;
        assert_eq!(
            feed(&mut c, 11, 8, mnt, 0),
            [(
                Kind::FileMount,
                FileInfo {
                    source: Some("none".into()),
                    fstype: Some("tmpfs".into()),
                    flags: Some(6),
                    ..info("/work/mnt")
                }
            )]
        );
        assert_eq!(
            feed(
                &mut c,
                11,
                9,
                call(FileOp::Umount, AT_FDCWD, "/work/mnt"),
                0
            ),
            [(Kind::FileUnmount, info("/work/mnt"))]
        );
        let mut md = call(FileOp::Mkdir, AT_FDCWD, "d/../e");
        md.mode = 0o40755;
        assert_eq!(
            feed(&mut c, 11, 10, md, 0),
            [(
                Kind::FileMkdir,
                FileInfo {
                    mode: Some(0o755),
                    ..info("/work/e")
                }
            )]
        );
        let mut md = call(FileOp::Mkdir, 9, "sub");
        md.mode = 0o700;
        assert_eq!(
            feed(&mut c, 11, 10, md, -17),
            [(
                Kind::FileMkdir,
                FileInfo {
                    mode: Some(0o700),
                    result: Some("EEXIST".into()),
                    ..info("/e/x/sub")
                }
            )]
        );
        // mknod: the type bits kept; a device node's number as major:minor (the kernel's
        // encoding: 8:17 is 0x811, 259:65536 needs the high bits of both).
        let mut mk = call(FileOp::Mknod, AT_FDCWD, "fifo");
        mk.mode = 0o10644;
        assert_eq!(
            feed(&mut c, 11, 10, mk, 0),
            [(
                Kind::FileMknod,
                FileInfo {
                    mode: Some(0o10644),
                    result: Some("ok".into()),
                    ..info("/work/fifo")
                }
            )]
        );
        let mut mk = call(FileOp::Mknod, AT_FDCWD, "/dev/sdb1");
        mk.mode = 0o60660;
        mk.flags = 0x811;
        assert_eq!(
            feed(&mut c, 11, 10, mk, -1),
            [(
                Kind::FileMknod,
                FileInfo {
                    mode: Some(0o60660),
                    device: Some("8:17".into()),
                    result: Some("EPERM".into()),
                    ..info("/dev/sdb1")
                }
            )]
        );
        assert_eq!(device_of(0o20600, 0x1011_0303), Some("259:65795".into()));
        assert_eq!(device_of(0o100644, 0x811), None);
        // A path that could not be read is said so, not guessed.
        let mut u = call(FileOp::Unlink, AT_FDCWD, "");
        u.path_fault = true;
        assert_eq!(
            feed(&mut c, 11, 11, u, 0),
            [(Kind::FileDelete, info("/(unreadable)"))]
        );
        // The exit record was lost: the result is unknown, not "ok".
        let ev = c.record(RawRecord::File {
            task: task(11, 11),
            call: call(FileOp::Unlink, AT_FDCWD, "u"),
            result: None,
        });
        assert_eq!(ev[0].1.file.as_ref().unwrap().result, None);
    }

    #[test]
    fn sensitive_reads_logged_others_summarized_until_exit() {
        let mut c = collector();
        // Two reads of an ordinary file (the first fd still open: another fd), one failed
        // read: summarized.
        for (k, fd) in [(1, 3), (2, 4)] {
            assert!(feed(&mut c, 11, k, open(AT_FDCWD, "data.csv", 0, 0), fd).is_empty());
        }
        assert!(feed(&mut c, 11, 3, open(AT_FDCWD, "/nope", 0, 0), -2).is_empty());
        // Sensitive reads: one event each, with the absolute path.
        assert_eq!(
            feed(&mut c, 11, 4, open(AT_FDCWD, "/etc/shadow", 0, 0), 4),
            [(
                Kind::FileOpen,
                FileInfo {
                    access: Some(Access::Read),
                    flags: Some(0),
                    ..info("/etc/shadow")
                }
            )]
        );
        let ev = feed(
            &mut c,
            11,
            5,
            open(AT_FDCWD, "../home/a/.aws/credentials", 0, 0),
            5,
        );
        assert_eq!(ev[0].1.path, "/home/a/.aws/credentials");
        assert_eq!(ev[0].1.count, None);
        // Another process's read of the same file is its own summary.
        c.record(RawRecord::Fork {
            parent: task(11, 6),
            child_pid: 12,
        });
        assert!(feed(&mut c, 12, 7, open(AT_FDCWD, "data.csv", 0, 0), 3).is_empty());
        // 11 exits: its summaries (oldest first), then its exit.
        let out = c.record(RawRecord::Exit {
            task: task(11, 9),
            status: ExitStatus::Code(0),
        });
        let kinds: Vec<Kind> = out.iter().map(|(_, e)| e.kind).collect();
        assert_eq!(kinds, [Kind::FileOpen, Kind::FileOpen, Kind::ProcessExit]);
        let f0 = out[0].1.file.as_ref().unwrap();
        assert_eq!(
            (f0.path.as_str(), f0.count, f0.result.as_deref()),
            ("/work/data.csv", Some(2), Some("ok"))
        );
        assert_eq!(out[0].1.ts_ns, 1, "the first read's time");
        let f1 = out[1].1.file.as_ref().unwrap();
        assert_eq!(
            (f1.path.as_str(), f1.count, f1.result.as_deref()),
            ("/nope", Some(1), Some("ENOENT"))
        );
        // 12's summary comes at the session's end.
        let out = c.unwatch(CG);
        assert_eq!(out.len(), 1);
        let e = &out[0].1;
        e.validate().unwrap();
        assert_eq!(e.process.as_ref().unwrap().pid, 12);
        assert_eq!(e.file.as_ref().unwrap().count, Some(1));
    }

    #[test]
    fn the_sandbox_setup_by_sandtrails_init_is_not_logged() {
        let mut c = collector();
        c.add_root(CG, 10, "/usr/bin/sandtrail", "sandtrail-init", 0);
        let mut m = call(FileOp::Mount, AT_FDCWD, "/r/proc");
        m.fstype = Some("proc".into());
        assert!(feed(&mut c, 10, 1, m, 0).is_empty(), "init's own mount");
        c.record(RawRecord::Fork {
            parent: task(10, 2),
            child_pid: 11,
        });
        assert!(feed(&mut c, 11, 3, call(FileOp::Chdir, AT_FDCWD, "/w"), 0).is_empty());
        assert!(feed(&mut c, 11, 4, open(AT_FDCWD, "/dev/null", O_WRONLY, 0), 1).is_empty());
        // The command's exec: from here on it is the agent.
        c.record(RawRecord::Exec {
            task: task(11, 5),
            old_tid: 11,
            args: None,
            euid: None,
            egid: None,
            cwd: None,
        });
        let ev = feed(
            &mut c,
            11,
            6,
            open(AT_FDCWD, "x", O_WRONLY | O_CREAT, 0o644),
            3,
        );
        assert_eq!(ev[0].1.path, "/w/x", "the cwd tracked during setup");
    }

    #[test]
    fn each_image_and_session_has_summaries_of_its_own() {
        let mut c = collector();
        c.watch(
            88,
            Scope {
                session_id: "t".into(),
                host_id: "h".into(),
            },
        );
        assert!(read(&mut c, 1, "data.csv").is_empty());
        // 11 runs a new image: its reads of the same file are another summary.
        assert_eq!(
            c.record(RawRecord::Exec {
                task: task(11, 2),
                old_tid: 11,
                args: Some(sandtrail_bpf::ExecArgs {
                    filename: "/usr/bin/python3".into(),
                    argv: vec!["python3".into()],
                    argv_truncated: false,
                    filename_truncated: false,
                    argv_fault: false,
                    at: None,
                }),
                euid: None,
                egid: None,
                cwd: None,
            })
            .len(),
            1
        );
        assert!(read(&mut c, 3, "data.csv").is_empty());
        assert!(read(&mut c, 4, "data.csv").is_empty());
        assert!(read(&mut c, 5, "/srv/a").is_empty());
        // A child of 11 read a file in between.
        assert!(c
            .record(RawRecord::Fork {
                parent: task(11, 1),
                child_pid: 12,
            })
            .is_empty());
        assert!(feed(&mut c, 12, 2, open(AT_FDCWD, "b.txt", 0, 0), 3).is_empty());
        // pid 21, in the other session, reads the same path.
        let other = Task {
            tid: 21,
            pid: 21,
            cgroup_id: 88,
            ..task(21, 6)
        };
        assert!(c
            .record(RawRecord::File {
                task: other,
                call: open(AT_FDCWD, "data.csv", 0, 0),
                result: Some(3),
            })
            .is_empty());
        // The first session ends: its summaries only, oldest first across its processes and
        // images.
        let got = |out: Vec<(u64, Event)>| -> Vec<(u64, String, String, u64, Option<u64>)> {
            out.into_iter()
                .map(|(cg, e)| {
                    let f = e.file.unwrap();
                    (cg, e.process.unwrap().exec_id, f.path, e.ts_ns, f.count)
                })
                .collect()
        };
        assert_eq!(
            got(c.unwatch(CG)),
            [
                (CG, "11-1".into(), "/work/data.csv".into(), 1, Some(1)),
                (CG, "12-1".into(), "/work/b.txt".into(), 2, Some(1)),
                (CG, "11-2".into(), "/work/data.csv".into(), 3, Some(2)),
                (CG, "11-2".into(), "/srv/a".into(), 5, Some(1)),
            ]
        );
        assert_eq!(
            got(c.unwatch(88)),
            [(88, "21-6".into(), "/work/data.csv".into(), 6, Some(1))]
        );
        assert!(c.unwatch(88).is_empty());
    }

    #[test]
    fn a_full_summary_table_is_emitted_early() {
        let mut c = collector();
        c.reads.cap = 2;
        assert!(feed(&mut c, 11, 1, open(AT_FDCWD, "a", 0, 0), 3).is_empty());
        assert!(feed(&mut c, 11, 2, open(AT_FDCWD, "a", 0, 0), 3).is_empty());
        let out = feed(&mut c, 11, 3, open(AT_FDCWD, "b", 0, 0), 3);
        let got: Vec<(&str, Option<u64>)> = out
            .iter()
            .map(|(_, f)| (f.path.as_str(), f.count))
            .collect();
        assert_eq!(got, [("/work/a", Some(2)), ("/work/b", Some(1))]);
        assert!(c.unwatch(CG).is_empty());
    }

    #[test]
    fn sensitive_path_patterns() {
        let p = FilePolicy::default();
        for yes in [
            "/etc",
            "/etc/shadow",
            "/root/x",
            "/home/a/.ssh/id_rsa",
            "/home/a/.aws/credentials",
            "/home/a/.config/gcloud/creds.json",
            "/home/a/.docker/config.json",
            "/home/a/.kube/config",
            "/home/a/.netrc",
            "/workspace/app/.env",
            "/srv/app/.env.local",
            "/run/secrets/token",
            "/var/run/secrets/kubernetes.io/sa",
            "/workspace/src/main.rs",
        ] {
            assert!(p.is_sensitive(yes), "{yes}");
        }
        for no in [
            "/etcetera",
            "/usr/lib/x.so",
            "/home/a/.config/other",
            "/home/a/.envrc",
            "/home/a/env",
            "/tmp/gcloud",
        ] {
            assert!(!p.is_sensitive(no), "{no}");
        }
        let custom = FilePolicy::new(vec!["/data/".into(), "*.pem".into()]);
        assert!(custom.is_sensitive("/data/x") && custom.is_sensitive("/tmp/key.pem"));
        assert!(!custom.is_sensitive("/etc/shadow"));
    }

    /// The byte sets that skip most comparisons skip none that match: `is_sensitive` agrees with
    /// the patterns' plain meaning on paths at the start, end and middle of names, relative
    /// paths (no cwd known), `/` and the empty path, under policies with a `/` prefix, a
    /// wildcard first and a run of several names (with and without one byte all runs start with).
    #[test]
    fn the_byte_sets_skip_no_match() {
        fn plain(patterns: &[&str], path: &str) -> bool {
            let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            patterns.iter().any(|pat| {
                if let Some(rest) = pat.strip_prefix('/') {
                    let want: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
                    // `/` covers everything, a relative path too (a file whose place is unknown).
                    want.is_empty()
                        || path.starts_with('/')
                            && names.len() >= want.len()
                            && names[..want.len()] == want[..]
                } else {
                    let want: Vec<&str> = pat.split('/').filter(|c| !c.is_empty()).collect();
                    let fits = |w: &str, n: &str| match w.split_once('*') {
                        Some((pre, post)) => {
                            n.len() >= pre.len() + post.len()
                                && n.starts_with(pre)
                                && n.ends_with(post)
                        }
                        None => w == n,
                    };
                    names
                        .windows(want.len())
                        .any(|run| run.iter().zip(&want).all(|(n, w)| fits(w, n)))
                }
            })
        }
        let policies: [&[&str]; 4] = [
            &["/etc", "/workspace", ".ssh", ".env.*"],
            &["/", ".aws"],
            &["*.pem", "/data", "deploy/id_rsa"],
            &[".config/gcloud", "/e"],
        ];
        let paths = [
            "/",
            "",
            "/etc",
            "/etc/",
            "/etcx",
            "/e",
            "/e/x",
            "/ex",
            "/data/k",
            "/datum",
            "/usr/lib/locale/C.utf8/LC_CTYPE",
            "/home/a/.ssh",
            "/home/a/.sshx/k",
            ".ssh/id",
            "etc/passwd",
            "a/.env.prod",
            "/x/.env.",
            "/x/.env",
            "/tmp/key.pem",
            "/tmp/.pem",
            "/tmp/pem",
            "/opt/deploy/id_rsa",
            "/opt/deploy/x/id_rsa",
            "deploy/id_rsa",
            "/h/.config/gcloud/c",
            "/h/.config/gcloudx",
            "/h/.config",
            "/workspace/src/a.rs",
            "/h/.aws/credentials",
            "/h/aws",
        ];
        for patterns in policies {
            let policy = FilePolicy::new(patterns.iter().map(|p| p.to_string()).collect());
            for path in paths {
                assert_eq!(
                    policy.is_sensitive(path),
                    plain(patterns, path),
                    "{patterns:?} {path:?}"
                );
            }
        }
    }

    #[test]
    fn extra_sensitive_patterns_are_checked_and_added() {
        let p = FilePolicy::with_extra(&[
            ".pgpass".into(),
            "/srv/keys".into(),
            "*.pem".into(),
            "deploy/id_rsa".into(),
        ])
        .unwrap();
        assert!(p.is_sensitive("/home/a/.pgpass"));
        assert!(
            p.is_sensitive("/opt/deploy/deploy/id_rsa"),
            "a run found after a false start"
        );
        assert!(!p.is_sensitive("/opt/deploy/id_rsa.pub"));
        assert!(!p.is_sensitive("/opt/id_rsa"));
        assert!(p.is_sensitive("/srv/keys/k1"));
        assert!(p.is_sensitive("/tmp/server.pem"));
        assert!(p.is_sensitive("/etc/hosts"), "the defaults stay");
        assert!(!p.is_sensitive("/srv/keysx"));
        for bad in ["", "a*b*c", "../x", "/tmp/./x"] {
            assert!(FilePolicy::with_extra(&[bad.into()]).is_err(), "{bad:?}");
        }
    }
}
