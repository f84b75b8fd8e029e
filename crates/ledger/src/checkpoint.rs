//! C2SP `tlog-checkpoint` bodies: `<origin>\n<size>\n<base64 root>\n` then optional extension
//! lines, signed as a C2SP signed note.
//!
//! sandtrail writes exactly one extension line, `time <unix_ns>`, the wall-clock time at which
//! the checkpoint was made.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::note::{self, NoteError, Signer, Verifier};
use crate::{parse_decimal, Hash};

/// Errors from parsing or opening a checkpoint.
#[derive(thiserror::Error, Debug, PartialEq, Eq, Clone)]
pub enum CheckpointError {
    /// The body does not follow the tlog-checkpoint format.
    #[error("malformed checkpoint, line {line}: {reason}")]
    Malformed {
        /// 1-based line number (0 for the body as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The signed note could not be opened.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The checkpoint verified only under keys whose name differs from its origin.
    #[error("checkpoint origin {origin:?} was signed only by keys with other names: {keys}")]
    KeyNameMismatch {
        /// The checkpoint's origin line.
        origin: String,
        /// `name+keyID` of the keys that verified.
        keys: String,
    },
}

/// A transparency-log checkpoint: the tree head at a given size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity; in sandtrail it is also the signing key's name.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root of the first `size` leaves.
    pub root: Hash,
    /// Extension lines (each non-empty, without the newline).
    pub extensions: Vec<String>,
}

/// Prefix of sandtrail's time extension line.
const TIME_PREFIX: &str = "time ";

impl Checkpoint {
    /// A checkpoint carrying sandtrail's `time <unix_ns>` extension line.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash, time_ns: u64) -> Self {
        Checkpoint {
            origin: origin.into(),
            size,
            root,
            extensions: vec![format!("{TIME_PREFIX}{time_ns}")],
        }
    }

    /// The value of the first `time <unix_ns>` extension line, if there is a well-formed one.
    pub fn time_ns(&self) -> Option<u64> {
        self.extensions
            .iter()
            .find_map(|l| l.strip_prefix(TIME_PREFIX))
            .and_then(parse_decimal)
    }

    /// The note text: origin, decimal size, base64 root, extension lines, each ending in `\n`.
    pub fn to_body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body strictly: at least three lines, non-empty origin, decimal size
    /// without leading zeros, base64 of exactly 32 bytes, non-empty extension lines, no control
    /// characters, final newline.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let bad = |line: usize, reason: &str| CheckpointError::Malformed {
            line,
            reason: reason.to_string(),
        };
        let Some(body) = body.strip_suffix('\n') else {
            return Err(bad(0, "body must end with a newline"));
        };
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(
                0,
                "need at least three lines: origin, size and root hash",
            ));
        }
        for (i, l) in lines.iter().enumerate() {
            if l.is_empty() {
                return Err(bad(i + 1, "empty line"));
            }
            if l.chars().any(char::is_control) {
                return Err(bad(i + 1, "control character"));
            }
        }
        let size = parse_decimal(lines[1]).ok_or_else(|| {
            bad(
                2,
                "tree size must be a decimal u64 without sign or leading zeros",
            )
        })?;
        let root = B64
            .decode(lines[2])
            .map_err(|e| bad(3, &format!("root hash is not valid base64: {e}")))?;
        let root: Hash = root.as_slice().try_into().map_err(|_| {
            bad(
                3,
                &format!("root hash must be 32 bytes, got {}", root.len()),
            )
        })?;
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Signs the body as a signed note. The signer's key name must equal the origin, and the
    /// body must parse back to this checkpoint (no newlines inside fields, no empty extensions).
    pub fn sign(&self, s: &Signer) -> Result<String, NoteError> {
        if s.name() != self.origin {
            return Err(NoteError::InvalidText {
                reason: format!(
                    "checkpoint origin {:?} differs from the signing key name {:?}",
                    self.origin,
                    s.name()
                ),
            });
        }
        let body = self.to_body();
        match Checkpoint::parse(&body) {
            Ok(back) if back == *self => note::sign(&body, s),
            Ok(_) => Err(NoteError::InvalidText {
                reason: "checkpoint fields contain newlines".into(),
            }),
            Err(e) => Err(NoteError::InvalidText {
                reason: e.to_string(),
            }),
        }
    }
}

/// Opens a signed checkpoint with the known `verifiers` and parses its body.
///
/// Returns the checkpoint and the key that signed it. Only a verified key whose name equals the
/// checkpoint's origin counts (sandtrail names its keys after the origin); if several did, the
/// first signature line wins.
pub fn open_checkpoint(
    signed: &str,
    verifiers: &[Verifier],
) -> Result<(Checkpoint, Verifier), CheckpointError> {
    let note = note::open(signed, verifiers)?;
    let cp = Checkpoint::parse(&note.text)?;
    match note.verified_by.iter().find(|v| v.name() == cp.origin) {
        Some(v) => {
            let v = v.clone();
            Ok((cp, v))
        }
        None => Err(CheckpointError::KeyNameMismatch {
            keys: note
                .verified_by
                .iter()
                .map(Verifier::label)
                .collect::<Vec<_>>()
                .join(", "),
            origin: cp.origin,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    #[test]
    fn body_roundtrip_and_time() {
        let cp = Checkpoint::new("sandtrail.local/h", 42, leaf_hash(b"x"), 1_700_000_000_123);
        let body = cp.to_body();
        assert!(body.starts_with("sandtrail.local/h\n42\n"));
        assert!(body.ends_with("\ntime 1700000000123\n"));
        let back = Checkpoint::parse(&body).unwrap();
        assert_eq!(back, cp);
        assert_eq!(back.time_ns(), Some(1_700_000_000_123));
    }

    #[test]
    fn spec_example_parses() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse(body).unwrap();
        assert_eq!(cp.size, 20852163);
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.time_ns(), None);
        assert_eq!(cp.to_body(), body);
    }

    #[test]
    fn parse_rejects() {
        let root = B64.encode([0u8; 32]);
        let short = B64.encode([0u8; 31]);
        let cases = [
            format!("o\n1\n{root}"),
            "o\n1\n".to_string(),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n1\n{short}\n"),
            "o\n1\n!!!\n".to_string(),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\ntime 1\n\n"),
            format!("o\r\n1\n{root}\n"),
        ];
        for c in cases {
            assert!(
                matches!(
                    Checkpoint::parse(&c),
                    Err(CheckpointError::Malformed { .. })
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn sign_and_open() {
        let s = Signer::generate("sandtrail.local/h").unwrap();
        let other = Signer::generate("sandtrail.local/other").unwrap();
        let cp = Checkpoint::new("sandtrail.local/h", 3, leaf_hash(b"r"), 9);
        let signed = cp.sign(&s).unwrap();
        let (back, v) = open_checkpoint(&signed, &[other.verifier(), s.verifier()]).unwrap();
        assert_eq!(back, cp);
        assert_eq!(v, s.verifier());
        // A key named differently from the origin may not sign it.
        assert!(cp.sign(&other).is_err());
        let wrong_key = note::sign(&cp.to_body(), &other).unwrap();
        assert!(matches!(
            open_checkpoint(&wrong_key, &[other.verifier()]),
            Err(CheckpointError::KeyNameMismatch { .. })
        ));
        // Tampering with the body breaks the signature.
        let tampered = signed.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            open_checkpoint(&tampered, &[s.verifier()]),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));
        // Fields with newlines are refused.
        let mut nl = cp.clone();
        nl.extensions.push("a\nb".into());
        assert!(nl.sign(&s).is_err());
        let mut empty = cp;
        empty.extensions.push(String::new());
        assert!(empty.sign(&s).is_err());
    }
}
