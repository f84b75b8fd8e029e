//! Process isolation: the session's command runs in new pid, mount, network, uts, ipc and cgroup
//! namespaces, on an overlay of the host's `/` (the host stays untouched: every write lands in
//! the session's upper dir), with a private `/tmp`, a minimal `/dev`, an optional `/workspace`,
//! the sandtrail state hidden, no_new_privs, reduced capabilities and a seccomp filter.
//! Needs root and Linux 5.11+ (close_range, overlayfs on `/`).
//!
//! # Process layout
//!
//! ```text
//! caller (host)
//!  └─ init          pid 1 in the new pid ns; the host pid is [`Sandboxed::pid`]
//!      └─ command   pid 2: argv, as uid 65534 (or 0 with `as_root`)
//! ```
//!
//! The parent clones init directly into the new namespaces, runs the caller's `setup(pid)`
//! (cgroup placement), then lets init go on: init unshares its cgroup namespace (so the session
//! cgroup is its root), builds the root filesystem, pivots into it, forks the command and locks
//! itself down (all capabilities but `CAP_KILL` dropped, no_new_privs, the same seccomp filter,
//! not dumpable). It forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//! command, reaps orphans, and exits when the command does, passing the command's exact wait
//! status to the parent on a pipe (a pid-namespace init cannot re-raise most signals on itself).
//!
//! # Seccomp denials
//!
//! Every call the seccomp policy ([`seccomp`]) denies fails with `EPERM` and is reported as a
//! [`Denial`] on the receiver of [`Sandboxed::take_denials`]. The deny filter's action is
//! `SECCOMP_RET_USER_NOTIF`: init and the command each install it with a new listener and send
//! the listener descriptor to [`spawn`] over a `SOCK_SEQPACKET` socket pair (`SCM_RIGHTS`),
//! closing their own copy right away (the kernel also creates it close-on-exec), so no sandboxed
//! process holds one once the command runs. [`spawn`] receives both after the command's `execve`
//! and starts one thread per sandbox that answers every notification with `EPERM` (never
//! anything else: nothing the process passes is interpreted to decide the answer) before it
//! queues the denial, so a denied process never waits for the consumer.
//!
//! - A denied call waits for that answer; if sandtrail dies, its listeners close and the kernel
//!   fails the same calls (also one already waiting) with `ENOSYS` instead: still denied, no
//!   longer reported.
//! - A call interrupted by a signal while it waits may be restarted by the kernel and is then
//!   reported twice; a caller killed while it waits is still reported (without `comm`/`exe`).
//! - The thread ends, closing the listeners, once every process of the sandbox is reaped.
//!
//! The overlay and every other mount exist only in the sandbox's mount namespace (`/` is made
//! recursively private first), so they disappear with its last process: nothing is mounted on the
//! host, even if sandtrail is killed.
//!
//! # Capabilities with `as_root`
//!
//! The command keeps only [`ROOT_CAPS`], the usual container set: chown, dac_override, fowner,
//! fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot, setfcap. Dropped,
//! besides everything the brief names (sys_module, sys_boot, sys_time, sys_rawio, bpf, perfmon,
//! mac_*, audit_*, syslog): sys_admin (mount, swap, most "root" ioctls), sys_ptrace (init carries a
//! copy of the caller's memory; without it init's non-dumpable flag keeps the command out, while
//! the command can still ptrace its own same-uid processes), sys_resource (would lift rlimits and
//! disk quotas), sys_nice (real-time scheduling could starve the collector), mknod (block devices
//! of the host disk), dac_read_search (open_by_handle_at escapes the root), net_admin, ipc_lock,
//! lease, linux_immutable, wake_alarm, block_suspend, checkpoint_restore.

mod child;
mod notify;
pub mod seccomp;

pub use notify::{Arch, Denial, ProcIds, DENIAL_QUEUE};

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, Errno};
use child::{Fds, Op, Plan};

/// Errors of [`spawn`], [`Sandboxed`] and [`cleanup`]. Each message says what failed and how to
/// fix it.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// The spec cannot be run as given.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// `workspace` does not exist or is not a directory.
    #[error(
        "workspace {} does not exist or is not a directory: create it or pass an existing directory as the workspace",
        .0.display()
    )]
    WorkspaceMissing(PathBuf),
    /// The session directory could not be prepared or read.
    #[error(
        "cannot prepare the session directory {}: {source}; it must be creatable and writable by root on a local filesystem (ext4, xfs or tmpfs)",
        path.display()
    )]
    SessionDir {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The seccomp policy cannot be built for this machine.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A system call in the calling process failed while starting the sandbox.
    #[error("cannot start the sandbox: {step} failed: {source}; {hint}")]
    Spawn {
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The caller's `setup` callback failed; the sandbox was killed before running anything.
    #[error("sandbox setup failed (the sandbox was killed before the command started): {0}")]
    Setup(String),
    /// A step inside the sandbox failed before the command could start.
    #[error("cannot start the sandbox: {step}{} failed: {source}; {hint}", if path.is_empty() { String::new() } else { format!(" ({path})") })]
    InSandbox {
        /// What was being done.
        step: String,
        /// The path involved, if any.
        path: String,
        /// The cause.
        source: io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The sandbox's init ended without saying why it could not start the command.
    #[error("the sandbox ended before starting the command (init exited with {0:?}); run with the same spec again to see whether it is transient, and check the kernel log (dmesg)")]
    EarlyExit(Exit),
    /// waitpid failed.
    #[error("cannot wait for the sandbox (pid {pid}): {source}; the process may have been reaped by someone else (another waitpid(-1) in this program)")]
    Wait {
        /// The sandbox init's host pid.
        pid: i32,
        /// The cause.
        source: io::Error,
    },
    /// kill failed.
    #[error("cannot send signal {signal} to the sandbox (pid {pid}): {source}")]
    Signal {
        /// The sandbox init's host pid.
        pid: i32,
        /// The signal.
        signal: i32,
        /// The cause.
        source: io::Error,
    },
    /// Removing the session's mounts or directory failed.
    #[error("cannot clean up session directory {}: {source}; {hint}", path.display())]
    Cleanup {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        source: io::Error,
        /// How to fix it.
        hint: &'static str,
    },
}

/// How the sandboxed command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    fn from_status(st: i32) -> Exit {
        if libc::WIFSIGNALED(st) {
            Exit::Signal {
                signal: libc::WTERMSIG(st),
                core_dumped: libc::WCOREDUMP(st),
            }
        } else {
            Exit::Code(libc::WEXITSTATUS(st))
        }
    }

    /// The shell convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal { signal, .. } => 128 + signal,
        }
    }
}

/// The uid and gid the command runs as without `as_root` (nobody).
pub const SANDBOX_UID: u32 = child::NOBODY;

/// What to run and how to isolate it.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// The command; `argv[0]` is looked up in the `PATH` of `env` inside the sandbox (as is, if
    /// it contains a `/`).
    pub argv: Vec<String>,
    /// The full environment of the command (see [`default_env`]).
    pub env: Vec<(String, String)>,
    /// A host directory owned by sandtrail, outside the sandbox; it is created (0700) if missing
    /// and holds `upper/` (the change set), `work/` and `root/` of the overlay. Its path must not
    /// contain `,`, `:` or `\` (overlayfs option syntax).
    pub session_dir: PathBuf,
    /// Bind-mounted read-write at `/workspace` (must exist), which is then the working directory;
    /// without it the working directory is `/`.
    pub workspace: Option<PathBuf>,
    /// Host paths that must not be visible inside: a directory is covered by an empty read-only
    /// tmpfs, anything else by an empty read-only file. Symlinks are resolved on the host first;
    /// a path that does not exist on the host is ignored. The session directory is always hidden.
    pub hidden: Vec<PathBuf>,
    /// The sandbox's hostname.
    pub hostname: String,
    /// false: the command runs as uid/gid 65534 with no capabilities. true: uid 0 with
    /// [`ROOT_CAPS`] only. Both: no_new_privs and the seccomp policy.
    pub as_root: bool,
    /// There is always a new network namespace; true brings its loopback up.
    pub network: bool,
    /// Size of the private `/tmp` (default 256 MiB).
    pub tmp_bytes: Option<u64>,
    /// Disk quota of the writable layer, in bytes (`None`: only the session dir's filesystem
    /// limits it). When set, [`spawn`] mounts a tmpfs of exactly this size (mode 0700) on the
    /// host at `session_dir/layer` and puts the overlay's `upper/` and `work/` in it, so writes
    /// to the sandbox's root beyond the quota fail with `ENOSPC`. [`disk_usage`] reads how full
    /// it is; [`cleanup`] unmounts it. Note: tmpfs pages are memory, and pages the sandbox writes
    /// are charged to the memory cgroup of the writer (the session's): a memory limit below the
    /// quota is reached before the quota is. `/tmp`, `/dev/shm` and `/workspace` are not part of
    /// the writable layer and not counted.
    pub disk_bytes: Option<u64>,
}

/// Default size of the private `/tmp`.
pub const DEFAULT_TMP_BYTES: u64 = 256 << 20;

/// Capabilities an `as_root` command keeps (bit mask by capability number; see the module docs
/// for what is dropped and why).
pub const ROOT_CAPS: u64 = (1 << 0) // CAP_CHOWN
    | (1 << 1) // CAP_DAC_OVERRIDE
    | (1 << 3) // CAP_FOWNER
    | (1 << 4) // CAP_FSETID
    | (1 << 5) // CAP_KILL
    | (1 << 6) // CAP_SETGID
    | (1 << 7) // CAP_SETUID
    | (1 << 8) // CAP_SETPCAP
    | (1 << 10) // CAP_NET_BIND_SERVICE
    | (1 << 13) // CAP_NET_RAW
    | (1 << 18) // CAP_SYS_CHROOT
    | (1 << 31); // CAP_SETFCAP

/// The environment a session gets unless the caller decides otherwise: PATH, HOME (`/root` for
/// root, `/tmp` for the unprivileged user, whose home does not exist), TERM (the caller's, or
/// `dumb`) and LANG.
pub fn default_env(as_root: bool) -> Vec<(String, String)> {
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".to_string());
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), if as_root { "/root" } else { "/tmp" }.into()),
        ("TERM".into(), term),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandboxed {
    pid: i32,
    status_r: libc::c_int,
    upper: PathBuf,
    exit: Option<Exit>,
    denials: Option<std::sync::mpsc::Receiver<Denial>>,
    denials_lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sandboxed {
    /// Host pid of the sandbox's init (pid 1 inside).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Host view of the overlay's upper dir: every file the session created or changed outside
    /// `/workspace`, `/tmp` and `/dev` (deleted files appear as overlayfs whiteouts).
    pub fn root_dir(&self) -> &Path {
        &self.upper
    }

    /// The seccomp denials of this sandbox, as they happen: every call its deny filter stopped
    /// (the caller got `EPERM`), from init, the command or any of its descendants. Returns the
    /// receiver once; `None` after that.
    ///
    /// The channel holds at most [`DENIAL_QUEUE`] denials; a denial that finds it full is not
    /// queued but counted in [`Sandboxed::denials_lost`] (the denied process never waits for the
    /// consumer). The sender is dropped once the sandbox has ended and been reaped and every
    /// denial was queued, so after [`Sandboxed::wait`] the receiver can be drained to its end
    /// (`recv` returns `Err`). Denials not taken stay queued until the `Sandboxed` is dropped;
    /// after the receiver is dropped, denials are still answered but no longer kept.
    pub fn take_denials(&mut self) -> Option<std::sync::mpsc::Receiver<Denial>> {
        self.denials.take()
    }

    /// How many denials were answered (`EPERM`) but not queued because the channel of
    /// [`Sandboxed::take_denials`] was full. Final once that channel has ended.
    pub fn denials_lost(&self) -> u64 {
        self.denials_lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until the sandbox ends; returns the command's status. Idempotent.
    pub fn wait(&mut self) -> Result<Exit, IsolateError> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let (_, st) = sys::waitpid(self.pid, 0, false).map_err(|e| IsolateError::Wait {
            pid: self.pid,
            source: e.into(),
        })?;
        Ok(self.finish(st))
    }

    /// The command's status if the sandbox has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<Exit>, IsolateError> {
        if let Some(e) = self.exit {
            return Ok(Some(e));
        }
        match sys::waitpid(self.pid, sys::WNOHANG, false) {
            Ok((0, _)) => Ok(None),
            Ok((_, st)) => Ok(Some(self.finish(st))),
            Err(e) => Err(IsolateError::Wait {
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Sends `sig` to the sandbox's init, which forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
    /// SIGUSR1 and SIGUSR2 to the command; SIGKILL ends the whole sandbox. Others are ignored.
    pub fn signal(&self, sig: i32) -> Result<(), IsolateError> {
        if self.exit.is_some() {
            return Err(IsolateError::Signal {
                pid: self.pid,
                signal: sig,
                source: io::Error::new(io::ErrorKind::NotFound, "the sandbox has already ended"),
            });
        }
        sys::kill(self.pid, sig).map_err(|e| IsolateError::Signal {
            pid: self.pid,
            signal: sig,
            source: e.into(),
        })
    }

    /// Init was reaped with raw status `st`: the command's own status, if init passed it on.
    fn finish(&mut self, st: i32) -> Exit {
        let mut buf = [0u8; 4];
        let exit = match sys::read(self.status_r, &mut buf) {
            Ok(4) => Exit::from_status(i32::from_ne_bytes(buf)),
            // Init itself was killed (SIGKILL, OOM) before the command ended.
            _ => Exit::from_status(st),
        };
        sys::close(self.status_r);
        self.status_r = -1;
        self.exit = Some(exit);
        exit
    }
}

impl Drop for Sandboxed {
    /// A sandbox that was not waited for is killed and reaped: dropping it leaves no process.
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            let _ = sys::waitpid(self.pid, 0, false);
        }
        if self.status_r >= 0 {
            sys::close(self.status_r);
        }
    }
}

fn cstring(what: &str, p: impl AsRef<OsStr>) -> Result<CString, IsolateError> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| IsolateError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn join(root: &Path, inside: &str) -> PathBuf {
    root.join(inside.trim_start_matches('/'))
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Session dir layout: (upper, work, root, empty); with a disk quota, upper and work live in
/// the size-limited `layer/` mount.
fn layout(session_dir: &Path, quota: bool) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let rw = if quota {
        layer_dir(session_dir)
    } else {
        session_dir.to_path_buf()
    };
    (
        rw.join("upper"),
        rw.join("work"),
        session_dir.join("root"),
        session_dir.join("empty"),
    )
}

/// Where the disk-quota tmpfs of a session is mounted.
fn layer_dir(session_dir: &Path) -> PathBuf {
    session_dir.join("layer")
}

/// The host path of a session's overlay upper dir (its change set): `session_dir/layer/upper`
/// for a session with a disk quota, else `session_dir/upper`. Valid while the session's
/// mounts exist, and after [`cleanup`] with `keep` (which moves a quota layer's upper dir to
/// `session_dir/upper`).
pub fn upper_dir(session_dir: &Path) -> PathBuf {
    let in_layer = layer_dir(session_dir).join("upper");
    if in_layer.is_dir() {
        in_layer
    } else {
        session_dir.join("upper")
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::symlink_metadata(dir),
        dir.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.is_dir() && m.dev() != p.dev(),
        _ => false,
    }
}

/// How full the writable layer of a session with a disk quota is: (used, limit) bytes, from
/// `statvfs` of its tmpfs. `None` if the session has no quota (or its layer is not mounted).
pub fn disk_usage(session_dir: &Path) -> Option<(u64, u64)> {
    let layer = layer_dir(session_dir);
    if !is_mount_point(&layer) {
        return None;
    }
    let c = CString::new(layer.as_os_str().as_bytes()).ok()?;
    let (total, free) = sys::statvfs(&c).ok()?;
    Some((total.saturating_sub(free), total))
}

fn prepare_session_dir(dir: &Path, disk_bytes: Option<u64>) -> Result<(), IsolateError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IsolateError::SessionDir { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    if let Some(size) = disk_bytes {
        // The quota: a tmpfs of exactly that size, mounted on the host (outside the sandbox's
        // reach: the session dir is hidden inside) so that its usage can be read while the
        // session runs. A leftover mount of an earlier spawn on this dir is reused.
        let layer = layer_dir(dir);
        std::fs::create_dir_all(&layer).map_err(err(&layer))?;
        if !is_mount_point(&layer) {
            let target = cstring("the session dir", &layer)?;
            let data = cstring("mount options", format!("mode=0700,size={size}"))?;
            sys::mount(
                Some(c"sandtrail-layer"),
                &target,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )
            .map_err(|e| IsolateError::Spawn {
                step: "mount the disk-quota tmpfs of the writable layer",
                source: e.into(),
                hint: "sandtrail must run as root on a kernel with tmpfs (CONFIG_TMPFS, CONFIG_TMPFS_XATTR)",
            })?;
        }
    }
    let (upper, work, root, empty) = layout(dir, disk_bytes.is_some());
    for d in [&upper, &work, &root] {
        std::fs::create_dir_all(d).map_err(err(d))?;
    }
    // The root of the change set is the sandbox's `/`: it must look like one.
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
        .map_err(err(&upper))?;
    std::fs::write(&empty, b"").map_err(err(&empty))?;
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o444))
        .map_err(err(&empty))?;
    Ok(())
}

fn build_plan(spec: &SandboxSpec, session_dir: &Path) -> Result<Plan, IsolateError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(IsolateError::InvalidSpec(
            "the command (argv) is empty".into(),
        ));
    }
    let sd = session_dir.as_os_str().as_bytes();
    if sd.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
        return Err(IsolateError::InvalidSpec(format!(
            "session dir {} contains ',', ':' or '\\', which overlayfs options cannot express; choose another path",
            session_dir.display()
        )));
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return Err(IsolateError::InvalidSpec(format!(
            "hostname {:?} must be 1 to 64 bytes long",
            spec.hostname
        )));
    }
    if spec.disk_bytes == Some(0) {
        return Err(IsolateError::InvalidSpec(
            "the disk quota must be at least one byte".into(),
        ));
    }
    let (upper, work, root, empty) = layout(session_dir, spec.disk_bytes.is_some());
    let r = |inside: &str| join(&root, inside);
    let c = |p: PathBuf| cstring("a path", p);
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let mount = |what: &'static str,
                 source: Option<&str>,
                 target: PathBuf,
                 fstype: Option<&str>,
                 flags: libc::c_ulong,
                 data: Option<String>|
     -> Result<Op, IsolateError> {
        Ok(Op::Mount {
            what,
            source: source.map(|s| cstring("a mount source", s)).transpose()?,
            target: c(target)?,
            fstype: fstype
                .map(|s| cstring("a filesystem type", s))
                .transpose()?,
            flags,
            data: data.map(|s| cstring("mount options", s)).transpose()?,
        })
    };

    let mut ops = vec![
        mount(
            "make all mounts private to the sandbox",
            None,
            PathBuf::from("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )?,
        mount(
            "mount the overlay root (lowerdir=/)",
            Some("overlay"),
            root.clone(),
            Some("overlay"),
            libc::MS_NODEV,
            Some(format!(
                "lowerdir=/,upperdir={},workdir={}",
                upper.display(),
                work.display()
            )),
        )?,
        Op::Mkdir(c(r("/proc"))?, 0o555),
        mount(
            "mount /proc",
            Some("proc"),
            r("/proc"),
            Some("proc"),
            nosuid_nodev | libc::MS_NOEXEC,
            None,
        )?,
        // Host-wide knobs under /proc (core_pattern would run a program on the host).
        Op::ReadOnlyIfExists(c(r("/proc/sys"))?),
        Op::ReadOnlyIfExists(c(r("/proc/sysrq-trigger"))?),
        Op::ReadOnlyIfExists(c(r("/proc/irq"))?),
        Op::ReadOnlyIfExists(c(r("/proc/bus"))?),
    ];
    let empty_c = c(empty.clone())?;
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/acpi",
    ] {
        ops.push(Op::Mask {
            target: c(r(p))?,
            empty_file: empty_c.clone(),
        });
    }
    ops.push(Op::Mkdir(c(r("/sys"))?, 0o555));
    ops.push(mount(
        "mount /sys read-only",
        Some("sysfs"),
        r("/sys"),
        Some("sysfs"),
        libc::MS_RDONLY | nosuid_nodev | libc::MS_NOEXEC,
        None,
    )?);
    // A minimal /dev.
    ops.push(Op::Mkdir(c(r("/dev"))?, 0o755));
    ops.push(mount(
        "mount /dev",
        Some("tmpfs"),
        r("/dev"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=1m".into()),
    )?);
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        ops.push(Op::Touch(c(r(&format!("/dev/{dev}")))?));
        ops.push(mount(
            "bind a device node into /dev",
            Some(&format!("/dev/{dev}")),
            r(&format!("/dev/{dev}")),
            None,
            libc::MS_BIND,
            None,
        )?);
    }
    ops.push(Op::Mkdir(c(r("/dev/pts"))?, 0o755));
    ops.push(mount(
        "mount /dev/pts",
        Some("devpts"),
        r("/dev/pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620".into()),
    )?);
    ops.push(Op::Mkdir(c(r("/dev/shm"))?, 0o1777));
    ops.push(mount(
        "mount /dev/shm",
        Some("tmpfs"),
        r("/dev/shm"),
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=1777,size=64m".into()),
    )?);
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        ops.push(Op::Symlink {
            target: cstring("a symlink", target)?,
            link: c(r(link))?,
        });
    }
    // Private /tmp.
    ops.push(Op::Mkdir(c(r("/tmp"))?, 0o1777));
    ops.push(mount(
        "mount the private /tmp",
        Some("tmpfs"),
        r("/tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(format!(
            "mode=1777,size={}",
            spec.tmp_bytes.unwrap_or(DEFAULT_TMP_BYTES)
        )),
    )?);
    // /workspace.
    let cwd = if let Some(ws) = &spec.workspace {
        let ws = std::fs::canonicalize(ws)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| IsolateError::WorkspaceMissing(ws.clone()))?;
        ops.push(Op::Mkdir(c(r("/workspace"))?, 0o755));
        ops.push(Op::Mount {
            what: "bind the workspace at /workspace",
            source: Some(c(ws)?),
            target: c(r("/workspace"))?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        });
        ops.push(mount(
            "remount /workspace nosuid,nodev",
            None,
            r("/workspace"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | nosuid_nodev,
            None,
        )?);
        "/workspace"
    } else {
        "/"
    };
    // Hidden paths last, so that they also cover anything mounted above.
    let mut hidden: Vec<PathBuf> = vec![session_dir.to_path_buf()];
    for h in &spec.hidden {
        if let Ok(p) = std::fs::canonicalize(h) {
            hidden.push(p);
        }
    }
    for h in hidden {
        ops.push(Op::Mask {
            target: c(join(&root, &h.to_string_lossy()))?,
            empty_file: empty_c.clone(),
        });
    }
    ops.push(Op::PivotRoot(c(root.clone())?));

    // The command.
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring("an argument", a))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') {
                return Err(IsolateError::InvalidSpec(format!(
                    "environment variable name {k:?} is empty or contains '='"
                )));
            }
            cstring("an environment variable", format!("{k}={v}"))
        })
        .collect::<Result<_, _>>()?;
    let argv0 = spec.argv[0].clone();
    let exec_candidates: Vec<CString> = if argv0.contains('/') {
        vec![cstring("the command", &argv0)?]
    } else {
        let path = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        path.split(':')
            .map(|d| {
                let d = if d.is_empty() { "." } else { d };
                cstring("PATH", format!("{}/{argv0}", d.trim_end_matches('/')))
            })
            .collect::<Result<_, _>>()?
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());

    Ok(Plan {
        ops,
        hostname: cstring("the hostname", &spec.hostname)?,
        network: spec.network,
        cwd: cstring("the working directory", cwd)?,
        exec_candidates,
        argv0: cstring("the command", &argv0)?,
        argv,
        env,
        argv_ptrs,
        env_ptrs,
        as_root: spec.as_root,
        root_caps: ROOT_CAPS,
        seccomp: seccomp::compile()?,
        last_cap: last_cap(),
    })
}

/// Closes the descriptors it holds when dropped.
struct FdGuard(Vec<libc::c_int>);

impl FdGuard {
    fn take(&mut self, fd: libc::c_int) -> libc::c_int {
        self.0.retain(|&f| f != fd);
        fd
    }
    fn close(&mut self, fd: libc::c_int) {
        sys::close(self.take(fd));
    }
}

impl Drop for FdGuard {
    fn drop(&mut self) {
        for &fd in &self.0 {
            sys::close(fd);
        }
    }
}

/// Kills and reaps a child unless disarmed.
struct KillGuard(Option<i32>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, 0, false);
        }
    }
}

fn hint_for(step: &str, errno: i32) -> &'static str {
    match (step, errno) {
        ("execute the command", libc::ENOENT) => {
            "the command was not found in the sandbox's PATH: install it on the host (the sandbox sees the host's /) or give its full path"
        }
        ("execute the command", libc::EACCES) => "the command is not executable by the sandbox user: check its mode, or use as_root",
        ("execute the command", _) => "check that the command is a valid executable for this machine",
        (s, _) if s.starts_with("mount the overlay") => {
            "overlayfs must be available (modprobe overlay) and the session dir must be on a filesystem that supports it as upper dir (ext4, xfs, tmpfs), not on overlayfs or NFS"
        }
        ("bind the workspace at /workspace", _) => "the workspace must be a directory the root user can read",
        ("enter the working directory", _) => "the workspace must be a directory the sandbox user can enter (mode o+x, or use as_root)",
        ("install the reporting seccomp filter", libc::EBUSY) => {
            "another seccomp filter with a listener is already in place (sandtrail runs under a container runtime that uses seccomp user notification): run sandtrail on the host or in a container without one"
        }
        ("install the reporting seccomp filter", libc::EINVAL) => {
            "the kernel lacks seccomp user notification (sandtrail needs Linux 5.11 or newer with CONFIG_SECCOMP_FILTER); on such a kernel this is a bug in sandtrail's policy: report it"
        }
        ("pass the seccomp listener to sandtrail", _) => {
            "the sandbox could not send its seccomp listener to sandtrail over their socket: check sandtrail's open-file limit (ulimit -n) and the kernel log (dmesg)"
        }
        (_, libc::EPERM) | (_, libc::EACCES) => "sandtrail must run as root (CAP_SYS_ADMIN in the initial user namespace), outside another container's seccomp policy",
        (_, libc::ENODEV) => "the kernel lacks a filesystem this needs (proc, sysfs, tmpfs, devpts, overlay): enable it",
        (_, libc::ENOSYS) => "the kernel is too old for this system call: sandtrail needs Linux 5.11 or newer",
        _ => "this is unexpected on a standard Linux host: report it with the message above",
    }
}

fn parse_child_error(msg: &[u8]) -> IsolateError {
    let text = String::from_utf8_lossy(msg);
    let mut parts = text.splitn(3, '\n');
    let step = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let errno: i32 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    IsolateError::InSandbox {
        hint: hint_for(&step, errno),
        step,
        path,
        source: io::Error::from_raw_os_error(errno),
    }
}

fn spawn_err(step: &'static str, hint: &'static str) -> impl FnOnce(Errno) -> IsolateError {
    move |e| IsolateError::Spawn {
        step,
        source: e.into(),
        hint,
    }
}

/// Starts the command in a new sandbox.
///
/// `setup(host_pid)` runs in the caller after the sandbox's init exists but before it does
/// anything (the caller puts the pid into the session's cgroups there). If it fails, the sandbox
/// is killed and the error returned as [`IsolateError::Setup`]. Any failure inside the sandbox
/// before the command's `execve` (including "command not found") is returned as
/// [`IsolateError::InSandbox`], with the sandbox gone.
///
/// The session directory is created if missing and left in place on failure: [`cleanup`]
/// removes it.
pub fn spawn(
    spec: &SandboxSpec,
    setup: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Sandboxed, IsolateError> {
    let session_dir =
        std::path::absolute(&spec.session_dir).map_err(|source| IsolateError::SessionDir {
            path: spec.session_dir.clone(),
            source,
        })?;
    // Validate everything before touching the disk.
    let plan = build_plan(spec, &session_dir)?;
    prepare_session_dir(&session_dir, spec.disk_bytes)?;

    let mut fds = FdGuard(Vec::new());
    let pipe = |fds: &mut FdGuard| {
        let (r, w) = sys::pipe_cloexec().map_err(spawn_err(
            "create a pipe",
            "raise the open-file limit (ulimit -n)",
        ))?;
        fds.0.extend([r, w]);
        Ok::<_, IsolateError>((r, w))
    };
    let (go_r, go_w) = pipe(&mut fds)?;
    let (err_r, err_w) = pipe(&mut fds)?;
    let (status_r, status_w) = pipe(&mut fds)?;
    let (notify_r, notify_w) = sys::socketpair_seqpacket().map_err(spawn_err(
        "create the socket pair for the seccomp listeners",
        "raise the open-file limit (ulimit -n)",
    ))?;
    fds.0.extend([notify_r, notify_w]);

    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET;
    let pid = sys::clone_process(flags).map_err(spawn_err(
        "clone into new pid, mount, uts, ipc and network namespaces",
        "sandtrail must run as root on a kernel with namespaces enabled (CONFIG_PID_NS, CONFIG_NET_NS, ...), and not inside a container that forbids them",
    ))?;
    if pid == 0 {
        // Child: only allocation-free code from here on (see `child`).
        sys::close(go_w);
        sys::close(err_r);
        sys::close(status_r);
        sys::close(notify_r);
        child::init_main(
            &plan,
            &Fds {
                go_r,
                err_w,
                status_w,
                notify_w,
            },
        );
    }
    let mut kill = KillGuard(Some(pid));
    fds.close(go_r);
    fds.close(err_w);
    fds.close(status_w);
    fds.close(notify_w);

    setup(pid).map_err(IsolateError::Setup)?;
    sys::write_all(go_w, b"g").map_err(spawn_err(
        "let the sandbox start",
        "the sandbox's init died during setup: check the kernel log (dmesg)",
    ))?;
    fds.close(go_w);

    // The error pipe reaches EOF when the command has exec'd (or everything died).
    let mut msg = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match sys::read(err_r, &mut buf) {
            Ok(0) => break,
            Ok(n) => msg.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(spawn_err(
                    "read the sandbox's error pipe",
                    "this is unexpected: report it",
                )(e))
            }
        }
    }
    fds.close(err_r);
    if !msg.is_empty() {
        return Err(parse_child_error(&msg));
    }
    // The command has exec'd: init and the command have sent their seccomp listeners and closed
    // their ends of the socket (init before its end of the error pipe, the command at the
    // latest at execve), so this reads to the end without waiting. Fewer than two listeners
    // only if a process was killed before it could send; the sandbox then ends by itself.
    let mut listeners: Vec<OwnedFd> = Vec::new();
    while let Some(fd) = sys::recv_fd(notify_r).map_err(spawn_err(
        "receive the sandbox's seccomp listeners",
        "this is unexpected: report it with the message above",
    ))? {
        listeners.push(fd);
    }
    fds.close(notify_r);
    let listener = notify::start(listeners)?;
    kill.0 = None;
    let status_r = fds.take(status_r);
    Ok(Sandboxed {
        pid,
        status_r,
        upper: layout(&session_dir, spec.disk_bytes.is_some()).0,
        exit: None,
        denials: Some(listener.denials),
        denials_lost: listener.lost,
    })
}

/// Mount points at or under `dir` in this process's mount namespace, deepest first.
fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&crate::mountinfo::unescape(s)))
}

/// Removes any mount left under the session dir and, unless `keep`, the session dir itself.
/// Idempotent: a missing dir is fine.
///
/// The sandbox's own mounts live in its private mount namespace and vanish with its last
/// process; this also covers mounts someone made on the host under the session dir, among them
/// the disk-quota tmpfs at `layer/` that [`spawn`] mounts on the host. With `keep`, that
/// layer's upper dir is first copied to `session_dir/upper` (`cp -a`, which keeps the
/// overlayfs xattrs and whiteouts), so the kept change set survives the unmount and
/// [`upper_dir`] finds it.
pub fn cleanup(session_dir: &Path, keep: bool) -> Result<(), IsolateError> {
    let dir = std::path::absolute(session_dir).map_err(|source| IsolateError::Cleanup {
        path: session_dir.to_path_buf(),
        source,
        hint: "pass an absolute session dir",
    })?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let layer = layer_dir(&dir);
    if keep && is_mount_point(&layer) && layer.join("upper").is_dir() {
        let kept = dir.join("upper");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg("-T")
            .arg(layer.join("upper"))
            .arg(&kept)
            .status();
        match copied {
            Ok(st) if st.success() => {}
            Ok(st) => {
                return Err(IsolateError::Cleanup {
                    path: kept,
                    source: io::Error::other(format!("cp -a exited with {st}")),
                    hint: "free space on the session dir's filesystem; the layer stays mounted until cleanup is run again",
                })
            }
            Err(source) => {
                return Err(IsolateError::Cleanup {
                    path: kept,
                    source,
                    hint: "cp (coreutils) must be installed; the layer stays mounted until cleanup is run again",
                })
            }
        }
    }
    let mounts = mounts_under(&dir).map_err(|source| IsolateError::Cleanup {
        path: dir.clone(),
        source,
        hint: "/proc must be mounted",
    })?;
    for m in mounts {
        let c = cstring("a mount point", &m)?;
        match sys::umount2(&c, libc::MNT_DETACH) {
            Ok(()) | Err(Errno(libc::EINVAL)) | Err(Errno(libc::ENOENT)) => {}
            Err(e) => {
                return Err(IsolateError::Cleanup {
                    path: m,
                    source: e.into(),
                    hint: "run as root; `umount -l` the path by hand if it persists",
                })
            }
        }
    }
    if keep {
        // The quota layer's mount point, now empty.
        let _ = std::fs::remove_dir(&layer);
    } else {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IsolateError::Cleanup {
                    path: dir,
                    source,
                    hint: "check that nothing is still mounted under it (grep it in /proc/self/mountinfo) and that no sandbox of this session still runs",
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn exit_from_status() {
        assert_eq!(Exit::from_status(3 << 8), Exit::Code(3));
        assert_eq!(
            Exit::from_status(9),
            Exit::Signal {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            Exit::Signal {
                signal: 9,
                core_dumped: false
            }
            .shell_code(),
            137
        );
    }

    #[test]
    fn bad_specs_are_refused_before_anything_happens() {
        let spec = SandboxSpec {
            argv: vec![],
            env: default_env(false),
            session_dir: "/nonexistent/sandtrail-test".into(),
            workspace: None,
            hidden: vec![],
            hostname: "h".into(),
            as_root: false,
            network: false,
            tmp_bytes: None,
            disk_bytes: None,
        };
        assert!(matches!(
            build_plan(&spec, &spec.session_dir),
            Err(IsolateError::InvalidSpec(_))
        ));
        let spec = SandboxSpec {
            argv: vec!["true".into()],
            workspace: Some("/nonexistent/ws".into()),
            ..spec
        };
        let e = build_plan(&spec, &spec.session_dir).err().unwrap();
        assert!(matches!(e, IsolateError::WorkspaceMissing(_)), "{e}");
        assert!(e.to_string().contains("create it"));
    }
}
