//! Decoding of the ring-buffer records of `process.bpf.c` (its `struct rec_*`, little endian),
//! and the typed records the probe yields.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::BpfError;

// Record kinds (process.bpf.c REC_*).
const REC_EXEC_ARGS: u32 = 1;
const REC_EXEC_FAILED: u32 = 2;
const REC_EXEC: u32 = 3;
const REC_FORK: u32 = 4;
const REC_EXIT: u32 = 5;
const REC_CRED: u32 = 6;
const REC_REAP: u32 = 7;
const REC_FILE_ARGS: u32 = 8;
const REC_FILE_RET: u32 = 9;
const REC_FILE_RET_PATHS: u32 = 10;
/// A `rec_file_args` with the call's result (`ret`), made at the call's exit alone.
const REC_FILE_CALL: u32 = 11;
/// Bytes of `rec_file_ret_paths` before its first path.
const FILE_RET_PATHS_FIXED: usize = HDR_LEN + 24;

// rec_file_args.rflags
const FILE_PATH_FAULT: u32 = 1;
const FILE_PATH2_FAULT: u32 = 2;
const FILE_BY_FD: u32 = 4;
/// Size of each path buffer in a file record (PATH_MAX).
const FILE_PATH_MAX: usize = 4096;
/// Bytes of `rec_file_args` before its first path.
const FILE_FIXED: usize = HDR_LEN + 96;

// rec_exec_args.flags
const EXEC_ARGV_TRUNCATED: u32 = 1;
const EXEC_FILENAME_TRUNCATED: u32 = 2;
const EXEC_AT: u32 = 4;
const EXEC_ARGV_FAULT: u32 = 8;

// rec_exit.flags
const EXIT_HAS_CODE: u32 = 1;
const EXIT_HAS_SIGNAL: u32 = 2;
const EXIT_CORE_SIGNAL: u32 = 4;

const HDR_LEN: usize = 56;
const EXEC_ARGS_FIXED: usize = HDR_LEN + 24;

/// The task a record is about, as the kernel saw it when the tracepoint fired.
///
/// Minimum kernel: 5.8 (BPF ring buffer); everything here is read with helpers that need no
/// kernel memory reads, so it works under lockdown `confidentiality`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Thread id of the acting task.
    pub tid: u32,
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent process id: from the probe's fork tracking; for a process whose fork the probe
    /// did not see (the session's first process), read from `/proc/<pid>/status` when the record
    /// is decoded (best effort); 0 when unknown.
    pub ppid: u32,
    /// Real uid (host user namespace).
    pub uid: u32,
    /// Real gid (host user namespace).
    pub gid: u32,
    /// cgroup v2 id of the task (inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// `CLOCK_MONOTONIC` (bpf_ktime_get_ns) nanoseconds.
    pub ktime_ns: u64,
    /// `comm`, at most 15 bytes. Empty in file records ([`RawRecord::File`]: the kernel
    /// leaves it out of those, the process's exec or fork record has it), except for a
    /// process first seen through one, whose comm is read from `/proc/<pid>/status`.
    pub comm: String,
}

/// What `execve`/`execveat` was asked to run, read from user memory at syscall entry.
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// The filename argument, as passed (may be relative; for `execveat` relative to `dirfd`).
    pub filename: PathBuf,
    /// The argument vector, each entry as raw bytes.
    pub argv: Vec<OsString>,
    /// argv was cut at the probe's cap (bytes or entries); `argv` holds the part that fit.
    pub argv_truncated: bool,
    /// The filename was longer than 4095 bytes and is cut.
    pub filename_truncated: bool,
    /// Reading argv from user memory faulted (e.g. a page not present); `argv` is partial.
    pub argv_fault: bool,
    /// For `execveat`: the directory fd and flags.
    pub at: Option<ExecAt>,
}

impl ExecArgs {
    /// argv as lossily decoded UTF-8 strings (for display and tests).
    pub fn argv_lossy(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// The extra arguments of an `execveat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecAt {
    /// The `dirfd` argument.
    pub dirfd: i32,
    /// The `flags` argument (`AT_EMPTY_PATH`, `AT_SYMLINK_NOFOLLOW`).
    pub flags: u32,
}

/// How a process ended.
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit_group(code)` (or its leader `exit(code)`); `code` is the low 8 bits.
    Code(i32),
    /// A signal whose default action is fatal was delivered while no handler was installed.
    Signal {
        /// The signal number.
        signal: u32,
        /// The signal's default action is a core dump (whether a core file was actually
        /// written depends on `RLIMIT_CORE` and `core_pattern`, which the probe cannot see).
        core_signal: bool,
    },
    /// The probe saw the process die but neither its exit call nor a fatal signal (for
    /// example: it was not tracked yet, or it died of a signal delivered in a way the
    /// tracepoints do not show).
    Unknown,
}

/// The status a parent got from `wait4`/`waitid` for its child: the kernel's own word.
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// The child exited with this code (`WEXITSTATUS`).
    Exited(i32),
    /// The child was killed by `signal`; `core_dumped` is `WCOREDUMP` (a core was written).
    Signaled {
        /// The signal number.
        signal: u32,
        /// A core dump was written.
        core_dumped: bool,
    },
}

impl WaitStatus {
    /// Decodes a wait status word (as `wait4` stores it); `None` for stopped/continued.
    pub fn from_raw(status: i32) -> Option<WaitStatus> {
        let low = status & 0x7f;
        if low == 0 {
            Some(WaitStatus::Exited((status >> 8) & 0xff))
        } else if low == 0x7f || status == 0xffff {
            None
        } else {
            Some(WaitStatus::Signaled {
                signal: low as u32,
                core_dumped: status & 0x80 != 0,
            })
        }
    }
}

/// A successful `set*id` call: its arguments as passed (`None` = -1, left unchanged).
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredCall {
    /// `setuid(uid)`: sets the effective uid (and real and saved ones when privileged).
    SetUid(u32),
    /// `setreuid(ruid, euid)`.
    SetReUid(Option<u32>, Option<u32>),
    /// `setresuid(ruid, euid, suid)`.
    SetResUid(Option<u32>, Option<u32>, Option<u32>),
    /// `setgid(gid)`.
    SetGid(u32),
    /// `setregid(rgid, egid)`.
    SetReGid(Option<u32>, Option<u32>),
    /// `setresgid(rgid, egid, sgid)`.
    SetResGid(Option<u32>, Option<u32>, Option<u32>),
}

impl CredCall {
    /// The effective uid after the call, when the call sets it.
    pub fn new_euid(&self) -> Option<u32> {
        match *self {
            CredCall::SetUid(u) => Some(u),
            CredCall::SetReUid(_, e) | CredCall::SetResUid(_, e, _) => e,
            _ => None,
        }
    }

    /// The effective gid after the call, when the call sets it.
    pub fn new_egid(&self) -> Option<u32> {
        match *self {
            CredCall::SetGid(g) => Some(g),
            CredCall::SetReGid(_, e) | CredCall::SetResGid(_, e, _) => e,
            _ => None,
        }
    }
}

/// The file operation of a [`RawRecord::File`] (one per group of syscalls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// `open`, `creat` (flags `O_CREAT|O_WRONLY|O_TRUNC`), `openat`, `openat2`.
    Open,
    /// `unlink`, `unlinkat` without `AT_REMOVEDIR`.
    Unlink,
    /// `rmdir`, `unlinkat` with `AT_REMOVEDIR`.
    Rmdir,
    /// `rename`, `renameat`, `renameat2`: `path` → `path2`.
    Rename,
    /// `mkdir`, `mkdirat`.
    Mkdir,
    /// `chdir(path)`.
    Chdir,
    /// `fchdir(fd)`.
    Fchdir,
    /// `chmod`, `fchmodat`, `fchmod` (by fd).
    Chmod,
    /// `chown`, `fchownat`, `lchown` (flags `AT_SYMLINK_NOFOLLOW`), `fchown` (by fd).
    Chown,
    /// `link`, `linkat`: existing `path`, new link `path2`.
    Link,
    /// `symlink`, `symlinkat`: target `path` (as written, not resolved), new link `path2`.
    Symlink,
    /// `truncate(path, length)`.
    Truncate,
    /// `ftruncate(fd, length)`.
    Ftruncate,
    /// `mount`: mount point `path`, source `path2`, `fstype`, flags `MS_*`.
    Mount,
    /// `umount2` (tracepoint `umount`): `path`, flags `MNT_*`/`UMOUNT_*`.
    Umount,
    /// `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD | F_DUPFD_CLOEXEC)`: `fd` is the old fd, the
    /// result the new one.
    Dup,
    /// `mknod`, `mknodat`: a regular file, FIFO, socket or device node; `mode` with its file
    /// type bits (`S_IFMT`), `flags` the device number (`dev_t` as passed).
    Mknod,
}

impl FileOp {
    fn from_raw(v: u32) -> Option<FileOp> {
        Some(match v {
            1 => FileOp::Open,
            2 => FileOp::Unlink,
            3 => FileOp::Rmdir,
            4 => FileOp::Rename,
            5 => FileOp::Mkdir,
            6 => FileOp::Chdir,
            7 => FileOp::Fchdir,
            8 => FileOp::Chmod,
            9 => FileOp::Chown,
            10 => FileOp::Link,
            11 => FileOp::Symlink,
            12 => FileOp::Truncate,
            13 => FileOp::Ftruncate,
            14 => FileOp::Mount,
            15 => FileOp::Umount,
            16 => FileOp::Dup,
            17 => FileOp::Mknod,
            _ => return None,
        })
    }
}

/// The arguments of a file call, read at syscall entry (paths from user memory).
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCall {
    /// The operation.
    pub op: FileOp,
    /// The (first) path argument as passed: may be relative (to `dirfd`). Empty for
    /// `fchdir`/`ftruncate`, and when it could not be read (`path_fault`).
    pub path: PathBuf,
    /// The second path (rename/link/symlink: the new name; mount: the source), as passed.
    pub path2: Option<PathBuf>,
    /// Directory fd `path` is relative to (`AT_FDCWD` = -100 when the call takes none).
    pub dirfd: i32,
    /// Directory fd `path2` is relative to.
    pub dirfd2: i32,
    /// The fd argument of the calls that name their file by an fd: `fchdir`, `ftruncate`,
    /// `fchmod`, `fchown` (then `path` is empty).
    pub fd: Option<i32>,
    /// open `O_*` flags (openat2: `how.flags`); unlinkat/linkat/fchownat/renameat2 flags; mount
    /// `MS_*`; umount flags; mknod: the device number.
    pub flags: u64,
    /// open/mkdir/chmod/mknod mode (mknod: with the file type bits).
    pub mode: u32,
    /// chown owner and group as passed (`u32::MAX` = unchanged).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// truncate/ftruncate length.
    pub length: i64,
    /// mount: the filesystem type.
    pub fstype: Option<String>,
    /// A path argument could not be read from user memory (then it is empty).
    pub path_fault: bool,
}

/// One decoded, typed record of process activity in a watched cgroup subtree.
///
/// Minimum kernel: 5.8 (BPF ring buffer, `bpf_probe_read_user_str`); the descendant-cgroup
/// filter needs `bpf_get_current_ancestor_cgroup_id` in tracepoint programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRecord {
    /// A successful exec (from `sched/sched_process_exec`, joined with the arguments read at
    /// `sys_enter_execve[at]`).
    Exec {
        /// The task after the exec (`tid == pid`).
        task: Task,
        /// Thread id that called execve (differs from `task.pid` when a non-leader thread
        /// exec'd).
        old_tid: u32,
        /// The arguments; `None` when the exec entered before the cgroup was watched.
        args: Option<ExecArgs>,
        /// Effective uid and gid of the new image: read by the kernel program from the task's
        /// credentials where the kernel accepts BTF tracepoint programs (exact; see
        /// [`crate::Probe::exec_creds`]); else from `/proc/<pid>/status` when the record is
        /// decoded, for a setuid/setgid file or a process whose fork was not seen (best effort,
        /// `None` if the process is already gone), and `None` (unchanged) otherwise.
        euid: Option<u32>,
        /// See `euid`.
        egid: Option<u32>,
        /// Working directory from `/proc/<pid>/cwd` when the record is decoded: best effort.
        cwd: Option<PathBuf>,
    },
    /// An exec that failed with `errno` (from `sys_exit_execve[at]`).
    ExecFailed {
        /// The task that called execve (it keeps running its old image).
        task: Task,
        /// The arguments; `None` when the exec entered before the cgroup was watched.
        args: Option<ExecArgs>,
        /// The error, positive (e.g. `libc::ENOENT`).
        errno: i32,
    },
    /// A new process (not a thread) was forked (`sched/sched_process_fork`).
    Fork {
        /// The parent (the forking task).
        parent: Task,
        /// The child's pid.
        child_pid: u32,
    },
    /// A `set*id` call succeeded (`task.uid`/`task.gid` are the real ids after it). Every
    /// thread that makes the call is reported (glibc makes it in each thread of a process).
    Cred {
        /// The calling thread, after the call.
        task: Task,
        /// The call and its arguments.
        call: CredCall,
    },
    /// A tracked process reaped a child with `wait4`/`waitid` (`sys_exit_wait4`/`waitid`,
    /// reading the status the kernel just wrote to the parent's memory): the exact exit status,
    /// including whether a core was dumped. Only for parents inside a watched subtree that pass
    /// a status pointer; the session's first process is reaped by its launcher.
    Reaped {
        /// The parent that waited.
        reaper: Task,
        /// The reaped child's pid.
        child_pid: u32,
        /// Its status.
        status: WaitStatus,
    },
    /// A file call (`sys_enter_*`, joined with its `sys_exit_*` by thread id).
    File {
        /// The calling thread, at syscall entry.
        task: Task,
        /// The arguments.
        call: FileCall,
        /// The return value: an fd or 0 on success, `-errno` on failure; `None` when the exit
        /// record was lost (counted) so the result is unknown.
        result: Option<i64>,
    },
    /// A process ended: its last thread exited (`sched/sched_process_exit` with `group_dead`).
    Exit {
        /// The last thread of the process.
        task: Task,
        /// Exit code or killing signal.
        status: ExitStatus,
    },
}

/// A record as the kernel wrote it, before exec arguments are joined with their result.
#[derive(Debug)]
pub(crate) enum KernelRecord {
    ExecArgs {
        task: Task,
        args: ExecArgs,
    },
    ExecFailed {
        task: Task,
        errno: i32,
    },
    Exec {
        task: Task,
        old_tid: u32,
        /// (euid, egid) read by the kernel, when it could.
        creds: Option<(u32, u32)>,
    },
    Fork {
        parent: Task,
        child_pid: u32,
    },
    Exit {
        task: Task,
        status: ExitStatus,
    },
    Cred {
        task: Task,
        call: CredCall,
    },
    Reaped {
        reaper: Task,
        child_pid: u32,
        status: Option<WaitStatus>,
    },
    FileArgs {
        task: Task,
        call: FileCall,
        /// The call's result, when the record was made at its exit (`REC_FILE_CALL`);
        /// `None`: an entry record, whose result follows in a `FileRet`.
        ret: Option<i64>,
    },
    FileRet {
        /// The thread that made the call (joins the result to its entry record).
        tid: u32,
        op: Option<FileOp>,
        ret: i64,
        /// Paths whose entry read faulted, read again at exit.
        reread: Option<Reread>,
    },
}

/// Paths read again at a call's exit because they could not be read at its entry.
#[derive(Debug, Default)]
pub(crate) struct Reread {
    pub path: Option<PathBuf>,
    pub path2: Option<PathBuf>,
    /// A path still could not be read.
    pub fault: bool,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn decode_task(b: &[u8]) -> Task {
    Task {
        tid: u32_at(b, 4),
        pid: u32_at(b, 8),
        ppid: u32_at(b, 12),
        ktime_ns: u64_at(b, 16),
        cgroup_id: u64_at(b, 24),
        uid: u32_at(b, 32),
        gid: u32_at(b, 36),
        comm: String::from_utf8_lossy(cstr(&b[40..56])).into_owned(),
    }
}

fn need(b: &[u8], len: usize, what: &str) -> Result<(), BpfError> {
    if b.len() < len {
        Err(BpfError::Decode(format!(
            "{what} record of {} bytes, expected at least {len}",
            b.len()
        )))
    } else {
        Ok(())
    }
}

/// Bytes of `rec_file_ret` (no header: kind, tid, op, pad, ret).
const FILE_RET_LEN: usize = 24;

pub(crate) fn decode(b: &[u8]) -> Result<KernelRecord, BpfError> {
    need(b, 4, "any")?;
    if u32_at(b, 0) == REC_FILE_RET {
        need(b, FILE_RET_LEN, "file-ret")?;
        return Ok(KernelRecord::FileRet {
            tid: u32_at(b, 4),
            op: FileOp::from_raw(u32_at(b, 8)),
            ret: u64_at(b, 16) as i64,
            reread: None,
        });
    }
    need(b, HDR_LEN, "any")?;
    let kind = u32_at(b, 0);
    let task = decode_task(b);
    match kind {
        REC_EXEC_ARGS => {
            need(b, EXEC_ARGS_FIXED, "exec-args")?;
            let flags = u32_at(b, HDR_LEN);
            let dirfd = u32_at(b, HDR_LEN + 4) as i32;
            let at_flags = u32_at(b, HDR_LEN + 8);
            let filename_len = u32_at(b, HDR_LEN + 12) as usize;
            let args_len = u32_at(b, HDR_LEN + 16) as usize;
            let argc = u32_at(b, HDR_LEN + 20) as usize;
            need(b, EXEC_ARGS_FIXED + filename_len + args_len, "exec-args")?;
            let data = &b[EXEC_ARGS_FIXED..];
            let filename = PathBuf::from(OsString::from_vec(cstr(&data[..filename_len]).to_vec()));
            let mut argv: Vec<OsString> = data[filename_len..filename_len + args_len]
                .split(|&c| c == 0)
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect();
            // Every captured string ends in a NUL, so split() leaves one empty tail; a string
            // cut by the cap keeps its NUL too (bpf_probe_read_user_str always terminates).
            argv.truncate(argc);
            Ok(KernelRecord::ExecArgs {
                task,
                args: ExecArgs {
                    filename,
                    argv,
                    argv_truncated: flags & EXEC_ARGV_TRUNCATED != 0,
                    filename_truncated: flags & EXEC_FILENAME_TRUNCATED != 0,
                    argv_fault: flags & EXEC_ARGV_FAULT != 0,
                    at: (flags & EXEC_AT != 0).then_some(ExecAt {
                        dirfd,
                        flags: at_flags,
                    }),
                },
            })
        }
        REC_EXEC_FAILED => {
            need(b, HDR_LEN + 8, "exec-failed")?;
            let ret = u64_at(b, HDR_LEN) as i64;
            Ok(KernelRecord::ExecFailed {
                task,
                errno: (-ret) as i32,
            })
        }
        REC_EXEC => {
            need(b, HDR_LEN + 16, "exec")?;
            Ok(KernelRecord::Exec {
                task,
                old_tid: u32_at(b, HDR_LEN),
                creds: (u32_at(b, HDR_LEN + 4) != 0)
                    .then(|| (u32_at(b, HDR_LEN + 8), u32_at(b, HDR_LEN + 12))),
            })
        }
        REC_FORK => {
            need(b, HDR_LEN + 8, "fork")?;
            Ok(KernelRecord::Fork {
                parent: task,
                child_pid: u32_at(b, HDR_LEN),
            })
        }
        REC_EXIT => {
            need(b, HDR_LEN + 16, "exit")?;
            let code = u32_at(b, HDR_LEN) as i32;
            let sig = u32_at(b, HDR_LEN + 4);
            let flags = u32_at(b, HDR_LEN + 8);
            let status = if flags & EXIT_HAS_SIGNAL != 0 {
                ExitStatus::Signal {
                    signal: sig,
                    core_signal: flags & EXIT_CORE_SIGNAL != 0,
                }
            } else if flags & EXIT_HAS_CODE != 0 {
                ExitStatus::Code(code)
            } else {
                // Neither seen (EXIT_UNTRACKED: the probe did not even track the process).
                ExitStatus::Unknown
            };
            Ok(KernelRecord::Exit { task, status })
        }
        REC_CRED => {
            need(b, HDR_LEN + 16, "cred")?;
            let id = |i: usize| {
                let v = u32_at(b, HDR_LEN + 4 + 4 * i);
                (v != u32::MAX).then_some(v)
            };
            let call = match u32_at(b, HDR_LEN) {
                1 => CredCall::SetUid(u32_at(b, HDR_LEN + 4)),
                2 => CredCall::SetReUid(id(0), id(1)),
                3 => CredCall::SetResUid(id(0), id(1), id(2)),
                4 => CredCall::SetGid(u32_at(b, HDR_LEN + 4)),
                5 => CredCall::SetReGid(id(0), id(1)),
                6 => CredCall::SetResGid(id(0), id(1), id(2)),
                other => return Err(BpfError::Decode(format!("unknown set*id call {other}"))),
            };
            Ok(KernelRecord::Cred { task, call })
        }
        REC_REAP => {
            need(b, HDR_LEN + 8, "reap")?;
            Ok(KernelRecord::Reaped {
                reaper: task,
                child_pid: u32_at(b, HDR_LEN),
                status: WaitStatus::from_raw(u32_at(b, HDR_LEN + 4) as i32),
            })
        }
        REC_FILE_ARGS | REC_FILE_CALL => {
            need(b, FILE_FIXED, "file-args")?;
            let f = |i: usize| u32_at(b, HDR_LEN + i);
            let op = FileOp::from_raw(f(0))
                .ok_or_else(|| BpfError::Decode(format!("unknown file op {}", f(0))))?;
            let rflags = f(4);
            let path_len = (f(48) as usize).min(FILE_PATH_MAX);
            let path2_len = (f(52) as usize).min(FILE_PATH_MAX);
            let two = path2_len > 0 || rflags & FILE_PATH2_FAULT != 0;
            let end = if two {
                FILE_FIXED + FILE_PATH_MAX + path2_len
            } else {
                FILE_FIXED + path_len
            };
            need(b, end, "file-args")?;
            let path_of = |off: usize, len: usize| {
                PathBuf::from(OsString::from_vec(cstr(&b[off..off + len]).to_vec()))
            };
            let fstype = cstr(&b[HDR_LEN + 56..HDR_LEN + 88]);
            let fd = f(36) as i32;
            Ok(KernelRecord::FileArgs {
                task,
                call: FileCall {
                    op,
                    path: path_of(FILE_FIXED, path_len),
                    path2: (path2_len > 0).then(|| path_of(FILE_FIXED + FILE_PATH_MAX, path2_len)),
                    dirfd: f(8) as i32,
                    dirfd2: f(12) as i32,
                    fd: (rflags & FILE_BY_FD != 0).then_some(fd),
                    flags: u64_at(b, HDR_LEN + 16),
                    mode: f(24),
                    uid: f(28),
                    gid: f(32),
                    length: u64_at(b, HDR_LEN + 40) as i64,
                    fstype: (!fstype.is_empty())
                        .then(|| String::from_utf8_lossy(fstype).into_owned()),
                    path_fault: rflags & (FILE_PATH_FAULT | FILE_PATH2_FAULT) != 0,
                },
                ret: (kind == REC_FILE_CALL).then(|| u64_at(b, HDR_LEN + 88) as i64),
            })
        }
        REC_FILE_RET_PATHS => {
            need(b, FILE_RET_PATHS_FIXED, "file-ret-paths")?;
            let rflags = u32_at(b, HDR_LEN + 4);
            let path_len = (u32_at(b, HDR_LEN + 16) as usize).min(FILE_PATH_MAX);
            let path2_len = (u32_at(b, HDR_LEN + 20) as usize).min(FILE_PATH_MAX);
            let end = if path2_len > 0 {
                FILE_RET_PATHS_FIXED + FILE_PATH_MAX + path2_len
            } else {
                FILE_RET_PATHS_FIXED + path_len
            };
            need(b, end, "file-ret-paths")?;
            let path_of = |off: usize, len: usize| {
                (len > 0)
                    .then(|| PathBuf::from(OsString::from_vec(cstr(&b[off..off + len]).to_vec())))
            };
            Ok(KernelRecord::FileRet {
                tid: task.tid,
                op: FileOp::from_raw(u32_at(b, HDR_LEN)),
                ret: u64_at(b, HDR_LEN + 8) as i64,
                reread: Some(Reread {
                    path: path_of(FILE_RET_PATHS_FIXED, path_len),
                    path2: path_of(FILE_RET_PATHS_FIXED + FILE_PATH_MAX, path2_len),
                    fault: rflags & (FILE_PATH_FAULT | FILE_PATH2_FAULT) != 0,
                }),
            })
        }
        other => Err(BpfError::Decode(format!("unknown record kind {other}"))),
    }
}

/// Fields of `/proc/<pid>/status` the kernel records cannot give without kernel reads.
#[derive(Debug, Default)]
pub(crate) struct ProcStatus {
    /// `Name:`, the comm, as `/proc/<pid>/status` prints it (a tab, newline or backslash in
    /// it escaped).
    pub name: Option<String>,
    pub ppid: Option<u32>,
    pub euid: Option<u32>,
    pub egid: Option<u32>,
}

/// Whether the file process `pid` runs has the setuid or setgid bit (false when the process
/// is gone: its `/proc/<pid>/status` could not be read either).
pub(crate) fn setid_exe(pid: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .is_ok_and(|m| m.permissions().mode() & 0o6000 != 0)
}

pub(crate) fn proc_status(pid: u32) -> ProcStatus {
    let mut st = ProcStatus::default();
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return st;
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("Name:") {
            st.name = Some(name.trim_start_matches('\t').to_owned());
            continue;
        }
        let mut it = line.split_whitespace();
        match it.next() {
            Some("PPid:") => st.ppid = it.next().and_then(|v| v.parse().ok()),
            // Uid: real effective saved fs
            Some("Uid:") => st.euid = it.nth(1).and_then(|v| v.parse().ok()),
            Some("Gid:") => st.egid = it.nth(1).and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(kind: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [kind, 11, 10, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&123u64.to_le_bytes());
        b.extend_from_slice(&77u64.to_le_bytes());
        b.extend_from_slice(&1000u32.to_le_bytes());
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(b"bash\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(b.len(), HDR_LEN);
        b
    }

    #[test]
    fn proc_status_reads_the_comm_and_parent_of_a_process() {
        let me = std::process::id();
        let st = proc_status(me);
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(st.name.as_deref(), Some(comm.trim_end_matches('\n')));
        assert_eq!(st.ppid, Some(std::os::unix::process::parent_id()));
        let gone = proc_status(u32::MAX);
        assert_eq!((gone.name, gone.ppid), (None, None));
    }

    #[test]
    fn decodes_exec_args() {
        let mut b = hdr(REC_EXEC_ARGS);
        let data = b"/bin/ls\0ls\0-l\0\0";
        for v in [EXEC_ARGV_TRUNCATED, 0, 0, 8, 6, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&data[..14]);
        let KernelRecord::ExecArgs { task, args } = decode(&b).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!((task.tid, task.pid, task.ppid), (11, 10, 1));
        assert_eq!((task.uid, task.gid, task.cgroup_id), (1000, 100, 77));
        assert_eq!(task.comm, "bash");
        assert_eq!(args.filename, PathBuf::from("/bin/ls"));
        assert_eq!(args.argv_lossy(), ["ls", "-l"]);
        assert!(args.argv_truncated && !args.argv_fault && args.at.is_none());
    }

    #[test]
    fn decodes_exit_and_cred() {
        let mut b = hdr(REC_EXIT);
        for v in [0, 15, EXIT_HAS_SIGNAL, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let KernelRecord::Exit { status, .. } = decode(&b).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(
            status,
            ExitStatus::Signal {
                signal: 15,
                core_signal: false
            }
        );
        let mut b = hdr(REC_CRED);
        for v in [3, u32::MAX, 0, u32::MAX] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let KernelRecord::Cred { call, .. } = decode(&b).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(call, CredCall::SetResUid(None, Some(0), None));
        assert_eq!(call.new_euid(), Some(0));
    }

    #[test]
    fn decodes_wait_status_words() {
        assert_eq!(WaitStatus::from_raw(3 << 8), Some(WaitStatus::Exited(3)));
        assert_eq!(
            WaitStatus::from_raw(9),
            Some(WaitStatus::Signaled {
                signal: 9,
                core_dumped: false
            })
        );
        assert_eq!(
            WaitStatus::from_raw(11 | 0x80),
            Some(WaitStatus::Signaled {
                signal: 11,
                core_dumped: true
            })
        );
        assert_eq!(WaitStatus::from_raw((19 << 8) | 0x7f), None);
        assert_eq!(WaitStatus::from_raw(0xffff), None);
    }

    /// A rec_file_args as the kernel writes it: fixed part, path, and (when given) path2 after
    /// a full PATH_MAX buffer.
    #[allow(clippy::too_many_arguments)]
    fn file_args(
        op: u32,
        rflags: u32,
        dirfd: i32,
        dirfd2: i32,
        flags: u64,
        mode: u32,
        fd: i32,
        fstype: &[u8],
        path: &[u8],
        path2: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut b = hdr(REC_FILE_ARGS);
        for v in [op, rflags, dirfd as u32, dirfd2 as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&flags.to_le_bytes());
        for v in [mode, 7, 8, fd as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&1234i64.to_le_bytes());
        let len2 = path2.map_or(0, |p| p.len() + 1) as u32;
        for v in [path.len() as u32 + 1, len2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut ft = [0u8; 32];
        ft[..fstype.len()].copy_from_slice(fstype);
        b.extend_from_slice(&ft);
        // `ret`: unused (stale) in an entry record.
        b.extend_from_slice(&0x5555_5555_5555_5555u64.to_le_bytes());
        assert_eq!(b.len(), FILE_FIXED);
        b.extend_from_slice(path);
        b.push(0);
        if let Some(p2) = path2 {
            // The kernel sends the whole first buffer (stale bytes after the NUL included).
            b.resize(FILE_FIXED + FILE_PATH_MAX, 0xAA);
            b.extend_from_slice(p2);
            b.push(0);
        }
        b
    }

    #[test]
    fn decodes_file_args_with_one_path() {
        let b = file_args(1, 0, 3, -100, 0o1101, 0o644, -1, b"", b"out.txt", None);
        let KernelRecord::FileArgs {
            task,
            call,
            ret: None,
        } = decode(&b).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(task.pid, 10);
        assert_eq!(
            call,
            FileCall {
                op: FileOp::Open,
                path: "out.txt".into(),
                path2: None,
                dirfd: 3,
                dirfd2: -100,
                fd: None,
                flags: 0o1101,
                mode: 0o644,
                uid: 7,
                gid: 8,
                length: 1234,
                fstype: None,
                path_fault: false,
            }
        );
    }

    /// REC_FILE_CALL: an open recorded at its exit alone, the same layout with the result.
    #[test]
    fn decodes_a_whole_call_made_at_exit() {
        let mut b = file_args(1, 0, 5, -100, 0o2000000, 0, -1, b"", b"nonexist-x", None);
        b[..4].copy_from_slice(&REC_FILE_CALL.to_le_bytes());
        b[HDR_LEN + 88..HDR_LEN + 96].copy_from_slice(&(-2i64).to_le_bytes());
        let KernelRecord::FileArgs {
            task,
            call,
            ret: Some(-2),
        } = decode(&b).unwrap()
        else {
            panic!("not a whole call with result -2")
        };
        assert_eq!(task.pid, 10);
        assert_eq!(
            (call.op, call.path.as_path(), call.dirfd, call.flags),
            (
                FileOp::Open,
                std::path::Path::new("nonexist-x"),
                5,
                0o2000000
            )
        );
        // Cut before the end of its path: refused, not read past.
        assert!(decode(&b[..b.len() - 2]).is_err());
    }
    #[test]
    fn decodes_file_args_with_two_paths_and_fds() {
        let b = file_args(4, 0, -100, 5, 1, 0, -1, b"", b"a", Some(b"../b"));
        let KernelRecord::FileArgs {
            call, ret: None, ..
        } = decode(&b).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(
            (call.op, call.dirfd, call.dirfd2),
            (FileOp::Rename, -100, 5)
        );
        assert_eq!(call.path, PathBuf::from("a"));
        assert_eq!(call.path2, Some(PathBuf::from("../b")));
        assert_eq!(call.flags, 1);

        let b = file_args(
            14,
            0,
            -100,
            -100,
            1,
            0,
            -1,
            b"tmpfs",
            b"/mnt",
            Some(b"none"),
        );
        let KernelRecord::FileArgs {
            call, ret: None, ..
        } = decode(&b).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(call.op, FileOp::Mount);
        assert_eq!(call.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(call.path2, Some(PathBuf::from("none")));

        let b = file_args(
            7,
            FILE_PATH_FAULT | FILE_BY_FD,
            -100,
            -100,
            0,
            0,
            4,
            b"",
            b"",
            None,
        );
        let KernelRecord::FileArgs {
            call, ret: None, ..
        } = decode(&b).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!((call.op, call.fd), (FileOp::Fchdir, Some(4)));
        assert!(call.path_fault);

        let mut short = file_args(4, 0, -100, -100, 0, 0, -1, b"", b"a", Some(b"b"));
        short.truncate(FILE_FIXED + 100);
        assert!(decode(&short).is_err(), "path2 beyond the record");
    }

    #[test]
    fn decodes_file_results() {
        let mut b = Vec::new();
        for v in [REC_FILE_RET, 11, 2, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(-2i64).to_le_bytes());
        let KernelRecord::FileRet { tid, op, ret, .. } = decode(&b).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!((tid, op, ret), (11, Some(FileOp::Unlink), -2));
        assert!(decode(&b[..20]).is_err(), "short file-ret");

        // The exit of a call whose path faulted at entry: the path read again.
        let mut b = hdr(REC_FILE_RET_PATHS);
        for v in [1u32, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&3i64.to_le_bytes());
        for v in [9u32, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(b.len(), FILE_RET_PATHS_FIXED);
        b.extend_from_slice(b"/dev/tty\0");
        let KernelRecord::FileRet {
            op, ret, reread, ..
        } = decode(&b).unwrap()
        else {
            panic!("wrong kind")
        };
        let reread = reread.unwrap();
        assert_eq!((op, ret), (Some(FileOp::Open), 3));
        assert_eq!(reread.path, Some(PathBuf::from("/dev/tty")));
        assert_eq!((reread.path2, reread.fault), (None, false));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(decode(&[0u8; 10]).is_err());
        assert!(decode(&hdr(99)).is_err());
        let mut b = hdr(REC_EXEC_ARGS);
        for v in [0u32, 0, 0, 4000, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert!(decode(&b).is_err(), "filename_len beyond the record");
    }
}
