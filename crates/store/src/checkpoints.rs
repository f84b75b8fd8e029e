//! The checkpoint log: every signed checkpoint, length-framed (`u32 LE | note`), append-only.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::layout::open_append;
use crate::StoreError;

/// Checkpoint notes read back, and where an incomplete tail (if any) starts.
pub struct CheckpointLog {
    /// Signed notes in the order they were written.
    pub notes: Vec<String>,
    /// Length of the intact prefix of the file.
    pub valid_len: u64,
    /// Total file length (longer than `valid_len` when the tail is torn).
    pub file_len: u64,
}

/// Read the checkpoint log (an absent file is an empty log).
pub fn read(path: &Path) -> Result<CheckpointLog, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(format!("opening {}", path.display()))(e)),
    }
    let mut notes = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(pos + 4..pos + 4 + n) else {
            break;
        };
        let Ok(text) = std::str::from_utf8(body) else {
            break;
        };
        notes.push(text.to_string());
        pos += 4 + n;
    }
    Ok(CheckpointLog {
        notes,
        valid_len: pos as u64,
        file_len: bytes.len() as u64,
    })
}

/// One checkpoint-log record: `u32 LE length | note`.
pub fn frame(note: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(note.len() + 4);
    buf.extend_from_slice(&(note.len() as u32).to_le_bytes());
    buf.extend_from_slice(note.as_bytes());
    buf
}

/// Appends signed checkpoints durably.
pub struct CheckpointWriter {
    file: File,
    path: std::path::PathBuf,
}

impl CheckpointWriter {
    /// Open the log for appending.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file =
            open_append(path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        Ok(CheckpointWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Append one signed note and fsync.
    pub fn append(&mut self, note: &str) -> Result<(), StoreError> {
        let buf = frame(note);
        let what = format!("writing {}", self.path.display());
        self.file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
            .map_err(StoreError::io(what))
    }
}
