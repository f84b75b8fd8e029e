//! Forward-secure epoch keys.
//!
//! The epoch-0 key is the trust anchor: its verifier key is all a verifier needs. To rotate, the
//! key of epoch `n` signs a rotation record naming the key of epoch `n+1`; then the old private
//! key is erased. Someone who steals today's key therefore cannot sign checkpoints for the part
//! of the log that earlier keys already covered.
//!
//! A rotation record is a signed note whose text is exactly:
//!
//! ```text
//! sandtrail.rotation/1
//! <origin>
//! epoch <n+1>
//! next <verifier key of epoch n+1>
//! size <tree size at rotation>
//! time <unix_ns>
//! ```
//!
//! # Which key may sign which checkpoint
//!
//! Epoch `e` starts at `start(e)`: 0 for the anchor, the record's `size` for later epochs
//! (sizes never decrease along the chain). The key of epoch `e` may sign checkpoints of sizes
//! `start(e) ..= start(e+1)` (no upper bound for the current epoch). Both ends are inclusive: the
//! last checkpoint before a rotation and the first one after it may both have the rotation's
//! size. See [`KeyChain::key_for_size`] and [`KeyChain::verify_checkpoint`].
//!
//! # On-disk key store
//!
//! [`KeyStore`] keeps, in a directory of mode 0700 (files 0600, every write atomic: temporary
//! file, fsync, rename, fsync of the directory):
//!
//! - `anchor.vkey`: the epoch-0 verifier key (never changes)
//! - `signer.skey`: the current private key
//! - `epoch`: the current epoch number, in decimal
//! - `rotations`: every signed rotation record, in order, each followed by one empty line (see
//!   [`split_notes`])
//! - `lock`: an advisory lock file serialising creation, rotation and reads
//!
//! Transient files during a rotation: `signer.skey.next` (the new key before it is installed)
//! and `signer.skey.old` (a second name for the old key, kept until it has been overwritten with
//! zeros). [`KeyStore::open_or_create`] finishes or undoes an interrupted rotation.
//!
//! Erasure is best effort: overwriting a file in place does not reach copies a copy-on-write or
//! journaling file system, or an SSD's wear levelling, may keep.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::note::{self, is_valid_name, NoteError, Signer, Verifier, SIG_PREFIX};
use crate::parse_decimal;

/// First line of every rotation record.
pub const ROTATION_HEADER: &str = "sandtrail.rotation/1";

/// File holding the epoch-0 verifier key.
pub const ANCHOR_FILE: &str = "anchor.vkey";
/// File holding the current private key.
pub const SIGNER_FILE: &str = "signer.skey";
/// File holding the current epoch number.
pub const EPOCH_FILE: &str = "epoch";
/// File holding the signed rotation records.
pub const ROTATIONS_FILE: &str = "rotations";
/// Advisory lock file.
pub const LOCK_FILE: &str = "lock";
const NEXT_FILE: &str = "signer.skey.next";
const OLD_FILE: &str = "signer.skey.old";

/// Errors from rotation records, key chains and the key store.
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    /// An I/O operation on a key store file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A key store file does not exist.
    #[error("{} does not exist (not a sandtrail key store, or not created yet)", path.display())]
    Missing {
        /// The missing file or directory.
        path: PathBuf,
    },
    /// A key store file or directory is accessible by group or others.
    #[error("{} has mode {mode:o}: it must not be accessible by group or others", path.display())]
    InsecurePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key store file has unexpected content (private key material is never echoed).
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key store files disagree with each other.
    #[error("key store {} is inconsistent: {reason}", dir.display())]
    Inconsistent {
        /// The key store directory.
        dir: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// Another process rotated the key since this store was opened.
    #[error(
        "key store is at epoch {found} on disk but this handle is at epoch {expected}; reopen it"
    )]
    StaleKeyStore {
        /// Epoch this handle holds the key for.
        expected: u64,
        /// Epoch found on disk.
        found: u64,
    },
    /// An origin (the key name) is not valid.
    #[error("invalid origin {origin:?}: must be non-empty with no whitespace, '+' or control characters")]
    InvalidOrigin {
        /// The rejected origin.
        origin: String,
    },
    /// An origin differs from the one of the key chain or key store.
    #[error("origin mismatch: expected {expected:?}, got {got:?}")]
    OriginMismatch {
        /// The origin of the chain or store.
        expected: String,
        /// The origin that was given.
        got: String,
    },
    /// A signed note could not be opened or made.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A checkpoint could not be opened or parsed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A rotation record's text is not in the expected format.
    #[error("malformed rotation record: {reason}")]
    MalformedRotation {
        /// What is wrong.
        reason: String,
    },
    /// A concatenation of signed notes could not be split back.
    #[error("malformed rotations file, record {record}: {reason}")]
    MalformedRotationsFile {
        /// 1-based record number.
        record: usize,
        /// What is wrong.
        reason: String,
    },
    /// A rotation record was not signed (validly) by the key of the previous epoch.
    #[error("rotation to epoch {epoch} is not signed by the epoch {} key {previous}: {source}", epoch - 1)]
    RotationNotSignedByPrevious {
        /// The epoch the rotation would start (the chain's current epoch + 1).
        epoch: u64,
        /// `name+keyID` of the key that had to sign it.
        previous: String,
        /// Why the signature check failed.
        #[source]
        source: NoteError,
    },
    /// A rotation record does not start the next epoch.
    #[error("rotation record starts epoch {got}, but the next epoch is {expected}")]
    WrongEpoch {
        /// The epoch that should follow.
        expected: u64,
        /// The epoch the record names.
        got: u64,
    },
    /// A rotation record's tree size is below the previous rotation's.
    #[error("rotation to epoch {epoch} at tree size {got} is below the previous rotation's size {previous}")]
    TreeSizeDecreased {
        /// The epoch the rotation starts.
        epoch: u64,
        /// Tree size of the previous rotation (0 for the anchor).
        previous: u64,
        /// Tree size in this record.
        got: u64,
    },
    /// A rotation names a key that an earlier epoch already used.
    #[error("rotation to epoch {epoch} reuses the key of epoch {earlier}")]
    KeyReused {
        /// The epoch the rotation starts.
        epoch: u64,
        /// The earlier epoch that used the same key.
        earlier: u64,
    },
    /// A rotation names a key whose 4-byte key ID equals an earlier epoch's (all keys share the
    /// origin as name, so signatures by the two keys could not be told apart).
    #[error(
        "rotation to epoch {epoch} names a key whose key ID collides with the epoch {earlier} key"
    )]
    KeyIdCollision {
        /// The epoch the rotation starts.
        epoch: u64,
        /// The earlier epoch whose key has the same key ID.
        earlier: u64,
    },
    /// A checkpoint was signed by an epoch key outside that key's range of tree sizes.
    #[error("checkpoint of size {size} is signed by the epoch {epoch} key, valid only for sizes {from}..={}", to.map_or("".to_string(), |t| t.to_string()))]
    KeyNotValidForSize {
        /// Tree size of the checkpoint.
        size: u64,
        /// Epoch of the key that signed it.
        epoch: u64,
        /// First size that key may sign.
        from: u64,
        /// Last size that key may sign (`None`: the current epoch, unbounded).
        to: Option<u64>,
    },
}

/// A parsed rotation record: the key of epoch `epoch - 1` hands over to `next`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Log origin; also the name of every key in the chain.
    pub origin: String,
    /// The epoch this rotation starts (at least 1).
    pub epoch: u64,
    /// The key of the new epoch.
    pub next: Verifier,
    /// Tree size at rotation: the first size the new key may sign.
    pub tree_size: u64,
    /// Wall-clock time of the rotation, nanoseconds since the Unix epoch.
    pub time_ns: u64,
}

impl Rotation {
    /// The note text of this record.
    pub fn to_body(&self) -> String {
        format!(
            "{ROTATION_HEADER}\n{}\nepoch {}\nnext {}\nsize {}\ntime {}\n",
            self.origin,
            self.epoch,
            self.next.to_vkey(),
            self.tree_size,
            self.time_ns
        )
    }

    /// Parses a rotation record's text strictly (exact line layout, strict decimals, the next
    /// key must be named after the origin, epoch at least 1).
    pub fn parse(body: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::MalformedRotation { reason };
        let Some(body) = body.strip_suffix('\n') else {
            return Err(bad("text must end with a newline".into()));
        };
        let lines: Vec<&str> = body.split('\n').collect();
        let [header, origin, epoch, next, size, time] = lines[..] else {
            return Err(bad(format!("expected 6 lines, got {}", lines.len())));
        };
        if header != ROTATION_HEADER {
            return Err(bad(format!("first line must be {ROTATION_HEADER:?}")));
        }
        if !is_valid_name(origin) {
            return Err(bad(format!("invalid origin {origin:?}")));
        }
        let field = |line: &str, key: &str| -> Result<u64, KeyError> {
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(parse_decimal)
                .ok_or_else(|| bad(format!("expected \"{key} <decimal>\", got {line:?}")))
        };
        let epoch = field(epoch, "epoch")?;
        if epoch == 0 {
            return Err(bad("a rotation cannot start epoch 0".into()));
        }
        let next = next
            .strip_prefix("next ")
            .ok_or_else(|| bad(format!("expected \"next <verifier key>\", got {next:?}")))?;
        let next = Verifier::from_vkey(next).map_err(|e| bad(format!("next key: {e}")))?;
        if next.name() != origin {
            return Err(bad(format!(
                "next key is named {:?}, not after the origin {origin:?}",
                next.name()
            )));
        }
        Ok(Rotation {
            origin: origin.to_string(),
            epoch,
            next,
            tree_size: field(size, "size")?,
            time_ns: field(time, "time")?,
        })
    }

    /// Signs this record with `signer`, which must be the key of epoch `self.epoch - 1`.
    pub fn sign(&self, signer: &Signer) -> Result<String, KeyError> {
        if signer.name() != self.origin {
            return Err(KeyError::OriginMismatch {
                expected: self.origin.clone(),
                got: signer.name().to_string(),
            });
        }
        let body = self.to_body();
        if Rotation::parse(&body)? != *self {
            return Err(KeyError::MalformedRotation {
                reason: "record does not survive a round trip".into(),
            });
        }
        Ok(note::sign(&body, signer)?)
    }
}

/// Splits a concatenation of signed notes, each followed by one empty line (the `rotations`
/// file format), back into the individual notes (each including its final newline).
///
/// Works for notes whose text has no empty line (rotation records): a note ends after the
/// signature lines that follow its first empty line.
pub fn split_notes(text: &str) -> Result<Vec<&str>, KeyError> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let bad = |reason: &str| KeyError::MalformedRotationsFile {
            record: out.len() + 1,
            reason: reason.to_string(),
        };
        let Some(sep) = rest.find("\n\n") else {
            return Err(bad("no empty line before the signatures"));
        };
        let mut end = sep + 2;
        while rest[end..].starts_with(SIG_PREFIX) {
            let Some(nl) = rest[end..].find('\n') else {
                return Err(bad("unterminated signature line"));
            };
            end += nl + 1;
        }
        if end == sep + 2 {
            return Err(bad("no signature lines"));
        }
        if !rest[end..].starts_with('\n') {
            return Err(bad("note is not followed by an empty line"));
        }
        out.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// A verified chain of epoch keys, starting at the trust anchor.
#[derive(Clone, Debug)]
pub struct KeyChain {
    keys: Vec<Verifier>,
    rotations: Vec<(Rotation, String)>,
}

impl KeyChain {
    /// A chain holding only the epoch-0 key. Its name is the log origin.
    pub fn new(anchor: Verifier) -> Self {
        KeyChain {
            keys: vec![anchor],
            rotations: Vec::new(),
        }
    }

    /// Builds a chain from the anchor and the contents of a `rotations` file (see
    /// [`split_notes`]), verifying every record.
    pub fn from_rotations(anchor: Verifier, rotations: &str) -> Result<Self, KeyError> {
        let mut chain = KeyChain::new(anchor);
        for n in split_notes(rotations)? {
            chain.push_rotation(n)?;
        }
        Ok(chain)
    }

    /// The chain's records in the `rotations` file format: each signed note followed by one
    /// empty line.
    pub fn to_rotations_file(&self) -> String {
        let mut s = String::new();
        for (_, signed) in &self.rotations {
            s.push_str(signed);
            s.push('\n');
        }
        s
    }

    /// Verifies and appends a signed rotation record.
    ///
    /// Fails with [`KeyError::RotationNotSignedByPrevious`] unless the current last key signed it
    /// (signatures by any other key are ignored), [`KeyError::OriginMismatch`],
    /// [`KeyError::WrongEpoch`] unless it starts epoch `self.epoch() + 1`,
    /// [`KeyError::TreeSizeDecreased`] if its tree size is below the previous rotation's (equal
    /// is allowed: two rotations with no entries in between), [`KeyError::KeyReused`] or
    /// [`KeyError::KeyIdCollision`] (every key of a chain has a distinct key ID, so a note names
    /// its signing epoch unambiguously).
    pub fn push_rotation(&mut self, signed: &str) -> Result<&Rotation, KeyError> {
        let previous = self.current();
        let epoch = self.epoch() + 1;
        let note = match note::open(signed, std::slice::from_ref(previous)) {
            Ok(n) => n,
            Err(
                e @ (NoteError::NoVerifiedSignature { .. } | NoteError::InvalidSignature { .. }),
            ) => {
                return Err(KeyError::RotationNotSignedByPrevious {
                    epoch,
                    previous: previous.label(),
                    source: e,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let rotation = Rotation::parse(&note.text)?;
        if rotation.origin != self.origin() {
            return Err(KeyError::OriginMismatch {
                expected: self.origin().to_string(),
                got: rotation.origin,
            });
        }
        if rotation.epoch != epoch {
            return Err(KeyError::WrongEpoch {
                expected: epoch,
                got: rotation.epoch,
            });
        }
        let previous_size = self.epoch_start(epoch - 1).expect("current epoch exists");
        if rotation.tree_size < previous_size {
            return Err(KeyError::TreeSizeDecreased {
                epoch,
                previous: previous_size,
                got: rotation.tree_size,
            });
        }
        if let Some(earlier) = self.epoch_of(&rotation.next) {
            return Err(KeyError::KeyReused { epoch, earlier });
        }
        if let Some(earlier) = self.epoch_of_key_id(rotation.next.key_id()) {
            return Err(KeyError::KeyIdCollision { epoch, earlier });
        }
        self.keys.push(rotation.next.clone());
        self.rotations.push((rotation, signed.to_string()));
        Ok(&self.rotations.last().expect("just pushed").0)
    }

    /// All epoch keys; the index is the epoch.
    pub fn keys(&self) -> &[Verifier] {
        &self.keys
    }

    /// The epoch-0 key.
    pub fn anchor(&self) -> &Verifier {
        &self.keys[0]
    }

    /// The key of the latest epoch.
    pub fn current(&self) -> &Verifier {
        self.keys.last().expect("a chain always has its anchor")
    }

    /// The latest epoch number.
    pub fn epoch(&self) -> u64 {
        self.rotations.len() as u64
    }

    /// The log origin (the anchor's key name).
    pub fn origin(&self) -> &str {
        self.keys[0].name()
    }

    /// Parsed rotation records with their original signed text; entry `i` starts epoch `i + 1`.
    pub fn rotations(&self) -> &[(Rotation, String)] {
        &self.rotations
    }

    /// The epoch of a key in this chain, if it is one.
    pub fn epoch_of(&self, key: &Verifier) -> Option<u64> {
        self.keys.iter().position(|k| k == key).map(|e| e as u64)
    }

    /// The epoch whose key has this key ID, if any.
    pub fn epoch_of_key_id(&self, key_id: [u8; 4]) -> Option<u64> {
        self.keys
            .iter()
            .position(|k| k.key_id() == key_id)
            .map(|e| e as u64)
    }

    /// The first tree size the key of `epoch` may sign (0 for the anchor).
    pub fn epoch_start(&self, epoch: u64) -> Option<u64> {
        match epoch {
            0 => Some(0),
            e => self
                .rotations
                .get(usize::try_from(e - 1).ok()?)
                .map(|(r, _)| r.tree_size),
        }
    }

    /// The last tree size the key of `epoch` may sign: the next rotation's size, or `None` for
    /// the current epoch (unbounded) and for epochs not in the chain.
    pub fn epoch_end(&self, epoch: u64) -> Option<u64> {
        self.rotations
            .get(usize::try_from(epoch).ok()?)
            .map(|(r, _)| r.tree_size)
    }

    /// The keys that may sign a checkpoint of `size`: every epoch `e` with
    /// `start(e) <= size <= start(e+1)`. Consecutive epochs; never empty; more than one only
    /// when `size` is exactly a rotation's tree size.
    pub fn key_for_size(&self, size: u64) -> &[Verifier] {
        let lo = self
            .rotations
            .iter()
            .filter(|(r, _)| r.tree_size < size)
            .count();
        let hi = self
            .rotations
            .iter()
            .filter(|(r, _)| r.tree_size <= size)
            .count();
        &self.keys[lo..=hi]
    }

    /// Opens a signed checkpoint against this chain: it must be signed by a chain key named
    /// after the origin, and every chain key that signed it must be valid for its size (see
    /// [`KeyChain::key_for_size`]). Returns the checkpoint and the epoch of the first such key.
    pub fn verify_checkpoint(&self, signed: &str) -> Result<(Checkpoint, u64), KeyError> {
        let note = note::open(signed, &self.keys).map_err(CheckpointError::from)?;
        let cp = Checkpoint::parse(&note.text)?;
        if cp.origin != self.origin() {
            return Err(KeyError::OriginMismatch {
                expected: self.origin().to_string(),
                got: cp.origin,
            });
        }
        let valid = self.key_for_size(cp.size);
        let mut first = None;
        for v in &note.verified_by {
            let epoch = self.epoch_of(v).expect("verified by a chain key");
            if !valid.contains(v) {
                return Err(KeyError::KeyNotValidForSize {
                    size: cp.size,
                    epoch,
                    from: self.epoch_start(epoch).expect("epoch in chain"),
                    to: self.epoch_end(epoch),
                });
            }
            first.get_or_insert(epoch);
        }
        Ok((cp, first.expect("open() returns at least one verified key")))
    }
}

// ---------------------------------------------------------------------------------------------
// File helpers.

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            KeyError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            KeyError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<String, KeyError> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    String::from_utf8(bytes).map_err(|_| KeyError::Corrupt {
        path,
        reason: "not UTF-8".into(),
    })
}

/// Reads a one-line file: its content must be exactly one line ending in a newline.
fn read_line(dir: &Path, name: &str) -> Result<String, KeyError> {
    let s = read(dir, name)?;
    match s.strip_suffix('\n') {
        Some(line) if !line.contains('\n') => Ok(line.to_string()),
        _ => Err(KeyError::Corrupt {
            path: dir.join(name),
            reason: "expected a single line ending in a newline".into(),
        }),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `name` atomically with mode 0600: temporary file, fsync, rename, fsync directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), KeyError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fsync_dir(dir)
}

/// Overwrites a file with zeros, fsyncs it, unlinks it and fsyncs the directory. Best effort
/// erasure of private key material.
fn scrub(dir: &Path, name: &str) -> Result<(), KeyError> {
    let path = dir.join(name);
    let zero = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).open(&path)?;
        let len = f.metadata()?.len();
        let zeros = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    };
    zero().map_err(io_err(&path))?;
    fs::remove_file(&path).map_err(io_err(&path))?;
    fsync_dir(dir)
}

fn exists(dir: &Path, name: &str) -> Result<bool, KeyError> {
    let path = dir.join(name);
    path.try_exists().map_err(io_err(&path))
}

fn same_file(a: &Path, b: &Path) -> Result<bool, KeyError> {
    let ma = fs::metadata(a).map_err(io_err(a))?;
    let mb = fs::metadata(b).map_err(io_err(b))?;
    Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
}

fn check_private(path: &Path) -> Result<(), KeyError> {
    let mode = fs::metadata(path).map_err(io_err(path))?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Whether every entry of `dir` is a file this module may create.
fn only_key_store_files(dir: &Path) -> Result<bool, KeyError> {
    const OURS: [&str; 7] = [
        ANCHOR_FILE,
        SIGNER_FILE,
        EPOCH_FILE,
        ROTATIONS_FILE,
        LOCK_FILE,
        NEXT_FILE,
        OLD_FILE,
    ];
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let name = e.map_err(io_err(dir))?.file_name();
        let name = name.to_string_lossy();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if !OURS.contains(&base) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the store's advisory lock (exclusive to write, shared to read). `None` when reading a
/// store whose lock file does not exist.
fn lock(dir: &Path, exclusive: bool) -> Result<Option<File>, KeyError> {
    let path = dir.join(LOCK_FILE);
    let file = if exclusive {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
    } else {
        match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r,
        }
    }
    .map_err(io_err(&path))?;
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
    .map_err(io_err(&path))?;
    Ok(Some(file))
}

fn read_signer(dir: &Path, name: &str) -> Result<Signer, KeyError> {
    let path = dir.join(name);
    let line = read_line(dir, name)?;
    Signer::from_skey(&line).map_err(|e| KeyError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

fn read_epoch(dir: &Path) -> Result<u64, KeyError> {
    let line = read_line(dir, EPOCH_FILE)?;
    parse_decimal(&line).ok_or_else(|| KeyError::Corrupt {
        path: dir.join(EPOCH_FILE),
        reason: "not a decimal epoch number".into(),
    })
}

/// Installs `signer.skey.next` as `signer.skey`, records `new_epoch`, then erases the old key.
/// Each step is durable before the next, and `signer.skey` always holds a usable key.
fn install_next(dir: &Path, new_epoch: u64) -> Result<(), KeyError> {
    let signer = dir.join(SIGNER_FILE);
    let next = dir.join(NEXT_FILE);
    let old = dir.join(OLD_FILE);
    fs::set_permissions(&next, Permissions::from_mode(0o600)).map_err(io_err(&next))?;
    if exists(dir, OLD_FILE)? {
        if same_file(&old, &signer)? {
            fs::remove_file(&old).map_err(io_err(&old))?;
        } else {
            scrub(dir, OLD_FILE)?;
        }
    }
    match fs::hard_link(&signer, &old) {
        Ok(()) => {
            // The old key keeps a name until it has been zeroed, so a crash cannot leak it
            // into free blocks: the next open_or_create scrubs it.
            fsync_dir(dir)?;
            fs::rename(&next, &signer).map_err(io_err(&signer))?;
            fsync_dir(dir)?;
            write_atomic(dir, EPOCH_FILE, format!("{new_epoch}\n").as_bytes())?;
            scrub(dir, OLD_FILE)
        }
        Err(_) => {
            // File system without hard links: hold the old key open, replace it, zero it.
            let mut f = OpenOptions::new()
                .write(true)
                .open(&signer)
                .map_err(io_err(&signer))?;
            fs::rename(&next, &signer).map_err(io_err(&signer))?;
            fsync_dir(dir)?;
            write_atomic(dir, EPOCH_FILE, format!("{new_epoch}\n").as_bytes())?;
            let mut zero = || -> io::Result<()> {
                let len = f.metadata()?.len() as usize;
                f.write_all(&vec![0u8; len])?;
                f.sync_all()
            };
            zero().map_err(io_err(&signer))
        }
    }
}

/// The on-disk key store of one log (see the [module documentation](self)).
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    anchor: Verifier,
    signer: Signer,
    epoch: u64,
}

impl KeyStore {
    /// Opens the key store in `dir` for writing, creating it (directory 0700, epoch-0 key) on
    /// first use. An existing store must belong to `origin`. Finishes or undoes a rotation that
    /// a crash interrupted.
    pub fn open_or_create(dir: &Path, origin: &str) -> Result<Self, KeyError> {
        if !is_valid_name(origin) {
            return Err(KeyError::InvalidOrigin {
                origin: origin.to_string(),
            });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Restrict a directory that holds no key store yet, unless it holds files of others
        // (then its permissions are checked instead of changed).
        if !exists(dir, ANCHOR_FILE)? {
            if only_key_store_files(dir)? {
                fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err(dir))?;
            } else {
                check_private(dir)?;
            }
        }
        let _lock = lock(dir, true)?;
        if exists(dir, ANCHOR_FILE)? {
            return Self::load(dir, Some(origin), true);
        }
        // First use. The anchor is written last: until it exists, the store does not exist and
        // a crash simply leads to creating it again.
        for name in [SIGNER_FILE, NEXT_FILE, OLD_FILE] {
            if exists(dir, name)? {
                scrub(dir, name)?;
            }
        }
        let signer = Signer::generate(origin)?;
        write_atomic(
            dir,
            SIGNER_FILE,
            format!("{}\n", signer.to_skey()).as_bytes(),
        )?;
        write_atomic(dir, ROTATIONS_FILE, b"")?;
        write_atomic(dir, EPOCH_FILE, b"0\n")?;
        let anchor = signer.verifier();
        write_atomic(
            dir,
            ANCHOR_FILE,
            format!("{}\n", anchor.to_vkey()).as_bytes(),
        )?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            anchor,
            signer,
            epoch: 0,
        })
    }

    /// Opens an existing key store without modifying it. Fails with [`KeyError::Missing`] if
    /// there is none, and with [`KeyError::Inconsistent`] if an interrupted rotation needs
    /// [`KeyStore::open_or_create`] to finish it.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        if !dir.is_dir() {
            return Err(KeyError::Missing {
                path: dir.to_path_buf(),
            });
        }
        let _lock = lock(dir, false)?;
        Self::load(dir, None, false)
    }

    fn load(dir: &Path, origin: Option<&str>, recover: bool) -> Result<Self, KeyError> {
        check_private(dir)?;
        let anchor_line = read_line(dir, ANCHOR_FILE)?;
        let anchor = Verifier::from_vkey(&anchor_line).map_err(|e| KeyError::Corrupt {
            path: dir.join(ANCHOR_FILE),
            reason: e.to_string(),
        })?;
        if let Some(origin) = origin {
            if anchor.name() != origin {
                return Err(KeyError::OriginMismatch {
                    expected: anchor.name().to_string(),
                    got: origin.to_string(),
                });
            }
        }
        let chain = KeyChain::from_rotations(anchor.clone(), &read(dir, ROTATIONS_FILE)?)?;
        if recover {
            Self::recover(dir, &chain)?;
        }
        check_private(&dir.join(SIGNER_FILE))?;
        let signer = read_signer(dir, SIGNER_FILE)?;
        let inconsistent = |reason: String| KeyError::Inconsistent {
            dir: dir.to_path_buf(),
            reason,
        };
        let epoch = match chain.epoch_of(&signer.verifier()) {
            Some(e) if e == chain.epoch() => e,
            Some(e) if !recover && exists(dir, NEXT_FILE)? => {
                return Err(inconsistent(format!(
                    "a rotation from epoch {e} was interrupted; open the store for writing to finish it"
                )))
            }
            Some(e) => {
                return Err(inconsistent(format!(
                    "{SIGNER_FILE} holds the epoch {e} key but the chain is at epoch {}",
                    chain.epoch()
                )))
            }
            None => {
                return Err(inconsistent(format!(
                    "{SIGNER_FILE} holds a key that is not in the key chain"
                )))
            }
        };
        if read_epoch(dir)? != epoch {
            if recover {
                write_atomic(dir, EPOCH_FILE, format!("{epoch}\n").as_bytes())?;
            } else {
                return Err(inconsistent(format!(
                    "{EPOCH_FILE} does not say {epoch}; open the store for writing to repair it"
                )));
            }
        }
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            anchor,
            signer,
            epoch,
        })
    }

    /// Cleans up after a crash during a rotation (called with the exclusive lock held).
    fn recover(dir: &Path, chain: &KeyChain) -> Result<(), KeyError> {
        for name in [SIGNER_FILE, NEXT_FILE, OLD_FILE] {
            let tmp = format!("{name}.tmp");
            if exists(dir, &tmp)? {
                scrub(dir, &tmp)?;
            }
        }
        // A second name of a key being replaced: drop the name if the replacement did not
        // happen, otherwise finish erasing the old key.
        if exists(dir, OLD_FILE)? {
            if same_file(&dir.join(OLD_FILE), &dir.join(SIGNER_FILE))? {
                let old = dir.join(OLD_FILE);
                fs::remove_file(&old).map_err(io_err(&old))?;
                fsync_dir(dir)?;
            } else {
                scrub(dir, OLD_FILE)?;
            }
        }
        if exists(dir, NEXT_FILE)? {
            let current = read_signer(dir, SIGNER_FILE)?.verifier();
            let pending = read_signer(dir, NEXT_FILE).ok().map(|s| s.verifier());
            if pending.as_ref() == Some(chain.current()) && current != *chain.current() {
                // The rotation record is durable: install the key it names.
                install_next(dir, chain.epoch())?;
            } else {
                // The rotation was never recorded: the new key must not survive.
                scrub(dir, NEXT_FILE)?;
            }
        }
        Ok(())
    }

    /// The current private key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The log origin (the name of every key).
    pub fn origin(&self) -> &str {
        self.anchor.name()
    }

    /// The epoch-0 verifier key, the trust anchor.
    pub fn anchor(&self) -> &Verifier {
        &self.anchor
    }

    /// The key store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads and verifies the key chain from disk, starting from the anchor.
    pub fn chain(&self) -> Result<KeyChain, KeyError> {
        KeyChain::from_rotations(self.anchor.clone(), &read(&self.dir, ROTATIONS_FILE)?)
    }

    /// Rotates to a new key: generates it, writes it aside, appends the rotation record signed
    /// by the old key durably, installs the new key file in place of the old one, records the
    /// new epoch, then overwrites the old private key with zeros, fsyncs and unlinks it.
    /// Returns the signed rotation record.
    ///
    /// `tree_size` is the first tree size the new key may sign; it must not be below the
    /// previous rotation's. Fails with [`KeyError::StaleKeyStore`] if another process rotated
    /// since this store was opened.
    pub fn rotate(&mut self, tree_size: u64, time_ns: u64) -> Result<String, KeyError> {
        let _lock = lock(&self.dir, true)?;
        let found = read_epoch(&self.dir)?;
        let mut chain = self.chain()?;
        if found != self.epoch || chain.epoch() != self.epoch {
            return Err(KeyError::StaleKeyStore {
                expected: self.epoch,
                found: chain.epoch().max(found),
            });
        }
        if *chain.current() != self.signer.verifier() {
            return Err(KeyError::Inconsistent {
                dir: self.dir.clone(),
                reason: "the key held in memory is not the chain's current key".into(),
            });
        }
        let previous = chain.epoch_start(self.epoch).expect("current epoch");
        if tree_size < previous {
            return Err(KeyError::TreeSizeDecreased {
                epoch: self.epoch + 1,
                previous,
                got: tree_size,
            });
        }
        // Key IDs are 4 bytes: draw again in the rare case of a collision within the chain.
        let next = loop {
            let candidate = Signer::generate(self.origin())?;
            if chain.epoch_of_key_id(candidate.key_id()).is_none() {
                break candidate;
            }
        };
        let rotation = Rotation {
            origin: self.origin().to_string(),
            epoch: self.epoch + 1,
            next: next.verifier(),
            tree_size,
            time_ns,
        };
        let signed = rotation.sign(&self.signer)?;
        chain.push_rotation(&signed)?;
        write_atomic(
            &self.dir,
            NEXT_FILE,
            format!("{}\n", next.to_skey()).as_bytes(),
        )?;
        write_atomic(
            &self.dir,
            ROTATIONS_FILE,
            chain.to_rotations_file().as_bytes(),
        )?;
        install_next(&self.dir, self.epoch + 1)?;
        self.signer = next;
        self.epoch += 1;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(s: &Signer, epoch: u64, next: &Signer, size: u64) -> String {
        Rotation {
            origin: s.name().to_string(),
            epoch,
            next: next.verifier(),
            tree_size: size,
            time_ns: 1,
        }
        .sign(s)
        .unwrap()
    }

    #[test]
    fn rotation_body_roundtrip() {
        let s = Signer::generate("o.example/x").unwrap();
        let r = Rotation {
            origin: "o.example/x".into(),
            epoch: 1,
            next: s.verifier(),
            tree_size: 10,
            time_ns: 20,
        };
        let body = r.to_body();
        assert_eq!(
            body,
            format!(
                "sandtrail.rotation/1\no.example/x\nepoch 1\nnext {}\nsize 10\ntime 20\n",
                s.verifier().to_vkey()
            )
        );
        assert_eq!(Rotation::parse(&body).unwrap(), r);
        for bad in [
            body.replace("epoch 1", "epoch 01"),
            body.replace("epoch 1", "epoch 0"),
            body.replace("size 10", "size  10"),
            body.replace("sandtrail.rotation/1", "sandtrail.rotation/2"),
            body.replace("time 20\n", "time 20"),
            format!("{body}extra\n"),
        ] {
            assert!(
                matches!(
                    Rotation::parse(&bad),
                    Err(KeyError::MalformedRotation { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chain_rules() {
        let k: Vec<Signer> = (0..4)
            .map(|_| Signer::generate("o.example/x").unwrap())
            .collect();
        let mut c = KeyChain::new(k[0].verifier());
        c.push_rotation(&rotation(&k[0], 1, &k[1], 10)).unwrap();
        // Wrong epoch number.
        assert!(matches!(
            c.push_rotation(&rotation(&k[1], 3, &k[2], 20)),
            Err(KeyError::WrongEpoch {
                expected: 2,
                got: 3
            })
        ));
        // Tree size going backwards.
        assert!(matches!(
            c.push_rotation(&rotation(&k[1], 2, &k[2], 9)),
            Err(KeyError::TreeSizeDecreased {
                epoch: 2,
                previous: 10,
                got: 9
            })
        ));
        // Reusing an earlier key.
        assert!(matches!(
            c.push_rotation(&rotation(&k[1], 2, &k[0], 20)),
            Err(KeyError::KeyReused {
                epoch: 2,
                earlier: 0
            })
        ));
        // Other origin.
        let o = Signer::generate("other.example/x").unwrap();
        let other = Rotation {
            origin: "other.example/x".into(),
            epoch: 2,
            next: Signer::generate("other.example/x").unwrap().verifier(),
            tree_size: 20,
            time_ns: 0,
        }
        .sign(&o)
        .unwrap();
        assert!(matches!(
            c.push_rotation(&other),
            Err(KeyError::RotationNotSignedByPrevious { epoch: 2, .. })
        ));
        // Equal sizes are fine.
        c.push_rotation(&rotation(&k[1], 2, &k[2], 10)).unwrap();
        c.push_rotation(&rotation(&k[2], 3, &k[3], 30)).unwrap();
        assert_eq!(c.epoch(), 3);
        // Epoch 0: [0,10], epoch 1: [10,10], epoch 2: [10,30], epoch 3: [30,..).
        let keys = c.keys().to_vec();
        assert_eq!(c.key_for_size(0), &keys[0..1]);
        assert_eq!(c.key_for_size(9), &keys[0..1]);
        assert_eq!(c.key_for_size(10), &keys[0..3]);
        assert_eq!(c.key_for_size(11), &keys[2..3]);
        assert_eq!(c.key_for_size(30), &keys[2..4]);
        assert_eq!(c.key_for_size(31), &keys[3..4]);
        assert_eq!(c.epoch_end(3), None);
        assert_eq!(c.epoch_end(2), Some(30));
        // Round trip through the file format.
        let again = KeyChain::from_rotations(keys[0].clone(), &c.to_rotations_file()).unwrap();
        assert_eq!(again.keys(), c.keys());
    }

    #[test]
    fn split_notes_rejects_garbage() {
        assert!(split_notes("").unwrap().is_empty());
        for bad in [
            "a\n",
            "a\n\nb\n\n",
            "a\n\n\u{2014} x y\n",
            "a\n\n\u{2014} x y\nz\n",
            "a\n\n\u{2014} x y",
        ] {
            assert!(
                matches!(
                    split_notes(bad),
                    Err(KeyError::MalformedRotationsFile { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            split_notes("a\n\n\u{2014} x y\n\u{2014} z w\n\nb\n\n\u{2014} x y\n\n").unwrap(),
            vec!["a\n\n\u{2014} x y\n\u{2014} z w\n", "b\n\n\u{2014} x y\n"]
        );
    }
}
