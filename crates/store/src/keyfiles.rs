//! Reading the public half of a store's key directory, without touching private keys.

use std::path::Path;

use sandtrail_ledger::keys::{split_notes, KeyChain, ANCHOR_FILE, ROTATIONS_FILE};
use sandtrail_ledger::note::Verifier;

use crate::StoreError;

/// The epoch-0 verifier key stored in `dir`.
pub fn read_anchor(dir: &Path) -> Result<Verifier, StoreError> {
    let path = dir.join(ANCHOR_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NoStore(dir.parent().unwrap_or(dir).display().to_string())
        } else {
            StoreError::io(format!("reading {}", path.display()))(e)
        }
    })?;
    Verifier::from_vkey(text.trim())
        .map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))
}

/// The signed rotation notes stored in `dir`, oldest first (not yet verified).
pub fn read_rotation_notes(dir: &Path) -> Result<Vec<String>, StoreError> {
    let path = dir.join(ROTATIONS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()))(e)),
    };
    let notes =
        split_notes(&text).map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))?;
    Ok(notes.into_iter().map(str::to_string).collect())
}

/// The verified key chain stored in `dir`, trusting its own anchor.
pub fn read_chain(dir: &Path) -> Result<KeyChain, StoreError> {
    let mut chain = KeyChain::new(read_anchor(dir)?);
    for (i, note) in read_rotation_notes(dir)?.iter().enumerate() {
        chain
            .push_rotation(note)
            .map_err(|e| StoreError::Key(format!("key rotation #{}: {e}", i + 1)))?;
    }
    Ok(chain)
}
