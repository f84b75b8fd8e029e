//! Exported bundles: one session's events with inclusion proofs against a signed checkpoint,
//! plus the key chain, so anyone holding the epoch-0 verifier key can check them offline.

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use sandtrail_event::{decode_leaf, Event};
use sandtrail_ledger::keys::KeyChain;
use sandtrail_ledger::leaf_hash;
use sandtrail_ledger::merkle::{hash_from_slice, verify_inclusion};
use sandtrail_ledger::note::Verifier;

use crate::index::Index;
use crate::layout::Layout;
use crate::segment::frame::leaf_seq;
use crate::verify::{Problem, ProblemKind};
use crate::{now_ns, StoreError};

/// Format tag of bundles.
pub const BUNDLE_FORMAT: &str = "sandtrail.bundle/1";

/// A self-contained, verifiable export of one session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Log origin (checkpoint and key name).
    pub origin: String,
    /// The exported session.
    pub session_id: String,
    /// When it was exported (unix ns).
    pub exported_ns: u64,
    /// Epoch-0 verifier key of the store (informative: verify against a key you hold).
    pub anchor: String,
    /// Signed key rotation notes, in order.
    pub rotations: Vec<String>,
    /// The signed checkpoint every proof leads to.
    pub checkpoint: String,
    /// The session's events.
    pub events: Vec<BundleEvent>,
}

/// One event and its inclusion proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEvent {
    /// Leaf index.
    pub seq: u64,
    /// Canonical leaf bytes, base64.
    pub leaf: String,
    /// Inclusion proof hashes, base64.
    pub proof: Vec<String>,
}

/// Export `session_id` from the store, proving every event against the newest checkpoint.
/// `progress` is told how many records of the log have been hashed so far.
pub fn export(
    layout: &Layout,
    session_id: &str,
    progress: &dyn Fn(u64),
) -> Result<Bundle, StoreError> {
    let info = crate::recovery::read_info(layout)?;
    let index = Index::open(&layout.index())?;
    let sid = index.sid(session_id)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "no session {session_id:?} in the index; `sandtrail sessions` lists the sessions"
        ))
    })?;
    let anchor = crate::keyfiles::read_anchor(&layout.keys())?;
    let (chain, cp, note) = crate::proofs::newest_checkpoint(layout)?;
    let rotations: Vec<String> = chain.rotations().iter().map(|(_, n)| n.clone()).collect();
    let wanted: HashSet<u64> = index
        .session_events(sid, None, None)?
        .into_iter()
        .map(|(seq, _)| seq)
        .filter(|&s| s < cp.size)
        .collect();
    let mut leaves: Vec<(u64, Vec<u8>)> = Vec::with_capacity(wanted.len());
    let tree = crate::proofs::build_tree(layout, cp.size, |seq, leaf| {
        if seq % 65536 == 0 {
            progress(seq);
        }
        if wanted.contains(&seq) {
            leaves.push((seq, leaf.to_vec()));
        }
    })?;
    if tree.root() != cp.root {
        return Err(StoreError::Corrupt(format!(
            "the records do not match the newest checkpoint (size {}); run `sandtrail verify`",
            cp.size
        )));
    }
    let mut events = Vec::with_capacity(leaves.len());
    for (seq, leaf) in leaves {
        let proof = tree
            .inclusion_proof(seq, cp.size)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        events.push(BundleEvent {
            seq,
            leaf: B64.encode(&leaf),
            proof: proof.iter().map(|h| B64.encode(h)).collect(),
        });
    }
    Ok(Bundle {
        format: BUNDLE_FORMAT.into(),
        origin: info.origin,
        session_id: session_id.to_string(),
        exported_ns: now_ns(),
        anchor: anchor.to_vkey(),
        rotations,
        checkpoint: note,
        events,
    })
}

/// The outcome of checking a bundle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BundleReport {
    /// Session.
    pub session_id: String,
    /// Events proven.
    pub events: usize,
    /// Size of the checkpoint the proofs lead to.
    pub checkpoint_size: u64,
    /// Problems; any makes verification fail.
    pub problems: Vec<Problem>,
    /// Notes.
    pub warnings: Vec<String>,
    /// The decoded events that were proven.
    #[serde(skip)]
    pub proven: Vec<Event>,
}

/// Check a bundle offline against `anchor` (the epoch-0 verifier key the user trusts).
pub fn verify_bundle(bundle: &Bundle, anchor: Option<Verifier>) -> BundleReport {
    let mut r = BundleReport {
        session_id: bundle.session_id.clone(),
        ..Default::default()
    };
    let problem =
        |r: &mut BundleReport, kind, message: String| r.problems.push(Problem { kind, message });
    if bundle.format != BUNDLE_FORMAT {
        problem(
            &mut r,
            ProblemKind::Damaged,
            format!("format is {:?}, expected {BUNDLE_FORMAT:?}", bundle.format),
        );
        return r;
    }
    let anchor = match anchor {
        Some(a) => a,
        None => match Verifier::from_vkey(&bundle.anchor) {
            Ok(a) => {
                r.warnings.push(
                    "trusting the anchor key inside the bundle; pass --key with the verifier key you hold"
                        .into(),
                );
                a
            }
            Err(e) => {
                problem(
                    &mut r,
                    ProblemKind::Damaged,
                    format!("bundle anchor key: {e}"),
                );
                return r;
            }
        },
    };
    let mut chain = KeyChain::new(anchor);
    for (i, note) in bundle.rotations.iter().enumerate() {
        if let Err(e) = chain.push_rotation(note) {
            problem(
                &mut r,
                ProblemKind::BadRotation,
                format!("key rotation #{} is not valid: {e}", i + 1),
            );
            break;
        }
    }
    let (cp, _epoch) = match chain.verify_checkpoint(&bundle.checkpoint) {
        Ok(x) => x,
        Err(e) => {
            problem(
                &mut r,
                ProblemKind::BadCheckpoint,
                format!("the bundle's checkpoint is forged, re-signed or damaged: {e}"),
            );
            return r;
        }
    };
    if cp.origin != bundle.origin {
        problem(
            &mut r,
            ProblemKind::BadCheckpoint,
            format!(
                "checkpoint origin {:?} differs from the bundle's {:?}",
                cp.origin, bundle.origin
            ),
        );
    }
    r.checkpoint_size = cp.size;
    let mut prev: Option<u64> = None;
    for ev in &bundle.events {
        let leaf = match B64.decode(&ev.leaf) {
            Ok(l) => l,
            Err(e) => {
                problem(
                    &mut r,
                    ProblemKind::Damaged,
                    format!("event seq {}: leaf is not base64: {e}", ev.seq),
                );
                continue;
            }
        };
        if prev.is_some_and(|p| p >= ev.seq) {
            problem(
                &mut r,
                ProblemKind::Reordered,
                format!("event seq {} is out of order or repeated", ev.seq),
            );
        }
        prev = Some(ev.seq);
        if leaf_seq(&leaf) != Some(ev.seq) {
            problem(
                &mut r,
                ProblemKind::Modified,
                format!("event at seq {}: the leaf does not carry that seq", ev.seq),
            );
        }
        let proof: Result<Vec<_>, _> = ev
            .proof
            .iter()
            .map(|p| {
                B64.decode(p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| hash_from_slice(&b).map_err(|e| e.to_string()))
            })
            .collect();
        let ok = proof.and_then(|proof| {
            verify_inclusion(ev.seq, cp.size, &leaf_hash(&leaf), &proof, &cp.root)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = ok {
            problem(
                &mut r,
                ProblemKind::Modified,
                format!("event seq {} is not proven by the checkpoint: {e}", ev.seq),
            );
            continue;
        }
        match decode_leaf(&leaf) {
            Ok(e) if e.session_id.as_deref() == Some(bundle.session_id.as_str()) => {
                r.events += 1;
                r.proven.push(e);
            }
            Ok(e) => problem(
                &mut r,
                ProblemKind::Modified,
                format!(
                    "event seq {} belongs to session {:?}, not {:?}",
                    ev.seq, e.session_id, bundle.session_id
                ),
            ),
            Err(e) => problem(
                &mut r,
                ProblemKind::Damaged,
                format!("event seq {}: {e}", ev.seq),
            ),
        }
    }
    r
}
