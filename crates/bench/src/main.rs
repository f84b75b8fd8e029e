//! `sandtrail-bench`: programs that print sandtrail's performance figures against the design's
//! bars (see `docs/benchmarks.md`). Run them from a release build:
//!
//! ```text
//! cargo run --release -p sandtrail-bench -- ingest --events 2000000 --sessions 1000
//! cargo run --release -p sandtrail-bench -- lag --rate 50000 --secs 10
//! cargo run --release -p sandtrail-bench -- build --events 10000000 --sessions 1000 --dir D
//! cargo run --release -p sandtrail-bench -- verify --dir D
//! cargo run --release -p sandtrail-bench -- query --dir D
//! cargo run --release -p sandtrail-bench -- size --dir D
//! cargo run --release -p sandtrail-bench -- overhead --rounds 7
//! cargo run --release -p sandtrail-bench -- pool --mode sandtrail docs/overhead-rounds/*.txt
//! ```

mod build;
mod connect;
mod ingest;
mod overhead;
mod pool;
mod query;
mod size;
mod util;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sandtrail-bench",
    about = "Benchmarks that print sandtrail's figures against the design's bars"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest throughput: append N pre-generated events through the Writer and flush
    /// (durable group commit, signed checkpoint, index caught up); CPU time by thread.
    Ingest {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        sessions: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Store directory (deleted first, and afterwards unless --keep).
        #[arg(long, default_value = "/work/bench-state/ingest")]
        dir: PathBuf,
        #[arg(long)]
        keep: bool,
        /// Raw segment size before sealing, MiB (default: the store's default, 16).
        #[arg(long, default_value_t = 16)]
        segment_mb: u64,
        /// Append one event per call (Writer::append) instead of Writer::append_all.
        #[arg(long)]
        single: bool,
    },
    /// Latency at a steady append rate: append -> signed checkpoint, append -> queryable.
    Lag {
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        sessions: u32,
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Sample one event in this many.
        #[arg(long, default_value_t = 50)]
        sample_every: u64,
        /// Seconds to wait after the last append before the final flush.
        #[arg(long, default_value_t = 3.0)]
        drain_secs: f64,
        #[arg(long, default_value = "/work/bench-state/lag")]
        dir: PathBuf,
    },
    /// The index writer alone (Indexer::apply) with one transaction per BATCH events.
    Index {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        sessions: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,25000,100000")]
        batches: Vec<usize>,
        #[arg(long, default_value = "/work/bench-state/index")]
        dir: PathBuf,
    },
    /// Build a store of N generated events (once; `query`, `size` and `verify` reuse it).
    Build {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        sessions: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "/work/bench-state/store-10m")]
        dir: PathBuf,
        /// Rebuild even if the directory already holds a store.
        #[arg(long)]
        force: bool,
    },
    /// Verification throughput of `verify_store` over a whole store, with a phase breakdown.
    Verify {
        #[arg(long, default_value = "/work/bench-state/store-10m")]
        dir: PathBuf,
        /// Build a store of this many events in DIR first (when DIR holds none).
        #[arg(long)]
        events: Option<u64>,
        #[arg(long, default_value_t = 2)]
        runs: u32,
        /// Drop the page cache before the first run (needs root).
        #[arg(long)]
        cold: bool,
    },
    /// The five incident questions on a store (build it with `build`).
    Query {
        #[arg(long, default_value = "/work/bench-state/store-10m")]
        dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        repeat: u32,
        /// Drop the page cache before each question's first run (needs root).
        #[arg(long)]
        cold: bool,
    },
    /// Collection overhead: a syscall-heavy workload unaudited, under sandtrail's kernel
    /// programs, and under auditd with equivalent rules, side by side (root; Debian's auditd).
    Overhead {
        #[arg(long, default_value_t = 7)]
        rounds: u32,
        #[arg(long, default_value_t = 400)]
        spawns: u32,
        #[arg(long, default_value_t = 300)]
        files: u32,
        #[arg(long, default_value_t = 10)]
        builds: u32,
        /// Leave auditd out (when it cannot be installed).
        #[arg(long)]
        no_auditd: bool,
        /// Also run the modes that split sandtrail's cost: programs attached but the cgroup
        /// not watched, records written but not read, records decoded without the collector,
        /// and the process programs alone.
        #[arg(long)]
        split: bool,
        /// Also run the `sealed` mode: sandtrail's mode with every event appended to a durable
        /// store (ledger + index, in a temporary directory) as `sandtrail run` does; the
        /// `sandtrail` mode drops the events (the store's own cost is what `ingest` measures).
        #[arg(long)]
        sealed: bool,
        /// Also run the `unpinned` mode: sandtrail's mode with the reader thread left to run
        /// on any CPU, as before it was pinned to one (`sandtrail_bpf::pin_reader_thread`);
        /// with --sealed also the `sealed-any` mode, the sealed mode with the reader, the
        /// store's threads and the thread feeding the store on any CPU
        #[arg(long)]
        unpinned: bool,
        /// Also run the `sealed-dir` mode: the sealed mode with its store in a fresh directory
        /// inside DIR (for example on another file system than the workload's temporary
        /// directory, or a tmpfs such as /dev/shm, to see what the store's disk writes cost).
        #[arg(long, value_name = "DIR")]
        sealed_in: Option<PathBuf>,
        /// Instead of the workload: a C loop of this many read-only opens (and closes) of
        /// one file, for the cost per open.
        #[arg(long, default_value_t = 0)]
        opens: u32,
        /// Also print, for the sandtrail mode, each BPF program's runs and average run time as
        /// the kernel counts them (BPF_ENABLE_STATS; the counting itself adds two clock reads
        /// per run, so use it to see where time goes, not for the overhead figure).
        #[arg(long)]
        prog_stats: bool,
        /// After the rounds: record one run's kernel records and feed them this many times to
        /// a fresh collector, printing the collector's CPU time per record, then feed the
        /// events this many times through the sealed mode's path (channel, feeding thread,
        /// fresh store), printing the CPU time of all threads (0: skip).
        #[arg(long, default_value_t = 0)]
        replay: u32,
        /// LANG of the workload, whose environment is fixed (PATH, HOME, LANG), not inherited.
        /// With C.UTF-8 each coreutils process opens ~28 locale files; with C none.
        #[arg(long, default_value = "C.UTF-8")]
        lang: String,
        /// Record file calls, wait4 and waitid with an entry and an exit program each (the
        /// fallback for kernels without bpf_task_pt_regs) instead of one program at their exit.
        #[arg(long)]
        entry_exit_pairs: bool,
    },
    /// One mode's slowdown against `unaudited` pooled over the rounds of several `overhead`
    /// runs (their stderr, one `round K/N: ...` line per round), with a 95 % confidence
    /// interval of the median, judged against a bar; with three runs or more also the runs'
    /// medians as units (their mean and its t-interval), judged the same way.
    Pool {
        /// The mode to compare with `unaudited` (as `overhead` names it: sandtrail, sealed, ...).
        #[arg(long, default_value = "sealed")]
        mode: String,
        /// The bar, in % slower than unaudited.
        #[arg(long, default_value_t = 5.0)]
        bar: f64,
        /// Files holding the round lines of one `overhead` run each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per-connection overhead: TCP connect latency from a cgroup, unaudited and under
    /// sandtrail's egress programs (root; creates and removes a veth pair `stbench0`/`stbench1`).
    Connect {
        #[arg(long, default_value_t = 7)]
        rounds: u32,
        #[arg(long, default_value_t = 5000)]
        count: u32,
    },
    /// The client side of `connect` (run by it, in the benchmark's cgroup).
    #[command(hide = true)]
    ConnectClient {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        count: u32,
    },
    /// Bytes per event on disk, by file kind, plus what-if recompression of a few segments.
    Size {
        #[arg(long, default_value = "/work/bench-state/store-10m")]
        dir: PathBuf,
        /// Sealed segments to recompress in other layouts (0: skip).
        #[arg(long, default_value_t = 4)]
        what_if: usize,
    },
}

/// The allocator `sandtrail` itself uses, so that the collector and ledger are measured as
/// they run there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Connect { rounds, count } => connect::connect(rounds.max(1), count.max(10)),
        Cmd::ConnectClient {
            cgroup,
            addr,
            count,
        } => connect::client(&cgroup, addr, count),
        Cmd::Overhead {
            rounds,
            spawns,
            files,
            builds,
            no_auditd,
            split,
            sealed,
            unpinned,
            sealed_in,
            opens,
            prog_stats,
            replay,
            lang,
            entry_exit_pairs,
        } => overhead::overhead(overhead::Options {
            rounds: rounds.max(1),
            spawns,
            files,
            builds,
            skip_auditd: no_auditd,
            split,
            sealed,
            unpinned,
            sealed_in,
            opens,
            prog_stats,
            replay,
            lang,
            entry_exit_pairs,
        }),
        Cmd::Ingest {
            events,
            sessions,
            seed,
            dir,
            keep,
            segment_mb,
            single,
        } => ingest::ingest(&ingest::IngestParams {
            events,
            sessions,
            seed,
            dir,
            keep,
            segment_mb,
            single,
        }),
        Cmd::Lag {
            rate,
            secs,
            sessions,
            seed,
            sample_every,
            drain_secs,
            dir,
        } => ingest::lag(&ingest::LagParams {
            rate,
            secs,
            sessions,
            seed,
            dir,
            sample_every: sample_every.max(1),
            drain: Duration::from_secs_f64(drain_secs),
        }),
        Cmd::Index {
            events,
            sessions,
            seed,
            batches,
            dir,
        } => ingest::index_what_if(events, sessions, seed, &dir, &batches),
        Cmd::Build {
            events,
            sessions,
            seed,
            dir,
            force,
        } => build::build(&dir, events, sessions, seed, force),
        Cmd::Verify {
            dir,
            events,
            runs,
            cold,
        } => {
            if let Some(n) = events {
                if !dir.join("store.json").exists() {
                    build::build(&dir, n, 1000, 1, false)?;
                }
            }
            verify::verify(&dir, runs.max(1), cold)
        }
        Cmd::Query { dir, repeat, cold } => query::query(&dir, repeat.max(1), cold),
        Cmd::Size { dir, what_if } => size::size(&dir, what_if),
        Cmd::Pool { mode, bar, files } => pool::pool(&mode, bar, &files),
    }
}
