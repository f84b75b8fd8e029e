//! Run-time statistics of loaded BPF programs (`BPF_ENABLE_STATS`), for benchmarks: how many
//! times each program ran and the time it spent, as the kernel counts them.
//!
//! Counting costs two clock reads per program run while it is enabled, so it is for
//! diagnosis, not for the figures it would distort. Minimum kernel: 5.8.

use std::os::fd::OwnedFd;
use std::time::Duration;

/// One loaded program's counters.
#[derive(Debug, Clone)]
pub struct ProgramStat {
    /// Kernel id (unique while loaded).
    pub id: u32,
    /// Name (the kernel keeps the first 15 bytes).
    pub name: String,
    /// Times it ran since counting was enabled.
    pub runs: u64,
    /// Time it spent in those runs.
    pub run_time: Duration,
}

/// Turns the kernel's per-program run-time counting on until the returned fd is closed.
pub fn enable() -> std::io::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| std::io::Error::other(format!("BPF_ENABLE_STATS: {e}")))
}

/// The counters of every loaded program.
pub fn programs() -> Vec<ProgramStat> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| ProgramStat {
            id: p.id(),
            name: p.name_as_str().unwrap_or("").to_string(),
            runs: p.run_count(),
            run_time: p.run_time(),
        })
        .collect()
}
