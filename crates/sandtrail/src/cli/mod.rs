//! One module per verb; [`dispatch`] routes a parsed command line to it.

pub mod daemon;
pub mod demo;
pub mod ingest;
pub mod key;
pub mod query;
pub mod run;
pub mod timeline;
pub mod verify;

use std::process::ExitCode;

use anyhow::{Context, Result};
use sandtrail_store::{Layout, StoreConfig, Writer};

use crate::{Cli, Command};

/// Run the command.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let layout = Layout::new(&cli.state_dir);
    match cli.command {
        Command::Ingest(a) => ingest::run(&layout, a),
        Command::Demo(a) => demo::run(&layout, a),
        Command::Run(a) => run::run(&layout, a),
        Command::Daemon(a) => daemon::run(&layout, a),
        Command::Pause(a) => run::control_cmd(&layout, a, crate::session::control::Command::Pause),
        Command::Resume(a) => {
            run::control_cmd(&layout, a, crate::session::control::Command::Resume)
        }
        Command::Stop(a) => run::control_cmd(&layout, a, crate::session::control::Command::Stop),
        Command::Query(a) => query::run_query(&layout, a),
        Command::Sessions(a) => query::run_sessions(&layout, a),
        Command::Timeline(a) => timeline::run(&layout, a),
        Command::Verify(a) => verify::run_verify(&layout, a),
        Command::Export(a) => verify::run_export(&layout, a),
        Command::Consistency(a) => verify::run_consistency(&layout, a),
        Command::Key(k) => key::run_key(&layout, k),
        Command::Checkpoint => key::run_checkpoint(&layout),
        Command::Checkpoints(a) => key::run_checkpoints(&layout, a),
        Command::Schema => {
            println!("{}", sandtrail_event::schema_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Open the store for writing with the default configuration.
pub fn open_writer(layout: &Layout) -> Result<Writer> {
    let w = Writer::open(layout, StoreConfig::default())
        .with_context(|| format!("opening the store in {}", layout.root().display()))?;
    if w.recovery().unclean {
        eprintln!("sandtrail: recovered: {}", w.recovery().describe());
    }
    Ok(w)
}

/// Open the store for writing as [`open_writer`] does, for `run` and the daemon: the store's
/// ledger, seal and index threads run on the kernel reader's CPU
/// ([`sandtrail_bpf::on_reader_cpu`]), where they take less of the audited workload's time.
pub fn open_session_writer(layout: &Layout) -> Result<Writer> {
    let (w, pinned) = sandtrail_bpf::on_reader_cpu(|| open_writer(layout));
    if let Err(why) = pinned {
        eprintln!(
            "sandtrail: the store's threads run on any CPU (pinning them beside the kernel reader failed: {why}); sealing takes a little more of the workload's time"
        );
    }
    w
}

/// Read a file that holds a key or a note, or take the argument itself when it is not a file.
pub fn file_or_literal(arg: &str) -> Result<String> {
    let p = std::path::Path::new(arg);
    if p.is_file() {
        std::fs::read_to_string(p).with_context(|| format!("reading {arg}"))
    } else {
        Ok(arg.to_string())
    }
}
