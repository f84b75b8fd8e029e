//! `ingest`: throughput of the durable ledger + index path, CPU by thread, and the latency
//! from append to a signed checkpoint / to the index (`lag`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandtrail_event::generate::Generator;
use sandtrail_event::{encode_leaf_into, Event};
use sandtrail_ledger::{leaf_hash, Frontier};
use sandtrail_store::index::Index;
use sandtrail_store::{checkpoints, Layout, StoreConfig, Writer};

use crate::util::{self, ms, num, pct, rate};

/// Parameters of `ingest`.
pub struct IngestParams {
    pub events: u64,
    pub sessions: u32,
    pub seed: u64,
    pub dir: PathBuf,
    pub keep: bool,
    pub segment_mb: u64,
    /// Append one event per call (`Writer::append`) instead of `Writer::append_all`.
    pub single: bool,
}

/// The store's default configuration, as the figures were taken with it.
pub fn describe_config(what: &str) -> String {
    let c = StoreConfig::default();
    format!(
        "{what} (commit_interval {:?}, checkpoint_interval {:?}, index_interval {:?}, \
         segment_bytes {} MiB, zstd_level {})",
        c.commit_interval,
        c.checkpoint_interval,
        c.index_interval,
        c.segment_bytes >> 20,
        c.zstd_level
    )
}

/// Generate `n` events of `sessions` concurrent sessions, timing it (not part of any figure).
pub fn generate(seed: u64, sessions: u32, n: u64) -> Vec<Event> {
    let (events, took) = util::timed(|| {
        Generator::new(seed, util::HOST, util::T0)
            .mixed(sessions)
            .take(n as usize)
            .collect::<Vec<_>>()
    });
    println!(
        "generated {} events in advance in {:.2} s (not timed below)",
        num(n),
        took.as_secs_f64()
    );
    events
}

/// What the ledger thread computes per event, measured alone on one core with reused, already
/// touched buffers (so no page faults or allocation): canonical encoding (serde_json), SHA-256
/// leaf hash, Merkle frontier append, framing copy. Each pass adds one step; the differences
/// are the steps' costs.
fn ledger_work_model(events: &[Event]) {
    let sample = &events[..events.len().min(200_000)];
    let n = sample.len() as u64;
    let mut leaf = Vec::with_capacity(1 << 16);
    let mut frame = vec![1u8; 64 << 20];
    frame.clear();
    let mut bytes = 0usize;
    let mut pass = |steps: u8| -> Duration {
        let mut frontier = Frontier::new();
        let t = Instant::now();
        for e in sample {
            leaf.clear();
            encode_leaf_into(e, &mut leaf);
            if steps >= 2 {
                let h = leaf_hash(&leaf);
                if steps >= 3 {
                    frontier.append(h);
                }
                if steps >= 4 {
                    if frame.len() + leaf.len() + 36 > frame.capacity() {
                        frame.clear();
                    }
                    frame.extend_from_slice(&(leaf.len() as u32).to_le_bytes());
                    frame.extend_from_slice(&h);
                    frame.extend_from_slice(&leaf);
                }
            }
            if steps == 1 {
                bytes += leaf.len();
            }
        }
        std::hint::black_box(&frontier);
        t.elapsed()
    };
    let p1 = pass(1);
    let p2 = pass(2);
    let p3 = pass(3);
    let p4 = pass(4);
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    let (enc, hash, front, framing) = (
        per(p1),
        (per(p2) - per(p1)).max(0.0),
        (per(p3) - per(p2)).max(0.0),
        (per(p4) - per(p3)).max(0.0),
    );
    println!(
        "ledger per-event compute measured alone on {} events (mean canonical leaf {:.0} bytes; \
         reused buffers, no I/O): encode {:.0} ns, leaf hash {:.0} ns, frontier {:.0} ns, framing {:.0} ns; \
         sum {:.0} ns/event = at most {} events/s per core for this part",
        num(n),
        bytes as f64 / n as f64,
        enc,
        hash,
        front,
        framing,
        per(p4),
        num((1e9 / per(p4)) as u64)
    );
}

fn print_cpu(
    label: &str,
    wall: Duration,
    before: &BTreeMap<u32, util::ThreadCpu>,
    after: &BTreeMap<u32, util::ThreadCpu>,
    n: u64,
) {
    let cpu = util::cpu_by_name(before, after);
    let written = util::written_by_name(before, after);
    println!(
        "  CPU time and bytes written (write/pwrite) by thread, {label} (wall {:.3} s):",
        wall.as_secs_f64()
    );
    let mut total = Duration::ZERO;
    for (name, d) in &cpu {
        if d.is_zero() {
            continue;
        }
        total += *d;
        println!(
            "    {name:<16} {:>8.3} s  ({:>5.1}% of one core)  {:>5.2} µs/event  {:>10} events per CPU-second  {:>7.0} B/event written",
            d.as_secs_f64(),
            100.0 * d.as_secs_f64() / wall.as_secs_f64(),
            d.as_secs_f64() * 1e6 / n as f64,
            rate(n, *d),
            written.get(name).copied().unwrap_or(0) as f64 / n as f64
        );
    }
    println!(
        "    {:<16} {:>8.3} s  ({:>5.1}% of one core)  {:>5.2} µs/event  {:>10} events per CPU-second  {:>7.0} B/event written",
        "all threads",
        total.as_secs_f64(),
        100.0 * total.as_secs_f64() / wall.as_secs_f64(),
        total.as_secs_f64() * 1e6 / n as f64,
        rate(n, total),
        written.values().sum::<u64>() as f64 / n as f64
    );
}

/// Wait until the seal thread has sealed every full segment (only the active one stays raw).
fn wait_sealed(dir: &Path, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if util::raw_segments(dir) <= 1 {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Run the throughput benchmark.
pub fn ingest(p: &IngestParams) -> Result<()> {
    util::print_header(
        "ingest",
        &[
            ("events", num(p.events)),
            ("sessions", p.sessions.to_string()),
            ("seed", p.seed.to_string()),
            ("dir", p.dir.display().to_string()),
            ("segment_bytes", format!("{} MiB", p.segment_mb)),
            (
                "api",
                if p.single {
                    "Writer::append (one event per call)".into()
                } else {
                    "Writer::append_all (batches of 1024)".into()
                },
            ),
            (
                "config",
                describe_config("StoreConfig::default() otherwise"),
            ),
        ],
    );
    let events = generate(p.seed, p.sessions, p.events);
    println!(
        "an Event value is {} bytes (moved into the Writer's batch, then dropped by the index thread)",
        std::mem::size_of::<Event>()
    );
    ledger_work_model(&events);

    util::remove_dir(&p.dir)?;
    let layout = Layout::new(&p.dir);
    let cfg = StoreConfig {
        host_id: util::HOST.into(),
        segment_bytes: p.segment_mb << 20,
        ..StoreConfig::default()
    };
    let mut w = Writer::open(&layout, cfg).context("opening the store")?;
    let base = w.flush()?.size;

    let cpu0 = util::thread_cpu();
    let proc0 = util::process_cpu();
    let t0 = Instant::now();
    let n = events.len() as u64;
    if p.single {
        for e in events {
            w.append(e)?;
        }
    } else {
        w.append_all(events)?;
    }
    let t_appended = t0.elapsed();
    let commit = w.flush()?;
    let t_flush = t0.elapsed();
    let cpu_flush = util::thread_cpu();
    let proc_flush = util::process_cpu();
    if commit.size != base + n {
        bail!(
            "the store holds {} records after flush, expected {}",
            commit.size,
            base + n
        );
    }
    let sealed = wait_sealed(&p.dir, Duration::from_secs(600));
    let t_sealed = t0.elapsed();
    let cpu_sealed = util::thread_cpu();
    let (closed, t_close) = util::timed(|| w.close());
    closed?;

    println!("results:");
    println!(
        "  all {} appends returned after {:.3} s (the caller is throttled by the bounded channel)",
        num(n),
        t_appended.as_secs_f64()
    );
    println!(
        "  INGEST: {} events durable (fsynced), signed by a checkpoint and indexed in {:.3} s \
         = {} events/s (wall, until flush returned)",
        num(n),
        t_flush.as_secs_f64(),
        rate(n, t_flush)
    );
    print_cpu(
        "from first append until flush returned",
        t_flush,
        &cpu0,
        &cpu_flush,
        n,
    );
    println!(
        "    process total (/proc/self/stat, 10 ms ticks): {:.2} s",
        (proc_flush - proc0).as_secs_f64()
    );
    let by = util::cpu_by_name(&cpu0, &cpu_flush);
    let ledger = by
        .iter()
        .filter(|(k, _)| k.starts_with("sandtrail-ledge"))
        .map(|(_, v)| *v)
        .sum::<Duration>();
    let index = by
        .iter()
        .filter(|(k, _)| k.starts_with("sandtrail-index"))
        .map(|(_, v)| *v)
        .sum::<Duration>();
    println!(
        "  ONE CORE: the ledger thread needs {:.2} µs of CPU per event ({} events per ledger-core-second); \
         ledger + index threads together {:.2} µs per event ({} events per core-second)",
        ledger.as_secs_f64() * 1e6 / n as f64,
        rate(n, ledger),
        (ledger + index).as_secs_f64() * 1e6 / n as f64,
        rate(n, ledger + index)
    );
    match sealed {
        Some(_) => {
            println!(
                "  sealing (zstd) of all full segments finished {:.3} s after the first append \
                 ({:.3} s after flush returned)",
                t_sealed.as_secs_f64(),
                (t_sealed - t_flush).as_secs_f64()
            );
            print_cpu(
                "from first append until every full segment was sealed",
                t_sealed,
                &cpu0,
                &cpu_sealed,
                n,
            );
        }
        None => println!("  sealing did not finish within 600 s"),
    }
    println!("  close took {}", ms(t_close));
    println!("  peak RSS {:.0} MiB", util::peak_rss_mib());
    if !p.keep {
        util::remove_dir(&p.dir)?;
    }
    Ok(())
}

/// Parameters of `lag`.
pub struct LagParams {
    pub rate: u64,
    pub secs: u64,
    pub sessions: u32,
    pub seed: u64,
    pub dir: PathBuf,
    pub sample_every: u64,
    pub drain: Duration,
}

struct Obs {
    at: Instant,
    checkpoint: u64,
    indexed: u64,
}

fn poll(layout: Layout, stop: Arc<AtomicBool>) -> Result<Vec<Obs>> {
    let index = Index::open(&layout.index())?;
    let mut out: Vec<Obs> = Vec::new();
    let mut last = (u64::MAX, u64::MAX);
    while !stop.load(Ordering::Relaxed) {
        let log = checkpoints::read(&layout.checkpoints())?;
        let cp = log
            .notes
            .last()
            .and_then(|n| util::note_size(n))
            .unwrap_or(0);
        let idx = index.indexed_size()?;
        let at = Instant::now();
        if (cp, idx) != last {
            last = (cp, idx);
            out.push(Obs {
                at,
                checkpoint: cp,
                indexed: idx,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(out)
}

fn first_covering(obs: &[Obs], seq: u64, get: impl Fn(&Obs) -> u64) -> Option<Instant> {
    let i = obs.partition_point(|o| get(o) <= seq);
    obs.get(i).map(|o| o.at)
}

fn print_latency(what: &str, mut lat: Vec<Option<Duration>>, uncovered_note: &str) {
    let missing = lat.iter().filter(|l| l.is_none()).count();
    lat.sort_by_key(|l| l.unwrap_or(Duration::MAX));
    let d: Vec<Duration> = lat.iter().map(|l| l.unwrap_or(Duration::MAX)).collect();
    let show = |x: Duration| {
        if x == Duration::MAX {
            "never".to_string()
        } else {
            ms(x)
        }
    };
    let covered_max = lat
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(Duration::ZERO);
    println!(
        "  {what}:\n      p50 {}  p90 {}  p99 {}  max {} over {} samples{}",
        show(pct(&d, 50.0)),
        show(pct(&d, 90.0)),
        show(pct(&d, 99.0)),
        ms(covered_max),
        num(d.len() as u64),
        if missing > 0 {
            format!(
                "; {} more samples ({:.2}%) were never covered: {uncovered_note}",
                num(missing as u64),
                100.0 * missing as f64 / d.len() as f64
            )
        } else {
            String::new()
        }
    );
}

/// Run the latency benchmark: steady appends at `rate`, sampled latencies.
pub fn lag(p: &LagParams) -> Result<()> {
    let n = p.rate * p.secs;
    util::print_header(
        "lag",
        &[
            ("rate", format!("{}/s", num(p.rate))),
            ("secs", p.secs.to_string()),
            ("events", num(n)),
            ("sessions", p.sessions.to_string()),
            ("sample_every", p.sample_every.to_string()),
            ("dir", p.dir.display().to_string()),
            (
                "config",
                describe_config("StoreConfig::default(), one Writer::append per event"),
            ),
        ],
    );
    let events = generate(p.seed, p.sessions, n);
    util::remove_dir(&p.dir)?;
    let layout = Layout::new(&p.dir);
    let cfg = StoreConfig {
        host_id: util::HOST.into(),
        ..StoreConfig::default()
    };
    let mut w = Writer::open(&layout, cfg).context("opening the store")?;
    let base = w.flush()?.size;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let layout = layout.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("bench-poller".into())
            .spawn(move || poll(layout, stop))?
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut samples: Vec<(u64, Instant)> = Vec::with_capacity((n / p.sample_every + 1) as usize);
    let step_ns = 1e9 / p.rate as f64;
    let start = Instant::now();
    let mut behind_max = Duration::ZERO;
    for (i, e) in events.into_iter().enumerate() {
        let i = i as u64;
        if i.is_multiple_of(16) {
            let due = start + Duration::from_nanos((i as f64 * step_ns) as u64);
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else {
                behind_max = behind_max.max(now - due);
            }
        }
        if i.is_multiple_of(p.sample_every) {
            samples.push((base + i, Instant::now()));
        }
        w.append(e)?;
    }
    let paced = start.elapsed();
    // Let the pipeline work on its own (no flush) so the tail is measured as it would be.
    std::thread::sleep(p.drain);
    let flush_at = Instant::now();
    let commit = w.flush()?;
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let obs = poller
        .join()
        .map_err(|_| anyhow::anyhow!("poller panicked"))??;
    w.close()?;
    if commit.size != base + n {
        bail!("store holds {} records, expected {}", commit.size, base + n);
    }

    let lat = |get: fn(&Obs) -> u64| -> Vec<Option<Duration>> {
        samples
            .iter()
            .map(|&(seq, at)| {
                first_covering(&obs, seq, get)
                    .filter(|&t| t < flush_at)
                    .map(|t| t.saturating_duration_since(at))
            })
            .collect()
    };
    let cps = obs
        .windows(2)
        .filter(|w| w[1].checkpoint != w[0].checkpoint)
        .count();
    println!("results:");
    println!(
        "  appended {} events in {:.3} s ({} events/s achieved; pacing fell behind by at most {}); \
         then waited {:.1} s without flushing",
        num(n),
        paced.as_secs_f64(),
        rate(n, paced),
        ms(behind_max),
        p.drain.as_secs_f64()
    );
    println!(
        "  observed {} new checkpoints and {} index advances (polling every ~1 ms)",
        num(cps as u64),
        num(obs
            .windows(2)
            .filter(|w| w[1].indexed != w[0].indexed)
            .count() as u64)
    );
    let note = "not covered until the final explicit flush";
    print_latency(
        "CHECKPOINT LAG (append -> signed checkpoint with size > seq in checkpoints.log)",
        lat(|o| o.checkpoint),
        note,
    );
    print_latency(
        "EVENT -> QUERYABLE (append -> index indexed_size > seq)",
        lat(|o| o.indexed),
        note,
    );
    util::remove_dir(&p.dir)?;
    Ok(())
}

/// The index writer alone (`Indexer::apply`, the index thread's work) on the same events,
/// one transaction per `batch` events: CPU and bytes written per event for each batch size.
pub fn index_what_if(
    events: u64,
    sessions: u32,
    seed: u64,
    dir: &Path,
    batches: &[usize],
) -> Result<()> {
    util::print_header(
        "index",
        &[
            ("events", num(events)),
            ("sessions", sessions.to_string()),
            ("seed", seed.to_string()),
            ("dir", dir.display().to_string()),
            ("batches", format!("{batches:?}")),
        ],
    );
    let mut evs = generate(seed, sessions, events);
    for (i, e) in evs.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    util::remove_dir(dir)?;
    std::fs::create_dir_all(dir)?;
    println!("results (Indexer::apply on the calling thread, one transaction per batch):");
    for &b in batches {
        let path = dir.join(format!("index-{b}.sqlite"));
        let mut ix = sandtrail_store::index::Indexer::open(&path)?;
        let before = util::thread_cpu();
        let t = Instant::now();
        for chunk in evs.chunks(b.max(1)) {
            ix.apply(chunk)?;
        }
        let wall = t.elapsed();
        let after = util::thread_cpu();
        drop(ix);
        let cpu: Duration = util::cpu_by_name(&before, &after).values().sum();
        let written: u64 = util::written_by_name(&before, &after).values().sum();
        let size: u64 = ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "  batch {:>7} events: {:>6.2} µs/event CPU ({} events/s wall), {:>6.0} B/event written, index file {:.1} B/event",
            num(b as u64),
            cpu.as_secs_f64() * 1e6 / events as f64,
            rate(events, wall),
            written as f64 / events as f64,
            size as f64 / events as f64
        );
    }
    util::remove_dir(dir)?;
    Ok(())
}
