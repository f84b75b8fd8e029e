//! Shared helpers: machine facts, per-thread CPU time, percentiles, formatting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Start time of every generated stream (2026-01-01T00:00:00Z), so runs are reproducible.
pub const T0: u64 = 1_767_225_600_000_000_000;
/// Host id written into generated events.
pub const HOST: &str = "bench-host";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Print the machine the figures were measured on, and the parameters of the run.
pub fn print_header(what: &str, params: &[(&str, String)]) {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let logical = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let sha_ni = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
    let avail = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("== sandtrail-bench {what} ==");
    println!(
        "machine: {logical} logical CPUs ({avail} available), CPU {model} @ {mhz} MHz, sha_ni {}, \
         {:.1} GiB RAM, kernel {kernel}, load average {} at start",
        if sha_ni { "yes" } else { "no" },
        mem_kb as f64 / (1024.0 * 1024.0),
        load.join(" ")
    );
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "DEBUG (figures are not meaningful; use --release)"
        } else {
            "release"
        }
    );
    println!("source: {}", source_version());
    let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("parameters: {}", p.join(" "));
}

/// The commit of the source tree this binary was built from (read at run time with git), and
/// whether the store, event or ledger crates had uncommitted changes.
fn source_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "../store",
                "../event",
                "../ledger",
            ])
            .is_some_and(|s| !s.is_empty());
            format!(
                "git {rev}{}",
                if dirty {
                    " (with uncommitted changes in crates/store, event or ledger)"
                } else {
                    ""
                }
            )
        }
        None => "unknown (no git)".into(),
    }
}

/// CPU time consumed so far by each live thread of this process, by thread id.
#[derive(Clone, Debug)]
pub struct ThreadCpu {
    pub name: String,
    pub cpu_ns: u64,
    /// Bytes passed to write(2)-family calls (`wchar` of `/proc/self/task/T/io`).
    pub wchar: u64,
}

/// Snapshot the CPU time of every thread (from `/proc/self/task/*/schedstat`, falling back to
/// `stat` utime+stime in 100 Hz ticks).
pub fn thread_cpu() -> BTreeMap<u32, ThreadCpu> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in rd.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let sched = std::fs::read_to_string(dir.join("schedstat")).ok();
        let cpu_ns = sched
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .or_else(|| {
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                let rest = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                // Fields after the comm: state is index 0, utime 11, stime 12.
                let u: u64 = f.get(11)?.parse().ok()?;
                let s: u64 = f.get(12)?.parse().ok()?;
                Some((u + s) * 10_000_000)
            })
            .unwrap_or(0);
        let wchar = std::fs::read_to_string(dir.join("io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("wchar:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        out.insert(
            tid,
            ThreadCpu {
                name,
                cpu_ns,
                wchar,
            },
        );
    }
    out
}

/// CPU time used between two snapshots, summed by thread name.
pub fn cpu_by_name(
    before: &BTreeMap<u32, ThreadCpu>,
    after: &BTreeMap<u32, ThreadCpu>,
) -> BTreeMap<String, Duration> {
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    for (tid, a) in after {
        let b = before.get(tid).map(|b| b.cpu_ns).unwrap_or(0);
        *out.entry(a.name.clone()).or_default() += Duration::from_nanos(a.cpu_ns.saturating_sub(b));
    }
    out
}

/// Bytes written (write(2) family) between two snapshots, summed by thread name.
pub fn written_by_name(
    before: &BTreeMap<u32, ThreadCpu>,
    after: &BTreeMap<u32, ThreadCpu>,
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, a) in after {
        let b = before.get(tid).map(|b| b.wchar).unwrap_or(0);
        *out.entry(a.name.clone()).or_default() += a.wchar.saturating_sub(b);
    }
    out
}

/// Process CPU time (all threads, live and exited) from `/proc/self/stat`, 100 Hz ticks.
pub fn process_cpu() -> Duration {
    let stat = read("/proc/self/stat");
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
    let s: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    Duration::from_millis((u + s) * 10)
}

/// Peak resident set of this process.
pub fn peak_rss_mib() -> f64 {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Percentile (nearest rank) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A count with thousands separators.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Events per second, rounded, with separators.
pub fn rate(n: u64, d: Duration) -> String {
    if d.is_zero() {
        return "inf".into();
    }
    num((n as f64 / d.as_secs_f64()).round() as u64)
}

/// Time a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Remove a directory tree if it exists.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Number of raw (unsealed) segment files in a store.
pub fn raw_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("segments"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".seg") || n.ends_with(".tmp")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Size of the `n`-th line of a checkpoint note (its tree size).
pub fn note_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}
