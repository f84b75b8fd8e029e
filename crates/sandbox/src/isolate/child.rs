//! The code that runs in the sandbox's init (pid 1 of the new pid namespace) and in the command
//! process it forks, between the clone and `execve`.
//!
//! Everything here works on a [`Plan`] computed by the parent beforehand and calls only
//! allocation-free wrappers from [`crate::sys`]: the clone bypasses glibc's fork handling, so the
//! allocator may be locked by a thread that does not exist in the child.
//!
//! Init and the command each install the seccomp policy themselves (the command is forked before
//! init locks down) and each send the listener of its reporting filter to the parent over the
//! `notify_w` socket, then close their copy. The parent starts answering only after the command's
//! `execve`, so from the moment the reporting filter is installed until `execve` (command) or
//! exit (init), nothing here may make a call the deny filter matches: it would wait forever for
//! its answer. Nothing does today (the steps after installation are capability, uid and
//! descriptor calls, `wait4`, `kill`, `write` and `execve`).

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicI32, Ordering};

use super::seccomp::Programs;
use crate::sys::{self, Errno, FileKind, SysResult};

/// Exit code of init when setup failed (the parent has the message from the error pipe).
pub(crate) const SETUP_FAILED: i32 = 125;
/// Exit code of the command process when execve failed.
pub(crate) const EXEC_FAILED: i32 = 127;

/// Capability number of CAP_KILL.
const CAP_KILL: u32 = 5;

/// uid/gid of the unprivileged sandbox user (`nobody`).
pub(crate) const NOBODY: u32 = 65534;

/// Signals init forwards to the command.
pub(crate) const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// One step of the filesystem setup.
pub(crate) enum Op {
    Mkdir(CString, libc::mode_t),
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Mount {
        what: &'static str,
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Hide whatever is at the path, if anything: an empty read-only tmpfs over a directory, the
    /// empty read-only file over anything else.
    Mask {
        target: CString,
        empty_file: CString,
    },
    /// Bind the path over itself read-only, if it exists.
    ReadOnlyIfExists(CString),
    /// pivot_root into the directory and detach the old root.
    PivotRoot(CString),
}

/// Everything the child needs, prepared by the parent.
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub hostname: CString,
    pub network: bool,
    pub cwd: CString,
    /// Where argv[0] may be, in PATH order.
    pub exec_candidates: Vec<CString>,
    pub argv0: CString,
    /// The command's arguments and `KEY=VALUE` environment (own the strings the pointers
    /// below point to).
    #[allow(dead_code)] // only read through argv_ptrs
    pub argv: Vec<CString>,
    #[allow(dead_code)] // only read through env_ptrs
    pub env: Vec<CString>,
    /// NULL-terminated pointers into `argv` (owned by the parent's `Spawn` state).
    pub argv_ptrs: Vec<*const libc::c_char>,
    /// NULL-terminated pointers into the environment strings.
    pub env_ptrs: Vec<*const libc::c_char>,
    pub as_root: bool,
    /// Capabilities the command keeps when `as_root` (bit mask).
    pub root_caps: u64,
    pub seccomp: Programs,
    pub last_cap: u32,
}

/// The pipes shared with the parent (child ends).
pub(crate) struct Fds {
    pub go_r: libc::c_int,
    pub err_w: libc::c_int,
    pub status_w: libc::c_int,
    /// Where init and the command send their seccomp listener (a SOCK_SEQPACKET socket).
    pub notify_w: libc::c_int,
}

/// Writes "step\npath\nerrno" to the error pipe (the parent turns it into an IsolateError).
fn report(err_w: libc::c_int, step: &str, path: &[u8], errno: Errno) {
    let mut digits = [0u8; 12];
    let mut n = errno.0.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    // A failed report cannot be reported; the parent then sees a bare exit status.
    let _ = sys::write_all(err_w, step.as_bytes())
        .and_then(|_| sys::write_all(err_w, b"\n"))
        .and_then(|_| sys::write_all(err_w, path))
        .and_then(|_| sys::write_all(err_w, b"\n"))
        .and_then(|_| sys::write_all(err_w, &digits[i..]));
}

type Step<T> = Result<T, (&'static str, *const CStr, Errno)>;

fn at<T>(r: SysResult<T>, step: &'static str, path: &CStr) -> Step<T> {
    r.map_err(|e| (step, path as *const CStr, e))
}

static EMPTY: &CStr = c"";

/// The pid init forwards signals to (0: not started yet).
static COMMAND_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = COMMAND_PID.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = sys::kill(pid, sig);
    }
}

/// Entry point of the cloned child (pid 1 of the new pid namespace). Never returns.
pub(crate) fn init_main(plan: &Plan, fds: &Fds) -> ! {
    // Descriptors inherited from the parent (other sessions' pipes, the store, sockets) must not
    // live on inside the sandbox.
    let _ = sys::close_fds_except(&[fds.go_r, fds.err_w, fds.status_w, fds.notify_w]);
    match init_setup(plan, fds) {
        Ok(()) => {}
        Err((step, path, errno)) => {
            // SAFETY: `path` points into `plan` (or a static), which outlives this call.
            let path = unsafe { &*path };
            report(fds.err_w, step, path.to_bytes(), errno);
            sys::exit_now(SETUP_FAILED);
        }
    }
    run_command(plan, fds)
}

fn init_setup(plan: &Plan, fds: &Fds) -> Step<()> {
    at(
        sys::set_not_dumpable(),
        "make the sandbox init non-dumpable",
        EMPTY,
    )?;
    let _ = sys::set_name(c"sandtrail-init");
    for sig in FORWARDED {
        at(
            sys::set_signal_handler(sig, forward_signal),
            "install init's signal handlers",
            EMPTY,
        )?;
    }
    // Wait for the parent's go-ahead (it puts us into the session's cgroups first).
    let mut b = [0u8; 1];
    match sys::read(fds.go_r, &mut b) {
        Ok(1) if b[0] == b'g' => {}
        Ok(_) => sys::exit_now(SETUP_FAILED), // parent gave up: nothing to report to
        Err(e) => return Err(("wait for the parent's go-ahead", EMPTY, e)),
    }
    sys::close(fds.go_r);
    // Now in the session cgroup: make it the root of our cgroup view.
    at(
        sys::unshare(libc::CLONE_NEWCGROUP),
        "create the cgroup namespace",
        EMPTY,
    )?;
    for op in &plan.ops {
        run_op(op)?;
    }
    at(
        sys::sethostname(plan.hostname.to_bytes()),
        "set the hostname",
        &plan.hostname,
    )?;
    if plan.network {
        at(sys::loopback_up(), "bring the loopback interface up", c"lo")?;
    }
    Ok(())
}

fn run_op(op: &Op) -> Step<()> {
    match op {
        Op::Mkdir(p, mode) => at(sys::mkdir_exist_ok(p, *mode), "create a directory", p),
        Op::Touch(p) => at(sys::touch(p, 0o644), "create a mount point file", p),
        Op::Symlink { target, link } => match sys::symlink(target, link) {
            Ok(()) | Err(Errno(libc::EEXIST)) => Ok(()),
            Err(e) => Err(("create a symlink", link.as_c_str() as *const CStr, e)),
        },
        Op::Mount {
            what,
            source,
            target,
            fstype,
            flags,
            data,
        } => at(
            sys::mount(
                source.as_deref(),
                target,
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
            what,
            target,
        ),
        Op::Mask { target, empty_file } => match sys::file_kind(target) {
            Err(Errno(libc::ENOENT)) | Err(Errno(libc::ENOTDIR)) => Ok(()),
            Err(e) => Err(("inspect a hidden path", target.as_c_str() as *const CStr, e)),
            Ok(FileKind::Dir) => at(
                sys::mount(
                    Some(c"tmpfs"),
                    target,
                    Some(c"tmpfs"),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    Some(c"size=4k,mode=0755"),
                ),
                "mask a hidden directory with an empty tmpfs",
                target,
            ),
            Ok(FileKind::Other) => {
                at(
                    sys::mount(Some(empty_file), target, None, libc::MS_BIND, None),
                    "mask a hidden file with an empty file",
                    target,
                )?;
                at(
                    sys::mount(
                        None,
                        target,
                        None,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        None,
                    ),
                    "make a masked file read-only",
                    target,
                )
            }
        },
        Op::ReadOnlyIfExists(p) => {
            match sys::file_kind(p) {
                Err(Errno(libc::ENOENT)) => return Ok(()),
                Err(e) => {
                    return Err((
                        "inspect a path to make read-only",
                        p.as_c_str() as *const CStr,
                        e,
                    ))
                }
                Ok(_) => {}
            }
            at(
                sys::mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None),
                "bind a path over itself",
                p,
            )?;
            at(
                sys::mount(
                    None,
                    p,
                    None,
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    None,
                ),
                "make a path read-only",
                p,
            )
        }
        Op::PivotRoot(root) => {
            at(sys::chdir(root), "enter the new root", root)?;
            at(
                sys::pivot_root(c".", c"."),
                "pivot_root into the overlay",
                root,
            )?;
            at(
                sys::umount2(c".", libc::MNT_DETACH),
                "detach the host's root",
                root,
            )?;
            at(sys::chdir(c"/"), "enter the new root", c"/")
        }
    }
}

/// Drops everything init does not need: all capabilities but CAP_KILL (to forward signals to
/// a command running as another uid), and the seccomp policy, so that a process that manages to
/// control init gains nothing the command does not already have. Closes `notify_w` (init's last
/// use of it).
fn lock_down_init(plan: &Plan, notify_w: libc::c_int) -> Step<()> {
    for cap in 0..=plan.last_cap {
        if cap != CAP_KILL {
            at(
                sys::capbset_drop(cap),
                "drop init's bounding capabilities",
                EMPTY,
            )?;
        }
    }
    at(
        sys::ambient_clear_all(),
        "clear init's ambient capabilities",
        EMPTY,
    )?;
    let kill = 1u64 << CAP_KILL;
    at(
        sys::capset(kill, kill, 0),
        "drop init's capabilities",
        EMPTY,
    )?;
    at(sys::set_no_new_privs(), "set no_new_privs on init", EMPTY)?;
    install_seccomp(plan, notify_w)?;
    sys::close(notify_w);
    Ok(())
}

/// Installs the policy: the reporting filter with a new listener, which goes to the parent over
/// `notify_w` and is closed here (it is close-on-exec too), then the plain filters.
fn install_seccomp(plan: &Plan, notify_w: libc::c_int) -> Step<()> {
    let log = libc::SECCOMP_FILTER_FLAG_LOG as libc::c_ulong;
    let listener = at(
        sys::seccomp_set_filter(
            &plan.seccomp.notify,
            log | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        ),
        "install the reporting seccomp filter",
        EMPTY,
    )?;
    let sent = sys::send_fd(notify_w, listener);
    sys::close(listener);
    at(sent, "pass the seccomp listener to sandtrail", EMPTY)?;
    for prog in &plan.seccomp.plain {
        at(
            sys::seccomp_set_filter(prog, log),
            "install the seccomp filter",
            EMPTY,
        )?;
    }
    Ok(())
}

/// Forks the command, locks init down, then reaps until the command exits.
fn run_command(plan: &Plan, fds: &Fds) -> ! {
    let (ready_r, ready_w) = match sys::pipe_cloexec() {
        Ok(p) => p,
        Err(e) => {
            report(fds.err_w, "create init's pipe", b"", e);
            sys::exit_now(SETUP_FAILED);
        }
    };
    let pid = match sys::clone_process(0) {
        Ok(p) => p,
        Err(e) => {
            report(fds.err_w, "fork the command process", b"", e);
            sys::exit_now(SETUP_FAILED);
        }
    };
    if pid == 0 {
        sys::close(ready_w);
        sys::close(fds.status_w);
        command_main(plan, fds.err_w, fds.notify_w, ready_r);
    }
    COMMAND_PID.store(pid, Ordering::SeqCst);
    sys::close(ready_r);
    if let Err((step, path, errno)) = lock_down_init(plan, fds.notify_w) {
        // SAFETY: `path` points into `plan` or a static, both alive.
        report(fds.err_w, step, unsafe { &*path }.to_bytes(), errno);
        let _ = sys::kill(pid, libc::SIGKILL);
        sys::exit_now(SETUP_FAILED);
    }
    sys::close(fds.err_w);
    sys::close(ready_w); // the command may go on

    let status = loop {
        match sys::waitpid(-1, 0, true) {
            Ok((p, st)) if p == pid => break st,
            Ok(_) => continue, // an orphan re-parented to us: reaped
            Err(Errno(libc::EINTR)) => continue,
            Err(_) => break 0x7f00, // no children: cannot happen; report exit code 127
        }
    };
    let _ = sys::write_all(fds.status_w, &status.to_ne_bytes());
    if libc::WIFEXITED(status) {
        sys::exit_now(libc::WEXITSTATUS(status));
    }
    sys::exit_now(128 + libc::WTERMSIG(status));
}

/// The command process: drop privileges, seccomp, execve.
fn command_main(plan: &Plan, err_w: libc::c_int, notify_w: libc::c_int, ready_r: libc::c_int) -> ! {
    if let Err((step, path, errno)) = command_setup(plan, notify_w, ready_r) {
        // SAFETY: `path` points into `plan` or a static, both alive.
        report(err_w, step, unsafe { &*path }.to_bytes(), errno);
        sys::exit_now(EXEC_FAILED);
    }
    exec(plan, err_w)
}

fn command_setup(plan: &Plan, notify_w: libc::c_int, ready_r: libc::c_int) -> Step<()> {
    for sig in FORWARDED {
        at(sys::set_signal_default(sig), "reset signal handlers", EMPTY)?;
    }
    at(sys::unblock_all_signals(), "unblock signals", EMPTY)?;
    // Wait until init has locked itself down.
    let mut b = [0u8; 1];
    at(sys::read(ready_r, &mut b), "wait for init", EMPTY)?;
    sys::close(ready_r);
    at(
        sys::chdir(&plan.cwd),
        "enter the working directory",
        &plan.cwd,
    )?;
    at(
        sys::cloexec_from(3),
        "mark inherited descriptors close-on-exec",
        EMPTY,
    )?;

    let keep = if plan.as_root { plan.root_caps } else { 0 };
    if !plan.as_root {
        at(
            sys::setgroups(&[NOBODY]),
            "set the supplementary groups",
            EMPTY,
        )?;
        at(sys::setresgid(NOBODY), "switch to gid 65534", EMPTY)?;
    }
    for cap in 0..=plan.last_cap {
        if keep & (1u64 << cap) == 0 {
            at(sys::capbset_drop(cap), "drop bounding capabilities", EMPTY)?;
        }
    }
    at(
        sys::ambient_clear_all(),
        "clear ambient capabilities",
        EMPTY,
    )?;
    if !plan.as_root {
        // All uids non-zero: the kernel clears permitted and effective capabilities.
        at(sys::setresuid(NOBODY), "switch to uid 65534", EMPTY)?;
    }
    at(
        sys::capset(keep, keep, 0),
        "set the command's capabilities",
        EMPTY,
    )?;
    at(sys::set_no_new_privs(), "set no_new_privs", EMPTY)?;
    // Last: the filter also applies to everything above, which it would partly forbid.
    install_seccomp(plan, notify_w)?;
    sys::close(notify_w);
    Ok(())
}

fn exec(plan: &Plan, err_w: libc::c_int) -> ! {
    let argv = &plan.argv_ptrs;
    let envp = &plan.env_ptrs;
    let mut best = Errno(libc::ENOENT);
    // Skip the PATH entries that do not hold the command: each would be a failed execve in the
    // session's kernel record (true, but noise). When none does, every one is tried, so the
    // error is execvp's.
    let first = plan
        .exec_candidates
        .iter()
        .position(|c| sys::exists(c))
        .unwrap_or(0);
    for cand in &plan.exec_candidates[first..] {
        let e = sys::execve(cand, argv, envp);
        // Like execvp: a permission problem on one candidate is more telling than "not found".
        if e.0 != libc::ENOENT && e.0 != libc::ENOTDIR {
            best = e;
        }
    }
    report(err_w, "execute the command", plan.argv0.to_bytes(), best);
    sys::exit_now(EXEC_FAILED)
}
