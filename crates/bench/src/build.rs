//! `build`: make a store of N generated events once, for `query`, `size` and `verify`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandtrail_event::generate::Generator;
use sandtrail_store::{Layout, StoreConfig, Writer};

use crate::util::{self, num, rate};

/// Build a store at `dir` with `events` generated events of `sessions` concurrent sessions.
pub fn build(dir: &Path, events: u64, sessions: u32, seed: u64, force: bool) -> Result<()> {
    util::print_header(
        "build",
        &[
            ("events", num(events)),
            ("sessions", sessions.to_string()),
            ("seed", seed.to_string()),
            ("dir", dir.display().to_string()),
            (
                "config",
                crate::ingest::describe_config("StoreConfig::default()"),
            ),
        ],
    );
    if dir.join("store.json").exists() {
        if !force {
            bail!(
                "{} already holds a store; reuse it, or pass --force to rebuild it",
                dir.display()
            );
        }
        util::remove_dir(dir)?;
    }
    let layout = Layout::new(dir);
    let cfg = StoreConfig {
        host_id: util::HOST.into(),
        ..StoreConfig::default()
    };
    let mut w = Writer::open(&layout, cfg).context("opening the store")?;
    let t0 = Instant::now();
    let mut g = Generator::new(seed, util::HOST, util::T0);
    let mut done = 0u64;
    let stream = g.mixed(sessions).take(events as usize).inspect(|_| {
        done += 1;
        if done.is_multiple_of(1_000_000) {
            println!(
                "  {} events appended after {:.1} s",
                num(done),
                t0.elapsed().as_secs_f64()
            );
        }
    });
    w.append_all(stream)?;
    let commit = w.flush()?;
    let t_flush = t0.elapsed();
    let mut sealed_after = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1800) {
        if util::raw_segments(dir) <= 1 {
            sealed_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    w.close()?;
    println!("results:");
    println!(
        "  built {} records (generation on the same 2 cores included, so this is not the ingest figure) \
         in {:.1} s until flush = {} events/s; all full segments sealed after {}",
        num(commit.size),
        t_flush.as_secs_f64(),
        rate(events, t_flush),
        sealed_after
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "(not within 30 min)".into())
    );
    println!("  peak RSS {:.0} MiB", util::peak_rss_mib());
    Ok(())
}
