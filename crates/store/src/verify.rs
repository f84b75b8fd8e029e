//! Verifying a whole store: key chain, every checkpoint's signature, every record's hash,
//! seq continuity, and the Merkle root at every checkpointed size.
//!
//! Every finding says what is wrong, where, and what it means; the report lists all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use sandtrail_ledger::keys::KeyChain;
use sandtrail_ledger::note::Verifier;
use sandtrail_ledger::{leaf_hash, Frontier};

use crate::checkpoints;
use crate::layout::Layout;
use crate::segment::frame::{leaf_seq, read_frame};
use crate::segment::raw::{RawSegment, RAW_HEADER};
use crate::segment::sealed::SealedSegment;
use crate::segment::{self};
use crate::StoreError;

/// What to verify against.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The epoch-0 verifier key to trust. Without it the store's own `keys/anchor.vkey` is
    /// used, which only proves the store is consistent with itself.
    pub anchor: Option<Verifier>,
    /// Extra signed checkpoints (e.g. shipped off the host earlier), each with a label.
    pub extra_checkpoints: Vec<(String, String)>,
    /// Told the number of records checked so far, after each segment.
    pub progress: Option<Progress>,
}

/// A callback told how many records have been processed so far.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Category of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A record's bytes no longer match its leaf hash, or are not a canonical event.
    Modified,
    /// Seqs are missing.
    Deleted,
    /// A record is not at the position its seq says.
    Reordered,
    /// The store holds fewer records than a checkpoint covers.
    Truncated,
    /// A checkpoint's signature or content is not valid.
    BadCheckpoint,
    /// A key rotation record is not valid.
    BadRotation,
    /// The records do not hash to a checkpoint's root.
    RootMismatch,
    /// A file is unreadable or structurally damaged.
    Damaged,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Category.
    pub kind: ProblemKind,
    /// Precise description.
    pub message: String,
}

/// The outcome of verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Key epochs in the chain.
    pub epochs: usize,
    /// Size covered by the newest valid checkpoint.
    pub covered: u64,
    /// Merkle root of all records read (hex).
    pub root: String,
    /// Problems: any makes verification fail.
    pub problems: Vec<Problem>,
    /// Notes that do not make verification fail.
    pub warnings: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, kind: ProblemKind, message: String) {
        self.problems.push(Problem { kind, message });
    }
}

/// A checkpoint accepted for comparison.
struct Cp {
    label: String,
    size: u64,
    root: [u8; 32],
}

/// Load the key chain: the anchor plus every rotation, each checked against the previous key.
pub(crate) fn load_chain(
    keys_dir: &Path,
    anchor: Option<Verifier>,
    report: &mut VerifyReport,
) -> Result<KeyChain, StoreError> {
    let anchor = match anchor {
        Some(a) => a,
        None => {
            report.warnings.push(
                "trusting the anchor key stored in the state directory; pass --key with the \
                 verifier key you hold to rule out a replaced store"
                    .into(),
            );
            crate::keyfiles::read_anchor(keys_dir)?
        }
    };
    let mut chain = KeyChain::new(anchor);
    let notes = crate::keyfiles::read_rotation_notes(keys_dir)?;
    for (i, note) in notes.iter().enumerate() {
        if let Err(e) = chain.push_rotation(note) {
            report.problem(
                ProblemKind::BadRotation,
                format!(
                    "key rotation #{} (to epoch {}) is not valid: {e}; checkpoints signed by later keys cannot be trusted",
                    i + 1,
                    i + 1
                ),
            );
            break;
        }
    }
    report.epochs = chain.keys().len();
    Ok(chain)
}

fn fmt_time(ns: Option<u64>) -> String {
    ns.map(sandtrail_event::format_ts)
        .unwrap_or_else(|| "unknown time".into())
}

/// Verify the store in `layout`.
pub fn verify_store(layout: &Layout, opts: &VerifyOptions) -> Result<VerifyReport, StoreError> {
    let info = crate::recovery::read_info(layout)?;
    let mut report = VerifyReport::default();
    let chain = load_chain(&layout.keys(), opts.anchor.clone(), &mut report)?;

    // Checkpoints: signature by a key of the chain, valid for the size it covers, our origin.
    let log = checkpoints::read(&layout.checkpoints())?;
    if log.valid_len < log.file_len {
        report.warnings.push(format!(
            "checkpoints.log ends with {} bytes of an incomplete checkpoint (a writer crashed or is writing)",
            log.file_len - log.valid_len
        ));
    }
    let mut cps: Vec<Cp> = Vec::new();
    let labelled = log
        .notes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("checkpoint #{}", i + 1), n.clone()))
        .chain(opts.extra_checkpoints.iter().cloned());
    for (label, note) in labelled {
        report.checkpoints += 1;
        match chain.verify_checkpoint(&note) {
            Ok((cp, epoch)) => {
                if cp.origin != info.origin {
                    report.problem(
                        ProblemKind::BadCheckpoint,
                        format!(
                            "{label} is for log {:?}, not this store's {:?}",
                            cp.origin, info.origin
                        ),
                    );
                    continue;
                }
                cps.push(Cp {
                    label: format!(
                        "{label} (size {}, signed {} by the epoch {epoch} key)",
                        cp.size,
                        fmt_time(cp.time_ns())
                    ),
                    size: cp.size,
                    root: cp.root,
                });
            }
            Err(e) => report.problem(
                ProblemKind::BadCheckpoint,
                format!("{label} is forged, re-signed or damaged: {e}"),
            ),
        }
    }
    let mut by_size: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, cp) in cps.iter().enumerate() {
        by_size.entry(cp.size).or_default().push(i);
    }
    if let Some(idx) = by_size.get(&0) {
        for &i in idx {
            if cps[i].root != sandtrail_ledger::EMPTY_ROOT {
                let label = cps[i].label.clone();
                report.problem(
                    ProblemKind::RootMismatch,
                    format!("{label} claims a non-empty root for an empty log"),
                );
            }
        }
    }

    // Records, in order.
    let mut frontier = Frontier::new();
    let mut expected: u64 = 0;
    let mut missing: BTreeSet<u64> = BTreeSet::new();
    let mut last_ok_size = 0u64;
    let mut diverged = 0usize;
    let segments = segment::list(layout).map_err(StoreError::io("listing segments"))?;
    let nseg = segments.len();
    let mut check_record = |report: &mut VerifyReport,
                            frontier: &mut Frontier,
                            leaf: &[u8],
                            stored: Option<&[u8; 32]>,
                            place: &dyn Fn() -> String| {
        let pos = frontier.size();
        let hash = leaf_hash(leaf);
        if stored.is_some_and(|s| *s != hash) {
            report.problem(
                ProblemKind::Modified,
                format!(
                    "record at position {pos} ({}) was modified: its bytes no longer match its leaf hash",
                    place()
                ),
            );
        }
        match leaf_seq(leaf) {
            None => report.problem(
                ProblemKind::Modified,
                format!(
                    "record at position {pos} ({}) is not a canonical sandtrail event",
                    place()
                ),
            ),
            Some(seq) if seq == expected => expected += 1,
            Some(seq) if seq > expected => {
                missing.extend(expected..seq);
                expected = seq + 1;
            }
            Some(seq) => {
                if missing.remove(&seq) {
                    report.problem(
                        ProblemKind::Reordered,
                        format!(
                            "record seq {seq} is at position {pos} ({}): records were reordered",
                            place()
                        ),
                    );
                } else {
                    report.problem(
                        ProblemKind::Reordered,
                        format!(
                            "record seq {seq} appears again at position {pos} ({}): duplicated or reordered",
                            place()
                        ),
                    );
                }
            }
        }
        frontier.append(hash);
        let size = frontier.size();
        if let Some(idx) = by_size.get(&size) {
            let root = frontier.root();
            for &i in idx {
                if cps[i].root == root {
                    if diverged == 0 {
                        last_ok_size = last_ok_size.max(size);
                    }
                } else if diverged == 0 {
                    diverged = 1;
                    report.problem(
                        ProblemKind::RootMismatch,
                        format!(
                            "the records do not match {}: a record in seqs {}..{} was changed, inserted, removed or moved",
                            cps[i].label,
                            last_ok_size,
                            size - 1
                        ),
                    );
                } else {
                    // Every later root covers the same altered prefix: counted, not repeated.
                    diverged += 1;
                }
            }
        }
    };
    for (i, (&first, files)) in segments.iter().enumerate() {
        if let Some(p) = &opts.progress {
            (p.0)(frontier.size());
        }
        let last_segment = i + 1 == nseg;
        if let Some(path) = &files.raw {
            let seg = match RawSegment::read(path) {
                Ok(s) => s,
                Err(e) => {
                    report.problem(ProblemKind::Damaged, e.to_string());
                    continue;
                }
            };
            if seg.first_seq != first {
                report.problem(
                    ProblemKind::Damaged,
                    format!(
                        "{}: header says first seq {}",
                        path.display(),
                        seg.first_seq
                    ),
                );
            }
            let mut pos = RAW_HEADER;
            while pos < seg.bytes.len() {
                match read_frame(&seg.bytes[pos..], false) {
                    Ok(frame) => {
                        let at = pos;
                        let name = path.display().to_string();
                        check_record(
                            &mut report,
                            &mut frontier,
                            frame.leaf,
                            Some(frame.stored_hash),
                            &|| format!("{name} byte {at}"),
                        );
                        pos += frame.len;
                    }
                    Err(fault) => {
                        let msg = format!("{} byte {pos}: {fault}", path.display());
                        if last_segment && frontier.size() >= report_covered(&cps) {
                            report.warnings.push(format!(
                                "{msg}; the record is past the newest checkpoint (a writer crashed or is appending)"
                            ));
                        } else {
                            report.problem(
                                ProblemKind::Damaged,
                                format!("{msg}: the rest of this segment cannot be read"),
                            );
                        }
                        break;
                    }
                }
            }
        } else if let Some(path) = &files.sealed {
            let seg = match SealedSegment::open(path) {
                Ok(s) => s,
                Err(e) => {
                    report.problem(ProblemKind::Damaged, e.to_string());
                    continue;
                }
            };
            let leaves = match seg.leaves() {
                Ok(l) => l,
                Err(e) => {
                    report.problem(ProblemKind::Damaged, e.to_string());
                    continue;
                }
            };
            let name = path.display().to_string();
            for (seq, leaf) in leaves.iter() {
                check_record(&mut report, &mut frontier, leaf, None, &|| {
                    format!("{name}, sealed, seq {seq}")
                });
            }
        }
    }
    if let Some(p) = &opts.progress {
        (p.0)(frontier.size());
    }
    report.records = frontier.size();
    report.root = hex::encode(frontier.root());
    report.covered = last_ok_size;

    // Gaps that never showed up later are deletions.
    let mut missing_ranges: Vec<(u64, u64)> = Vec::new();
    for s in missing {
        match missing_ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => missing_ranges.push((s, s)),
        }
    }
    for (lo, hi) in missing_ranges {
        let what = if lo == hi {
            format!("seq {lo} is missing")
        } else {
            format!("seqs {lo}..{hi} are missing")
        };
        report.problem(
            ProblemKind::Deleted,
            format!("{what}: records were deleted from the log"),
        );
    }
    if diverged > 1 {
        report.warnings.push(format!(
            "{} later checkpoints do not match either: each covers the altered records",
            diverged - 1
        ));
    }
    // Checkpoints beyond the end: truncation, reported against the one that covers most.
    if let Some(cp) = cps
        .iter()
        .filter(|cp| cp.size > report.records)
        .max_by_key(|cp| cp.size)
    {
        report.problem(
            ProblemKind::Truncated,
            format!(
                "the store holds {} records but {} covers {}: the log was truncated ({} records missing)",
                report.records,
                cp.label,
                cp.size,
                cp.size - report.records,
            ),
        );
    }
    if cps.is_empty() && report.records > 0 {
        report.problem(
            ProblemKind::BadCheckpoint,
            "no valid signed checkpoint covers the records: nothing vouches for them".into(),
        );
    }
    let newest = report_covered(&cps);
    if report.records > newest && !cps.is_empty() {
        report.warnings.push(format!(
            "{} records after the newest checkpoint (size {newest}) are not yet covered by a signature",
            report.records - newest
        ));
    }
    if layout.running().exists() {
        report.warnings.push(
            "a writer has the store open (or crashed): the newest records may still be changing"
                .into(),
        );
    }
    Ok(report)
}

fn report_covered(cps: &[Cp]) -> u64 {
    cps.iter().map(|c| c.size).max().unwrap_or(0)
}
