//! `sandtrail key show|rotate`, `sandtrail checkpoint`, `sandtrail checkpoints`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sandtrail_ledger::keys::KeyChain;
use sandtrail_store::Layout;

/// Key commands.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Print the verifier keys: the epoch-0 anchor (all a verifier needs) and every later epoch.
    Show,
    /// Start a new key epoch now: the old key signs the rotation and is erased.
    Rotate,
}

/// Arguments of `checkpoints`.
#[derive(Args, Debug)]
pub struct CheckpointsArgs {
    /// Print only the newest signed checkpoint, verbatim (to save it off the host).
    #[arg(long)]
    pub last: bool,
}

fn chain(layout: &Layout) -> Result<KeyChain> {
    let dir = layout.keys();
    sandtrail_store::keyfiles::read_chain(&dir)
        .with_context(|| format!("reading the keys in {}", dir.display()))
}

/// Run a key command.
pub fn run_key(layout: &Layout, cmd: KeyCommand) -> Result<ExitCode> {
    match cmd {
        KeyCommand::Show => {
            let chain = chain(layout)?;
            for (epoch, key) in chain.keys().iter().enumerate() {
                let note = if epoch == 0 {
                    "  (anchor: give this key to verifiers)"
                } else {
                    ""
                };
                println!("epoch {epoch}: {}{note}", key.to_vkey());
            }
        }
        KeyCommand::Rotate => {
            let mut w = super::open_writer(layout)?;
            w.rotate_key()?;
            w.close()?;
            let chain = chain(layout)?;
            let epoch = chain.keys().len() - 1;
            println!(
                "epoch {epoch}: {} (the previous private key was erased)",
                chain.keys()[epoch].to_vkey()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `checkpoint`.
pub fn run_checkpoint(layout: &Layout) -> Result<ExitCode> {
    let mut w = super::open_writer(layout)?;
    let c = w.flush()?;
    w.close()?;
    print!("{}", c.checkpoint.unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// Run `checkpoints`.
pub fn run_checkpoints(layout: &Layout, a: CheckpointsArgs) -> Result<ExitCode> {
    let log = sandtrail_store::checkpoints::read(&layout.checkpoints())?;
    if a.last {
        if let Some(n) = log.notes.last() {
            print!("{n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chain = chain(layout)?;
    println!("{:>6} {:>10}  {:<30} SIGNED BY", "#", "SIZE", "TIME");
    for (i, note) in log.notes.iter().enumerate() {
        match chain.verify_checkpoint(note) {
            Ok((cp, epoch)) => println!(
                "{:>6} {:>10}  {:<30} epoch {epoch} key {}",
                i + 1,
                cp.size,
                cp.time_ns()
                    .map(sandtrail_event::format_ts)
                    .unwrap_or_else(|| "-".into()),
                chain.keys()[epoch as usize].label()
            ),
            Err(e) => println!("{:>6} INVALID: {e}", i + 1),
        }
    }
    Ok(ExitCode::SUCCESS)
}
