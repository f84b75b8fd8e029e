//! Tamper evidence for sandtrail.
//!
//! This crate is a pure library (no I/O except the on-disk [`keys::KeyStore`], no logging):
//!
//! - [`merkle`]: RFC 9162 Merkle tree hashing, an O(log n) [`Frontier`] for the single writer,
//!   an in-memory [`MemTree`] for proof generation, and inclusion / consistency proof verification.
//! - [`note`]: C2SP `signed-note` with Ed25519 keys.
//! - [`checkpoint`]: C2SP `tlog-checkpoint` bodies (origin, size, root, extension lines).
//! - [`keys`]: forward-secure epoch keys: rotation records signed by the previous key, a verified
//!   key chain starting at the epoch-0 trust anchor, and the on-disk key store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

pub mod checkpoint;
pub mod keys;
pub mod merkle;
pub mod note;

pub use merkle::{leaf_hash, node_hash, Frontier, MemTree, EMPTY_ROOT};

/// Parses a strict unsigned decimal: ASCII digits only, no sign, no leading zeros (except "0"),
/// must fit in a `u64`.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn strict_decimal() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("42"), Some(42));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "18446744073709551616",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
