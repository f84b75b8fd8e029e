//! The seccomp listener: every call the sandbox's deny filter stops becomes a [`Denial`].
//!
//! The deny filter returns `SECCOMP_RET_USER_NOTIF` (see [`super::seccomp`]), so each denied call
//! waits in the kernel until someone answers it on the filter's listener descriptor. Both the
//! sandbox's init and its command install the filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and
//! pass the listener to [`super::spawn`] (see there); [`start`] then runs one thread that serves
//! all of a sandbox's listeners:
//!
//! 1. `poll` for a pending notification; `SECCOMP_IOCTL_NOTIF_RECV` it (buffers sized from
//!    `SECCOMP_GET_NOTIF_SIZES`);
//! 2. read the caller's `comm` and `exe` from `/proc/PID` (best effort), then check with
//!    `SECCOMP_IOCTL_NOTIF_ID_VALID` that the caller is still waiting, so that pid still names
//!    it (otherwise the `/proc` data is dropped: the pid may have been reused);
//! 3. answer with `SECCOMP_IOCTL_NOTIF_SEND`: error `EPERM`, value 0, no flags. This is the only
//!    answer there is: nothing in the notification (syscall, arguments, pid) is interpreted to
//!    decide it, and `SECCOMP_USER_NOTIF_FLAG_CONTINUE` is never used, so a sandboxed process
//!    cannot make sandtrail let a denied call through;
//! 4. queue the [`Denial`] on a bounded channel with `try_send`: the answer never waits for the
//!    consumer. When the queue is full the denial is counted ([`super::Sandboxed::denials_lost`])
//!    instead of queued.
//!
//! A caller that is killed while its call waits, or that dies between `poll` and the answer,
//! makes `RECV` or `SEND` fail with `ENOENT`; both are expected and skipped (a call that was
//! received is still reported: the attempt was made). A call interrupted by a signal while it
//! waits is restarted by the kernel and notified again, so it can be reported twice.
//!
//! The thread ends when no process uses any of the filters any more: the kernel reports `POLLHUP`
//! on a listener once the last task that has its filter is reaped. The thread then closes the
//! listeners and drops the channel's sender, so a receiver that is drained after
//! [`super::Sandboxed::wait`] ends (`recv` returns `Err`) after the last denial. The listener
//! descriptors are close-on-exec in sandtrail (received with `MSG_CMSG_CLOEXEC`) and are never
//! open in any sandboxed process after `execve`.
//!
//! If sandtrail dies, the listeners close with it; the kernel then fails every call the deny
//! filter matches (including one waiting for its answer) with `ENOSYS` instead of `EPERM`: still
//! denied, but no longer reported. An unexpected error on a listener (not `ENOENT`) has the same
//! effect for that listener: it is closed rather than left unanswered.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use super::IsolateError;
use crate::sys::{self, Errno};

/// How many denials wait for the consumer before further ones are counted as lost instead.
pub const DENIAL_QUEUE: usize = 4096;

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`.
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

/// The syscall ABI of a denied call (`seccomp_data.arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (`AUDIT_ARCH_X86_64`; x32 calls have this arch and bit 30 set in the number).
    X86_64,
    /// aarch64 (`AUDIT_ARCH_AARCH64`).
    Aarch64,
    /// Any other `AUDIT_ARCH_*` value (the filter kills foreign architectures, except for an
    /// x32-numbered call, which is refused before the architecture check).
    Other(u32),
}

impl Arch {
    /// From the kernel's `AUDIT_ARCH_*` value.
    pub fn from_audit(arch: u32) -> Arch {
        match arch {
            AUDIT_ARCH_X86_64 => Arch::X86_64,
            AUDIT_ARCH_AARCH64 => Arch::Aarch64,
            other => Arch::Other(other),
        }
    }
}

impl fmt::Display for Arch {
    /// `x86_64`, `aarch64`, or `audit_arch_0x...` for another value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::X86_64 => f.write_str("x86_64"),
            Arch::Aarch64 => f.write_str("aarch64"),
            Arch::Other(a) => write!(f, "audit_arch_{a:#x}"),
        }
    }
}

/// One call the sandbox's seccomp policy denied. The caller got `EPERM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The calling task's id in sandtrail's pid namespace (the host pid when sandtrail runs on
    /// the host), as the kernel's notification gives it: for a thread other than a process's
    /// main thread, its thread id. 0 if the task is not visible from sandtrail's namespace.
    pub pid: i32,
    /// The syscall number, as the caller passed it (for `arch`).
    pub nr: i32,
    /// The syscall's name, for the numbers the policy lists (`bpf`, `init_module`, `clone`,
    /// ...); `None` for an x32 number (bit 30 set on x86_64), which is refused whatever it is.
    pub name: Option<&'static str>,
    /// The syscall ABI of the call.
    pub arch: Arch,
    /// The six raw syscall arguments (pointers are not followed: they point into the caller's
    /// memory, which may change at any time).
    pub args: [u64; 6],
    /// When sandtrail received the notification.
    pub time: SystemTime,
    /// `/proc/PID/comm` of the caller when the notification was received, if it could be read
    /// while the caller still waited for the answer. The process sets it itself (`prctl`), so
    /// it is a claim, not evidence.
    pub comm: Option<String>,
    /// `/proc/PID/exe` of the caller, under the same conditions: the path of its executable as
    /// the kernel renders it from sandtrail's view (for the sandbox's overlay root this is the
    /// path inside the sandbox; a deleted file ends in ` (deleted)`).
    pub exe: Option<PathBuf>,
    /// The caller's ids and start time from `/proc/PID/status` and `/proc/PID/stat`, under the
    /// same conditions as `comm`.
    pub ids: Option<ProcIds>,
}

/// A process's ids and start time, as `/proc` shows them to sandtrail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcIds {
    /// Parent pid (in sandtrail's pid namespace; 0 when the parent is not visible from it).
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22): with the pid, it
    /// names the process uniquely across pid reuse.
    pub start_ticks: u64,
}

impl ProcIds {
    /// Reads them for `pid`; `None` if the process is gone or `/proc` is unreadable.
    pub fn read(pid: i32) -> Option<ProcIds> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&status, &stat)
    }

    /// Parses the text of `/proc/PID/status` and `/proc/PID/stat`.
    pub fn parse(status: &str, stat: &str) -> Option<ProcIds> {
        let field = |name: &str, i: usize| -> Option<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .nth(i)?
                .parse()
                .ok()
        };
        // Fields after the parenthesized comm (which may itself contain ") "): field 22 is the
        // 20th of them.
        let start_ticks = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()?;
        Some(ProcIds {
            ppid: field("PPid:", 0)?,
            uid: field("Uid:", 0)?,
            euid: field("Uid:", 1)?,
            gid: field("Gid:", 0)?,
            egid: field("Gid:", 1)?,
            start_ticks,
        })
    }
}

/// A running listener: the channel's receiving end and the count of denials the full queue
/// could not take.
#[derive(Debug)]
pub(crate) struct Listener {
    pub denials: Receiver<Denial>,
    pub lost: Arc<AtomicU64>,
}

/// Starts the thread that serves `listeners` (seccomp listener descriptors); see the module docs.
/// With no listener, the returned receiver is already disconnected.
pub(crate) fn start(listeners: Vec<OwnedFd>) -> Result<Listener, IsolateError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(DENIAL_QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    if listeners.is_empty() {
        return Ok(Listener { denials: rx, lost });
    }
    let sizes = sys::seccomp_notif_sizes().map_err(|e| IsolateError::Spawn {
        step: "query the kernel's seccomp notification sizes",
        source: e.into(),
        hint: "the kernel lacks seccomp user notification: sandtrail needs Linux 5.11 or newer with CONFIG_SECCOMP_FILTER",
    })?;
    // Scratch buffers as large as the kernel's structures and libc's, whichever is larger.
    let words = |kernel: u16, ours: usize| usize::from(kernel).max(ours).div_ceil(8);
    let notif_words = words(sizes.seccomp_notif, size_of::<libc::seccomp_notif>());
    let resp_words = words(
        sizes.seccomp_notif_resp,
        size_of::<libc::seccomp_notif_resp>(),
    );
    let server = Server {
        listeners,
        notif: vec![0; notif_words],
        resp: vec![0; resp_words],
        tx,
        lost: Arc::clone(&lost),
    };
    std::thread::Builder::new()
        .name("seccomp-notify".into())
        .spawn(move || server.run())
        .map_err(|source| IsolateError::Spawn {
            step: "start the seccomp listener thread",
            source,
            hint: "raise the thread or memory limits of sandtrail (ulimit -u, the pids limit of its cgroup)",
        })?;
    Ok(Listener { denials: rx, lost })
}

/// The listener thread's state.
struct Server {
    listeners: Vec<OwnedFd>,
    /// Scratch buffer for `struct seccomp_notif` (the larger of the kernel's and libc's size).
    notif: Vec<u64>,
    /// Scratch buffer for `struct seccomp_notif_resp`.
    resp: Vec<u64>,
    tx: SyncSender<Denial>,
    lost: Arc<AtomicU64>,
}

impl Server {
    fn run(mut self) {
        while !self.listeners.is_empty() {
            let mut polled: Vec<libc::pollfd> = self
                .listeners
                .iter()
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if sys::poll(&mut polled).is_err() {
                // Only EFAULT/EINVAL/ENOMEM: nothing to retry. Closing the listeners (below)
                // makes the kernel fail the denied calls with ENOSYS instead of leaving them
                // waiting.
                break;
            }
            let mut closed = Vec::new();
            for (i, p) in polled.iter().enumerate() {
                let keep = if p.revents & libc::POLLIN != 0 {
                    self.serve_one(i)
                } else {
                    // POLLHUP: no process has this filter any more. POLLERR/POLLNVAL: unusable.
                    p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) == 0
                };
                if !keep {
                    closed.push(i);
                }
            }
            for i in closed.into_iter().rev() {
                self.listeners.swap_remove(i);
            }
        }
        // Close every listener before the receiver can see the end of the channel.
        self.listeners.clear();
    }

    /// Receives, answers and queues one notification of listener `i`. Returns false if that
    /// listener failed unexpectedly and must be closed.
    fn serve_one(&mut self, i: usize) -> bool {
        let fd = self.listeners[i].as_raw_fd();
        let n = match sys::seccomp_notif_recv(fd, &mut self.notif) {
            Ok(n) => n,
            // The caller died (or was interrupted) between poll and recv: nothing to answer.
            Err(Errno(libc::ENOENT)) | Err(Errno(libc::EINTR)) => return true,
            Err(_) => return false,
        };
        let time = SystemTime::now();
        let pid = n.pid as i32;
        let (mut comm, mut exe, mut ids) = (None, None, None);
        if pid > 0 {
            ids = ProcIds::read(pid);
            comm = std::fs::read(format!("/proc/{pid}/comm"))
                .ok()
                .map(|b| String::from_utf8_lossy(b.strip_suffix(b"\n").unwrap_or(&b)).into_owned());
            exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        }
        // The /proc data is the caller's only if it still waits for this answer (a waiting
        // task cannot exit, so its pid cannot have been reused).
        if sys::seccomp_notif_id_valid(fd, n.id).is_err() {
            comm = None;
            exe = None;
            ids = None;
        }
        let resp = libc::seccomp_notif_resp {
            id: n.id,
            val: 0,
            error: -libc::EPERM,
            flags: 0,
        };
        let keep = match sys::seccomp_notif_send(fd, &mut self.resp, &resp) {
            // ENOENT: the caller was killed or interrupted meanwhile; the attempt is still
            // reported.
            Ok(()) | Err(Errno(libc::ENOENT)) => true,
            Err(_) => false,
        };
        let arch = Arch::from_audit(n.data.arch);
        let denial = Denial {
            pid,
            nr: n.data.nr,
            name: super::seccomp::denied_name(arch, n.data.nr),
            arch,
            args: n.data.args,
            time,
            comm,
            exe,
            ids,
        };
        match self.tx.try_send(denial) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            // The consumer dropped the receiver: answering is all that is left to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_ids_parse_exactly() {
        let status = "Name:\tpython3\nPPid:\t41\nUid:\t0\t1000\t0\t0\nGid:\t5\t6\t5\t5\n";
        let stat = "42 (we) ird) S 41 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            ProcIds::parse(status, stat),
            Some(ProcIds {
                ppid: 41,
                uid: 0,
                euid: 1000,
                gid: 5,
                egid: 6,
                start_ticks: 987654,
            })
        );
        assert_eq!(ProcIds::parse("Name:\tx\n", stat), None);
    }

    #[test]
    fn arch_names() {
        assert_eq!(Arch::from_audit(0xc000_003e), Arch::X86_64);
        assert_eq!(Arch::from_audit(0xc000_00b7), Arch::Aarch64);
        assert_eq!(Arch::X86_64.to_string(), "x86_64");
        assert_eq!(Arch::Aarch64.to_string(), "aarch64");
        assert_eq!(
            Arch::from_audit(0x4000_0003).to_string(),
            "audit_arch_0x40000003"
        );
    }

    #[test]
    fn no_listener_means_a_closed_channel() {
        let l = start(Vec::new()).unwrap();
        assert!(l.denials.recv().is_err());
        assert_eq!(l.lost.load(Ordering::Relaxed), 0);
    }
}
