//! Opening a store for writing: take the lock, find out what a crash left behind, repair
//! only what is safe to repair, and report it.
//!
//! Safe to repair: a torn record at the tail of the newest raw segment (it was never
//! checkpointed), a torn tail of the checkpoint log, an interrupted seal (the raw segment is
//! still there), an index that lags the segments. Never repaired: anything a signed
//! checkpoint covers. If such data is missing or damaged, opening fails and says so.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use sandtrail_event::{Event, Kind, Source};
use sandtrail_ledger::keys::KeyStore;
use sandtrail_ledger::Frontier;

use crate::checkpoints::{self, CheckpointWriter};
use crate::index::Indexer;
use crate::layout::{create_private_dir, sync_dir, write_atomic, Layout};
use crate::reader::for_each_event;
use crate::segment::frame::leaf_seq;
use crate::segment::raw::{RawSegment, RawWriter};
use crate::segment::sealed::SealedSegment;
use crate::segment::{self};
use crate::writer::StoreConfig;
use crate::{now_ns, StoreError};

/// Identity of a store, kept in `store.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreInfo {
    /// On-disk format version.
    pub format: u32,
    /// Checkpoint origin and key name.
    pub origin: String,
    /// Host the store was created on.
    pub host_id: String,
    /// Creation time (unix ns).
    pub created_ns: u64,
}

/// Read `store.json`.
pub fn read_info(layout: &Layout) -> Result<StoreInfo, StoreError> {
    let path = layout.store_json();
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NoStore(layout.root().display().to_string())
        } else {
            StoreError::io(format!("reading {}", path.display()))(e)
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("{} is not valid: {e}", path.display())))
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The previous writer did not close the store (crash, kill -9, power loss).
    pub unclean: bool,
    /// Records in the store after recovery.
    pub size: u64,
    /// Bytes cut from the tail of the newest raw segment (a torn, never-checkpointed record).
    pub truncated_bytes: u64,
    /// What was wrong with the cut tail.
    pub torn: Option<String>,
    /// Bytes cut from the tail of the checkpoint log.
    pub checkpoint_log_truncated_bytes: u64,
    /// Interrupted seals whose partial output was removed (first seqs).
    pub partial_seals_removed: Vec<u64>,
    /// The index was behind and is being rebuilt from this seq.
    pub index_rebuilt_from: Option<u64>,
    /// Records after the newest checkpoint (committed but not yet signed when it crashed).
    pub uncovered_records: u64,
    /// Size covered by the newest checkpoint found.
    pub last_checkpoint_size: Option<u64>,
}

impl RecoveryReport {
    /// The `ledger.recovered` event to log, if the store was not closed cleanly.
    pub fn to_event(&self, host_id: &str) -> Option<Event> {
        if !self.unclean {
            return None;
        }
        let mut ev = Event::new(
            Kind::LedgerRecovered,
            Source::Ledger,
            None,
            host_id,
            now_ns(),
        );
        ev.severity = if self.truncated_bytes > 0 {
            sandtrail_event::Severity::Medium
        } else {
            sandtrail_event::Severity::Low
        };
        ev.ledger = Some(Box::new(sandtrail_event::LedgerInfo {
            recovered: Some(sandtrail_event::RecoveredInfo {
                truncated_bytes: self.truncated_bytes,
                torn_records: u64::from(self.torn.is_some()),
                last_good_seq: self.size.checked_sub(1),
                index_rebuilt_from: self.index_rebuilt_from,
                detail: Some(self.describe()),
            }),
            ..Default::default()
        }));
        Some(ev)
    }

    /// One human sentence.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "previous writer stopped without closing the store; {} records intact",
            self.size
        )];
        if let Some(t) = &self.torn {
            parts.push(format!(
                "cut a torn record ({t}, {} bytes) from the segment tail; it was never checkpointed",
                self.truncated_bytes
            ));
        }
        if self.checkpoint_log_truncated_bytes > 0 {
            parts.push(format!(
                "cut {} bytes of a torn checkpoint from the checkpoint log",
                self.checkpoint_log_truncated_bytes
            ));
        }
        if !self.partial_seals_removed.is_empty() {
            parts.push(format!(
                "removed {} interrupted seal(s); the raw segments are intact",
                self.partial_seals_removed.len()
            ));
        }
        if let Some(from) = self.index_rebuilt_from {
            parts.push(format!("reindexing from seq {from}"));
        }
        if self.uncovered_records > 0 {
            parts.push(format!(
                "{} committed records were not yet covered by a checkpoint; a new one covers them",
                self.uncovered_records
            ));
        }
        parts.join("; ")
    }
}

pub(crate) struct Recovered {
    pub keys: KeyStore,
    pub frontier: Frontier,
    pub active: RawWriter,
    pub cplog: CheckpointWriter,
    pub last_checkpoint: Option<(u64, String)>,
    pub to_seal: Vec<(u64, Vec<u8>)>,
    pub report: RecoveryReport,
    pub indexer: Indexer,
    pub epoch_started_ns: u64,
    pub lock: File,
}

/// This host's identifier: `/etc/machine-id` (first 12 hex digits), else the host name.
pub fn default_host_id() -> String {
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if id.len() >= 12 {
            return format!("host-{}", &id[..12]);
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn take_lock(layout: &Layout) -> Result<File, StoreError> {
    let path = layout.lock();
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(StoreError::io(format!("opening {}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::Locked(layout.root().display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("locking {}", path.display()))(e))
        }
    }
}

fn ensure_info(layout: &Layout, cfg: &StoreConfig) -> Result<StoreInfo, StoreError> {
    match read_info(layout) {
        Ok(info) => Ok(info),
        Err(StoreError::NoStore(_)) => {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_ns());
            h.write_u32(std::process::id());
            let info = StoreInfo {
                format: 1,
                origin: format!("sandtrail/{}/{:08x}", cfg.host_id, h.finish() as u32),
                host_id: cfg.host_id.clone(),
                created_ns: now_ns(),
            };
            let json = serde_json::to_vec_pretty(&info).expect("serialises");
            write_atomic(&layout.store_json(), &json)
                .map_err(StoreError::io("writing store.json"))?;
            Ok(info)
        }
        Err(e) => Err(e),
    }
}

/// Open the store at `layout` for writing, repairing what a crash left behind.
/// True when `path` is shorter than a raw segment header and what it holds is the start of
/// one: the file of a writer killed while creating it.
fn is_torn_creation(path: &Path) -> bool {
    use crate::segment::raw::{RAW_HEADER, RAW_MAGIC};
    // The length first: the newest segment is usually whole and megabytes long.
    if std::fs::metadata(path).map_or(true, |m| m.len() >= RAW_HEADER as u64) {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let n = bytes.len().min(RAW_MAGIC.len());
    bytes.len() < RAW_HEADER && bytes[..n] == RAW_MAGIC[..n]
}

pub(crate) fn recover(layout: &Layout, cfg: &StoreConfig) -> Result<Recovered, StoreError> {
    create_private_dir(layout.root()).map_err(StoreError::io(format!(
        "creating {}",
        layout.root().display()
    )))?;
    create_private_dir(&layout.segments()).map_err(StoreError::io("creating segments/"))?;
    let lock = take_lock(layout)?;
    let info = ensure_info(layout, cfg)?;
    let keys = KeyStore::open_or_create(&layout.keys(), &info.origin)
        .map_err(|e| StoreError::Key(e.to_string()))?;
    let chain = keys.chain().map_err(|e| StoreError::Key(e.to_string()))?;
    let epoch_started_ns = chain
        .rotations()
        .last()
        .map(|(r, _)| r.time_ns)
        .unwrap_or(info.created_ns);

    let mut report = RecoveryReport {
        unclean: layout.running().exists(),
        ..Default::default()
    };
    write_atomic(
        &layout.running(),
        format!("{}\n", std::process::id()).as_bytes(),
    )
    .map_err(StoreError::io("writing the RUNNING marker"))?;

    // The checkpoint log: cut a torn tail, find the newest checkpoint.
    let cpath = layout.checkpoints();
    let log = checkpoints::read(&cpath)?;
    if log.valid_len < log.file_len {
        report.checkpoint_log_truncated_bytes = log.file_len - log.valid_len;
        let f = OpenOptions::new()
            .write(true)
            .open(&cpath)
            .map_err(StoreError::io("opening checkpoints.log"))?;
        f.set_len(log.valid_len)
            .and_then(|()| f.sync_all())
            .map_err(StoreError::io("truncating checkpoints.log"))?;
    }
    let mut last_checkpoint = None;
    if let Some(note) = log.notes.last() {
        let (cp, _) = chain.verify_checkpoint(note).map_err(|e| {
            StoreError::Corrupt(format!("the newest checkpoint does not verify: {e}"))
        })?;
        last_checkpoint = Some((cp, note.clone()));
    }
    let covered = last_checkpoint.as_ref().map(|(cp, _)| cp.size).unwrap_or(0);
    report.last_checkpoint_size = last_checkpoint.as_ref().map(|(cp, _)| cp.size);

    // Segments, oldest first.
    let mut segments = segment::list(layout).map_err(StoreError::io("listing segments"))?;
    for (&first, files) in segments.iter_mut() {
        if let (Some(_), Some(sealed)) = (&files.raw, &files.sealed) {
            std::fs::remove_file(sealed).map_err(StoreError::io("removing a partial seal"))?;
            files.sealed = None;
            report.partial_seals_removed.push(first);
        }
    }
    if let Ok(rd) = std::fs::read_dir(layout.segments()) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut frontier = Frontier::new();
    let mut to_seal = Vec::new();
    let mut active = None;
    let count = segments.len();
    for (i, (&first, files)) in segments.iter().enumerate() {
        let last = i + 1 == count;
        if first != frontier.size() {
            return Err(StoreError::Corrupt(format!(
                "segment starting at seq {first} follows a log of {} records (a segment is missing or extra)",
                frontier.size()
            )));
        }
        if let Some(raw_path) = &files.raw {
            if last && first >= covered && is_torn_creation(raw_path) {
                // A writer (before segments were created atomically) died between creating
                // the file and writing its header: it holds no record. Remove it; a fresh
                // segment is created below.
                std::fs::remove_file(raw_path)
                    .map_err(StoreError::io(format!("removing {}", raw_path.display())))?;
                report.torn = Some("a segment file without its whole header".into());
                continue;
            }
            let seg = RawSegment::read(raw_path).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut end = crate::segment::raw::RAW_HEADER as u64;
            for item in seg.frames(true) {
                match item {
                    Ok((at, frame)) => {
                        let want = frontier.size();
                        if leaf_seq(frame.leaf) != Some(want) {
                            return Err(StoreError::Corrupt(format!(
                                "{} byte {at}: record should have seq {want}",
                                raw_path.display()
                            )));
                        }
                        frontier.append(*frame.stored_hash);
                        end = (at + frame.len) as u64;
                    }
                    Err((at, fault)) => {
                        let seq = frontier.size();
                        if !last || seq < covered {
                            return Err(StoreError::Corrupt(format!(
                                "{} byte {at}: record seq {seq}: {fault}; it is {}",
                                raw_path.display(),
                                if seq < covered {
                                    "covered by a signed checkpoint, so it is not cut"
                                } else {
                                    "not at the tail"
                                }
                            )));
                        }
                        report.torn = Some(fault.to_string());
                        report.truncated_bytes = seg.bytes.len() as u64 - at as u64;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(raw_path)
                            .map_err(StoreError::io("opening the torn segment"))?;
                        f.set_len(at as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(StoreError::io("truncating the torn segment"))?;
                        end = at as u64;
                    }
                }
            }
            if last && end < cfg.segment_bytes {
                let records = frontier.size() - first;
                active = Some(
                    RawWriter::reopen(raw_path, first, records, end)
                        .map_err(StoreError::io(format!("reopening {}", raw_path.display())))?,
                );
            } else {
                to_seal.push((first, frontier.to_bytes()));
            }
        } else if let Some(sealed) = &files.sealed {
            let seg =
                SealedSegment::open(sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if seg.footer.first_seq != first {
                return Err(StoreError::Corrupt(format!(
                    "{} says it starts at seq {}",
                    sealed.display(),
                    seg.footer.first_seq
                )));
            }
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&seg.footer.frontier)
                .map_err(|e| StoreError::Corrupt(format!("{}: frontier: {e}", sealed.display())))?;
            frontier = Frontier::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: frontier: {e}", sealed.display())))?;
            if frontier.size() != first + seg.footer.count {
                return Err(StoreError::Corrupt(format!(
                    "{}: frontier size {} disagrees with its {} records",
                    sealed.display(),
                    frontier.size(),
                    seg.footer.count
                )));
            }
        }
    }
    let size = frontier.size();
    if size < covered {
        return Err(StoreError::Corrupt(format!(
            "the store holds {size} records but a signed checkpoint covers {covered}: records were lost or removed"
        )));
    }
    if let Some((cp, _)) = &last_checkpoint {
        if cp.size == size && cp.root != frontier.root() {
            return Err(StoreError::Corrupt(format!(
                "the records do not hash to the root of the newest checkpoint (size {size})"
            )));
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let path = layout.raw_segment(size);
            RawWriter::create(&path, size)
                .map_err(StoreError::io(format!("creating {}", path.display())))?
        }
    };
    report.size = size;
    if report.unclean {
        report.uncovered_records = size - covered;
    }

    // The index: rebuild when it is ahead of the log (it indexed records that are gone).
    let mut indexer = Indexer::open(&layout.index())?;
    if indexer.indexed_size() > size {
        indexer = Indexer::reset(&layout.index())?;
    }
    if indexer.indexed_size() < size {
        report.index_rebuilt_from = Some(indexer.indexed_size());
    }
    let cplog = CheckpointWriter::open(&cpath)?;
    crate::layout::tighten_tree(layout.root()).map_err(StoreError::io("setting permissions"))?;
    sync_dir(layout.root()).map_err(StoreError::io("syncing the state directory"))?;
    Ok(Recovered {
        keys,
        frontier,
        active,
        cplog,
        last_checkpoint: last_checkpoint.map(|(cp, note)| (cp.size, note)),
        to_seal,
        report,
        indexer,
        epoch_started_ns,
        lock,
    })
}

/// Bring the index up to `size` records and make sure every sealed segment's blocks are known.
pub(crate) fn catch_up_index(
    layout: &Layout,
    indexer: &mut Indexer,
    size: u64,
) -> Result<(), StoreError> {
    let from = indexer.indexed_size();
    if from < size {
        let mut batch = Vec::with_capacity(8192);
        for_each_event(layout, from, |ev| {
            if ev.seq < size {
                batch.push(ev);
            }
            if batch.len() >= 8192 {
                indexer.apply(&batch)?;
                batch.clear();
            }
            Ok(())
        })?;
        indexer.apply(&batch)?;
    }
    for (first, files) in segment::list(layout).map_err(StoreError::io("listing segments"))? {
        if let (None, Some(sealed)) = (&files.raw, &files.sealed) {
            if !indexer.has_blocks(first)? {
                let seg =
                    SealedSegment::open(sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                indexer.apply_sealed(&seg.footer)?;
            }
        }
    }
    Ok(())
}
