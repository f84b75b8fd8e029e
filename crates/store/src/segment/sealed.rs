//! Sealed segments: a full raw segment rewritten as independent zstd blocks, grouped by session.
//!
//! Layout: `STSEAL01` magic, the compressed blocks, a JSON footer ([`SealedFooter`]), the footer
//! length as u32 LE and the magic again. Each block decompresses to `u32 LE length | leaf`
//! records of ONE session (or of no session, for ledger events) in seq order, so a session's
//! events are read without touching other sessions' data. Leaf hashes are not stored: every
//! reader that needs them recomputes them from the leaf bytes, which is what verification
//! must do anyway. Sealing writes a temporary file, fsyncs it and renames it into place; the
//! raw segment is deleted only after that, so a crash at any point leaves one complete copy.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::frame::{leaf_header, leaf_seq};
use super::raw::RawSegment;
use crate::layout::sync_dir;

/// Magic bytes at both ends of a sealed segment.
pub const SEALED_MAGIC: &[u8; 8] = b"STSEAL01";
/// Uncompressed size a block is filled to before a new one starts. Large blocks compress
/// better and cost less CPU per event; a query still decompresses only its session's blocks.
pub const BLOCK_TARGET: usize = 1 << 20;

/// Where one block is and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Session of every record in the block (None: ledger events).
    pub session: Option<String>,
    /// Byte offset of the compressed block in the file.
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// Smallest seq in the block.
    pub first_seq: u64,
    /// Largest seq in the block.
    pub last_seq: u64,
    /// Earliest event time.
    pub min_ts: u64,
    /// Latest event time.
    pub max_ts: u64,
    /// Number of records.
    pub count: u64,
}

/// The footer of a sealed segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedFooter {
    /// Seq of the first record of the segment.
    pub first_seq: u64,
    /// Number of records in the segment.
    pub count: u64,
    /// Merkle frontier after the segment's last record (base64 of `Frontier::to_bytes`), so
    /// a writer can resume without rereading history.
    pub frontier: String,
    /// The blocks.
    pub blocks: Vec<BlockMeta>,
}

/// Why sealing or reading a sealed segment failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The file is not a well-formed sealed segment.
    #[error("{path}: damaged sealed segment: {why}")]
    Damaged {
        /// File.
        path: String,
        /// What is wrong.
        why: String,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn damaged(path: &Path, why: impl Into<String>) -> SealError {
    SealError::Damaged {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// A record to seal: seq, time, leaf.
type Record<'a> = (u64, u64, &'a [u8]);

struct Pending {
    session: Option<String>,
    raw: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    min_ts: u64,
    max_ts: u64,
    count: u64,
}

/// Rewrite the raw segment at `raw_path` as a sealed segment at `sealed_path`.
///
/// Every record must be intact (hash checked); `frontier` is the Merkle frontier after the
/// segment's last record. The raw file is left in place for the caller to delete.
pub fn seal(
    raw_path: &Path,
    sealed_path: &Path,
    frontier: &[u8],
    level: i32,
) -> Result<SealedFooter, SealError> {
    let raw = RawSegment::read(raw_path).map_err(|e| damaged(raw_path, e.to_string()))?;
    // Group records by session, keeping sessions in order of first appearance.
    let mut order: Vec<Option<String>> = Vec::new();
    let mut groups: HashMap<Option<String>, Vec<Record<'_>>> = HashMap::new();
    let mut count = 0u64;
    for item in raw.frames(true) {
        let (at, frame) =
            item.map_err(|(at, fault)| damaged(raw_path, format!("record at byte {at}: {fault}")))?;
        let (seq, ts, session) = match leaf_header(frame.leaf) {
            Some(h) => (h.seq, h.ts_ns, h.session_id.map(str::to_string)),
            None => {
                let ev = sandtrail_event::decode_leaf(frame.leaf)
                    .map_err(|e| damaged(raw_path, format!("record at byte {at}: {e}")))?;
                (ev.seq, ev.ts_ns, ev.session_id)
            }
        };
        let expect = raw.first_seq + count;
        if seq != expect {
            return Err(damaged(
                raw_path,
                format!("record at byte {at} has seq {seq} where {expect} was expected"),
            ));
        }
        count += 1;
        let group = match groups.get_mut(&session) {
            Some(g) => g,
            None => {
                order.push(session.clone());
                groups.entry(session).or_default()
            }
        };
        group.push((seq, ts, frame.leaf));
    }

    let tmp = sealed_path.with_extension("sealed.tmp");
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    out.write_all(SEALED_MAGIC).map_err(io_err(&tmp))?;
    let mut offset = SEALED_MAGIC.len() as u64;
    let mut blocks = Vec::new();
    let mut cctx = zstd::bulk::Compressor::new(level).map_err(io_err(&tmp))?;
    cctx.include_contentsize(true).map_err(io_err(&tmp))?;
    let mut emit = |p: Pending, out: &mut File| -> Result<(), SealError> {
        let z = cctx.compress(&p.raw).map_err(io_err(&tmp))?;
        out.write_all(&z).map_err(io_err(&tmp))?;
        blocks.push(BlockMeta {
            session: p.session,
            offset,
            len: z.len() as u64,
            first_seq: p.first_seq,
            last_seq: p.last_seq,
            min_ts: p.min_ts,
            max_ts: p.max_ts,
            count: p.count,
        });
        offset += z.len() as u64;
        Ok(())
    };
    for session in order {
        let records = groups.remove(&session).unwrap_or_default();
        let mut cur: Option<Pending> = None;
        for (seq, ts, leaf) in records {
            let p = cur.get_or_insert_with(|| Pending {
                session: session.clone(),
                raw: Vec::with_capacity(64 * 1024),
                first_seq: seq,
                last_seq: seq,
                min_ts: ts,
                max_ts: ts,
                count: 0,
            });
            p.raw.extend_from_slice(&(leaf.len() as u32).to_le_bytes());
            p.raw.extend_from_slice(leaf);
            p.last_seq = seq;
            p.min_ts = p.min_ts.min(ts);
            p.max_ts = p.max_ts.max(ts);
            p.count += 1;
            if p.raw.len() >= BLOCK_TARGET {
                emit(cur.take().expect("pending"), &mut out)?;
            }
        }
        if let Some(p) = cur.take() {
            emit(p, &mut out)?;
        }
    }
    use base64::Engine as _;
    let footer = SealedFooter {
        first_seq: raw.first_seq,
        count,
        frontier: base64::engine::general_purpose::STANDARD.encode(frontier),
        blocks,
    };
    let json = serde_json::to_vec(&footer).expect("footer serialises");
    out.write_all(&json).map_err(io_err(&tmp))?;
    out.write_all(&(json.len() as u32).to_le_bytes())
        .map_err(io_err(&tmp))?;
    out.write_all(SEALED_MAGIC).map_err(io_err(&tmp))?;
    out.sync_all().map_err(io_err(&tmp))?;
    drop(out);
    fs::rename(&tmp, sealed_path).map_err(io_err(sealed_path))?;
    sync_dir(sealed_path.parent().unwrap_or(Path::new("."))).map_err(io_err(sealed_path))?;
    Ok(footer)
}

/// One decompressed block: its bytes and where each record is.
pub struct Block {
    raw: Vec<u8>,
    records: Vec<(u64, usize, usize)>,
}

impl Block {
    /// The records as (seq, leaf), in block order (seq order).
    pub fn leaves(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.records
            .iter()
            .map(|&(seq, a, b)| (seq, &self.raw[a..b]))
    }
}

/// Decompresses blocks, reusing one zstd context.
pub struct BlockReader {
    dctx: zstd::bulk::Decompressor<'static>,
}

impl BlockReader {
    /// A new reader.
    pub fn new() -> io::Result<Self> {
        Ok(BlockReader {
            dctx: zstd::bulk::Decompressor::new()?,
        })
    }

    /// Read and decompress the block at `offset` (`len` compressed bytes) of `file`.
    pub fn read(
        &mut self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<Block, SealError> {
        let mut z = vec![0u8; len as usize];
        file.read_exact_at(&mut z, offset).map_err(io_err(path))?;
        let at = || format!("block at byte {offset}");
        let size = match zstd::zstd_safe::get_frame_content_size(&z) {
            Ok(Some(n)) if n <= 64 << 20 => n as usize,
            _ => {
                return Err(damaged(
                    path,
                    format!("{}: not a zstd frame with a known size", at()),
                ))
            }
        };
        let raw = self
            .dctx
            .decompress(&z, size)
            .map_err(|e| damaged(path, format!("{}: {e}", at())))?;
        let mut records = Vec::with_capacity(raw.len() / 256);
        let mut pos = 0;
        while pos < raw.len() {
            let n = raw
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| damaged(path, format!("{} is cut short", at())))?;
            let (a, b) = (pos + 4, pos + 4 + n);
            let leaf = raw
                .get(a..b)
                .ok_or_else(|| damaged(path, format!("{} is cut short", at())))?;
            let seq = leaf_seq(leaf).ok_or_else(|| {
                damaged(
                    path,
                    format!("{} holds a record that is not a canonical leaf", at()),
                )
            })?;
            records.push((seq, a, b));
            pos = b;
        }
        Ok(Block { raw, records })
    }
}

/// Every record of a sealed segment, in seq order, without copying leaves.
pub struct SegmentLeaves {
    blocks: Vec<Block>,
    order: Vec<(u64, u32, u32)>,
}

impl SegmentLeaves {
    /// (seq, leaf) in seq order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.order.iter().map(|&(seq, b, r)| {
            let (_, x, y) = self.blocks[b as usize].records[r as usize];
            (seq, &self.blocks[b as usize].raw[x..y])
        })
    }
}

/// An open sealed segment.
pub struct SealedSegment {
    file: File,
    path: std::path::PathBuf,
    /// Its footer.
    pub footer: SealedFooter,
}

impl SealedSegment {
    /// Open a sealed segment and read its footer.
    pub fn open(path: &Path) -> Result<Self, SealError> {
        let mut file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        if size < 20 {
            return Err(damaged(path, "file is too short"));
        }
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(io_err(path))?;
        let mut tail = [0u8; 12];
        file.seek(SeekFrom::End(-12)).map_err(io_err(path))?;
        file.read_exact(&mut tail).map_err(io_err(path))?;
        if &magic != SEALED_MAGIC || &tail[4..] != SEALED_MAGIC {
            return Err(damaged(
                path,
                "magic bytes missing (truncated or not a sealed segment)",
            ));
        }
        let flen = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
        if flen + 20 > size {
            return Err(damaged(path, "footer length is larger than the file"));
        }
        let mut json = vec![0u8; flen as usize];
        file.read_exact_at(&mut json, size - 12 - flen)
            .map_err(io_err(path))?;
        let footer: SealedFooter = serde_json::from_slice(&json)
            .map_err(|e| damaged(path, format!("footer is not valid: {e}")))?;
        Ok(SealedSegment {
            file,
            path: path.to_path_buf(),
            footer,
        })
    }

    /// Decompress one block and return its leaves with their seqs (from the leaf bytes).
    pub fn read_block(&self, b: &BlockMeta) -> Result<Vec<(u64, Vec<u8>)>, SealError> {
        let mut reader = BlockReader::new().map_err(io_err(&self.path))?;
        let block = reader.read(&self.file, &self.path, b.offset, b.len)?;
        Ok(block.leaves().map(|(s, l)| (s, l.to_vec())).collect())
    }

    /// Every record of the segment, in seq order.
    pub fn leaves(&self) -> Result<SegmentLeaves, SealError> {
        let mut reader = BlockReader::new().map_err(io_err(&self.path))?;
        let mut blocks = Vec::with_capacity(self.footer.blocks.len());
        let mut order = Vec::with_capacity(self.footer.count as usize);
        for (bi, b) in self.footer.blocks.iter().enumerate() {
            let block = reader.read(&self.file, &self.path, b.offset, b.len)?;
            for (ri, &(seq, _, _)) in block.records.iter().enumerate() {
                order.push((seq, bi as u32, ri as u32));
            }
            blocks.push(block);
        }
        order.sort_unstable_by_key(|&(seq, _, _)| seq);
        Ok(SegmentLeaves { blocks, order })
    }
}
