//! `sandtrail demo`: the main job until the sandbox exists — generate an agent session,
//! ingest it, print its timeline and verify the store.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use sandtrail_event::generate::Generator;
use sandtrail_store::verify::{verify_store, VerifyOptions};
use sandtrail_store::{now_ns, Layout};

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Session id to give the demo session (default: a fresh one).
    #[arg(long)]
    pub session_id: Option<String>,
}

/// Run `demo`.
pub fn run(layout: &Layout, a: DemoArgs) -> Result<ExitCode> {
    let now = now_ns();
    let session = a
        .session_id
        .unwrap_or_else(|| format!("ses_demo_{:x}", now / 1_000_000));
    let mut w = super::open_writer(layout)?;
    let host = sandtrail_store::recovery::default_host_id();
    let mut generator = Generator::new(now, &host, now);
    let events = generator.demo_session(&session);
    let n = events.len();
    w.append_all(events)?;
    let commit = w.close()?;
    println!(
        "ingested demo session {session}: {n} events into {} (log size {})\n",
        layout.root().display(),
        commit.size
    );
    super::timeline::run(
        layout,
        super::timeline::TimelineArgs {
            session: session.clone(),
            jsonl: false,
        },
    )?;
    let report = verify_store(layout, &VerifyOptions::default())?;
    println!();
    if report.ok() {
        println!(
            "verify: OK: {} records match {} signed checkpoints; root {}",
            report.records, report.checkpoints, report.root
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verify: FAILED:");
        for p in &report.problems {
            println!("  {}", p.message);
        }
        Ok(ExitCode::from(1))
    }
}
