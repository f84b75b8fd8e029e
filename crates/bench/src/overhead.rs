//! Collection overhead: one syscall-heavy workload (process spawning; file create, write,
//! rename, delete; a small C build) run side by side, in rounds, three ways:
//!
//! - **unaudited**: in a cgroup of its own, nothing watching;
//! - **sandtrail**: the same cgroup watched by sandtrail's kernel programs, with a reader thread
//!   decoding every record and feeding the collector (the events are built, then dropped: the
//!   ledger's cost is measured by `ingest`);
//! - **auditd**: auditd running with rules that capture the same system calls
//!   (`execve`, `execveat`, `exit_group`, opens, `unlink*`, `rename*`, `mkdir*`, `chdir`).
//!
//! `--split` adds modes that take sandtrail's cost apart (programs attached but the cgroup not
//! watched; records written but not read during the run; records decoded without the
//! collector; the process programs alone), and every mode also reports the workload's CPU time
//! (user + system of its processes, where the programs run), steadier than wall time on a
//! shared machine. `--opens N` replaces the workload by a C loop of N read-only opens of one
//! file, for the cost per open.
//!
//! `--sealed` adds the whole pipeline (every event sealed into a durable store, fed as
//! `sandtrail run` feeds it), `--sealed-in DIR` the same with the store in DIR (another file
//! system, a tmpfs) to tell the store's disk writes from its CPU time. Every mode also reports
//! how long the workload's cgroup stalled waiting for a CPU and for I/O (its `cpu.pressure` and
//! `io.pressure` "some" totals, also printed per round on stderr as `stalls K/N: ...` lines),
//! and the watched modes the CPU time of the benchmark's own threads (reader, feeding thread,
//! store) per round. `--replay N` ends with two CPU figures free of the machine's noise: the
//! collector fed one run's records, and the sealed path (channel, feeding thread, store) fed
//! its events.
//!
//! Rounds interleave the modes so that drift of the machine spreads over all of them; the
//! median wall time per mode is compared. Needs root; auditd from Debian's `auditd` package
//! (the program starts it, and afterwards deletes its rules, stops it and restores the audit
//! enable flag it found).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const AUDIT_KEY: &str = "sandtrail-bench";

/// A C program that opens `t.c` read-only and closes it `argv[1]` times (`--opens`).
const OPEN_LOOP: &str = "#include <fcntl.h>\n#include <stdlib.h>\n#include <unistd.h>\nint main(int c, char **v) { long n = atol(v[1]); for (long i = 0; i < n; i++) { int fd = open(\"t.c\", O_RDONLY); if (fd < 0) return 1; close(fd); } return 0; }\n";

/// The workload, as a shell script run in `dir` that first moves itself into `cgroup`;
/// with `opens`, only the open loop.
fn script(cgroup: &Path, spawns: u32, files: u32, builds: u32, opens: u32) -> String {
    if opens > 0 {
        return format!(
            "echo $$ > {procs}\nexec ./openloop {opens}\n",
            procs = cgroup.join("cgroup.procs").display()
        );
    }
    format!(
        "echo $$ > {procs}\n\
         i=0; while [ $i -lt {spawns} ]; do /bin/true; i=$((i+1)); done\n\
         i=0; while [ $i -lt {files} ]; do echo data > f$i; mv f$i g$i; rm g$i; i=$((i+1)); done\n\
         i=0; while [ $i -lt {builds} ]; do gcc -O0 -c -o t.o t.c; i=$((i+1)); done\n",
        procs = cgroup.join("cgroup.procs").display()
    )
}

const C_SOURCE: &str = "#include <stdio.h>\n#include <string.h>\nint f(int x) { return x * 3; }\nint main(void) { char b[64]; snprintf(b, sizeof b, \"%d\", f(14)); return (int)strlen(b); }\n";

/// User + system CPU time from `getrusage(who)`: the waited-for children
/// (`RUSAGE_CHILDREN`) or this process, all its threads (`RUSAGE_SELF`).
fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the rusage we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of the waited-for children so far.
fn children_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// User + system CPU time of this process (all its threads) so far.
fn own_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: zeroed is a valid timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `PATH` of the workload (its environment is fixed, not inherited: see [`Options::lang`]).
const WORKLOAD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One run of the workload, measured.
struct Sample {
    wall: Duration,
    /// User + system CPU time of all its processes.
    cpu: Duration,
    /// Time its cgroup stalled (pressure stall information, "some": at least one of its tasks
    /// waiting) on CPU and on I/O; `None` where the kernel keeps no pressure figures.
    stalls: Option<(Duration, Duration)>,
}

/// The "some" total of a cgroup's `cpu.pressure` or `io.pressure` file (µs since boot).
fn stall_total(cgroup: &Path, file: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(cgroup.join(file)).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let us = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    us.parse().ok().map(Duration::from_micros)
}

/// The cgroup's CPU and I/O stall totals so far.
fn stalls(cgroup: &Path) -> Option<(Duration, Duration)> {
    Some((
        stall_total(cgroup, "cpu.pressure")?,
        stall_total(cgroup, "io.pressure")?,
    ))
}

/// Wall time, CPU time (user + system, all its processes) and stalls of one run of the
/// workload (which moves itself into `cgroup`), in a fixed environment: `PATH`, `HOME` (the
/// work directory) and `LANG` only.
fn run_workload(dir: &Path, cgroup: &Path, script: &str, lang: &str) -> Result<Sample> {
    let cpu0 = children_cpu();
    let stalls0 = stalls(cgroup);
    let t = Instant::now();
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_clear()
        .env("PATH", WORKLOAD_PATH)
        .env("HOME", dir)
        .env("LANG", lang)
        .status()
        .context("running the workload")?;
    let took = t.elapsed();
    if !st.success() {
        bail!("the workload failed: {st}");
    }
    let stalls = match (stalls0, stalls(cgroup)) {
        (Some((c0, i0)), Some((c1, i1))) => Some((c1.saturating_sub(c0), i1.saturating_sub(i0))),
        _ => None,
    };
    Ok(Sample {
        wall: took,
        cpu: children_cpu() - cpu0,
        stalls,
    })
}

/// A cgroup v2 directory for the workload, removed on drop.
pub(crate) struct BenchCgroup(pub(crate) PathBuf);

impl BenchCgroup {
    pub(crate) fn new() -> Result<Self> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let root = mounts
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split(' ').nth(4))
            .context("no cgroup v2 mount")?;
        let dir = Path::new(root).join(format!("sandtrail-bench-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(BenchCgroup(dir))
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// auditd with the benchmark's rules; stopped and undone on drop.
struct Auditd {
    was_enabled: String,
}

fn auditctl(args: &[&str]) -> Result<String> {
    let o = Command::new("auditctl")
        .args(args)
        .output()
        .context("running auditctl: install Debian's auditd package (apt-get install auditd)")?;
    if !o.status.success() {
        bail!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Auditd {
    /// The audit status (`auditctl -s`), once checked that no audit daemon runs: run before the
    /// first round too, so that a host without auditd fails at once, not minutes in.
    fn status() -> Result<String> {
        let status =
            auditctl(&["-s"]).context("the auditd mode (leave it out with --no-auditd)")?;
        if status
            .lines()
            .any(|l| l.starts_with("pid ") && l != "pid 0")
        {
            bail!(
                "an audit daemon is already running; stop it first (the benchmark starts its own)"
            );
        }
        Ok(status)
    }

    fn start() -> Result<Self> {
        let status = Self::status()?;
        let was_enabled = status
            .lines()
            .find_map(|l| l.strip_prefix("enabled "))
            .unwrap_or("0")
            .trim()
            .to_string();
        let st = Command::new("auditd")
            .status()
            .context("starting auditd: install Debian's auditd package (apt-get install auditd)")?;
        if !st.success() {
            bail!("auditd did not start: {st}");
        }
        let me = Auditd { was_enabled };
        for syscalls in [
            "execve,execveat,exit_group",
            "open,openat,openat2,creat",
            "unlink,unlinkat,rename,renameat,renameat2,mkdir,mkdirat,rmdir,chdir",
        ] {
            auditctl(&[
                "-a",
                "always,exit",
                "-F",
                "arch=b64",
                "-S",
                syscalls,
                "-k",
                AUDIT_KEY,
            ])?;
        }
        auditctl(&["-e", "1"])?;
        Ok(me)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = auditctl(&["-D", "-k", AUDIT_KEY]);
        let _ = auditctl(&["-e", &self.was_enabled]);
        let _ = Command::new("pkill").args(["-x", "auditd"]).status();
    }
}

fn scope() -> sandtrail_collector::Scope {
    sandtrail_collector::Scope {
        session_id: "bench".into(),
        host_id: "bench".into(),
    }
}

/// What a reader hands back: the probe, records, events, its CPU time, and (summarized read
/// events, reads they stand for).
type ReaderOut = (sandtrail_bpf::Probe, u64, u64, Duration, (u64, u64));

/// Counts the summarized read events (`file.count`) of `out` and the reads they stand for.
fn count_summaries(out: &[(u64, sandtrail_event::Event)], acc: &mut (u64, u64)) {
    for (_, e) in out {
        if let Some(n) = e.file.as_ref().and_then(|f| f.count) {
            acc.0 += 1;
            acc.1 += n;
        }
    }
}

/// Sends `out` to the sealed mode's store, if there is one, as `sandtrail run`'s reader sends
/// a session's events: one by one over a channel.
fn append(
    store: &Option<mpsc::Sender<sandtrail_event::Event>>,
    out: Vec<(u64, sandtrail_event::Event)>,
) {
    if let Some(tx) = store {
        for (_, e) in out {
            tx.send(e)
                .expect("the sealed mode's store thread has stopped");
        }
    }
}

/// How often the sealed mode's store thread takes the events waiting for it: as often as
/// `sandtrail run`'s session loop does (`session::monitor::POLL`).
const FEED_INTERVAL: Duration = Duration::from_millis(100);

/// Opens a fresh store in `dir` (its ledger, seal and index threads start on the CPU of the
/// calling thread); returns it with the records it held once opened.
fn open_store(dir: &Path) -> Result<(sandtrail_store::Writer, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let mut writer = sandtrail_store::Writer::open(
        &sandtrail_store::Layout::new(dir),
        sandtrail_store::StoreConfig {
            host_id: crate::util::HOST.into(),
            ..Default::default()
        },
    )?;
    let base = writer.flush()?.size;
    Ok((writer, base))
}

/// The sealed mode's store, fed as `sandtrail run` feeds its store: a thread of its own (the
/// session's kernel forwarder in `run`, pinned beside the reader as that one is) takes the
/// events waiting on the channel every [`FEED_INTERVAL`] and appends them in messages of up to
/// 1,024 events (`Writer::append_all`, as `run` does); it ends, closing the store, when the
/// channel's sender is dropped.
struct Sealing {
    tx: mpsc::Sender<sandtrail_event::Event>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Sealing {
    /// Starts the feeding thread; with `pin`, it pins itself beside the reader.
    fn start((writer, base): (sandtrail_store::Writer, u64), pin: bool) -> Sealing {
        let (tx, rx) = mpsc::channel::<sandtrail_event::Event>();
        let thread = std::thread::Builder::new()
            .name("bench-feeder".into())
            .spawn(move || feed(writer, base, rx, pin))
            .expect("starting the sealed mode's feeding thread");
        Sealing { tx, thread }
    }

    /// Waits for the feeding thread, once the reader has dropped its sender, to have closed the
    /// store.
    fn close(self) -> Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sealed mode's store thread panicked"))?
            .context("sealing the benchmark's events")
    }
}

/// Bytes in the files under `dir` (its store, once closed).
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The sealed mode's feeding thread: every [`FEED_INTERVAL`], what waits on `rx` into the
/// store, until the sender is gone; then closes the store and checks it holds every event.
fn feed(
    mut writer: sandtrail_store::Writer,
    base: u64,
    rx: mpsc::Receiver<sandtrail_event::Event>,
    pin: bool,
) -> Result<()> {
    if pin {
        if let Err(why) = sandtrail_bpf::pin_reader_thread() {
            eprintln!("the sealed mode's feeding thread runs on any CPU: pinning it failed: {why}");
        }
    }
    let mut appended = 0u64;
    loop {
        std::thread::sleep(FEED_INTERVAL);
        // As `sandtrail run`'s forwarder: straight from the channel into the store's
        // messages. `Disconnected` only once the reader has stopped and every event it
        // sent has been taken.
        let first = rx.try_recv();
        let open = !matches!(first, Err(mpsc::TryRecvError::Disconnected));
        let mut n = 0u64;
        writer.append_all(
            first
                .ok()
                .into_iter()
                .chain(rx.try_iter())
                .inspect(|_| n += 1),
        )?;
        appended += n;
        if !open {
            break;
        }
    }
    // Everything durable, signed and indexed; the store must hold every event sent.
    let size = writer.close()?.size;
    if size - base != appended {
        bail!(
            "the sealed store holds {} records after {appended} appended",
            size - base
        );
    }
    Ok(())
}

/// A thread reading a watching probe's records (and, with `collect`, building the events),
/// until stopped; then it drains what is left and hands the probe back.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<ReaderOut>>,
}

impl Reader {
    /// With `store`, every event is also sent to it (to be sealed by its ledger and indexed,
    /// durably, as `sandtrail run` does); the reader drops the sender when it stops.
    /// With `pin`, the thread pins itself to one CPU first, as `sandtrail run`'s reader does.
    fn start(
        mut probe: sandtrail_bpf::Probe,
        id: u64,
        collect: bool,
        store: Option<mpsc::Sender<sandtrail_event::Event>>,
        pin: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-reader".into())
            .spawn(move || {
                if pin {
                    if let Err(why) = sandtrail_bpf::pin_reader_thread() {
                        eprintln!("the reader runs on any CPU: pinning it failed: {why}");
                    }
                }
                let mut c = collect.then(|| {
                    let mut c = sandtrail_collector::Collector::new();
                    c.watch(id, scope());
                    c
                });
                let (mut records, mut events) = (0u64, 0u64);
                let mut summaries = (0u64, 0u64);
                loop {
                    let stopping = flag.load(Ordering::SeqCst);
                    while let Ok(Some(r)) = probe.next_record(Duration::from_millis(20)) {
                        records += 1;
                        if let Some(c) = c.as_mut() {
                            let out = c.record(r);
                            events += out.len() as u64;
                            count_summaries(&out, &mut summaries);
                            append(&store, out);
                        }
                    }
                    if stopping {
                        break;
                    }
                }
                if let Some(mut c) = c {
                    let out = c.unwatch(id);
                    events += out.len() as u64;
                    count_summaries(&out, &mut summaries);
                    append(&store, out);
                }
                let cpu = thread_cpu();
                drop(store);
                (probe, records, events, cpu, summaries)
            });
        Reader {
            stop,
            thread: Some(thread.expect("starting the reader thread")),
        }
    }

    /// Stops the reader: the probe, records, events, the reader's CPU time and the summaries.
    fn stop(mut self) -> Result<ReaderOut> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .context("reader already stopped")?
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))
    }
}

/// Reads every record waiting in the ring buffer (decoding only); returns how many.
fn drain(probe: &mut sandtrail_bpf::Probe) -> Result<u64> {
    let mut n = 0;
    while probe.next_record(Duration::from_millis(50))?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// The ways the workload is run. The first three are the comparison the issue asks for; the
/// others (`--split`) take sandtrail's cost apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Nothing watching.
    Unaudited,
    /// Every program attached, the workload's cgroup not watched: each program returns at the
    /// cgroup filter (what the tracepoints themselves cost, syscall slow path included).
    Attached,
    /// Watched, records written to a 256 MiB ring buffer that nobody reads during the workload
    /// (read afterwards): the programs' whole kernel-side cost.
    Kernel,
    /// Watched, a reader decoding the records concurrently, no collector.
    Decode,
    /// Watched, the reader decoding and the collector building the events (production path:
    /// the reader pinned to one CPU, `sandtrail_bpf::pin_reader_thread`).
    Sandtrail,
    /// As `Sandtrail` with the reader left to run on any CPU, as before it was pinned
    /// (`--unpinned`).
    Unpinned,
    /// As `Sandtrail` with only the process programs (no file programs).
    Procs,
    /// As `Sandtrail`, every event also appended to a durable store (ledger + index) in a
    /// temporary directory, as `sandtrail run` does: the whole pipeline (`--sealed`), the
    /// store's threads on the reader's CPU as in `sandtrail run` (`sandtrail_bpf::on_reader_cpu`).
    Sealed,
    /// As `Sealed` with the reader, the store's threads and the thread feeding the store left
    /// to run on any CPU (`--sealed --unpinned`).
    SealedAny,
    /// As `Sealed` with the store in another directory than the workload's (`--sealed-in DIR`:
    /// another file system, to see what the store's writes and `fdatasync`s cost the workload's
    /// own file calls on a shared one).
    SealedDir,
    /// auditd with equivalent rules.
    Auditd,
}

impl Mode {
    /// Whether the collector builds events in this mode.
    fn collects(self) -> bool {
        matches!(
            self,
            Mode::Sandtrail
                | Mode::Unpinned
                | Mode::Procs
                | Mode::Sealed
                | Mode::SealedAny
                | Mode::SealedDir
        )
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Unaudited => "unaudited",
            Mode::Attached => "attached",
            Mode::Kernel => "kernel",
            Mode::Decode => "decode",
            Mode::Sandtrail => "sandtrail",
            Mode::Unpinned => "unpinned",
            Mode::Procs => "procs",
            Mode::Sealed => "sealed",
            Mode::SealedAny => "sealed-any",
            Mode::SealedDir => "sealed-dir",
            Mode::Auditd => "auditd",
        }
    }
}

impl Tally {
    fn push(&mut self, s: Sample) {
        self.times.push(s.wall);
        self.cpu.push(s.cpu);
        if let Some((cpu, io)) = s.stalls {
            self.cpu_stall.push(cpu);
            self.io_stall.push(io);
        }
    }
}

#[derive(Default)]
struct Tally {
    times: Vec<Duration>,
    /// CPU time of the workload's processes (user + system: the programs run in their
    /// system time), per run.
    cpu: Vec<Duration>,
    /// Its cgroup's CPU and I/O stall time ([`Sample::stalls`]), per run where known.
    cpu_stall: Vec<Duration>,
    io_stall: Vec<Duration>,
    /// CPU time of the reader thread, summed over runs.
    reader_cpu: Duration,
    /// CPU time of the benchmark's own threads (reader; in the sealed modes also the feeding
    /// thread and the store's threads) from the workload's start to the store's close, summed
    /// over runs.
    own_cpu: Duration,
    /// Summarized read events and the reads they count, summed over runs.
    summaries: (u64, u64),
    records: u64,
    events: u64,
    lost: u64,
    /// Bytes in the sealed modes' store directory once closed, summed over runs.
    stored: u64,
    /// `--prog-stats`: by program name, (runs, run time) summed over runs.
    programs: std::collections::BTreeMap<String, (u64, Duration)>,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The slowdown of `runs` against `base` round by round (the two ran back to back, so a drift
/// of the machine's speed over minutes cancels out): the median and the quartiles of the
/// per-round ratios, in percent.
fn paired(base: &[Duration], runs: &[Duration]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = base
        .iter()
        .zip(runs)
        .map(|(b, x)| (x.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0)
        .collect();
    r.sort_by(f64::total_cmp);
    let at = |q: usize| r[(r.len() - 1) * q / 4];
    (at(2), at(1), at(3))
}

/// Slowdowns in % of `runs` against `base` from their fastest rounds: the fastest against the
/// fastest, and the mean of the fastest quarter (at least one round) against the unaudited
/// one's. Interference from other work on the machine only ever adds time, so these estimate
/// the cost without it; the medians stay the figures of record.
fn fastest(base: &[Duration], runs: &[Duration]) -> (f64, f64) {
    let sorted = |v: &[Duration]| {
        let mut v: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (b, r) = (sorted(base), sorted(runs));
    let q = (b.len().min(r.len()) / 4).max(1);
    let mean = |v: &[f64]| v[..q].iter().sum::<f64>() / q as f64;
    let pct = |x: f64, y: f64| (x / y - 1.0) * 100.0;
    (pct(r[0], b[0]), pct(mean(&r), mean(&b)))
}

/// What `overhead` runs (the command line's options).
pub struct Options {
    /// Rounds; each runs every mode once.
    pub rounds: u32,
    /// `/bin/true` runs per workload.
    pub spawns: u32,
    /// (write, mv, rm) triples per workload.
    pub files: u32,
    /// `gcc -c` runs per workload.
    pub builds: u32,
    /// Leave auditd out.
    pub skip_auditd: bool,
    /// Add the modes that split sandtrail's cost.
    pub split: bool,
    /// Add the `sealed` mode (the events sealed into a durable store).
    pub sealed: bool,
    /// Add the `unpinned` mode (the reader on any CPU), and with `sealed` the `sealed-any` mode.
    pub unpinned: bool,
    /// Add the `sealed-dir` mode: the sealed mode with its store in this directory.
    pub sealed_in: Option<PathBuf>,
    /// Replace the workload by this many read-only opens (0: the workload).
    pub opens: u32,
    /// Print each BPF program's run count and time (sandtrail mode).
    pub prog_stats: bool,
    /// `LANG` of the workload. The locale decides much of its system calls: with `C.UTF-8`
    /// (what `sandtrail run` gives a session, and common in container images) each coreutils
    /// process opens ~28 locale files at start, which are most of a round's read-only opens;
    /// with `C` it opens none of them. The rest of the environment is fixed too, so that the
    /// caller's does not change the figures.
    pub lang: String,
    /// After the rounds: record one workload's records and feed them this many times to a
    /// fresh collector, timing the collector alone (0: skip).
    pub replay: u32,
    /// Record file calls, wait4 and waitid with entry/exit program pairs
    /// (`ProbeOptions::calls_at_exit` off).
    pub entry_exit_pairs: bool,
}

/// Runs the comparison and prints the figures.
pub fn overhead(o: Options) -> Result<()> {
    let Options {
        rounds,
        spawns,
        files,
        builds,
        skip_auditd,
        split,
        sealed,
        unpinned,
        sealed_in,
        opens,
        prog_stats,
        replay,
        lang,
        entry_exit_pairs,
    } = o;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the overhead benchmark needs root (cgroups, BPF, auditd)");
    }
    if !skip_auditd {
        Auditd::status()?;
    }
    let cg = BenchCgroup::new()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("t.c"), C_SOURCE)?;
    if opens > 0 {
        std::fs::write(dir.path().join("openloop.c"), OPEN_LOOP)?;
        let st = Command::new("gcc")
            .args(["-O2", "-o", "openloop", "openloop.c"])
            .current_dir(dir.path())
            .status()?;
        if !st.success() {
            bail!("building the open loop: {st}");
        }
    }
    let script = script(&cg.0, spawns, files, builds, opens);
    let _stats = prog_stats
        .then(sandtrail_bpf::stats::enable)
        .transpose()
        .context("enabling BPF program statistics")?;
    let mut modes = vec![Mode::Unaudited];
    if split {
        modes.extend([Mode::Attached, Mode::Kernel, Mode::Decode]);
    }
    modes.push(Mode::Sandtrail);
    if unpinned {
        modes.push(Mode::Unpinned);
    }
    if split {
        modes.push(Mode::Procs);
    }
    if sealed {
        modes.push(Mode::Sealed);
        if unpinned {
            modes.push(Mode::SealedAny);
        }
    }
    // A directory of its own inside the given one, removed at the end.
    let sealed_in = sealed_in
        .map(|d| {
            tempfile::tempdir_in(&d).with_context(|| {
                format!("--sealed-in {}: cannot make a directory there", d.display())
            })
        })
        .transpose()?;
    if sealed_in.is_some() {
        modes.push(Mode::SealedDir);
    }
    if !skip_auditd {
        modes.push(Mode::Auditd);
    }
    let names = modes
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ");
    if opens > 0 {
        println!("workload: {opens} × open(O_RDONLY) + close of one file; {rounds} rounds, modes interleaved: {names}");
    } else {
        println!(
            "workload: {spawns} × /bin/true, {files} × (write, mv, rm), {builds} × gcc -c, LANG={lang}; {rounds} rounds, modes interleaved: {names}"
        );
    }
    if entry_exit_pairs {
        println!(
            "sandtrail: file calls, wait4 and waitid recorded by entry/exit program pairs (--entry-exit-pairs)"
        );
    }
    // Warm the page cache and gcc.
    run_workload(dir.path(), &cg.0, &script, &lang)?;
    let mut tally: Vec<Tally> = modes.iter().map(|_| Tally::default()).collect();
    for r in 0..rounds {
        // One probe (256 MiB ring) serves attached, kernel and decode in turn.
        let mut split_probe = None;
        for (i, &mode) in modes.iter().enumerate() {
            let t = &mut tally[i];
            match mode {
                Mode::Unaudited => t.push(run_workload(dir.path(), &cg.0, &script, &lang)?),
                Mode::Attached | Mode::Kernel | Mode::Decode => {
                    let mut probe = match split_probe.take() {
                        Some(p) => p,
                        // No forced wakeups: kernel mode's unread records must not make every
                        // later record wake a reader that is not there.
                        None => sandtrail_bpf::Probe::load(sandtrail_bpf::ProbeOptions {
                            ring_buffer_bytes: 256 << 20,
                            wakeup_bytes: Some(128 << 20),
                            ..Default::default()
                        })?,
                    };
                    let before = probe.losses()?.total();
                    if mode == Mode::Attached {
                        t.push(run_workload(dir.path(), &cg.0, &script, &lang)?);
                        t.records += drain(&mut probe)?;
                    } else {
                        let id = probe.watch_cgroup(cg.0.clone())?;
                        if mode == Mode::Kernel {
                            t.push(run_workload(dir.path(), &cg.0, &script, &lang)?);
                            t.records += drain(&mut probe)?;
                        } else {
                            let reader = Reader::start(probe, id, false, None, true);
                            t.push(run_workload(dir.path(), &cg.0, &script, &lang)?);
                            let (p, rec, _, cpu, _) = reader.stop()?;
                            probe = p;
                            t.records += rec;
                            t.reader_cpu += cpu;
                        }
                        probe.unwatch(id)?;
                    }
                    t.lost += probe.losses()?.total() - before;
                    split_probe = Some(probe);
                }
                Mode::Sandtrail
                | Mode::Unpinned
                | Mode::Procs
                | Mode::Sealed
                | Mode::SealedAny
                | Mode::SealedDir => {
                    let others: std::collections::HashSet<u32> = if prog_stats {
                        sandtrail_bpf::stats::programs()
                            .iter()
                            .map(|p| p.id)
                            .collect()
                    } else {
                        Default::default()
                    };
                    let mut probe = sandtrail_bpf::Probe::load(sandtrail_bpf::ProbeOptions {
                        files: mode != Mode::Procs,
                        calls_at_exit: !entry_exit_pairs,
                        ..Default::default()
                    })?;
                    let id = probe.watch_cgroup(cg.0.clone())?;
                    let store_dir = match (&sealed_in, mode) {
                        (Some(d), Mode::SealedDir) => d.path().join("sealed-store"),
                        _ => dir.path().join("sealed-store"),
                    };
                    let store = match mode {
                        Mode::Sealed | Mode::SealedDir => {
                            let (store, pinned) =
                                sandtrail_bpf::on_reader_cpu(|| open_store(&store_dir));
                            if let Err(why) = pinned {
                                eprintln!("the store's threads run on any CPU: pinning them failed: {why}");
                            }
                            Some(store)
                        }
                        Mode::SealedAny => Some(open_store(&store_dir)),
                        _ => None,
                    }
                    .transpose()
                    .context("opening the sealed mode's store")?
                    .map(|store| Sealing::start(store, mode != Mode::SealedAny));
                    let pin = !matches!(mode, Mode::Unpinned | Mode::SealedAny);
                    let tx = store.as_ref().map(|s| s.tx.clone());
                    let cpu0 = own_cpu();
                    let reader = Reader::start(probe, id, true, tx, pin);
                    t.push(run_workload(dir.path(), &cg.0, &script, &lang)?);
                    let (probe, rec, ev, cpu, sums) = reader.stop()?;
                    if let Some(s) = store {
                        s.close()?;
                    }
                    t.own_cpu += own_cpu() - cpu0;
                    if matches!(mode, Mode::Sealed | Mode::SealedAny | Mode::SealedDir) {
                        t.stored += dir_bytes(&store_dir)?;
                    }
                    t.summaries.0 += sums.0;
                    t.summaries.1 += sums.1;
                    t.records += rec;
                    t.reader_cpu += cpu;
                    t.events += ev;
                    t.lost += probe.losses()?.total();
                    if prog_stats {
                        for p in sandtrail_bpf::stats::programs() {
                            if !others.contains(&p.id) {
                                let e = t.programs.entry(p.name).or_default();
                                e.0 += p.runs;
                                e.1 += p.run_time;
                            }
                        }
                    }
                }
                Mode::Auditd => {
                    let a = Auditd::start()?;
                    t.push(run_workload(dir.path(), &cg.0, &script, &lang)?);
                    drop(a);
                }
            }
            // Drop a probe between modes when the next one is not the split probe's.
            if !matches!(modes.get(i + 1), Some(Mode::Kernel | Mode::Decode)) {
                split_probe = None;
            }
        }
        eprintln!(
            "round {}/{rounds}: {}",
            r + 1,
            modes
                .iter()
                .zip(&tally)
                .map(|(m, t)| format!("{} {:.3}s", m.name(), t.times.last().unwrap().as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if tally.iter().all(|t| t.cpu_stall.len() == r as usize + 1) {
            eprintln!(
                "stalls {}/{rounds} (ms on CPU, on I/O): {}",
                r + 1,
                modes
                    .iter()
                    .zip(&tally)
                    .map(|(m, t)| format!(
                        "{} {:.1} {:.1}",
                        m.name(),
                        t.cpu_stall[r as usize].as_secs_f64() * 1e3,
                        t.io_stall[r as usize].as_secs_f64() * 1e3
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let pairs: Vec<(f64, f64, f64)> = tally
        .iter()
        .map(|t| paired(&tally[0].times, &t.times))
        .collect();
    let fast: Vec<(f64, f64)> = tally
        .iter()
        .map(|t| fastest(&tally[0].times, &t.times))
        .collect();
    let medians: Vec<Duration> = tally.iter_mut().map(|t| median(&mut t.times)).collect();
    let cpus: Vec<Duration> = tally.iter_mut().map(|t| median(&mut t.cpu)).collect();
    let b = medians[0];
    let slow = |d: Duration| (d.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
    let of = |m: Mode| modes.iter().position(|&x| x == m).map(|i| medians[i]);
    for (i, &m) in modes.iter().enumerate() {
        let t = &tally[i];
        let mut line = format!("{:<10} median {:.3} s", m.name(), medians[i].as_secs_f64());
        if m != Mode::Unaudited {
            line += &format!("  overhead {:+.1} %", slow(medians[i]));
        }
        if t.records > 0 || m.collects() || matches!(m, Mode::Kernel | Mode::Decode) {
            line += &format!("  ({} records", t.records / rounds as u64);
            if m.collects() {
                line += &format!(", {} events", t.events / rounds as u64);
            }
            if t.stored > 0 {
                line += &format!(", {} kB stored", t.stored / rounds as u64 / 1000);
            }
            line += &format!(" per round, {} lost in all)", t.lost);
        }
        if m != Mode::Unaudited && rounds >= 4 {
            let (mid, q1, q3) = pairs[i];
            line += &format!(
                "\n{:<10} round by round: median {mid:+.1} %, middle half {q1:+.1} to {q3:+.1} %",
                ""
            );
            let (first, quarter) = fast[i];
            line += &format!(
                "\n{:<10} fastest round {first:+.1} %, fastest quarter {quarter:+.1} % (other work only adds time)",
                ""
            );
        }
        line += &format!(
            "\n{:<10} workload CPU median {:.3} s ({:+.1} %)",
            "",
            cpus[i].as_secs_f64(),
            (cpus[i].as_secs_f64() / cpus[0].as_secs_f64() - 1.0) * 100.0
        );
        if !t.cpu_stall.is_empty() {
            let cpu_stall = median(&mut t.cpu_stall.clone());
            let io_stall = median(&mut t.io_stall.clone());
            line += &format!(
                ", stalled (cgroup pressure, median) on CPU {:.1} ms, on I/O {:.1} ms",
                cpu_stall.as_secs_f64() * 1e3,
                io_stall.as_secs_f64() * 1e3
            );
        }
        if !t.reader_cpu.is_zero() {
            line += &format!(
                ", reader thread CPU {:.3} s per round",
                t.reader_cpu.as_secs_f64() / rounds as f64
            );
        }
        if !t.own_cpu.is_zero() {
            line += &format!(
                "\n{:<10} sandtrail's threads (reader; feeder and store when sealed): CPU {:.3} s per round",
                "",
                t.own_cpu.as_secs_f64() / rounds as f64
            );
        }
        if t.summaries.0 > 0 {
            line += &format!(
                "\n{:<10} summarized reads: {} events standing for {} read-only opens per round",
                "",
                t.summaries.0 / rounds as u64,
                t.summaries.1 / rounds as u64
            );
        }
        println!("{line}");
    }
    for (i, &m) in modes.iter().enumerate() {
        let progs = &tally[i].programs;
        if progs.is_empty() {
            continue;
        }
        let mut v: Vec<_> = progs.iter().filter(|(_, (n, _))| *n > 0).collect();
        v.sort_by_key(|(_, (_, t))| std::cmp::Reverse(*t));
        let total: Duration = v.iter().map(|(_, (_, t))| *t).sum();
        println!(
            "{} mode, BPF programs as the kernel counts them (per round): {:.1} ms in all",
            m.name(),
            total.as_secs_f64() * 1e3 / rounds as f64
        );
        for (name, (n, t)) in v {
            println!(
                "  {name:<16} {:>8} runs  {:>6.0} ns/run  {:>6.2} ms",
                n / rounds as u64,
                t.as_nanos() as f64 / *n as f64,
                t.as_secs_f64() * 1e3 / rounds as f64
            );
        }
    }
    let cpu_of = |m: Mode| modes.iter().position(|&x| x == m).map(|i| cpus[i]);
    if split {
        let pts = |a: Mode, z: Mode| -> String {
            let d = |x: Option<Duration>, y: Option<Duration>, base: Duration| match (x, y) {
                (Some(x), Some(y)) => format!(
                    "{:+.1}",
                    (y.as_secs_f64() - x.as_secs_f64()) / base.as_secs_f64() * 100.0
                ),
                _ => "n/a".into(),
            };
            format!(
                "wall {} points, workload CPU {} points",
                d(of(a), of(z), b),
                d(cpu_of(a), cpu_of(z), cpus[0])
            )
        };
        println!("split of sandtrail's overhead (differences of medians, in points of the unaudited time):");
        println!(
            "  tracepoints attached, programs exit at the cgroup filter: {}",
            pts(Mode::Unaudited, Mode::Attached)
        );
        println!(
            "  programs' work for the watched cgroup (reads, ring buffer), reader idle: {}",
            pts(Mode::Attached, Mode::Kernel)
        );
        println!(
            "  a reader decoding concurrently: {}",
            pts(Mode::Kernel, Mode::Decode)
        );
        println!(
            "  the collector building events: {}",
            pts(Mode::Decode, Mode::Sandtrail)
        );
        println!(
            "  the file programs (sandtrail vs procs): {}",
            pts(Mode::Procs, Mode::Sandtrail)
        );
    }
    if opens > 0 {
        for (i, &m) in modes.iter().enumerate().skip(1) {
            println!(
                "{:<10} per open: {:+.0} ns wall, {:+.0} ns workload CPU",
                m.name(),
                (medians[i].as_secs_f64() - b.as_secs_f64()) * 1e9 / opens as f64,
                (cpus[i].as_secs_f64() - cpus[0].as_secs_f64()) * 1e9 / opens as f64
            );
        }
    }
    if let (Some(s), Some(a)) = (of(Mode::Sandtrail), of(Mode::Auditd)) {
        let (os, oa) = (slow(s), slow(a));
        if os > 0.0 {
            println!("auditd's overhead / sandtrail's: {:.1}×", oa / os);
        } else {
            println!("sandtrail's overhead is within noise of zero; auditd's is {oa:+.1} %");
        }
    }
    if replay > 0 {
        collector_replay(dir.path(), &script, &lang, &cg.0, replay)?;
    }
    Ok(())
}

/// Records one run of the workload (decoded records, kept in memory), then feeds them `times`
/// times to a fresh collector each and prints the collector's CPU time per record and per
/// round: the reader's share of sandtrail's cost without the machine's noise. The cwd lookup of
/// a first-seen process is turned off (the recorded processes are gone; in a live run it is
/// one `readlink` per process whose fork was not seen).
fn collector_replay(dir: &Path, script: &str, lang: &str, cgroup: &Path, times: u32) -> Result<()> {
    let mut probe = sandtrail_bpf::Probe::load(sandtrail_bpf::ProbeOptions {
        ring_buffer_bytes: 256 << 20,
        wakeup_bytes: Some(128 << 20),
        ..Default::default()
    })?;
    let id = probe.watch_cgroup(cgroup.to_path_buf())?;
    run_workload(dir, cgroup, script, lang)?;
    let mut recorded = Vec::new();
    let start = thread_cpu();
    while let Some(r) = probe.next_record(Duration::from_millis(50))? {
        recorded.push(r);
    }
    let decode = thread_cpu() - start;
    probe.unwatch(id)?;
    let lost = probe.losses()?.total();
    let collector = || {
        let mut c = sandtrail_collector::Collector::new();
        c.set_cwd_lookup(|_| None);
        c.watch(id, scope());
        c
    };
    let mut cpu = Vec::new();
    let mut events = 0;
    for _ in 0..times {
        let copy = recorded.clone();
        let mut c = collector();
        let start = thread_cpu();
        events = 0;
        for r in copy {
            events += c.record(r).len();
        }
        events += c.unwatch(id).len();
        cpu.push(thread_cpu() - start);
    }
    let m = median(&mut cpu);
    println!(
        "decoding one run's records: {:.1} ms CPU ({:.0} ns per record)\ncollector replay: {} records ({lost} lost), {events} events; median of {times}: {:.1} ms CPU per round, {:.0} ns per record",
        decode.as_secs_f64() * 1e3,
        decode.as_nanos() as f64 / recorded.len().max(1) as f64,
        recorded.len(),
        m.as_secs_f64() * 1e3,
        m.as_nanos() as f64 / recorded.len().max(1) as f64
    );
    // The same events (built once more, untimed) through the sealed mode's path (sent one by
    // one over a channel, taken by the feeding thread, sealed, indexed, store closed), threads
    // unpinned.
    let mut c = collector();
    let mut events: Vec<_> = recorded.into_iter().flat_map(|r| c.record(r)).collect();
    events.extend(c.unwatch(id));
    let mut cpu = Vec::new();
    let store_dir = dir.join("replay-store");
    for _ in 0..times {
        let copy: Vec<_> = events.iter().map(|(_, e)| e.clone()).collect();
        let sealing = Sealing::start(open_store(&store_dir)?, false);
        let start = own_cpu();
        for e in copy {
            sealing
                .tx
                .send(e)
                .expect("the sealed mode's store thread has stopped");
        }
        sealing.close()?;
        cpu.push(own_cpu() - start);
    }
    let least = *cpu.iter().min().expect("at least one replay");
    let m = median(&mut cpu);
    println!(
        "sealing replay: {} events; median of {times}: {:.1} ms CPU per round (all threads), {:.0} ns per event; least {:.1} ms",
        events.len(),
        m.as_secs_f64() * 1e3,
        m.as_nanos() as f64 / events.len().max(1) as f64,
        least.as_secs_f64() * 1e3
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn paired_ratios_cancel_a_drift_and_give_median_and_quartiles() {
        // The machine slows down twofold over the rounds; each round's pair keeps +10 %.
        let base = secs(&[1.0, 1.25, 1.5, 1.75, 2.0]);
        let runs = secs(&[1.1, 1.375, 1.65, 1.925, 2.2]);
        let (mid, q1, q3) = paired(&base, &runs);
        for v in [mid, q1, q3] {
            assert!((v - 10.0).abs() < 1e-9, "{v}");
        }
        // Per-round slowdowns 10, 0, 20, 5, 30 %: median 10, quartiles 5 and 20.
        let base = secs(&[1.0; 5]);
        let runs = secs(&[1.1, 1.0, 1.2, 1.05, 1.3]);
        let (mid, q1, q3) = paired(&base, &runs);
        assert_eq!((mid.round(), q1.round(), q3.round()), (10.0, 5.0, 20.0));
    }

    #[test]
    fn fastest_rounds_leave_out_the_time_other_work_added() {
        // Eight rounds each; the unaudited fastest quarter is 1.0 and 1.2 (mean 1.1), the
        // audited one 1.05 and 1.26 (mean 1.155): +5 %; fastest 1.05 against 1.0: +5 %. The
        // slow rounds (other tenants' bursts) move neither.
        let base = secs(&[1.9, 1.0, 1.2, 2.5, 1.4, 1.3, 3.0, 1.5]);
        let runs = secs(&[1.26, 2.8, 1.05, 1.6, 1.5, 2.2, 1.4, 1.7]);
        let (first, quarter) = fastest(&base, &runs);
        assert!((first - 5.0).abs() < 1e-9, "{first}");
        assert!((quarter - 5.0).abs() < 1e-9, "{quarter}");
        // Fewer than four rounds: the quarter is the fastest round.
        let (first, quarter) = fastest(&secs(&[2.0, 1.0]), &secs(&[1.1, 3.0]));
        assert!((first - 10.0).abs() < 1e-9 && (quarter - 10.0).abs() < 1e-9);
    }
}
