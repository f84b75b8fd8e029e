//! `sandtrail ingest`: JSON lines in, signed log out.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use sandtrail_store::Layout;

/// Events per batch handed to the ledger.
const BATCH: usize = 1024;

/// Arguments of `ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// JSON-lines file to read, or `-` for standard input.
    #[arg(default_value = "-")]
    pub input: String,
    /// Report invalid lines and go on, instead of stopping at the first one.
    #[arg(long)]
    pub keep_going: bool,
}

/// Run `ingest`.
pub fn run(layout: &Layout, args: IngestArgs) -> Result<ExitCode> {
    let source: Box<dyn Read> = if args.input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.input).with_context(|| format!("opening {}", args.input))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, source);
    let mut writer = super::open_writer(layout)?;
    let progress = io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut failure: Option<String> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut line = String::new();
    let mut lineno = 0usize;
    loop {
        // Hand what we have to the ledger before a read that may block, so a producer that
        // pauses never leaves its events waiting here.
        if !batch.is_empty() && (batch.len() >= BATCH || reader.buffer().is_empty()) {
            writer.append_batch(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
        }
        line.clear();
        lineno += 1;
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                failure = Some(format!("line {lineno}: cannot read input: {e}"));
                break;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let parsed = sandtrail_event::parse_json_line(&line).and_then(|ev| {
            if ev.kind.as_str().starts_with("ledger.") {
                Err(sandtrail_event::EventError::Invalid {
                    path: "kind".into(),
                    msg: format!(
                        "{:?} events are written only by the ledger itself and cannot be ingested",
                        ev.kind.as_str()
                    ),
                })
            } else {
                Ok(ev)
            }
        });
        match parsed {
            Ok(ev) => {
                batch.push(ev);
                accepted += 1;
            }
            Err(e) => {
                let msg = format!("line {lineno}: {e}");
                if args.keep_going {
                    eprintln!("sandtrail: skipped {msg}");
                    rejected += 1;
                } else {
                    failure = Some(msg);
                    break;
                }
            }
        }
        if progress && last_report.elapsed().as_secs() >= 1 {
            last_report = Instant::now();
            eprint!(
                "\ringested {accepted} events ({:.0}/s)",
                accepted as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    writer.append_batch(batch)?;
    if progress && accepted > 0 {
        eprintln!();
    }
    // Whatever happened, everything accepted so far is made durable and signed.
    let commit = writer.close().context("committing the ingested events")?;
    let summary = format!(
        "{accepted} events committed; the log holds {} records, root {}, covered by a signed checkpoint",
        commit.size,
        hex::encode(commit.root)
    );
    match failure {
        Some(msg) => {
            eprintln!("sandtrail: error: {msg}");
            eprintln!("sandtrail: {summary}; nothing after the bad line was read");
            Ok(ExitCode::from(1))
        }
        None => {
            println!("{summary}");
            if rejected > 0 {
                eprintln!("sandtrail: {rejected} invalid lines were skipped");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
