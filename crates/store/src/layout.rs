//! Where everything lives inside a state directory, and how it is created.
//!
//! ```text
//! STATE/
//!   LOCK               flock(2)-ed by the single writer
//!   RUNNING            present while a writer has the store open; left behind by a crash
//!   store.json         store identity: origin (checkpoint/key name), host id, format
//!   keys/              epoch keys (see sandtrail_ledger::keys::KeyStore)
//!   checkpoints.log    every signed checkpoint, length-framed, append-only
//!   segments/          NNNNNNNNNNNNNNNNNNNN.seg (raw, appendable) and .sealed (zstd blocks)
//!   index.sqlite       the query index (derived; rebuilt from segments when missing)
//! ```
//! Directories are created 0700 and files 0600: the log is evidence and may hold secrets.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Paths of one state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Describe the state directory at `root` (nothing is touched).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Writer lock file.
    pub fn lock(&self) -> PathBuf {
        self.root.join("LOCK")
    }
    /// Marker present while a writer runs; its presence at open means the last writer crashed.
    pub fn running(&self) -> PathBuf {
        self.root.join("RUNNING")
    }
    /// Store identity file.
    pub fn store_json(&self) -> PathBuf {
        self.root.join("store.json")
    }
    /// Key directory.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// Signed checkpoints, append-only.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints.log")
    }
    /// Segment directory.
    pub fn segments(&self) -> PathBuf {
        self.root.join("segments")
    }
    /// Raw (appendable) segment whose first record is `first_seq`.
    pub fn raw_segment(&self, first_seq: u64) -> PathBuf {
        self.segments().join(format!("{first_seq:020}.seg"))
    }
    /// Sealed (compressed) segment whose first record is `first_seq`.
    pub fn sealed_segment(&self, first_seq: u64) -> PathBuf {
        self.segments().join(format!("{first_seq:020}.sealed"))
    }
    /// The SQLite index.
    pub fn index(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }
}

/// Create `dir` (and parents) with mode 0700, and tighten it to 0700 if it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Open (creating 0600) a file for appending with `O_APPEND`.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Write `bytes` to `path` atomically: temp file (0600) + fsync + rename + fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync a directory so that creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Set an existing file to mode 0600 (SQLite creates files with the umask's mode).
pub fn tighten_file(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Make every directory under `root` 0700 and every file 0600.
pub fn tighten_tree(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700))?;
            tighten_tree(&entry.path())?;
        } else if ty.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
