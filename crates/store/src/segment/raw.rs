//! Raw segments: the appendable, uncompressed form every record is first written in.
//!
//! Layout: 16-byte header (`STSEG001` magic, first seq as u64 LE), then frames (see `frame`).
//! The file is opened with `O_APPEND`, so a write can only ever extend it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sandtrail_ledger::Hash;

use super::frame::{push_frame, read_frame, Frame, FrameFault};
use crate::layout::sync_dir;

/// Magic bytes at the start of a raw segment.
pub const RAW_MAGIC: &[u8; 8] = b"STSEG001";
/// Size of the raw segment header.
pub const RAW_HEADER: usize = 16;

/// Appends frames to one raw segment; bytes are buffered until [`RawWriter::flush`].
pub struct RawWriter {
    file: File,
    first_seq: u64,
    records: u64,
    written: u64,
    buf: Vec<u8>,
}

impl RawWriter {
    /// Create a new raw segment (fails if it exists), durable header included.
    ///
    /// The segment appears under its name only with its whole header: the header is written
    /// and synced in `<name>.tmp`, which is then linked to the name (`link` never replaces an
    /// existing file). A writer killed half-way leaves only the `.tmp`, which recovery removes.
    pub fn create(path: &Path, first_seq: u64) -> io::Result<Self> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = Path::new(&tmp_name);
        // A `.tmp` left by a writer killed here before is stale: start it again.
        let _ = std::fs::remove_file(tmp);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(tmp)?;
        let mut header = Vec::with_capacity(RAW_HEADER);
        header.extend_from_slice(RAW_MAGIC);
        header.extend_from_slice(&first_seq.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        let linked = std::fs::hard_link(tmp, path);
        let _ = std::fs::remove_file(tmp);
        linked?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(RawWriter {
            file,
            first_seq,
            records: 0,
            written: RAW_HEADER as u64,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    /// Reopen a raw segment that recovery found to hold `records` intact records in `len` bytes.
    pub fn reopen(path: &Path, first_seq: u64, records: u64, len: u64) -> io::Result<Self> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(RawWriter {
            file,
            first_seq,
            records,
            written: len,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    /// Buffer one record; returns its byte offset in the segment.
    pub fn append(&mut self, hash: &Hash, leaf: &[u8]) -> u64 {
        let offset = self.len();
        push_frame(&mut self.buf, hash, leaf);
        self.records += 1;
        offset
    }

    /// Write buffered records to the file (one `write` for the whole group).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flush and make everything written durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    /// Segment size in bytes, buffered records included.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// True when the segment holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Seq of the first record.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Number of records, buffered included.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// A raw segment read into memory.
pub struct RawSegment {
    /// Seq of the first record, from the header.
    pub first_seq: u64,
    /// The whole file.
    pub bytes: Vec<u8>,
}

/// Why a raw segment file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The header is missing or not ours.
    #[error("{path}: not a sandtrail raw segment (bad or missing header)")]
    BadHeader {
        /// File.
        path: String,
    },
}

impl RawSegment {
    /// Read a raw segment file.
    pub fn read(path: &Path) -> Result<Self, RawError> {
        let io = |source| RawError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() < RAW_HEADER || &bytes[..8] != RAW_MAGIC {
            return Err(RawError::BadHeader {
                path: path.display().to_string(),
            });
        }
        let first_seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        Ok(RawSegment { first_seq, bytes })
    }

    /// Iterate the frames, stopping at the first fault (reported as the final item).
    pub fn frames(&self, check_hash: bool) -> Frames<'_> {
        Frames {
            buf: &self.bytes,
            pos: RAW_HEADER,
            check_hash,
            done: false,
        }
    }
}

/// Iterator over the frames of a raw segment: `Ok((offset, frame))`, or one final `Err((offset, fault))`.
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    check_hash: bool,
    done: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(usize, Frame<'a>), (usize, FrameFault)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        match read_frame(&self.buf[at..], self.check_hash) {
            Ok(f) => {
                self.pos += f.len;
                Some(Ok((at, f)))
            }
            Err(fault) => {
                self.done = true;
                Some(Err((at, fault)))
            }
        }
    }
}
