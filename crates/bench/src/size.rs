//! `size`: bytes per event on disk, by file kind, and what other compression layouts would give.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sandtrail_store::segment::{self, raw::RawSegment, sealed::SealedSegment};
use sandtrail_store::Layout;

use crate::query::footer_len;
use crate::util::{self, num};

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(())
}

fn category(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let name = rel.to_string_lossy();
    if name.starts_with("segments/") {
        if name.ends_with(".sealed") {
            "segments/*.sealed".into()
        } else if name.ends_with(".seg") {
            "segments/*.seg (raw, unsealed)".into()
        } else {
            "segments/other".into()
        }
    } else if name.starts_with("keys/") {
        "keys/".into()
    } else {
        name.into_owned()
    }
}

/// Measure the store at `dir`; `sample` sealed segments are recompressed other ways.
pub fn size(dir: &Path, sample: usize) -> Result<()> {
    util::print_header(
        "size",
        &[
            ("dir", dir.display().to_string()),
            ("what_if_sample_segments", sample.to_string()),
        ],
    );
    let layout = Layout::new(dir);
    if !layout.store_json().exists() {
        bail!("no store at {}", dir.display());
    }
    if layout.running().exists() {
        println!("WARNING: a writer has this store open (or crashed); figures may move");
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut by_cat: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (p, len) in &files {
        let e = by_cat.entry(category(dir, p)).or_default();
        e.0 += 1;
        e.1 += len;
    }

    // Count events and split the sealed files into blocks / footers.
    let segments = segment::list(&layout)?;
    let mut sealed_events = 0u64;
    let mut raw_events = 0u64;
    let mut block_bytes = 0u64;
    let mut footer_bytes = 0u64;
    let mut nblocks = 0u64;
    let mut leaf_bytes = 0u64;
    let mut sealed_files: Vec<PathBuf> = Vec::new();
    for files in segments.values() {
        if let Some(raw) = &files.raw {
            let seg = RawSegment::read(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
            raw_events += seg.frames(false).filter(|f| f.is_ok()).count() as u64;
        } else if let Some(path) = &files.sealed {
            let seg = SealedSegment::open(path)?;
            sealed_events += seg.footer.count;
            nblocks += seg.footer.blocks.len() as u64;
            footer_bytes += footer_len(path)?;
            for b in &seg.footer.blocks {
                block_bytes += b.len;
                leaf_bytes += seg
                    .read_block(b)?
                    .iter()
                    .map(|(_, l)| l.len() as u64)
                    .sum::<u64>();
            }
            sealed_files.push(path.clone());
        }
    }
    let events = sealed_events + raw_events;
    if events == 0 {
        bail!("the store holds no events");
    }
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    println!(
        "store: {} events ({} in {} sealed segments, {} in raw segments)",
        num(events),
        num(sealed_events),
        sealed_files.len(),
        num(raw_events)
    );
    println!(
        "results (bytes per event = bytes / {} events):",
        num(events)
    );
    for (cat, (n, bytes)) in &by_cat {
        println!(
            "  {cat:<34} {n:>5} files {:>16} bytes  {:>8.1} B/event",
            num(*bytes),
            *bytes as f64 / events as f64
        );
    }
    println!(
        "  {:<34} {:>5} files {:>16} bytes  {:>8.1} B/event",
        "TOTAL on disk",
        files.len(),
        num(total),
        total as f64 / events as f64
    );
    if sealed_events > 0 {
        let sealed_total: u64 = by_cat
            .get("segments/*.sealed")
            .map(|(_, b)| *b)
            .unwrap_or(0);
        println!(
            "  SEALED SEGMENTS ALONE: {:.1} B/event over the {} sealed events \
             (compressed blocks {:.1}, JSON footers {:.1}, magic/trailer {:.2}); {} blocks, mean {:.1} events and {:.0} compressed bytes per block",
            sealed_total as f64 / sealed_events as f64,
            num(sealed_events),
            block_bytes as f64 / sealed_events as f64,
            footer_bytes as f64 / sealed_events as f64,
            (sealed_files.len() as u64 * 28) as f64 / sealed_events as f64,
            num(nblocks),
            sealed_events as f64 / nblocks as f64,
            block_bytes as f64 / nblocks as f64
        );
        println!(
            "  uncompressed canonical leaves: {:.1} B/event (raw segment frames add 36 B: {:.1} B/event); \
             block compression ratio {:.2}x",
            leaf_bytes as f64 / sealed_events as f64,
            leaf_bytes as f64 / sealed_events as f64 + 36.0,
            leaf_bytes as f64 / block_bytes as f64
        );
    }
    wal(&layout, events)?;
    dbstat(&layout, events);
    if sample > 0 && !sealed_files.is_empty() {
        what_if(&sealed_files, sample)?;
    }
    Ok(())
}

/// The index after a `wal_checkpoint(TRUNCATE)` of a copy (the store is not touched).
fn wal(layout: &Layout, events: u64) -> Result<()> {
    let index = layout.index();
    let wal = PathBuf::from(format!("{}-wal", index.display()));
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if wal_len == 0 {
        println!("  index WAL: empty or absent (the writer checkpointed it on close)");
        return Ok(());
    }
    let parent = layout.root().parent().unwrap_or(Path::new("/tmp"));
    let tmp = tempfile::tempdir_in(parent)?;
    let copy = tmp.path().join("index.sqlite");
    std::fs::copy(&index, &copy)?;
    std::fs::copy(&wal, tmp.path().join("index.sqlite-wal"))?;
    let conn = rusqlite::Connection::open(&copy)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    let after = std::fs::metadata(&copy)?.len();
    println!(
        "  index after wal_checkpoint(TRUNCATE) on a copy: {} bytes = {:.1} B/event (WAL was {} bytes)",
        num(after),
        after as f64 / events as f64,
        num(wal_len)
    );
    Ok(())
}

/// Space of each index table and SQLite index (if SQLite has the dbstat table).
fn dbstat(layout: &Layout, events: u64) {
    let r = (|| -> Result<Vec<(String, i64)>> {
        let conn = rusqlite::Connection::open_with_flags(
            layout.index(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut st = conn.prepare(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })();
    match r {
        Ok(rows) => {
            let parts: Vec<String> = rows
                .iter()
                .filter(|(_, b)| *b as f64 / events as f64 >= 0.05)
                .map(|(n, b)| format!("{n} {:.1}", *b as f64 / events as f64))
                .collect();
            println!("  index by table/index, B/event: {}", parts.join(", "));
        }
        Err(e) => println!("  (no per-table index sizes: {e})"),
    }
}

/// Recompress a few sealed segments in other layouts to show what the sealed size could be,
/// and what the compression costs (one core, ns per event).
fn what_if(sealed: &[PathBuf], sample: usize) -> Result<()> {
    let mid = sealed.len() / 2;
    let lo = mid.saturating_sub(sample / 2);
    let chosen = &sealed[lo..(lo + sample).min(sealed.len())];
    let mut events = 0u64;
    let mut stored = 0u64;
    let mut footers = 0u64;
    // (label, compressed bytes, compression time)
    let mut rows: Vec<(String, u64, Duration)> = Vec::new();
    let mut across: std::collections::HashMap<Option<String>, Vec<u8>> = Default::default();
    let mut across_order: Vec<Option<String>> = Vec::new();
    let mut add = |i: usize, label: &str, bytes: u64, d: Duration| {
        if rows.len() <= i {
            rows.push((label.to_string(), 0, Duration::ZERO));
        }
        rows[i].1 += bytes;
        rows[i].2 += d;
    };
    for path in chosen {
        let seg = SealedSegment::open(path)?;
        events += seg.footer.count;
        footers += footer_len(path)?;
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
        for b in &seg.footer.blocks {
            stored += b.len;
            let leaves = seg.read_block(b)?;
            let mut raw = Vec::new();
            for (_, l) in &leaves {
                raw.extend_from_slice(&(l.len() as u32).to_le_bytes());
                raw.extend_from_slice(l);
            }
            blocks.push(raw);
            all.extend(leaves);
        }
        let per_block = |level: i32, fresh: bool| -> Result<(u64, Duration)> {
            let mut c = zstd::bulk::Compressor::new(level)?;
            let t = Instant::now();
            let mut n = 0u64;
            for b in &blocks {
                n += if fresh {
                    zstd::bulk::compress(b, level)?.len() as u64
                } else {
                    c.compress(b)?.len() as u64
                };
            }
            Ok((n, t.elapsed()))
        };
        let (n, d) = per_block(9, true)?;
        add(
            0,
            "per-session blocks (one per session per segment), level 9, new zstd context per block",
            n,
            d,
        );
        let (n, d) = per_block(9, false)?;
        add(1, "per-session blocks, level 9, one reused context", n, d);
        let (n, d) = per_block(3, false)?;
        add(2, "per-session blocks, level 3, one reused context", n, d);
        // Per-session blocks, each compressed with a dictionary trained on this segment.
        let t = Instant::now();
        let samples: Vec<&[u8]> = all.iter().step_by(7).map(|(_, l)| l.as_slice()).collect();
        let dict = zstd::dict::from_samples(&samples, 112 * 1024)?;
        let train = t.elapsed();
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict)?;
        let t = Instant::now();
        let mut n = 0u64;
        for b in &blocks {
            n += c.compress(b)?.len() as u64;
        }
        add(
            3,
            "per-session blocks, level 3, with a 112 KiB dictionary (dictionary bytes and training time not counted)",
            n,
            t.elapsed(),
        );
        add(
            4,
            "  the same, counting one dictionary stored per segment and its training time",
            n + dict.len() as u64,
            t.elapsed() + train,
        );
        for (session, raw) in seg.footer.blocks.iter().zip(&blocks) {
            let e = across.entry(session.session.clone()).or_insert_with(|| {
                across_order.push(session.session.clone());
                Vec::new()
            });
            e.extend_from_slice(raw);
        }
        // Session-grouped blocks of up to 1 MiB (same grouping, bigger blocks).
        let mut c = zstd::bulk::Compressor::new(3)?;
        let t = Instant::now();
        let mut n = 0u64;
        let mut buf = Vec::new();
        for b in &blocks {
            buf.extend_from_slice(b);
            if buf.len() >= 1 << 20 {
                n += c.compress(&buf)?.len() as u64;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            n += c.compress(&buf)?.len() as u64;
        }
        add(5, "mixed-session blocks: the session-grouped records cut every 1 MiB (many sessions per block), level 3", n, t.elapsed());
        let grouped: Vec<u8> = blocks.concat();
        let t = Instant::now();
        let n = zstd::bulk::compress(&grouped, 9)?.len() as u64;
        add(
            6,
            "whole segment as one frame, session-grouped, level 9",
            n,
            t.elapsed(),
        );
        all.sort_by_key(|(s, _)| *s);
        let mut seq = Vec::new();
        for (_, l) in &all {
            seq.extend_from_slice(&(l.len() as u32).to_le_bytes());
            seq.extend_from_slice(l);
        }
        let t = Instant::now();
        let n = zstd::bulk::compress(&seq, 9)?.len() as u64;
        add(
            7,
            "whole segment as one frame, seq order, level 9",
            n,
            t.elapsed(),
        );
    }
    // One block per session over all the sampled (consecutive) segments, as if segments
    // were that many times larger.
    let mut c = zstd::bulk::Compressor::new(3)?;
    let t = Instant::now();
    let mut n = 0u64;
    for session in &across_order {
        for chunk in across[session].chunks(1 << 20) {
            n += c.compress(chunk)?.len() as u64;
        }
    }
    add(
        8,
        &format!(
            "per-session blocks over all {} sampled consecutive segments (as if segments were {}x larger), level 3",
            chosen.len(),
            chosen.len()
        ),
        n,
        t.elapsed(),
    );
    let per = |b: u64| b as f64 / events as f64;
    println!(
        "what-if, recompressing {} sealed segments ({} events) on one core; compressed B/event and compression ns/event:",
        chosen.len(),
        num(events)
    );
    println!(
        "    {:<100} {:>6.1} B  (+ JSON footer {:.1} B)",
        "as stored",
        per(stored),
        per(footers)
    );
    for (label, bytes, d) in &rows {
        println!(
            "    {label:<100} {:>6.1} B  {:>7.0} ns/event",
            per(*bytes),
            d.as_nanos() as f64 / events as f64
        );
    }
    Ok(())
}
