//! C2SP `signed-note` (the format of Go's `sumdb/note`) with Ed25519 keys only.
//!
//! - Key ID = `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]`.
//! - Verifier key: `name+hex(keyID)+base64(0x01 ‖ public key)`.
//! - Signer key: `PRIVATE+KEY+name+hex(keyID)+base64(0x01 ‖ 32-byte seed)`.
//! - Signed note: the text (ending in a newline), a blank line, then one or more lines
//!   `— name base64(keyID ‖ signature)` (U+2014 EM DASH, space), each ending in a newline.
//!
//! Key names must be non-empty and contain no Unicode whitespace, no `+` and no control
//! characters. Nothing in this module ever formats private key material into an error or a
//! `Debug` string.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte for Ed25519 in key encodings and key IDs.
pub const ALG_ED25519: u8 = 0x01;

/// Prefix of every signature line: U+2014 EM DASH and a space.
pub const SIG_PREFIX: &str = "\u{2014} ";

/// A note with more signature lines than this is rejected as malformed (Go uses the same cap).
pub const MAX_SIGNATURES: usize = 100;

/// Errors from key parsing, signing and opening notes.
#[derive(thiserror::Error, Debug, PartialEq, Eq, Clone)]
pub enum NoteError {
    /// A key name is empty or contains whitespace, `+` or a control character.
    #[error("invalid key name {name:?}: must be non-empty with no whitespace, '+' or control characters")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A verifier key string could not be parsed.
    #[error("malformed verifier key: {reason}")]
    MalformedVerifierKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A signer key string could not be parsed (the key itself is never echoed).
    #[error("malformed signer key: {reason}")]
    MalformedSignerKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key's declared key ID does not match its name and public key.
    #[error("key {name}: declared key ID {declared} does not match computed {computed}")]
    KeyIdMismatch {
        /// Key name.
        name: String,
        /// Key ID written in the key string (hex).
        declared: String,
        /// Key ID computed from the name and public key (hex).
        computed: String,
    },
    /// A key uses a signature type other than Ed25519 (0x01).
    #[error("key {name}: unsupported signature type 0x{alg:02x} (only Ed25519, 0x01)")]
    UnsupportedAlgorithm {
        /// Key name.
        name: String,
        /// The signature type byte.
        alg: u8,
    },
    /// The text to sign is not a valid note text.
    #[error("invalid note text: {reason}")]
    InvalidText {
        /// What is wrong with it.
        reason: String,
    },
    /// A signed note could not be parsed.
    #[error("malformed note: {reason}")]
    MalformedNote {
        /// What is wrong with it.
        reason: String,
    },
    /// A signature from a known key (name and key ID match) failed to verify.
    #[error("invalid signature for key {key}")]
    InvalidSignature {
        /// `name+hex(keyID)` of the key.
        key: String,
    },
    /// Two different known keys share a name and key ID.
    #[error("ambiguous key {key}: several known keys share this name and key ID")]
    AmbiguousKey {
        /// `name+hex(keyID)` of the key.
        key: String,
    },
    /// No signature line came from a known key.
    #[error("note has no signature by a known key ({unverified} signatures by unknown keys)")]
    NoVerifiedSignature {
        /// Number of distinct signature lines by unknown keys.
        unverified: usize,
    },
    /// The operating system random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// Whether `name` is a valid key name: non-empty, no Unicode whitespace, no `+`, no control
/// characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// Key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
fn compute_key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn key_label(name: &str, id: &[u8; 4]) -> String {
    format!("{name}+{}", hex::encode(id))
}

/// Parses exactly 8 hex digits into a key ID.
fn parse_key_id(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 {
        return None;
    }
    let mut id = [0u8; 4];
    hex::decode_to_slice(s, &mut id).ok()?;
    Some(id)
}

/// An Ed25519 signing key with its name. `Debug` shows only the name and key ID.
pub struct Signer {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Generates a fresh key named `name` from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| NoteError::Random(e.to_string()))?;
        let signer = Self::from_seed(name, &seed);
        seed.fill(0);
        std::hint::black_box(&seed);
        Ok(signer)
    }

    fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = compute_key_id(name, key.verifying_key().as_bytes());
        Signer {
            name: name.to_string(),
            key,
            key_id,
        }
    }

    /// Parses a signer key `PRIVATE+KEY+name+hex(keyID)+base64(0x01 ‖ seed)`, checking the key
    /// ID against the derived public key. Errors never include the key material.
    pub fn from_skey(s: &str) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::MalformedSignerKey { reason };
        let mut parts = s.splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(b64)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed(
                "expected PRIVATE+KEY+<name>+<hex key ID>+<base64 key>",
            ));
        };
        check_name(name)?;
        let declared = parse_key_id(id).ok_or(malformed("key ID is not 8 hex digits"))?;
        let mut raw = B64
            .decode(b64)
            .map_err(|_| malformed("key is not valid base64"))?;
        let result = match raw.split_first() {
            None => Err(malformed("empty key")),
            Some((&alg, _)) if alg != ALG_ED25519 => Err(NoteError::UnsupportedAlgorithm {
                name: name.to_string(),
                alg,
            }),
            Some((_, seed)) => match <&[u8; 32]>::try_from(seed) {
                Err(_) => Err(malformed("Ed25519 seed must be 32 bytes")),
                Ok(seed) => {
                    let signer = Self::from_seed(name, seed);
                    if signer.key_id != declared {
                        Err(NoteError::KeyIdMismatch {
                            name: name.to_string(),
                            declared: hex::encode(declared),
                            computed: hex::encode(signer.key_id),
                        })
                    } else {
                        Ok(signer)
                    }
                }
            },
        };
        raw.fill(0);
        std::hint::black_box(&raw);
        result
    }

    /// Encodes this key as `PRIVATE+KEY+name+hex(keyID)+base64(0x01 ‖ seed)`. The result is
    /// secret: store it with restrictive permissions and never log it.
    pub fn to_skey(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        let s = format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(raw)
        );
        raw.fill(0);
        std::hint::black_box(&raw);
        s
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The matching public verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Raw Ed25519 signature over `msg` (no note framing).
    fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// An Ed25519 public key with its name and key ID. `Display` gives the verifier key string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Verifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl Verifier {
    /// Parses a verifier key `name+hex(keyID)+base64(0x01 ‖ public key)`, checking the key ID.
    /// Only the first two `+` separate fields (base64 may contain `+`).
    pub fn from_vkey(s: &str) -> Result<Self, NoteError> {
        let malformed = |reason: &str| NoteError::MalformedVerifierKey {
            reason: reason.to_string(),
        };
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected <name>+<hex key ID>+<base64 key>"));
        };
        check_name(name)?;
        let declared = parse_key_id(id).ok_or_else(|| malformed("key ID is not 8 hex digits"))?;
        let raw = B64
            .decode(b64)
            .map_err(|e| malformed(&format!("key is not valid base64: {e}")))?;
        let Some((&alg, public)) = raw.split_first() else {
            return Err(malformed("empty key"));
        };
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm {
                name: name.to_string(),
                alg,
            });
        }
        let public: &[u8; 32] = public.try_into().map_err(|_| {
            malformed(&format!(
                "Ed25519 public key must be 32 bytes, got {}",
                public.len()
            ))
        })?;
        let computed = compute_key_id(name, public);
        if computed != declared {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_string(),
                declared: hex::encode(declared),
                computed: hex::encode(computed),
            });
        }
        let key = VerifyingKey::from_bytes(public)
            .map_err(|_| malformed("not a valid Ed25519 public key"))?;
        Ok(Verifier {
            name: name.to_string(),
            key_id: declared,
            key,
        })
    }

    /// Encodes this key as `name+hex(keyID)+base64(0x01 ‖ public key)`.
    pub fn to_vkey(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(raw)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `name+hex(keyID)`: identifies the key in messages without the public key itself.
    pub fn label(&self) -> String {
        key_label(&self.name, &self.key_id)
    }

    /// Strict Ed25519 verification (rejects non-canonical and small-order encodings).
    fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

/// Checks that `text` may be signed: it ends in a newline and has no control characters other
/// than newline. (Blank lines are allowed; the signature block is found at the last one.)
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::InvalidText {
            reason: "text must end with a newline".into(),
        });
    }
    if let Some(c) = text.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(NoteError::InvalidText {
            reason: format!("text contains control character U+{:04X}", c as u32),
        });
    }
    Ok(())
}

/// Signs `text` with `signer`, returning the signed note: text, blank line, one signature line.
pub fn sign(text: &str, signer: &Signer) -> Result<String, NoteError> {
    check_text(text)?;
    check_name(&signer.name)?;
    let sig = signer.sign_bytes(text.as_bytes());
    let mut blob = [0u8; 68];
    blob[..4].copy_from_slice(&signer.key_id);
    blob[4..].copy_from_slice(&sig);
    let mut out = String::with_capacity(text.len() + signer.name.len() + 100);
    out.push_str(text);
    out.push('\n');
    out.push_str(SIG_PREFIX);
    out.push_str(&signer.name);
    out.push(' ');
    out.push_str(&B64.encode(blob));
    out.push('\n');
    Ok(out)
}

/// An opened note: its text and which known keys signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// Known keys whose signatures verified, in signature order, without duplicates.
    pub verified_by: Vec<Verifier>,
    /// Number of distinct signature lines from unknown keys (ignored, as the spec requires).
    pub unverified: usize,
}

/// Parses `msg` and verifies its signatures against the known `verifiers`.
///
/// A signature whose key name and key ID match a known key must verify, or the whole note is
/// rejected ([`NoteError::InvalidSignature`], naming the key). Signatures by unknown keys are
/// counted and ignored. At least one known key must have signed
/// ([`NoteError::NoVerifiedSignature`] otherwise).
pub fn open(msg: &str, verifiers: &[Verifier]) -> Result<Note, NoteError> {
    let malformed = |reason: String| NoteError::MalformedNote { reason };
    if let Some(c) = msg.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(malformed(format!(
            "contains control character U+{:04X}",
            c as u32
        )));
    }
    let Some(split) = msg.rfind("\n\n") else {
        return Err(malformed("no blank line before the signatures".into()));
    };
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(malformed(
            "no signature lines, or the last one does not end with a newline".into(),
        ));
    };

    let mut verified_by: Vec<Verifier> = Vec::new();
    let mut unverified: Vec<&str> = Vec::new();
    for (n, line) in sigs.split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(malformed(format!(
                "more than {MAX_SIGNATURES} signature lines"
            )));
        }
        let Some(body) = line.strip_prefix(SIG_PREFIX) else {
            return Err(malformed(format!(
                "signature line {} does not start with \"\u{2014} \"",
                n + 1
            )));
        };
        let Some((name, b64)) = body.split_once(' ') else {
            return Err(malformed(format!(
                "signature line {} has no space after the key name",
                n + 1
            )));
        };
        if !is_valid_name(name) {
            return Err(malformed(format!(
                "signature line {} has an invalid key name {name:?}",
                n + 1
            )));
        }
        let blob = B64
            .decode(b64)
            .map_err(|e| malformed(format!("signature line {} is not valid base64: {e}", n + 1)))?;
        if blob.len() < 5 {
            return Err(malformed(format!(
                "signature line {} is too short ({} bytes)",
                n + 1,
                blob.len()
            )));
        }
        let id: [u8; 4] = blob[..4].try_into().expect("length checked");
        let mut matches = verifiers
            .iter()
            .filter(|v| v.name == name && v.key_id == id);
        let Some(v) = matches.next() else {
            if !unverified.contains(&line) {
                unverified.push(line);
            }
            continue;
        };
        if matches.any(|other| other != v) {
            return Err(NoteError::AmbiguousKey {
                key: key_label(name, &id),
            });
        }
        if !v.verify_bytes(text.as_bytes(), &blob[4..]) {
            return Err(NoteError::InvalidSignature {
                key: key_label(name, &id),
            });
        }
        if !verified_by.contains(v) {
            verified_by.push(v.clone());
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoVerifiedSignature {
            unverified: unverified.len(),
        });
    }
    Ok(Note {
        text: text.to_string(),
        verified_by,
        unverified: unverified.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keys_and_sign_open() {
        let s = Signer::generate("sandtrail.local/host-abc").unwrap();
        let v = s.verifier();
        assert_eq!(Verifier::from_vkey(&v.to_vkey()).unwrap(), v);
        let s2 = Signer::from_skey(&s.to_skey()).unwrap();
        assert_eq!(s2.verifier(), v);
        let signed = sign("hello\n\nworld\n", &s).unwrap();
        let n = open(&signed, std::slice::from_ref(&v)).unwrap();
        assert_eq!(n.text, "hello\n\nworld\n");
        assert_eq!(n.verified_by, vec![v.clone()]);
        assert_eq!(n.unverified, 0);
        assert_eq!(v.to_string(), v.to_vkey());
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let s = Signer::generate("a.example/x").unwrap();
        let skey = s.to_skey();
        let seed_b64 = skey.splitn(5, '+').nth(4).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(seed_b64), "{dbg}");
        assert!(dbg.contains("a.example/x"));
        // Errors from a bad signer key never echo it either.
        let bad = format!("{}AAAA", &skey[..skey.len() - 4]);
        let e = Signer::from_skey(&bad).unwrap_err().to_string();
        assert!(!e.contains(&bad[20..]), "{e}");
    }

    #[test]
    fn invalid_names_and_texts() {
        for name in ["", "a b", "a+b", "a\nb", "a\u{a0}b", "a\u{1}b"] {
            assert!(
                matches!(Signer::generate(name), Err(NoteError::InvalidName { .. })),
                "{name:?}"
            );
        }
        let s = Signer::generate("n").unwrap();
        assert!(matches!(
            sign("no newline", &s),
            Err(NoteError::InvalidText { .. })
        ));
        assert!(matches!(
            sign("tab\there\n", &s),
            Err(NoteError::InvalidText { .. })
        ));
        assert!(matches!(sign("", &s), Err(NoteError::InvalidText { .. })));
    }

    #[test]
    fn open_rules() {
        let a = Signer::generate("log.example/a").unwrap();
        let b = Signer::generate("log.example/b").unwrap();
        let va = a.verifier();
        let vb = b.verifier();
        let text = "body\n";
        let sa = sign(text, &a).unwrap();
        let sb = sign(text, &b).unwrap();
        // Two signatures: only a known; b's counted as unverified.
        let both = format!("{sa}{}", &sb[text.len() + 1..]);
        let n = open(&both, std::slice::from_ref(&va)).unwrap();
        assert_eq!(n.verified_by, vec![va.clone()]);
        assert_eq!(n.unverified, 1);
        let n = open(&both, &[va.clone(), vb.clone()]).unwrap();
        assert_eq!(n.verified_by, vec![va.clone(), vb.clone()]);
        // A known key with a bad signature rejects the whole note, naming the key.
        let forged = sign("other\n", &a).unwrap();
        let mixed = format!("{text}\n{}", &forged["other\n\n".len()..]);
        assert_eq!(
            open(&mixed, std::slice::from_ref(&va)),
            Err(NoteError::InvalidSignature { key: va.label() })
        );
        // Only unknown keys.
        assert_eq!(
            open(&sa, std::slice::from_ref(&vb)),
            Err(NoteError::NoVerifiedSignature { unverified: 1 })
        );
        // Malformed shapes.
        for bad in [
            "body\n",
            "body\n\n",
            "body\n\n\u{2014} log.example/a AAAA\n",
            "body\n\n- log.example/a AAAAAAAA\n",
            &sa[..sa.len() - 1],
            &format!("{sa}\r"),
        ] {
            assert!(
                matches!(
                    open(bad, std::slice::from_ref(&va)),
                    Err(NoteError::MalformedNote { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
