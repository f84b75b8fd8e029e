//! Proofs built from the whole log: the Merkle tree of every leaf up to a checkpoint, and
//! consistency proofs that a later checkpoint extends an earlier one.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use sandtrail_ledger::checkpoint::Checkpoint;
use sandtrail_ledger::keys::KeyChain;
use sandtrail_ledger::merkle::{hash_from_slice, verify_consistency};
use sandtrail_ledger::note::Verifier;
use sandtrail_ledger::{leaf_hash, MemTree};

use crate::layout::Layout;
use crate::reader::segment_leaves;
use crate::{checkpoints, keyfiles, segment, StoreError};

/// Hash the first `size` leaves of the store into a tree, handing each leaf to `visit`.
pub fn build_tree(
    layout: &Layout,
    size: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<MemTree, StoreError> {
    let mut tree = MemTree::new();
    'outer: for files in segment::list(layout)
        .map_err(StoreError::io("listing segments"))?
        .values()
    {
        for (seq, leaf) in segment_leaves(files)?.iter() {
            if tree.size() >= size {
                break 'outer;
            }
            if seq != tree.size() {
                return Err(StoreError::Corrupt(format!(
                    "record seq {seq} found where seq {} belongs",
                    tree.size()
                )));
            }
            tree.push(leaf_hash(leaf));
            visit(seq, leaf);
        }
    }
    if tree.size() < size {
        return Err(StoreError::Corrupt(format!(
            "the store holds {} records, fewer than the {size} a checkpoint covers",
            tree.size()
        )));
    }
    Ok(tree)
}

/// The key chain and newest checkpoint of a store, verified against its own anchor.
pub fn newest_checkpoint(layout: &Layout) -> Result<(KeyChain, Checkpoint, String), StoreError> {
    let chain = keyfiles::read_chain(&layout.keys())?;
    let log = checkpoints::read(&layout.checkpoints())?;
    let note = log
        .notes
        .last()
        .ok_or_else(|| StoreError::Corrupt("the store has no checkpoint yet".into()))?
        .clone();
    let (cp, _) = chain
        .verify_checkpoint(&note)
        .map_err(|e| StoreError::Corrupt(format!("the newest checkpoint does not verify: {e}")))?;
    Ok((chain, cp, note))
}

/// Format tag of consistency proofs.
pub const CONSISTENCY_FORMAT: &str = "sandtrail.consistency/1";

/// Proof that the store's newest checkpoint extends an older one: nothing the older one
/// covered was changed or removed since.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Always [`CONSISTENCY_FORMAT`].
    pub format: String,
    /// The older signed checkpoint (as the verifier kept it).
    pub old: String,
    /// The newer signed checkpoint.
    pub new: String,
    /// Signed key rotation notes, in order (needed when the keys rotated in between).
    pub rotations: Vec<String>,
    /// RFC 9162 consistency proof hashes, base64.
    pub proof: Vec<String>,
}

/// Prove that the newest checkpoint extends `old` (a signed checkpoint of this store).
pub fn prove_consistency(layout: &Layout, old: &str) -> Result<ConsistencyProof, StoreError> {
    let (chain, new, new_note) = newest_checkpoint(layout)?;
    let (old_cp, _) = chain.verify_checkpoint(old).map_err(|e| {
        StoreError::Key(format!(
            "the old checkpoint is not one of this store's: {e}"
        ))
    })?;
    if old_cp.size > new.size {
        return Err(StoreError::Corrupt(format!(
            "the old checkpoint covers {} records but the newest covers only {}: the log was truncated",
            old_cp.size, new.size
        )));
    }
    let tree = build_tree(layout, new.size, |_, _| {})?;
    if tree.root_at(old_cp.size).ok() != Some(old_cp.root) {
        return Err(StoreError::Corrupt(format!(
            "the records no longer match the old checkpoint (size {}): run `sandtrail verify --checkpoint`",
            old_cp.size
        )));
    }
    let proof = tree
        .consistency_proof(old_cp.size, new.size)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.into(),
        old: old.to_string(),
        new: new_note,
        rotations: chain.rotations().iter().map(|(_, n)| n.clone()).collect(),
        proof: proof.iter().map(|h| B64.encode(h)).collect(),
    })
}

/// Check a consistency proof offline against the epoch-0 key; returns (old size, new size).
pub fn verify_consistency_proof(
    p: &ConsistencyProof,
    anchor: &Verifier,
) -> Result<(u64, u64), String> {
    if p.format != CONSISTENCY_FORMAT {
        return Err(format!(
            "format is {:?}, expected {CONSISTENCY_FORMAT:?}",
            p.format
        ));
    }
    let mut chain = KeyChain::new(anchor.clone());
    for (i, r) in p.rotations.iter().enumerate() {
        chain
            .push_rotation(r)
            .map_err(|e| format!("key rotation #{} is not valid: {e}", i + 1))?;
    }
    let (old, _) = chain
        .verify_checkpoint(&p.old)
        .map_err(|e| format!("the old checkpoint is forged, re-signed or damaged: {e}"))?;
    let (new, _) = chain
        .verify_checkpoint(&p.new)
        .map_err(|e| format!("the new checkpoint is forged, re-signed or damaged: {e}"))?;
    let proof = p
        .proof
        .iter()
        .map(|h| {
            B64.decode(h)
                .map_err(|e| e.to_string())
                .and_then(|b| hash_from_slice(&b).map_err(|e| e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("proof hash: {e}"))?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(|e| {
        format!(
            "the log of size {} does not extend the log of size {}: {e}",
            new.size, old.size
        )
    })?;
    Ok((old.size, new.size))
}
