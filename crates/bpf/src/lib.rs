//! sandtrail's kernel collection: BPF tracepoint programs (C, compiled objects committed next
//! to their sources under `src/bpf/`), loaded with aya, yielding typed process records for the
//! tasks of watched cgroup v2 subtrees.
//!
//! Built for kernels in lockdown `confidentiality` mode: only tracepoint programs that read
//! their own context and user memory. See `docs/bpf.md` for the programs, the tracepoints and
//! the limits of what they can see.
//!
//! ```no_run
//! use std::time::Duration;
//! use sandtrail_bpf::{Probe, ProbeOptions};
//!
//! let mut probe = Probe::load(ProbeOptions::default())?;
//! probe.watch_cgroup("/sys/fs/cgroup/unified/my-session")?;
//! while let Some(record) = probe.next_record(Duration::from_millis(500))? {
//!     println!("{record:?}");
//! }
//! println!("lost: {:?}", probe.losses()?);
//! # Ok::<(), sandtrail_bpf::BpfError>(())
//! ```

mod idhash;
pub mod net;
mod record;
pub mod stats;
mod sys;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

pub use idhash::IdMap;
use record::{decode, proc_status, setid_exe, KernelRecord, ProcStatus};
pub use record::{
    CredCall, ExecArgs, ExecAt, ExitStatus, FileCall, FileOp, RawRecord, Task, WaitStatus,
};

/// Pins the calling thread, the one that reads a probe's records, to the last CPU it may run
/// on, when it may run on two or more; returns that CPU (`None`: one CPU, left as it is).
///
/// On the 2-vCPU benchmark host this took 0.4 to 3 points off the collection overhead in five
/// of six runs, the other a draw (docs/benchmarks.md, ninth session). The likely reason:
/// unpinned, the reader is woken by the records of the workload it audits and the scheduler
/// often runs it where that workload just ran, taking the workload's CPU and its cache; pinned,
/// it keeps its tables warm on one CPU and the workload is balanced onto the others. The reader
/// keeps a fair share of that CPU, and an agent cannot change another process's affinity from
/// its sandbox.
///
/// Minimum kernel: any (`sched_setaffinity`).
pub fn pin_reader_thread() -> io::Result<Option<usize>> {
    let cpus = sys::thread_cpus()?;
    match cpus.last() {
        Some(&last) if cpus.len() >= 2 => sys::pin_thread(last).map(|()| Some(last)),
        _ => Ok(None),
    }
}

/// Runs `f` in a short-lived thread pinned as [`pin_reader_thread`] pins the reader, so that
/// the threads `f` starts run on the reader's CPU too (a new thread inherits its creator's CPU
/// mask); returns what `f` returned and what the pinning gave (`Ok(None)`: one CPU, nothing
/// pinned; `Err`: `f` ran, and its threads run, on any CPU). The calling thread's own mask is
/// never touched: a sandbox it starts later must not inherit a pinning.
///
/// For the store's ledger, seal and index threads in `sandtrail run` and the daemon, which then
/// take less of the audited workload's time (docs/benchmarks.md, tenth session). They share
/// the reader's CPU: one CPU carries the whole pipeline (docs/design.md, "Where the threads
/// run", for what that caps).
///
/// Minimum kernel: any (`sched_setaffinity`).
pub fn on_reader_cpu<T: Send>(f: impl FnOnce() -> T + Send) -> (T, io::Result<Option<usize>>) {
    std::thread::scope(|s| {
        let pinner = s.spawn(|| {
            let pinned = pin_reader_thread();
            (f(), pinned)
        });
        match pinner.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The compiled process programs (rebuilt by `crates/bpf/build.sh`).
static PROCESS_OBJ: &[u8] = aya::include_bytes_aligned!("bpf/process.bpf.o");

/// Where tracefs is mounted (and mounted by [`Probe::load`] when it is not).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Largest argv capture per exec the programs are compiled for (bytes).
pub const ARGV_MAX: u32 = 65536;

/// Program name in the object, tracepoint category, tracepoint name.
const PROGRAMS: &[(&str, &str, &str)] = &[
    ("enter_execve", "syscalls", "sys_enter_execve"),
    ("enter_execveat", "syscalls", "sys_enter_execveat"),
    ("exit_execve", "syscalls", "sys_exit_execve"),
    ("exit_execveat", "syscalls", "sys_exit_execveat"),
    ("sched_exec", "sched", "sched_process_exec"),
    ("enter_clone", "syscalls", "sys_enter_clone"),
    ("enter_clone3", "syscalls", "sys_enter_clone3"),
    ("exit_clone", "syscalls", "sys_exit_clone"),
    ("exit_clone3", "syscalls", "sys_exit_clone3"),
    ("sched_fork", "sched", "sched_process_fork"),
    ("enter_exit_group", "syscalls", "sys_enter_exit_group"),
    ("enter_exit", "syscalls", "sys_enter_exit"),
    ("signal_generate", "signal", "signal_generate"),
    ("signal_deliver", "signal", "signal_deliver"),
    ("sched_exit", "sched", "sched_process_exit"),
    ("enter_setuid", "syscalls", "sys_enter_setuid"),
    ("enter_setreuid", "syscalls", "sys_enter_setreuid"),
    ("enter_setresuid", "syscalls", "sys_enter_setresuid"),
    ("enter_setgid", "syscalls", "sys_enter_setgid"),
    ("enter_setregid", "syscalls", "sys_enter_setregid"),
    ("enter_setresgid", "syscalls", "sys_enter_setresgid"),
    ("exit_setuid", "syscalls", "sys_exit_setuid"),
    ("exit_setreuid", "syscalls", "sys_exit_setreuid"),
    ("exit_setresuid", "syscalls", "sys_exit_setresuid"),
    ("exit_setgid", "syscalls", "sys_exit_setgid"),
    ("exit_setregid", "syscalls", "sys_exit_setregid"),
    ("exit_setresgid", "syscalls", "sys_exit_setresgid"),
];

/// Tracepoints of system calls newer than the minimum kernel: their programs are attached
/// where the kernel has them (`fchmodat2`: 6.6).
const OPTIONAL_TRACEPOINTS: &[&str] = &["sys_enter_fchmodat2", "sys_exit_fchmodat2"];

/// The three programs of a system call recorded with its result: the pair `enter_<name>` and
/// `exit_<name>`, and `call_<name>` at its exit alone, which replaces the pair where the kernel
/// allows it ([`Probe::calls_at_exit`]).
struct CallPrograms {
    enter: Wanted,
    exit: Wanted,
    call: Wanted,
}

macro_rules! call_programs {
    ($($name:literal),* $(,)?) => {
        &[$(CallPrograms {
            enter: (concat!("enter_", $name), "syscalls", concat!("sys_enter_", $name)),
            exit: (concat!("exit_", $name), "syscalls", concat!("sys_exit_", $name)),
            call: (concat!("call_", $name), "syscalls", concat!("sys_exit_", $name)),
        }),*]
    };
}

/// wait4 and waitid of tracked parents: the status word of the child they reaped.
const WAIT_PROGRAMS: &[CallPrograms] = call_programs!("wait4", "waitid");

/// The file programs (src/bpf/file_progs.h, `FILE_CALL`), attached when [`ProbeOptions::files`]
/// is set, by system call; `umount` is the umount2 syscall's tracepoint.
const FILE_PROGRAMS: &[CallPrograms] = call_programs!(
    "open",
    "creat",
    "openat",
    "openat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "chdir",
    "fchdir",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "fchmod",
    "fchown",
    "lchown",
    "chown",
    "fchownat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "ftruncate",
    "mount",
    "umount",
);

/// Errors of loading and running the probe.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// Loading BPF programs needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for mounting).
    #[error("loading the BPF probe needs root; this process runs as uid {0}")]
    NotRoot(u32),
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    Tracefs(#[source] io::Error),
    /// The BPF object could not be parsed or its maps created.
    #[error("loading the BPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The kernel refused to load a program (verifier, lockdown, missing helper).
    #[error(
        "the kernel refused BPF program {program} (lockdown: {lockdown}): {source}\n\
         verifier log (tail):\n{log_tail}"
    )]
    ProgramRefused {
        /// Program name.
        program: &'static str,
        /// Content of /sys/kernel/security/lockdown, or "unknown".
        lockdown: String,
        /// The error of the BPF_PROG_LOAD call.
        #[source]
        source: io::Error,
        /// The last lines of the verifier log.
        log_tail: String,
    },
    /// The embedded object lacks a program the loader expects (object and loader out of step).
    #[error("BPF program {0} is missing from the embedded object")]
    MissingProgram(&'static str),
    /// A program could not be loaded or attached for another reason.
    #[error("BPF program {program} ({tracepoint}): {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// `category/name` of its tracepoint.
        tracepoint: String,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map is missing from the object or could not be used.
    #[error("BPF map {name}: {detail}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The ring buffer size is not a power-of-two multiple of the page size.
    #[error("ring buffer size {0} is not a power-of-two multiple of the page size")]
    RingSize(u32),
    /// A cgroup path could not be used.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path is not a directory of a cgroup v2 hierarchy.
    #[error("{0} is not a cgroup v2 directory (not a directory on a cgroup2 filesystem)")]
    NotCgroup2(PathBuf),
    /// Waiting on the ring buffer failed.
    #[error("waiting on the ring buffer: {0}")]
    Poll(#[source] io::Error),
    /// A record from the kernel did not have the expected layout.
    #[error("malformed record: {0}")]
    Decode(String),
}

/// Options of [`Probe::load`].
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes: a power of two, multiple of the page size. Default 8 MiB.
    pub ring_buffer_bytes: u32,
    /// Most argv bytes captured per exec (NULs included), at most [`ARGV_MAX`]. Default 64 KiB.
    pub argv_cap: u32,
    /// Mount tracefs at [`TRACEFS`] when it is not mounted. Default true.
    pub mount_tracefs: bool,
    /// The programs wake the reader only once this many bytes wait in the ring buffer (0:
    /// at every record, the kernel's default). Default: an eighth of the ring, at most 64 KiB.
    /// Fewer wakeups cost the audited processes fewer context switches.
    pub wakeup_bytes: Option<u32>,
    /// Longest a record waits in the ring buffer before [`Probe::next_record`] sees it when
    /// no wakeup came (the reader polls at this period). Default 20 ms.
    pub max_latency: Duration,
    /// Attach the file programs (`RawRecord::File`). Default true; false leaves only the
    /// process programs (used by the overhead benchmark to split the cost).
    pub files: bool,
    /// Record every file call, wait4 and waitid by one program at its exit where the kernel
    /// allows it ([`Probe::calls_at_exit`]). Default true; false keeps the entry/exit program
    /// pairs (the fallback, for its tests and for comparison).
    pub calls_at_exit: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_buffer_bytes: 8 << 20,
            argv_cap: ARGV_MAX,
            mount_tracefs: true,
            wakeup_bytes: None,
            max_latency: Duration::from_millis(20),
            files: true,
            calls_at_exit: true,
        }
    }
}

/// Records the kernel side could not deliver, summed over CPUs since the probe was loaded.
///
/// Minimum kernel: 5.8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Records dropped because the ring buffer was full.
    pub ring_buffer_full: u64,
    /// Processes not tracked because the process table map was full (their exit status is
    /// then `Unknown`, their ppid 0).
    pub process_table_full: u64,
    /// Exec records dropped for want of a per-CPU scratch buffer (should never happen).
    pub scratch_missing: u64,
    /// clone flags not remembered because the map was full (a thread may then be reported as
    /// a forked process).
    pub clone_table_full: u64,
    /// set*id calls not reported because the table of calls in progress was full.
    pub cred_table_full: u64,
    /// wait4/waitid calls not followed because the table of calls in progress was full.
    pub wait_table_full: u64,
    /// Reaped records not made because the status could not be read from the parent's memory.
    pub reap_unreadable: u64,
    /// File calls whose result was not reported because the table of calls in progress was
    /// full (their entry record is then yielded with an unknown result).
    pub file_table_full: u64,
    /// Runs of the programs the kernel skipped because another BPF program was already
    /// running on that CPU (`recursion_misses`, kernel >= 5.12; summed over the programs). Such
    /// a skip can lose any kind of record, so it counts as a loss.
    pub program_skips: u64,
}

impl Losses {
    /// Every lost or degraded record: the sum of all the counters.
    pub fn total(&self) -> u64 {
        self.ring_buffer_full
            + self.process_table_full
            + self.scratch_missing
            + self.clone_table_full
            + self.cred_table_full
            + self.wait_table_full
            + self.reap_unreadable
            + self.file_table_full
            + self.program_skips
    }
}

/// The loaded and attached process programs, their maps, and the decoding state.
///
/// Minimum kernel: 5.8 (BPF ring buffer, `bpf_probe_read_user_str`,
/// `bpf_get_current_ancestor_cgroup_id` for tracepoints). Dropping it detaches every program.
pub struct Probe {
    // Maps taken out of `ebpf` (their fds keep them alive); `ebpf` owns programs and links.
    ring: RingBuf<MapData>,
    watched: HashMap<MapData, u64, u8>,
    filter_gen: Array<MapData, u32>,
    losses: PerCpuArray<MapData, u64>,
    epoll: sys::Epoll,
    /// Exec arguments waiting for their result, by the tid that called execve.
    pending: IdMap<u32, ExecArgs>,
    /// File call arguments waiting for their result, by the tid that made the call.
    pending_files: IdMap<u32, (Task, FileCall)>,
    /// Whether the file programs are attached ([`ProbeOptions::files`]).
    files: bool,
    /// Records completed while joining another (a file call whose result never came).
    ready: VecDeque<RawRecord>,
    /// Parent pid of each live process: from its fork record, or (fork not seen) from /proc;
    /// file records carry none. Removed at the process's exit record.
    ppids: IdMap<u32, u32>,
    tracefs_mounted: bool,
    /// Whether exec records carry the euid/egid read by the kernel, else why not
    /// ([`Probe::exec_creds`]).
    exec_creds: Result<(), String>,
    /// Whether file calls, wait4 and waitid are recorded at their exit alone, else why not
    /// ([`Probe::calls_at_exit`]).
    calls_at_exit: Result<(), String>,
    /// Whether descriptors received from other processes are recorded, else why not
    /// ([`Probe::received_fds`]).
    received_fds: Result<(), String>,
    /// Whether the descriptors a process makes that name no file by a path are recorded
    /// ([`Probe::new_fds`]).
    new_fds: Result<(), String>,
    max_latency: Duration,
    ebpf: Ebpf,
}

/// Loads and attaches `sched_exec_btf` (`tp_btf/sched_process_exec`, which reads the new
/// image's effective ids from the task's credentials). The error says why the kernel has no
/// BTF or refused the program or the attach; `sched_exec` is attached instead then. Kernel
/// 5.5+ (BTF tracepoints), 5.11+ (`bpf_get_current_task_btf`).
fn attach_exec_btf(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut("sched_exec_btf")
        .ok_or("sched_exec_btf is missing from the object")?
        .try_into()
        .map_err(|e| format!("sched_exec_btf: {e}"))?;
    program
        .load("sched_process_exec", &btf)
        .map_err(|e| format!("loading sched_exec_btf: {e}"))?;
    program
        .attach()
        .map(drop)
        .map_err(|e| format!("attaching sched_exec_btf: {e}"))
}

/// Program name, tracepoint category, tracepoint name.
type Wanted = (&'static str, &'static str, &'static str);

/// The descriptors a process is handed by another (src/bpf/file_progs.h, "fds from
/// elsewhere": `recvmsg` with `SCM_RIGHTS`, `pidfd_getfd`), recorded so that the
/// collector forgets stale paths under their numbers. At the call's exit alone, so only with
/// the at-exit programs; they walk the control messages with `bpf_loop` (kernel 5.17+).
const RECEIVED_FD_PROGRAMS: &[Wanted] = &[
    ("call_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("call_pidfd_getfd", "syscalls", "sys_exit_pidfd_getfd"),
];

/// The descriptors a process makes that name no file by a path (src/bpf/file_progs.h,
/// `NEW_FD`: sockets, pipes, memfds, eventfds, epoll, timer, signal, inotify and fanotify fds,
/// pidfds (`pidfd_open`, and `clone`/`clone3` with `CLONE_PIDFD`), userfaultfds, perf events,
/// io_uring, message queues, the mount API's fds, files opened by handle), recorded so that the
/// collector forgets a stale path under their numbers. With the at-exit programs (`pipe`,
/// `pipe2`, `socketpair` and the clones read their fds through the saved registers); a system
/// call this kernel does not have is left out.
const NEW_FD_PROGRAMS: &[Wanted] = &[
    ("call_socket", "syscalls", "sys_exit_socket"),
    ("call_socketpair", "syscalls", "sys_exit_socketpair"),
    ("call_accept", "syscalls", "sys_exit_accept"),
    ("call_accept4", "syscalls", "sys_exit_accept4"),
    ("call_pipe", "syscalls", "sys_exit_pipe"),
    ("call_pipe2", "syscalls", "sys_exit_pipe2"),
    ("call_memfd_create", "syscalls", "sys_exit_memfd_create"),
    ("call_memfd_secret", "syscalls", "sys_exit_memfd_secret"),
    ("call_eventfd", "syscalls", "sys_exit_eventfd"),
    ("call_eventfd2", "syscalls", "sys_exit_eventfd2"),
    ("call_epoll_create", "syscalls", "sys_exit_epoll_create"),
    ("call_epoll_create1", "syscalls", "sys_exit_epoll_create1"),
    ("call_timerfd_create", "syscalls", "sys_exit_timerfd_create"),
    ("call_signalfd", "syscalls", "sys_exit_signalfd"),
    ("call_signalfd4", "syscalls", "sys_exit_signalfd4"),
    ("call_inotify_init", "syscalls", "sys_exit_inotify_init"),
    ("call_inotify_init1", "syscalls", "sys_exit_inotify_init1"),
    ("call_fanotify_init", "syscalls", "sys_exit_fanotify_init"),
    ("call_userfaultfd", "syscalls", "sys_exit_userfaultfd"),
    ("call_pidfd_open", "syscalls", "sys_exit_pidfd_open"),
    ("call_clone", "syscalls", "sys_exit_clone"),
    ("call_clone3", "syscalls", "sys_exit_clone3"),
    (
        "call_perf_event_open",
        "syscalls",
        "sys_exit_perf_event_open",
    ),
    ("call_io_uring_setup", "syscalls", "sys_exit_io_uring_setup"),
    ("call_mq_open", "syscalls", "sys_exit_mq_open"),
    ("call_open_tree", "syscalls", "sys_exit_open_tree"),
    ("call_open_tree_attr", "syscalls", "sys_exit_open_tree_attr"),
    ("call_fsopen", "syscalls", "sys_exit_fsopen"),
    ("call_fsmount", "syscalls", "sys_exit_fsmount"),
    ("call_fspick", "syscalls", "sys_exit_fspick"),
    (
        "call_open_by_handle_at",
        "syscalls",
        "sys_exit_open_by_handle_at",
    ),
];

/// Whether the kernel takes the programs that run at a call's exit alone (`call_<name>` of
/// [`WAIT_PROGRAMS`] and [`FILE_PROGRAMS`]): loads one of them, `call_wait4` (the others are
/// loaded with the rest). They need kernel BTF (their register reads are relocated against it)
/// and `bpf_task_pt_regs` (5.15+); the error says what is missing or what the kernel refused,
/// and the entry/exit pairs are used instead then.
fn load_calls_at_exit(ebpf: &mut Ebpf) -> Result<Wanted, String> {
    Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let w = WAIT_PROGRAMS[0].call;
    let program = tracepoint_program(ebpf.program_mut(w.0), w).map_err(|e| e.to_string())?;
    load_program(w, program).map_err(|e| e.to_string())?;
    Ok(w)
}

/// Loads the `wanted` tracepoint programs (the kernel verifies each: nearly all of
/// [`Probe::load`]'s time, ~18 ms per program here) on as many threads as there are CPUs, up to
/// 8: the kernel verifies privileged loads concurrently. The first failure in `wanted`'s order
/// is the error.
fn load_programs(ebpf: &mut Ebpf, wanted: &[Wanted]) -> Result<(), BpfError> {
    let mut by_name: std::collections::HashMap<&str, &mut aya::programs::Program> =
        ebpf.programs_mut().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    // Dealt round-robin: neighbours in the table (an entry and an exit program) differ in size.
    let mut shares: Vec<Vec<(usize, Wanted, &mut TracePoint)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, &w) in wanted.iter().enumerate() {
        let program = tracepoint_program(by_name.remove(w.0), w)?;
        shares[i % threads].push((i, w, program));
    }
    let mut results: Vec<(usize, Result<(), BpfError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(i, w, program)| (i, load_program(w, program)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().try_for_each(|(_, r)| r)
}

/// `program` (from the object) as the tracepoint program `w` names.
fn tracepoint_program(
    program: Option<&mut aya::programs::Program>,
    w: Wanted,
) -> Result<&mut TracePoint, BpfError> {
    program
        .ok_or(BpfError::MissingProgram(w.0))?
        .try_into()
        .map_err(|e| program_error(w, e))
}

fn program_error((name, category, tp_name): Wanted, e: ProgramError) -> BpfError {
    BpfError::Program {
        program: name,
        tracepoint: format!("{category}/{tp_name}"),
        source: Box::new(e),
    }
}

/// Loads one tracepoint program; a refusal carries the end of the verifier's log.
fn load_program(w: Wanted, program: &mut TracePoint) -> Result<(), BpfError> {
    match program.load() {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(BpfError::ProgramRefused {
            program: w.0,
            lockdown: lockdown(),
            source: io_error,
            log_tail: tail(&verifier_log.to_string(), 20),
        }),
        Err(e) => Err(program_error(w, e)),
    }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map {
        name,
        detail: e.to_string(),
    }
}

fn lockdown() -> String {
    std::fs::read_to_string("/sys/kernel/security/lockdown")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown (securityfs not mounted)".to_owned())
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Probe {
    /// Mounts tracefs if needed, loads the programs and attaches them to their tracepoints.
    /// Nothing is recorded until a cgroup is watched.
    pub fn load(opts: ProbeOptions) -> Result<Probe, BpfError> {
        let uid = sys::geteuid();
        if uid != 0 {
            return Err(BpfError::NotRoot(uid));
        }
        let page = sys::page_size();
        if !opts.ring_buffer_bytes.is_power_of_two() || opts.ring_buffer_bytes < page {
            return Err(BpfError::RingSize(opts.ring_buffer_bytes));
        }
        let tracefs = Path::new(TRACEFS);
        let mut tracefs_mounted = false;
        if !sys::is_mounted(tracefs, "tracefs").map_err(BpfError::Tracefs)? {
            if !opts.mount_tracefs {
                return Err(BpfError::Tracefs(io::Error::new(
                    io::ErrorKind::NotFound,
                    "not mounted, and mount_tracefs is off",
                )));
            }
            sys::mount_tracefs(tracefs).map_err(BpfError::Tracefs)?;
            tracefs_mounted = true;
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| BpfError::Map {
            name: "scratch",
            detail: format!("{what}: {e}"),
        })? as u32;
        let argv_cap = opts.argv_cap.min(ARGV_MAX);
        let wakeup_bytes = opts
            .wakeup_bytes
            .unwrap_or((opts.ring_buffer_bytes / 8).min(64 << 10))
            .min(opts.ring_buffer_bytes / 2);
        // Look at the unread amount every few records: at most about a quarter of the
        // threshold passes unlooked at with typical file records (~150-500 bytes).
        let wakeup_every = (wakeup_bytes / 2048).clamp(1, 32);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("events", opts.ring_buffer_bytes)
            .map_max_entries("scratch", cpus)
            .override_global("argv_cap", &argv_cap, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("wakeup_every", &wakeup_every, true)
            .load(PROCESS_OBJ)
            .map_err(|e| BpfError::Object(Box::new(e)))?;

        // The exec record with the new image's euid/egid read by the kernel, where the kernel
        // accepts a BTF tracepoint program; else sched_exec (and /proc at a setuid exec).
        let exec_creds = attach_exec_btf(&mut ebpf);
        // Every file call, wait4 and waitid at its exit alone where the kernel can, else
        // entry/exit pairs.
        let at_exit = if opts.calls_at_exit {
            load_calls_at_exit(&mut ebpf)
        } else {
            Err("turned off (ProbeOptions::calls_at_exit)".to_owned())
        };
        let file_programs: &[CallPrograms] = if opts.files { FILE_PROGRAMS } else { &[] };
        let calls = WAIT_PROGRAMS.iter().chain(file_programs);
        let calls: Vec<Wanted> = match &at_exit {
            // The one loaded already is attached with the rest below.
            Ok(loaded) => calls.map(|c| c.call).filter(|w| w != loaded).collect(),
            Err(_) => calls.flat_map(|c| [c.enter, c.exit]).collect(),
        };
        let mut wanted = Vec::new();
        for &(name, category, tp_name) in PROGRAMS.iter().chain(&calls) {
            if exec_creds.is_ok() && name == "sched_exec" {
                continue;
            }
            if OPTIONAL_TRACEPOINTS.contains(&tp_name)
                && !tracefs.join("events").join(category).join(tp_name).exists()
            {
                // A system call this kernel does not have cannot be made either.
                continue;
            }
            wanted.push((name, category, tp_name));
        }
        load_programs(&mut ebpf, &wanted)?;
        if let Ok(loaded) = at_exit {
            wanted.push(loaded);
        }
        let mut fd_programs = |list: &[Wanted]| match (&at_exit, opts.files) {
            (_, false) => Err("the file programs are turned off".to_owned()),
            (Err(why), true) => Err(format!("they run with the at-exit programs: {why}")),
            (Ok(_), true) => {
                // A system call this kernel does not have (memfd_secret without
                // CONFIG_SECRETMEM, open_tree_attr before 6.15, ...) cannot make an fd either.
                let here: Vec<Wanted> = list
                    .iter()
                    .copied()
                    .filter(|w| tracefs.join("events").join(w.1).join(w.2).exists())
                    .collect();
                load_programs(&mut ebpf, &here)
                    .map(|()| wanted.extend_from_slice(&here))
                    .map_err(|e| e.to_string())
            }
        };
        let received_fds = fd_programs(RECEIVED_FD_PROGRAMS);
        let new_fds = fd_programs(NEW_FD_PROGRAMS);
        for &w in &wanted {
            tracepoint_program(ebpf.program_mut(w.0), w)?
                .attach(w.1, w.2)
                .map_err(|e| program_error(w, e))?;
        }

        let ring = RingBuf::try_from(ebpf.take_map("events").ok_or(BpfError::Map {
            name: "events",
            detail: "missing from the object".into(),
        })?)
        .map_err(map_err("events"))?;
        let watched = HashMap::try_from(ebpf.take_map("watched").ok_or(BpfError::Map {
            name: "watched",
            detail: "missing from the object".into(),
        })?)
        .map_err(map_err("watched"))?;
        let filter_gen = Array::try_from(ebpf.take_map("filter_gen").ok_or(BpfError::Map {
            name: "filter_gen",
            detail: "missing from the object".into(),
        })?)
        .map_err(map_err("filter_gen"))?;
        let losses = PerCpuArray::try_from(ebpf.take_map("losses").ok_or(BpfError::Map {
            name: "losses",
            detail: "missing from the object".into(),
        })?)
        .map_err(map_err("losses"))?;
        let epoll = sys::Epoll::new(ring.as_fd()).map_err(BpfError::Poll)?;
        Ok(Probe {
            ring,
            watched,
            filter_gen,
            losses,
            epoll,
            pending: IdMap::default(),
            pending_files: IdMap::default(),
            files: opts.files,
            ready: VecDeque::new(),
            ppids: IdMap::default(),
            tracefs_mounted,
            exec_creds,
            calls_at_exit: at_exit.map(drop),
            received_fds,
            new_fds,
            max_latency: opts.max_latency.max(Duration::from_millis(1)),
            ebpf,
        })
    }

    /// Whether [`Probe::load`] mounted tracefs (it was not mounted before).
    pub fn mounted_tracefs(&self) -> bool {
        self.tracefs_mounted
    }

    /// Whether exec records carry the new image's euid/egid as the kernel read them (the BTF
    /// tracepoint program `sched_exec_btf` was accepted: kernel BTF, 5.11+, and a lockdown
    /// that allows BTF-typed reads); else they come from /proc at a setuid/setgid exec, and
    /// the error says why the kernel did not take the program.
    pub fn exec_creds(&self) -> Result<(), &str> {
        self.exec_creds.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Whether file calls, wait4 and waitid are recorded by one program each at their exit
    /// (one record per call, the arguments read from the registers saved at the call's entry:
    /// kernel BTF and 5.15+); else by an entry and an exit program each, and the error says
    /// why.
    pub fn calls_at_exit(&self) -> Result<(), &str> {
        self.calls_at_exit
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }

    /// Whether the descriptors a process receives from another (over a unix socket with
    /// `SCM_RIGHTS`, or with `pidfd_getfd`) are recorded (as [`FileOp::Dup`] of fd -1, so that
    /// the collector forgets a stale path under the same number): with the at-exit programs
    /// and `bpf_loop` (5.17+); else the error says why not.
    pub fn received_fds(&self) -> Result<(), &str> {
        self.received_fds
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }

    /// Whether the descriptors a process makes that name no file by a path (sockets, pipes,
    /// memfds, eventfds, epoll, pidfds, ... see `NEW_FD_PROGRAMS`) are recorded (as
    /// [`FileOp::Dup`] of fd -1, so that the collector forgets a stale path under the same
    /// number: a memfd given a closed file's number and then truncated is not logged as a
    /// truncate of that file): with the at-exit programs; else the error says why not.
    pub fn new_fds(&self) -> Result<(), &str> {
        self.new_fds.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Starts recording the tasks of a cgroup v2 directory and of all its descendants.
    /// Returns the cgroup id.
    pub fn watch_cgroup(&mut self, cgroup: impl Into<CgroupRef>) -> Result<u64, BpfError> {
        let id = cgroup.into().id()?;
        self.watched
            .insert(id, 1u8, 0)
            .map_err(map_err("watched"))?;
        self.bump_filter_gen()?;
        Ok(id)
    }

    /// Voids the programs' per-CPU answers of the cgroup filter (after `watched` changed: the
    /// change is in the map before the generation moves, so an answer cached under the new
    /// generation saw it).
    fn bump_filter_gen(&mut self) -> Result<(), BpfError> {
        let g = self.filter_gen.get(&0, 0).map_err(map_err("filter_gen"))?;
        self.filter_gen
            .set(0, g.wrapping_add(1), 0)
            .map_err(map_err("filter_gen"))
    }

    /// Stops recording a cgroup subtree (records already in the ring buffer are still read).
    pub fn unwatch(&mut self, cgroup: impl Into<CgroupRef>) -> Result<(), BpfError> {
        let id = cgroup.into().id()?;
        match self.watched.remove(&id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("watched")(e)),
        }
        self.bump_filter_gen()
    }

    /// The next record, waiting up to `timeout` for one; `None` on timeout.
    pub fn next_record(&mut self, timeout: Duration) -> Result<Option<RawRecord>, BpfError> {
        // The clock is read only once the ring is empty (a record waiting is the common case).
        let mut deadline = None;
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            loop {
                let rec = match self.ring.next() {
                    Some(item) => decode(&item),
                    None => break,
                };
                if let Some(out) = self.join(rec?) {
                    return Ok(Some(out));
                }
                if let Some(r) = self.ready.pop_front() {
                    return Ok(Some(r));
                }
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                return Ok(None);
            }
            // Records may be waiting without a wakeup (see wakeup_bytes): poll at max_latency.
            self.epoll
                .wait((deadline - now).min(self.max_latency))
                .map_err(BpfError::Poll)?;
        }
    }

    /// Joins exec arguments with their result and fills in what only /proc can tell.
    fn join(&mut self, rec: KernelRecord) -> Option<RawRecord> {
        match rec {
            KernelRecord::ExecArgs { task, args } => {
                self.pending.insert(task.tid, args);
                None
            }
            KernelRecord::ExecFailed { mut task, errno } => {
                self.fill_ppid(&mut task, None);
                Some(RawRecord::ExecFailed {
                    args: self.pending.remove(&task.tid),
                    task,
                    errno,
                })
            }
            KernelRecord::Exec {
                mut task,
                old_tid,
                creds,
            } => {
                // /proc is read only for what the records cannot tell: the euid/egid after the
                // exec of a setuid/setgid file when the kernel could not read them, and the
                // whole state of a process whose fork the programs did not see (every /proc
                // read races with the process).
                let unseen = task.ppid == 0 && !self.ppids.contains_key(&task.pid);
                let mut st = if unseen || (creds.is_none() && setid_exe(task.pid)) {
                    proc_status(task.pid)
                } else {
                    ProcStatus::default()
                };
                if let Some((euid, egid)) = creds {
                    st.euid = Some(euid);
                    st.egid = Some(egid);
                }
                self.fill_ppid(&mut task, st.ppid);
                // The collector tracks the cwd from chdir records; without the file programs
                // (or for an unseen process) it needs this racy read.
                let cwd = (unseen || !self.files)
                    .then(|| std::fs::read_link(format!("/proc/{}/cwd", task.pid)).ok())
                    .flatten();
                Some(RawRecord::Exec {
                    args: self.pending.remove(&old_tid),
                    old_tid,
                    euid: st.euid,
                    egid: st.egid,
                    cwd,
                    task,
                })
            }
            KernelRecord::Fork {
                mut parent,
                child_pid,
            } => {
                self.fill_ppid(&mut parent, None);
                // File records leave the parent to user space (fill_file_hdr): from here.
                self.ppids.insert(child_pid, parent.pid);
                Some(RawRecord::Fork { parent, child_pid })
            }
            KernelRecord::Cred { mut task, call } => {
                self.fill_ppid(&mut task, None);
                Some(RawRecord::Cred { task, call })
            }
            KernelRecord::Reaped {
                mut reaper,
                child_pid,
                status,
            } => {
                self.fill_ppid(&mut reaper, None);
                status.map(|status| RawRecord::Reaped {
                    reaper,
                    child_pid,
                    status,
                })
            }
            KernelRecord::FileArgs {
                mut task,
                call,
                ret: Some(ret),
            } => {
                // A whole call in one record (made at its exit).
                self.fill_ppid(&mut task, None);
                let tid = task.tid;
                let file = RawRecord::File {
                    task,
                    call,
                    result: Some(ret),
                };
                let Some((task, call)) = self.pending_files.remove(&tid) else {
                    return Some(file);
                };
                // An earlier call of this thread whose result was lost: it comes first.
                self.ready.push_back(RawRecord::File {
                    task,
                    call,
                    result: None,
                });
                self.ready.push_back(file);
                None
            }
            KernelRecord::FileArgs {
                mut task,
                call,
                ret: None,
            } => {
                self.fill_ppid(&mut task, None);
                if let Some((task, call)) = self.pending_files.insert(task.tid, (task, call)) {
                    // The previous call's result was lost: yield it with an unknown result.
                    self.ready.push_back(RawRecord::File {
                        task,
                        call,
                        result: None,
                    });
                }
                None
            }
            KernelRecord::FileRet {
                tid,
                op,
                ret,
                reread,
            } => {
                let (ftask, mut call) = self.pending_files.remove(&tid)?;
                if Some(call.op) == op {
                    if let Some(rr) = reread {
                        if let Some(p) = rr.path {
                            call.path = p;
                        }
                        if rr.path2.is_some() {
                            call.path2 = rr.path2;
                        }
                        call.path_fault = rr.fault;
                    }
                    Some(RawRecord::File {
                        task: ftask,
                        call,
                        result: Some(ret),
                    })
                } else {
                    // Not this call's exit (its own exit record was lost).
                    Some(RawRecord::File {
                        task: ftask,
                        call,
                        result: None,
                    })
                }
            }
            KernelRecord::Exit { mut task, status } => {
                self.fill_ppid(&mut task, None);
                if let Some((task, call)) = self.pending_files.remove(&task.tid) {
                    self.ready.push_back(RawRecord::File {
                        task,
                        call,
                        result: None,
                    });
                }
                self.ppids.remove(&task.pid);
                self.pending.remove(&task.tid);
                self.pending.remove(&task.pid);
                Some(RawRecord::Exit { task, status })
            }
        }
    }

    /// For a file record (the kernel leaves the parent and comm out of those) and a process
    /// whose fork the probe did not see (ppid 0 from the kernel): the ppid learned from its
    /// fork record or earlier, else `/proc/<pid>/status` now (`known`, when already read),
    /// which also gives a missing comm.
    fn fill_ppid(&mut self, task: &mut Task, known: Option<u32>) {
        if task.ppid != 0 {
            return;
        }
        if let Some(&ppid) = self.ppids.get(&task.pid) {
            task.ppid = ppid;
            return;
        }
        let st = match known {
            Some(ppid) => ProcStatus {
                ppid: Some(ppid),
                ..Default::default()
            },
            None => proc_status(task.pid),
        };
        if task.comm.is_empty() {
            if let Some(name) = st.name {
                task.comm = name;
            }
        }
        if let Some(ppid) = st.ppid {
            task.ppid = ppid;
            self.ppids.insert(task.pid, ppid);
        }
    }

    fn program_skips(&self) -> Result<u64, BpfError> {
        let mut total = 0;
        for (name, program) in self.ebpf.programs() {
            if matches!(program.fd(), Err(ProgramError::NotLoaded)) {
                continue; // a file program left out (ProbeOptions::files)
            }
            let fd = program.fd().map_err(|e| BpfError::Map {
                name: "programs",
                detail: format!("{name}: {e}"),
            })?;
            total += sys::prog_recursion_misses(fd.as_fd()).map_err(|e| BpfError::Map {
                name: "programs",
                detail: format!("{name}: BPF_OBJ_GET_INFO_BY_FD: {e}"),
            })?;
        }
        Ok(total)
    }

    /// Drops counted in the kernel since the probe was loaded, summed over CPUs.
    pub fn losses(&self) -> Result<Losses, BpfError> {
        let sum = |slot: u32| -> Result<u64, BpfError> {
            Ok(self
                .losses
                .get(&slot, 0)
                .map_err(map_err("losses"))?
                .iter()
                .sum())
        };
        Ok(Losses {
            ring_buffer_full: sum(0)?,
            process_table_full: sum(1)?,
            scratch_missing: sum(2)?,
            clone_table_full: sum(3)?,
            cred_table_full: sum(4)?,
            wait_table_full: sum(5)?,
            reap_unreadable: sum(6)?,
            file_table_full: sum(7)?,
            program_skips: self.program_skips()?,
        })
    }
}

/// A cgroup v2 directory or its id (the inode number of the directory).
#[derive(Debug, Clone)]
pub enum CgroupRef {
    /// A directory of a cgroup2 mount.
    Path(PathBuf),
    /// A cgroup id.
    Id(u64),
}

impl CgroupRef {
    fn id(self) -> Result<u64, BpfError> {
        match self {
            CgroupRef::Id(id) => Ok(id),
            CgroupRef::Path(path) => {
                let meta = std::fs::metadata(&path).map_err(|source| BpfError::Cgroup {
                    path: path.clone(),
                    source,
                })?;
                let v2 = sys::is_cgroup2(&path).map_err(|source| BpfError::Cgroup {
                    path: path.clone(),
                    source,
                })?;
                if !meta.is_dir() || !v2 {
                    return Err(BpfError::NotCgroup2(path));
                }
                Ok(meta.ino())
            }
        }
    }
}

impl From<u64> for CgroupRef {
    fn from(id: u64) -> Self {
        CgroupRef::Id(id)
    }
}

impl From<&Path> for CgroupRef {
    fn from(p: &Path) -> Self {
        CgroupRef::Path(p.to_owned())
    }
}

impl From<PathBuf> for CgroupRef {
    fn from(p: PathBuf) -> Self {
        CgroupRef::Path(p)
    }
}

impl From<&str> for CgroupRef {
    fn from(p: &str) -> Self {
        CgroupRef::Path(PathBuf::from(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pinning as the reader is pinned must give, for a thread that could run on `before`:
    /// the last of those CPUs alone when there are several (`pinned`, and `now` the mask the
    /// pinned thread has), nothing changed when there is one.
    fn assert_pinned_as_reader(before: &[usize], pinned: Option<usize>, now: &[usize]) {
        let last = *before.last().expect("a thread runs on some CPU");
        if before.len() >= 2 {
            assert_eq!(pinned, Some(last));
            assert_eq!(now, [last]);
        } else {
            eprintln!(
                "SKIPPED: this machine gives the test one CPU ({before:?}); pinning among several is not exercised"
            );
            assert_eq!((pinned, now), (None, before));
        }
    }

    /// A reader that may run on several CPUs is left with the last of them alone; one limited
    /// to a single CPU is left as it is. (Runs in a thread of its own: affinity is per thread.)
    #[test]
    fn a_reader_is_pinned_to_the_last_of_its_cpus() {
        std::thread::spawn(|| {
            let before = sys::thread_cpus().unwrap();
            let got = pin_reader_thread().unwrap();
            assert_pinned_as_reader(&before, got, &sys::thread_cpus().unwrap());
            sys::pin_thread(before[0]).unwrap();
            assert_eq!(pin_reader_thread().unwrap(), None);
            assert_eq!(sys::thread_cpus().unwrap(), vec![before[0]]);
        })
        .join()
        .unwrap();
    }

    /// A thread started inside `on_reader_cpu` runs where the reader would (the last CPU), and
    /// the caller's own CPU mask is left as it was.
    #[test]
    fn threads_started_on_the_reader_cpu_stay_there_and_the_caller_does_not_move() {
        std::thread::spawn(|| {
            let before = sys::thread_cpus().unwrap();
            let (inner, pinned) = on_reader_cpu(|| {
                std::thread::spawn(|| sys::thread_cpus().unwrap())
                    .join()
                    .unwrap()
            });
            assert_pinned_as_reader(&before, pinned.unwrap(), &inner);
            assert_eq!(sys::thread_cpus().unwrap(), before);
        })
        .join()
        .unwrap();
    }
}
