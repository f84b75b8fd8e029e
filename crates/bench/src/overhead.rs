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
//! Rounds interleave the three so that drift of the machine spreads over all of them; the
//! median wall time per mode is compared. Needs root; auditd from Debian's `auditd` package
//! (the program starts it, and afterwards deletes its rules, stops it and restores the audit
//! enable flag it found).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const AUDIT_KEY: &str = "sandtrail-bench";

/// The workload, as a shell script run in `dir` that first moves itself into `cgroup`.
fn script(cgroup: &Path, spawns: u32, files: u32, builds: u32) -> String {
    format!(
        "echo $$ > {procs}\n\
         i=0; while [ $i -lt {spawns} ]; do /bin/true; i=$((i+1)); done\n\
         i=0; while [ $i -lt {files} ]; do echo data > f$i; mv f$i g$i; rm g$i; i=$((i+1)); done\n\
         i=0; while [ $i -lt {builds} ]; do gcc -O0 -c -o t.o t.c; i=$((i+1)); done\n",
        procs = cgroup.join("cgroup.procs").display()
    )
}

const C_SOURCE: &str = "#include <stdio.h>\n#include <string.h>\nint f(int x) { return x * 3; }\nint main(void) { char b[64]; snprintf(b, sizeof b, \"%d\", f(14)); return (int)strlen(b); }\n";

fn run_workload(dir: &Path, script: &str) -> Result<Duration> {
    let t = Instant::now();
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .context("running the workload")?;
    let took = t.elapsed();
    if !st.success() {
        bail!("the workload failed: {st}");
    }
    Ok(took)
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
    fn start() -> Result<Self> {
        let status = auditctl(&["-s"])?;
        let was_enabled = status
            .lines()
            .find_map(|l| l.strip_prefix("enabled "))
            .unwrap_or("0")
            .trim()
            .to_string();
        if status
            .lines()
            .any(|l| l.starts_with("pid ") && l != "pid 0")
        {
            bail!(
                "an audit daemon is already running; stop it first (the benchmark starts its own)"
            );
        }
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

/// sandtrail's programs watching the cgroup, with a reader building events.
struct Sandtrail {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Sandtrail {
    fn start(cgroup: &Path) -> Result<Self> {
        let mut probe = sandtrail_bpf::Probe::load(sandtrail_bpf::ProbeOptions::default())?;
        let id = probe.watch_cgroup(cgroup.to_path_buf())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut c = sandtrail_collector::Collector::new();
            c.watch(
                id,
                sandtrail_collector::Scope {
                    session_id: "bench".into(),
                    host_id: "bench".into(),
                },
            );
            let (mut records, mut events) = (0u64, 0u64);
            while !flag.load(Ordering::SeqCst) {
                while let Ok(Some(r)) = probe.next_record(Duration::from_millis(20)) {
                    records += 1;
                    events += c.record(r).len() as u64;
                }
            }
            (records, events)
        });
        Ok(Sandtrail {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the comparison and prints the figures.
pub fn overhead(
    rounds: u32,
    spawns: u32,
    files: u32,
    builds: u32,
    skip_auditd: bool,
) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the overhead benchmark needs root (cgroups, BPF, auditd)");
    }
    let cg = BenchCgroup::new()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("t.c"), C_SOURCE)?;
    let script = script(&cg.0, spawns, files, builds);
    println!(
        "workload: {spawns} × /bin/true, {files} × (write, mv, rm), {builds} × gcc -c; {rounds} rounds, modes interleaved"
    );
    // Warm the page cache and gcc.
    run_workload(dir.path(), &script)?;
    let mut base = Vec::new();
    let mut st = Vec::new();
    let mut au = Vec::new();
    let (mut records, mut events) = (0, 0);
    for r in 0..rounds {
        base.push(run_workload(dir.path(), &script)?);
        let s = Sandtrail::start(&cg.0)?;
        st.push(run_workload(dir.path(), &script)?);
        let (rec, ev) = s.stop();
        records += rec;
        events += ev;
        if !skip_auditd {
            let a = Auditd::start()?;
            au.push(run_workload(dir.path(), &script)?);
            drop(a);
        }
        eprintln!(
            "round {}/{rounds}: unaudited {:.3}s, sandtrail {:.3}s{}",
            r + 1,
            base.last().unwrap().as_secs_f64(),
            st.last().unwrap().as_secs_f64(),
            au.last()
                .map(|d| format!(", auditd {:.3}s", d.as_secs_f64()))
                .unwrap_or_default()
        );
    }
    let b = median(&mut base);
    let s = median(&mut st);
    let slow = |d: Duration| (d.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
    println!("unaudited  median {:.3} s", b.as_secs_f64());
    println!(
        "sandtrail  median {:.3} s  overhead {:+.1} %  ({} records, {} events per round)",
        s.as_secs_f64(),
        slow(s),
        records / rounds as u64,
        events / rounds as u64
    );
    if !au.is_empty() {
        let a = median(&mut au);
        println!(
            "auditd     median {:.3} s  overhead {:+.1} %",
            a.as_secs_f64(),
            slow(a)
        );
        let (os, oa) = (slow(s), slow(a));
        if os > 0.0 {
            println!("auditd's overhead / sandtrail's: {:.1}×", oa / os);
        } else {
            println!("sandtrail's overhead is within noise of zero; auditd's is {oa:+.1} %");
        }
    }
    Ok(())
}
