//! `sandtrail verify` and `sandtrail export`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use sandtrail_ledger::note::Verifier;
use sandtrail_store::bundle::{export, verify_bundle, Bundle};
use sandtrail_store::proofs::{prove_consistency, verify_consistency_proof, ConsistencyProof};
use sandtrail_store::verify::{verify_store, Problem, Progress, VerifyOptions};

use crate::output::{finish_progress, progress};
use sandtrail_store::Layout;

use super::file_or_literal;

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Check this exported bundle instead of the store (needs no store).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// The epoch-0 verifier key you trust (the key itself, or a file holding it), as printed
    /// by `sandtrail key show`. Without it the key stored next to the data is trusted.
    #[arg(long)]
    pub key: Option<String>,
    /// A signed checkpoint saved earlier (e.g. shipped off the host); the store must still
    /// hold everything it covers. Repeatable.
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// Check this consistency proof (from `sandtrail consistency`) instead of the store;
    /// needs --key.
    #[arg(long, conflicts_with = "bundle")]
    pub consistency: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `consistency`.
#[derive(Args, Debug)]
pub struct ConsistencyArgs {
    /// A signed checkpoint of this store you kept earlier (e.g. `sandtrail checkpoints --last`).
    pub old: PathBuf,
    /// Where to write the proof.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// Arguments of `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The session to export.
    pub session: String,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

fn read_key(arg: &Option<String>) -> Result<Option<Verifier>> {
    arg.as_deref()
        .map(|k| {
            let text = file_or_literal(k)?;
            Verifier::from_vkey(text.trim()).map_err(|e| {
                anyhow!("--key {k:?} is not a verifier key ({e}); `sandtrail key show` prints one")
            })
        })
        .transpose()
}

fn print_problems(problems: &[Problem], warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    for p in problems {
        println!(
            "  [{}] {}",
            serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            p.message
        );
    }
}

/// Run `verify`.
pub fn run_verify(layout: &Layout, a: VerifyArgs) -> Result<ExitCode> {
    let anchor = read_key(&a.key)?;
    if let Some(path) = &a.consistency {
        let anchor = anchor.ok_or_else(|| {
            anyhow!("--consistency needs --key: the epoch-0 verifier key you trust (`sandtrail key show` on the host prints it)")
        })?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let proof: ConsistencyProof = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a sandtrail consistency proof", path.display()))?;
        return Ok(match verify_consistency_proof(&proof, &anchor) {
            Ok((old, new)) => {
                println!("OK: the signed log of size {new} extends the signed log of size {old}: nothing the older checkpoint covered was changed or removed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAILED: {e}");
                ExitCode::from(1)
            }
        });
    }
    if let Some(path) = &a.bundle {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading bundle {}", path.display()))?;
        let bundle: Bundle = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a sandtrail bundle", path.display()))?;
        let r = verify_bundle(&bundle, anchor);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else if r.problems.is_empty() {
            print_problems(&[], &r.warnings);
            println!(
                "OK: bundle {} proves {} events of session {} against a signed checkpoint of size {}",
                path.display(),
                r.events,
                r.session_id,
                r.checkpoint_size
            );
        } else {
            println!(
                "FAILED: bundle {} has {} problem(s):",
                path.display(),
                r.problems.len()
            );
            print_problems(&r.problems, &r.warnings);
        }
        return Ok(if r.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let mut extra = Vec::new();
    for p in &a.checkpoint {
        let note = std::fs::read_to_string(p)
            .with_context(|| format!("reading checkpoint {}", p.display()))?;
        extra.push((format!("checkpoint from {}", p.display()), note));
    }
    let report = verify_store(
        layout,
        &VerifyOptions {
            anchor,
            extra_checkpoints: extra,
            progress: Some(Progress(Arc::new(progress("verified")))),
        },
    )?;
    finish_progress();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok() {
        print_problems(&[], &report.warnings);
        println!(
            "OK: {} records verified against {} signed checkpoints ({} key epoch{}); newest checkpoint covers {}; root {}",
            report.records,
            report.checkpoints,
            report.epochs,
            if report.epochs == 1 { "" } else { "s" },
            report.covered,
            report.root
        );
    } else {
        println!(
            "FAILED: {} problem(s) in {} ({} records read):",
            report.problems.len(),
            layout.root().display(),
            report.records
        );
        print_problems(&report.problems, &report.warnings);
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Run `export`.
pub fn run_export(layout: &Layout, a: ExportArgs) -> Result<ExitCode> {
    let bundle = export(layout, &a.session, &progress("hashed"))?;
    finish_progress();
    let json = serde_json::to_vec_pretty(&bundle)?;
    let tmp = a.output.with_extension("partial");
    std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "wrote {}: {} events of session {}, proven against a signed checkpoint",
        a.output.display(),
        bundle.events.len(),
        a.session
    );
    println!(
        "check it anywhere with: sandtrail verify --bundle {} --key '{}'",
        a.output.display(),
        bundle.anchor
    );
    Ok(ExitCode::SUCCESS)
}

/// Run `consistency`.
pub fn run_consistency(layout: &Layout, a: ConsistencyArgs) -> Result<ExitCode> {
    let old = std::fs::read_to_string(&a.old)
        .with_context(|| format!("reading checkpoint {}", a.old.display()))?;
    let proof = prove_consistency(layout, &old)?;
    let json = serde_json::to_vec_pretty(&proof)?;
    let tmp = a.output.with_extension("partial");
    std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "wrote {}; check it with: sandtrail verify --consistency {} --key <epoch-0 key>",
        a.output.display(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
