//! `query`: the seed's five incident questions on a big store, first run and warm.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sandtrail_event::decode_leaf;
use sandtrail_event::generate::{PACKAGES, SENSITIVE_FILES};
use sandtrail_store::index::{Index, SessionFilter, SessionRow};
use sandtrail_store::query::{events, EventFilter};
use sandtrail_store::segment::{self, sealed::BlockReader};
use sandtrail_store::Layout;

use crate::util::{self, ms, num, pct};

struct Timing {
    first: Duration,
    warm: Vec<Duration>,
    hits: usize,
}

/// Time `q(true)` once (the first run) then `q(false)` `repeat` times.
fn run(
    repeat: u32,
    cold: bool,
    mut q: impl FnMut(bool) -> Result<usize>,
) -> Result<(Timing, bool)> {
    let dropped = cold && crate::verify::drop_caches();
    let (hits, t_first) = util::timed(|| q(true));
    let hits = hits?;
    let mut times = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        let (h, d) = util::timed(|| q(false));
        if h? != hits {
            bail!("a repeated query returned a different number of hits");
        }
        times.push(d);
    }
    times.sort();
    Ok((
        Timing {
            first: t_first,
            warm: times,
            hits,
        },
        dropped,
    ))
}

fn show(name: &str, what: &str, t: &Timing, dropped: bool, target: Duration) {
    let med = pct(&t.warm, 50.0);
    let max = *t.warm.last().unwrap_or(&Duration::ZERO);
    let worst = max.max(t.first);
    println!(
        "  {name}: {what}\n      hits {:>7}   first run after open{} {:>12}   warm median {:>12}   warm max {:>12}   {}",
        num(t.hits as u64),
        if dropped { " (page cache dropped)" } else { "" },
        ms(t.first),
        ms(med),
        ms(max),
        if worst <= target {
            "within 100 ms"
        } else if med <= target {
            "median within 100 ms, worst case over"
        } else {
            "OVER 100 ms"
        }
    );
}

/// Run the five incident questions against the store at `dir`.
pub fn query(dir: &Path, repeat: u32, cold: bool) -> Result<()> {
    util::print_header(
        "query",
        &[
            ("dir", dir.display().to_string()),
            ("repeat", repeat.to_string()),
            ("drop_page_cache_before_first_run", cold.to_string()),
        ],
    );
    let layout = Layout::new(dir);
    let index = Index::open(&layout.index()).context("opening the index")?;
    let all = index.sessions(&SessionFilter::default())?;
    let total_events = index.indexed_size()?;
    let nseg = segment::list(&layout)?.len();
    println!(
        "store: {} events indexed, {} sessions, {} segment files",
        num(total_events),
        num(all.len() as u64),
        nseg
    );
    if total_events < 9_000_000 {
        println!("WARNING: the targets are for a 10,000,000-event store; this one is smaller");
    }
    let busiest: &SessionRow = all
        .iter()
        .max_by_key(|s| s.events)
        .context("the store has no sessions")?;
    let x = busiest.session_id.clone();
    let span = busiest.last_ts - busiest.first_ts;
    let t1 = busiest.first_ts + span / 4;
    let t2 = busiest.first_ts + 3 * span / 4;
    let p = SENSITIVE_FILES[0].to_string();
    let d = "paste.example".to_string();
    let (_, pkg, ver) = PACKAGES[6];
    let r = "oom".to_string();
    println!(
        "parameters: X={x} (busiest session: {} events over {:.3} s of event time), T1..T2 = middle half \
         of its life ({:.3} s), P={p}, D={d}, V={pkg}@{ver}, R={r}",
        num(busiest.events),
        span as f64 / 1e9,
        (t2 - t1) as f64 / 1e9
    );
    drop(index);
    let target = Duration::from_millis(100);
    println!(
        "results (first run = fresh index connection + query; warm = {repeat} repeats, median and max):"
    );

    let q1 = EventFilter {
        session: Some(x.clone()),
        since: Some(t1),
        until: Some(t2),
        ..Default::default()
    };
    let (t, dropped) = run(repeat, cold, |_| Ok(events(&layout, &q1)?.len()))?;
    show(
        "Q1",
        &format!("what did session {x} do between T1 and T2 (query::events, session+since+until; events returned)"),
        &t,
        dropped,
        target,
    );

    let filters: Vec<(&str, String, SessionFilter)> = vec![
        (
            "Q2",
            format!("which sessions accessed path {p}"),
            SessionFilter {
                accessed: Some(p.clone()),
                ..Default::default()
            },
        ),
        (
            "Q3",
            format!("which sessions connected to domain {d}"),
            SessionFilter {
                domain: Some(d.clone()),
                ..Default::default()
            },
        ),
        (
            "Q4",
            format!("which sessions installed package {pkg} {ver}"),
            SessionFilter {
                package: Some((pkg.to_string(), Some(ver.to_string()))),
                ..Default::default()
            },
        ),
        (
            "Q5",
            format!("which sessions terminated with reason {r}"),
            SessionFilter {
                terminated: Some(r.clone()),
                ..Default::default()
            },
        ),
    ];
    for (name, what, f) in &filters {
        let mut warm_index: Option<Index> = None;
        let (t, dropped) = run(repeat, cold, |first| {
            if first || warm_index.is_none() {
                warm_index = Some(Index::open(&layout.index())?);
            }
            let idx = warm_index.as_ref().context("index")?;
            Ok(idx.sessions(f)?.len())
        })?;
        show(
            name,
            &format!("{what} (Index::sessions)"),
            &t,
            dropped,
            target,
        );
    }

    println!("extra (not targets):");
    let whole = EventFilter {
        session: Some(x.clone()),
        ..Default::default()
    };
    let (t, dropped) = run(repeat.min(5), false, |_| Ok(events(&layout, &whole)?.len()))?;
    show(
        "Q1'",
        &format!("every event of session {x} (no time window)"),
        &t,
        dropped,
        target,
    );
    let prefix = SessionFilter {
        accessed: Some("/home/agent/".into()),
        ..Default::default()
    };
    let idx = Index::open(&layout.index())?;
    let (t, dropped) = run(repeat, false, |_| Ok(idx.sessions(&prefix)?.len()))?;
    show(
        "Q2'",
        "which sessions accessed anything below /home/agent/",
        &t,
        dropped,
        target,
    );
    drop(idx);

    q1_breakdown(&layout, &x, t1, t2)?;
    Ok(())
}

/// Replay what `query::events` does for Q1, phase by phase, with the store's public APIs.
fn q1_breakdown(layout: &Layout, x: &str, t1: u64, t2: u64) -> Result<()> {
    let (index, t_open) = util::timed(|| Index::open(&layout.index()));
    let index = index?;
    let (sid, t_sid) = util::timed(|| index.sid(x));
    let sid = sid?.context("session vanished")?;
    let (seqs, t_events) = util::timed(|| index.session_events(sid, Some(t1), Some(t2)));
    let mut seqs: Vec<u64> = seqs?.into_iter().map(|(s, _)| s).collect();
    seqs.sort_unstable();
    let (segments, t_list) = util::timed(|| segment::list(layout));
    let segments = segments?;
    let mut per_segment: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &seq in &seqs {
        if let Some((&first, _)) = segments.range(..=seq).next_back() {
            per_segment.entry(first).or_default().push(seq);
        }
    }
    let mut reader = BlockReader::new()?;
    let mut t_blocks_q = Duration::ZERO;
    let mut t_read = Duration::ZERO;
    let mut t_decode = Duration::ZERO;
    let mut t_raw = Duration::ZERO;
    let mut blocks_read = 0u64;
    let mut compressed = 0u64;
    let mut leaves_read = 0u64;
    let mut decoded = 0u64;
    for (first, wanted) in &per_segment {
        let files = &segments[first];
        if files.raw.is_some() {
            let (r, d) = util::timed(|| -> Result<()> {
                let data = sandtrail_store::reader::segment_leaves(files)?;
                for (seq, leaf) in data.iter() {
                    if wanted.binary_search(&seq).is_ok() {
                        std::hint::black_box(decode_leaf(leaf)?);
                        decoded += 1;
                    }
                }
                Ok(())
            });
            r?;
            t_raw += d;
            continue;
        }
        let Some(path) = files.sealed.as_ref() else {
            continue;
        };
        let file = std::fs::File::open(path)?;
        let lo = wanted[0];
        let hi = *wanted.last().expect("non-empty");
        let (rows, d) = util::timed(|| index.blocks(sid, lo, hi));
        t_blocks_q += d;
        for b in rows? {
            if b.segment != *first {
                continue;
            }
            let (block, d) = util::timed(|| reader.read(&file, path, b.offset, b.len));
            t_read += d;
            let block = block?;
            blocks_read += 1;
            compressed += b.len;
            let (r, d) = util::timed(|| -> Result<()> {
                for (seq, leaf) in block.leaves() {
                    leaves_read += 1;
                    if wanted.binary_search(&seq).is_ok() {
                        std::hint::black_box(decode_leaf(leaf)?);
                        decoded += 1;
                    }
                }
                Ok(())
            });
            r?;
            t_decode += d;
        }
    }
    let total = t_open + t_sid + t_events + t_list + t_blocks_q + t_read + t_decode + t_raw;
    println!(
        "Q1 replayed phase by phase ({} events in the window, in {} segments):",
        num(seqs.len() as u64),
        per_segment.len()
    );
    println!(
        "    open index connection                          {}",
        ms(t_open)
    );
    println!(
        "    session id -> sid                              {}",
        ms(t_sid)
    );
    println!(
        "    seqs of the window from the runs table         {}",
        ms(t_events)
    );
    println!(
        "    list segment files                             {}",
        ms(t_list)
    );
    println!(
        "    block lookups in the index                     {}",
        ms(t_blocks_q)
    );
    println!(
        "    read + decompress {} blocks ({:.1} KB compressed, {} leaves)   {}",
        num(blocks_read),
        compressed as f64 / 1e3,
        num(leaves_read),
        ms(t_read)
    );
    println!(
        "    decode {} wanted leaves (serde_json)             {}",
        num(decoded),
        ms(t_decode)
    );
    if !t_raw.is_zero() {
        println!(
            "    raw (unsealed) segment read + decode           {}",
            ms(t_raw)
        );
    }
    println!(
        "    sum                                            {}",
        ms(total)
    );
    let f = EventFilter {
        session: Some(x.to_string()),
        since: Some(t1),
        until: Some(t2),
        ..Default::default()
    };
    let (got, t_events_call) = util::timed(|| events(layout, &f));
    let got = got?;
    let n = got.len();
    let (_, t_drop) = util::timed(|| drop(got));
    println!(
        "    for comparison, query::events itself: {} to return {} events (each a {}-byte Event), then {} to drop them",
        ms(t_events_call),
        num(n as u64),
        std::mem::size_of::<sandtrail_event::Event>(),
        ms(t_drop)
    );
    Ok(())
}

/// Length of a sealed segment's JSON footer, from its trailer.
pub fn footer_len(path: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut tail = [0u8; 4];
    f.read_exact_at(&mut tail, size - 12)?;
    Ok(u32::from_le_bytes(tail) as u64)
}
