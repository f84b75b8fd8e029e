//! `verify`: time `verify_store` over a whole store, and split the work into its phases.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use sandtrail_ledger::{leaf_hash, Frontier};
use sandtrail_store::segment::{self, raw::RawSegment, sealed::SealedSegment};
use sandtrail_store::verify::{verify_store, VerifyOptions};
use sandtrail_store::Layout;

use crate::util::{self, ms, num, rate};

/// Drop the page cache (root only) so the next read comes from disk.
pub fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Run `verify_store` on `dir`, `runs` times, then the phase breakdown.
pub fn verify(dir: &Path, runs: u32, cold: bool) -> Result<()> {
    util::print_header(
        "verify",
        &[
            ("dir", dir.display().to_string()),
            ("runs", runs.to_string()),
            ("cold_first_run", cold.to_string()),
        ],
    );
    let layout = Layout::new(dir);
    if !layout.store_json().exists() {
        bail!(
            "no store at {}; build one with `sandtrail-bench build --events 10000000 --sessions 1000 --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    println!("results:");
    let mut times = Vec::new();
    for run in 0..runs {
        let dropped = cold && run == 0 && drop_caches();
        let cpu0 = util::thread_cpu();
        let (report, took) = util::timed(|| verify_store(&layout, &VerifyOptions::default()));
        let cpu = util::cpu_by_name(&cpu0, &util::thread_cpu())
            .values()
            .sum::<Duration>();
        let report = report?;
        if !report.ok() {
            bail!("verification failed: {:?}", report.problems);
        }
        println!(
            "  run {}{}: VERIFY {} records, {} checkpoints, {} key epochs in {:.3} s = {} events/s \
             (CPU {:.3} s)",
            run + 1,
            if dropped {
                " (page cache dropped first)"
            } else {
                ""
            },
            num(report.records),
            num(report.checkpoints as u64),
            report.epochs,
            took.as_secs_f64(),
            rate(report.records, took),
            cpu.as_secs_f64()
        );
        times.push((report.records, took));
    }
    breakdown(&layout)?;
    Ok(())
}

/// The same work as verification's record pass, phase by phase, with the store's public APIs.
fn breakdown(layout: &Layout) -> Result<()> {
    let segments = segment::list(layout)?;
    let mut t_footer = Duration::ZERO;
    let mut t_leaves = Duration::ZERO;
    let mut t_zstd = Duration::ZERO;
    let mut t_hash = Duration::ZERO;
    let mut t_frontier = Duration::ZERO;
    let mut t_raw = Duration::ZERO;
    let mut leaf_bytes = 0u64;
    let mut blocks = 0u64;
    let mut frontier = Frontier::new();
    let mut dctx = zstd::bulk::Decompressor::new()?;
    for files in segments.values() {
        let mut hashes = Vec::new();
        if let Some(path) = &files.raw {
            let (seg, d) = util::timed(|| RawSegment::read(path));
            t_raw += d;
            let seg = seg?;
            let (_, d) = util::timed(|| {
                for (_, f) in seg.frames(false).flatten() {
                    leaf_bytes += f.leaf.len() as u64;
                    hashes.push(leaf_hash(f.leaf));
                }
            });
            t_hash += d;
        } else if let Some(path) = &files.sealed {
            let (seg, d) = util::timed(|| SealedSegment::open(path));
            t_footer += d;
            let seg = seg?;
            blocks += seg.footer.blocks.len() as u64;
            // pread + zstd alone, one reused context (what SealedSegment::leaves also does).
            let file = std::fs::File::open(path)?;
            let (r, d) = util::timed(|| -> Result<()> {
                for b in &seg.footer.blocks {
                    let mut z = vec![0u8; b.len as usize];
                    file.read_exact_at(&mut z, b.offset)?;
                    let cap = zstd::zstd_safe::get_frame_content_size(&z)
                        .ok()
                        .flatten()
                        .unwrap_or(64 << 20) as usize;
                    std::hint::black_box(dctx.decompress(&z, cap)?);
                }
                Ok(())
            });
            r?;
            t_zstd += d;
            let (leaves, d) = util::timed(|| seg.leaves());
            t_leaves += d;
            let leaves = leaves?;
            let (_, d) = util::timed(|| {
                for (_, l) in leaves.iter() {
                    leaf_bytes += l.len() as u64;
                    hashes.push(leaf_hash(l));
                }
            });
            t_hash += d;
        }
        let (_, d) = util::timed(|| {
            for h in hashes {
                frontier.append(h);
            }
        });
        t_frontier += d;
    }
    let n = frontier.size();
    let total = t_footer + t_leaves + t_hash + t_frontier + t_raw;
    let per = |d: Duration| {
        format!(
            "{:>8.1} ns/event  {:>12}",
            d.as_nanos() as f64 / n as f64,
            ms(d)
        )
    };
    println!(
        "  breakdown of the record pass, replayed phase by phase ({} records, {} sealed blocks, \
         mean leaf {:.0} bytes):",
        num(n),
        num(blocks),
        leaf_bytes as f64 / n as f64
    );
    println!(
        "    open sealed segments (JSON footer)         {}",
        per(t_footer)
    );
    println!(
        "    SealedSegment::leaves (pread, zstd, sort)  {}   (pread + zstd alone: {})",
        per(t_leaves),
        ms(t_zstd)
    );
    println!(
        "    SHA-256 leaf hashes                        {}   ({:.0} MB/s)",
        per(t_hash),
        leaf_bytes as f64 / t_hash.as_secs_f64() / 1e6
    );
    println!(
        "    Merkle frontier appends                    {}",
        per(t_frontier)
    );
    println!(
        "    read raw (unsealed) segments               {}",
        per(t_raw)
    );
    println!(
        "    sum                                        {}  = {} events/s",
        per(total),
        rate(n, total)
    );
    Ok(())
}
