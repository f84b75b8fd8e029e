//! The single writer: assigns seqs, hashes leaves into the Merkle frontier, appends frames,
//! group-commits with fsync, signs checkpoints, rotates epoch keys, and hands full segments
//! to the sealer and committed events to the indexer.
//!
//! Threads: the caller sends events over a bounded channel to the ledger thread (one core's
//! worth of work: encode, hash, append, fsync, sign). The ledger thread passes committed
//! batches to the index thread (SQLite) and full segments to the seal thread (zstd), so
//! neither slows collection down. Only the ledger thread ever writes segments or checkpoints.

use std::fs::File;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sandtrail_event::{encode_leaf_into, Event, Kind, Source};
use sandtrail_ledger::checkpoint::Checkpoint;
use sandtrail_ledger::keys::KeyStore;
use sandtrail_ledger::{leaf_hash, Frontier, Hash};

use crate::checkpoints::CheckpointWriter;
use crate::index::Indexer;
use crate::layout::{sync_dir, Layout};
use crate::recovery::{self, RecoveryReport};
use crate::segment::raw::RawWriter;
use crate::segment::sealed::{seal, SealedFooter};
use crate::{now_ns, StoreError};

/// Tunables of the writer. Defaults suit one host running a handful of sessions.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Group commit: records are fsynced at most this long after they are appended.
    pub commit_interval: Duration,
    /// A signed checkpoint covers new records at most this long after they are committed.
    pub checkpoint_interval: Duration,
    /// With no new records, a checkpoint is still signed this often (proof of liveness).
    pub heartbeat_interval: Duration,
    /// Committed events are indexed at most this long after they are committed (they are
    /// indexed in groups: see `IndexBuffer`).
    pub index_interval: Duration,
    /// A raw segment is sealed once it grows past this many bytes.
    pub segment_bytes: u64,
    /// zstd level for sealed segments.
    pub zstd_level: i32,
    /// Rotate the signing key when the current epoch is older than this (None: never).
    pub epoch_interval: Option<Duration>,
    /// Host identifier written into ledger events.
    pub host_id: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commit_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(30),
            index_interval: Duration::from_millis(100),
            segment_bytes: 16 << 20,
            zstd_level: 3,
            epoch_interval: Some(Duration::from_secs(24 * 3600)),
            host_id: crate::recovery::default_host_id(),
        }
    }
}

/// The state of the log after a flush.
#[derive(Clone, Debug)]
pub struct Commit {
    /// Number of records (the next seq).
    pub size: u64,
    /// Merkle root of those records.
    pub root: Hash,
    /// The latest signed checkpoint (it covers `size` after a flush).
    pub checkpoint: Option<String>,
}

enum Msg {
    Events(Vec<Event>),
    Flush(SyncSender<Result<Commit, String>>),
    Rotate(SyncSender<Result<String, String>>),
    Close(SyncSender<Result<Commit, String>>),
}

pub(crate) enum IndexMsg {
    Batches(Vec<Vec<Event>>),
    Sealed(SealedFooter, SyncSender<Result<(), String>>),
    Sync(SyncSender<Result<(), String>>),
}

struct SealJob {
    first_seq: u64,
    frontier: Vec<u8>,
}

type ErrorSlot = Arc<Mutex<Option<String>>>;

fn record_error(slot: &ErrorSlot, e: impl std::fmt::Display) {
    let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = Some(e.to_string());
    }
}

fn take_error(slot: &ErrorSlot) -> Option<String> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Handle to an open store's writer. Dropping it closes the store cleanly.
pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    report: RecoveryReport,
    origin: String,
}

/// Buffered events that make the index thread write without waiting for `index_interval`.
const INDEX_MAX_BUFFERED: usize = 65536;

/// Commit groups that may wait for the index thread before the ledger waits too.
const INDEX_QUEUE: usize = 16;

/// Events per message when [`Writer::append_all`] splits a stream.
const SEND_BATCH: usize = 1024;

impl Writer {
    /// Open (creating if needed) the store in `layout` for writing, recovering from any crash.
    pub fn open(layout: &Layout, cfg: StoreConfig) -> Result<Writer, StoreError> {
        let rec = recovery::recover(layout, &cfg)?;
        let report = rec.report.clone();
        let origin = rec.keys.origin().to_string();
        let errors: ErrorSlot = Arc::new(Mutex::new(None));

        // Bounded: if indexing falls behind, the ledger (and so the producers) wait instead of
        // memory growing without limit.
        let (index_tx, index_rx) = mpsc::sync_channel::<IndexMsg>(INDEX_QUEUE);
        let index_thread = {
            let layout = layout.clone();
            let errors = errors.clone();
            let indexer = rec.indexer;
            let size = rec.frontier.size();
            let interval = cfg.index_interval;
            std::thread::Builder::new()
                .name("sandtrail-index".into())
                .spawn(move || index_loop(layout, indexer, size, interval, index_rx, errors))
                .map_err(StoreError::io("starting the index thread"))?
        };
        let (seal_tx, seal_rx) = mpsc::channel::<SealJob>();
        let seal_thread = {
            let layout = layout.clone();
            let errors = errors.clone();
            let index_tx = index_tx.clone();
            let level = cfg.zstd_level;
            std::thread::Builder::new()
                .name("sandtrail-seal".into())
                .spawn(move || seal_loop(layout, level, seal_rx, index_tx, errors))
                .map_err(StoreError::io("starting the seal thread"))?
        };
        for (first_seq, frontier) in rec.to_seal {
            let _ = seal_tx.send(SealJob {
                first_seq,
                frontier,
            });
        }
        let epoch_started_ns = rec.epoch_started_ns;
        let mut core = Core {
            layout: layout.clone(),
            cfg,
            keys: rec.keys,
            frontier: rec.frontier,
            active: rec.active,
            cplog: rec.cplog,
            last_cp_size: rec.last_checkpoint.as_ref().map(|c| c.0).unwrap_or(0),
            last_cp_note: rec.last_checkpoint.map(|c| c.1),
            last_cp_at: Instant::now(),
            last_commit: Instant::now(),
            unsynced: false,
            pending: Vec::new(),
            index_tx: Some(index_tx),
            seal_tx: Some(seal_tx),
            leaf: Vec::with_capacity(4096),
            epoch_started_ns,
            errors,
            threads: vec![seal_thread, index_thread],
            lock: rec.lock,
        };
        // Say what recovery found, inside the log itself.
        if let Some(ev) = report.to_event(&core.cfg.host_id) {
            core.append(ev)
                .map_err(|e| StoreError::WriterGone(e.to_string()))?;
        }
        core.commit()
            .map_err(|e| StoreError::WriterGone(e.to_string()))?;
        core.checkpoint(core.last_cp_size != core.frontier.size() || core.last_cp_note.is_none())
            .map_err(|e| StoreError::WriterGone(e.to_string()))?;

        let (tx, rx) = mpsc::sync_channel::<Msg>(64);
        let thread = std::thread::Builder::new()
            .name("sandtrail-ledger".into())
            .spawn(move || core.run(rx))
            .map_err(StoreError::io("starting the ledger thread"))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            report,
            origin,
        })
    }

    /// What recovery found when the store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The checkpoint origin (also the signing key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn send(&mut self, msg: Msg) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .ok_or_else(|| StoreError::WriterGone("store is closed".into()))?
            .send(msg)
            .map_err(|_| StoreError::WriterGone("the ledger thread exited".into()))
    }

    /// Append one event; the ledger assigns its `seq`. It reaches the ledger thread at once:
    /// it is durable within the commit interval and signed within the checkpoint interval,
    /// whether or not more events follow. [`Writer::flush`] reports durability.
    pub fn append(&mut self, event: Event) -> Result<(), StoreError> {
        self.send(Msg::Events(vec![event]))
    }

    /// Append a batch of events in order (cheaper per event than [`Writer::append`]).
    pub fn append_batch(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.send(Msg::Events(events))
    }

    /// Append every event of a stream, in batches.
    pub fn append_all(
        &mut self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(SEND_BATCH);
        for e in events {
            batch.push(e);
            if batch.len() == SEND_BATCH {
                self.append_batch(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(SEND_BATCH),
                ))?;
            }
        }
        self.append_batch(batch)
    }

    fn request<T>(
        &mut self,
        make: impl FnOnce(SyncSender<Result<T, String>>) -> Msg,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx))?;
        rx.recv()
            .map_err(|_| StoreError::WriterGone("the ledger thread exited".into()))?
            .map_err(StoreError::WriterGone)
    }

    /// Make everything appended so far durable, signed by a checkpoint, and indexed.
    pub fn flush(&mut self) -> Result<Commit, StoreError> {
        self.request(Msg::Flush)
    }

    /// Rotate the signing key now; returns the signed rotation note.
    pub fn rotate_key(&mut self) -> Result<String, StoreError> {
        self.request(Msg::Rotate)
    }

    /// Flush, stop the background threads and release the store.
    pub fn close(mut self) -> Result<Commit, StoreError> {
        let r = self.request(Msg::Close);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let _ = self.request(Msg::Close);
            self.tx = None;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Core {
    layout: Layout,
    cfg: StoreConfig,
    keys: KeyStore,
    frontier: Frontier,
    active: RawWriter,
    cplog: CheckpointWriter,
    last_cp_size: u64,
    last_cp_note: Option<String>,
    last_cp_at: Instant,
    last_commit: Instant,
    unsynced: bool,
    /// Appended batches not yet handed to the indexer (events are never copied).
    pending: Vec<Vec<Event>>,
    index_tx: Option<SyncSender<IndexMsg>>,
    seal_tx: Option<Sender<SealJob>>,
    leaf: Vec<u8>,
    epoch_started_ns: u64,
    errors: ErrorSlot,
    threads: Vec<JoinHandle<()>>,
    #[allow(dead_code)] // held for its flock until the writer closes
    lock: File,
}

impl Core {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self.next_wakeup();
            let msg = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.shutdown();
                    return;
                }
            };
            match msg {
                Some(Msg::Events(events)) => {
                    if let Err(err) = self.append_batch(events) {
                        record_error(&self.errors, err);
                    }
                }
                Some(Msg::Flush(reply)) => {
                    let _ = reply.send(self.flush().map_err(|e| e.to_string()));
                }
                Some(Msg::Rotate(reply)) => {
                    let _ = reply.send(self.rotate().map_err(|e| e.to_string()));
                }
                Some(Msg::Close(reply)) => {
                    let _ = reply.send(self.shutdown().map_err(|e| e.to_string()));
                    return;
                }
                None => {}
            }
            if let Err(err) = self.tick() {
                record_error(&self.errors, err);
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut due = self.last_cp_at + self.cfg.heartbeat_interval;
        if self.unsynced {
            due = due.min(self.last_commit + self.cfg.commit_interval);
        }
        if self.frontier.size() > self.last_cp_size {
            due = due.min(self.last_cp_at + self.cfg.checkpoint_interval);
        }
        due.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    /// Time-driven work: group commit, checkpoints, heartbeats, key rotation.
    fn tick(&mut self) -> Result<(), StoreError> {
        if self.unsynced && self.last_commit.elapsed() >= self.cfg.commit_interval {
            self.commit()?;
        }
        let grown = self.frontier.size() > self.last_cp_size;
        let since = self.last_cp_at.elapsed();
        if (grown && since >= self.cfg.checkpoint_interval) || since >= self.cfg.heartbeat_interval
        {
            self.checkpoint(true)?;
            if self.epoch_due() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn epoch_due(&self) -> bool {
        self.cfg.epoch_interval.is_some_and(|every| {
            now_ns().saturating_sub(self.epoch_started_ns) >= every.as_nanos() as u64
        })
    }

    fn append(&mut self, ev: Event) -> Result<(), StoreError> {
        self.append_batch(vec![ev])
    }

    /// Sequence, encode, hash and frame each event of the batch in place, then keep the
    /// batch for the indexer. A batch that fills the segment is split at the roll-over.
    fn append_batch(&mut self, mut batch: Vec<Event>) -> Result<(), StoreError> {
        if let Some(e) = take_error(&self.errors) {
            return Err(StoreError::WriterGone(e));
        }
        let mut i = 0;
        while i < batch.len() {
            let ev = &mut batch[i];
            ev.seq = self.frontier.size();
            self.leaf.clear();
            encode_leaf_into(ev, &mut self.leaf);
            let hash = leaf_hash(&self.leaf);
            self.active.append(&hash, &self.leaf);
            self.frontier.append(hash);
            self.unsynced = true;
            i += 1;
            if self.active.len() >= self.cfg.segment_bytes {
                let rest = batch.split_off(i);
                self.pending.push(std::mem::replace(&mut batch, rest));
                i = 0;
                self.commit()?;
                self.roll()?;
            }
        }
        if !batch.is_empty() {
            self.pending.push(batch);
        }
        Ok(())
    }

    /// Group commit: write and fsync the active segment, then hand the batch to the indexer.
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            self.active
                .sync()
                .map_err(StoreError::io("syncing the active segment"))?;
            self.unsynced = false;
        }
        self.last_commit = Instant::now();
        if !self.pending.is_empty() {
            let batches = std::mem::take(&mut self.pending);
            if let Some(tx) = &self.index_tx {
                let _ = tx.send(IndexMsg::Batches(batches));
            }
        }
        Ok(())
    }

    /// Start a new raw segment and queue the full one for sealing.
    fn roll(&mut self) -> Result<(), StoreError> {
        let first = self.frontier.size();
        let path = self.layout.raw_segment(first);
        let next = RawWriter::create(&path, first)
            .map_err(StoreError::io(format!("creating {}", path.display())))?;
        let full = std::mem::replace(&mut self.active, next);
        if let Some(tx) = &self.seal_tx {
            let _ = tx.send(SealJob {
                first_seq: full.first_seq(),
                frontier: self.frontier.to_bytes(),
            });
        }
        Ok(())
    }

    /// Sign and store a checkpoint of the committed log (if `force` or it grew).
    fn checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        self.commit()?;
        let size = self.frontier.size();
        if !force && size == self.last_cp_size && self.last_cp_note.is_some() {
            return Ok(());
        }
        let cp = Checkpoint::new(self.keys.origin(), size, self.frontier.root(), now_ns());
        let note = cp
            .sign(self.keys.signer())
            .map_err(|e| StoreError::Key(e.to_string()))?;
        self.cplog.append(&note)?;
        self.last_cp_size = size;
        self.last_cp_note = Some(note);
        self.last_cp_at = Instant::now();
        Ok(())
    }

    fn flush(&mut self) -> Result<Commit, StoreError> {
        if let Some(e) = take_error(&self.errors) {
            return Err(StoreError::WriterGone(e));
        }
        self.checkpoint(self.frontier.size() != self.last_cp_size)?;
        self.sync_index()?;
        Ok(Commit {
            size: self.frontier.size(),
            root: self.frontier.root(),
            checkpoint: self.last_cp_note.clone(),
        })
    }

    fn sync_index(&mut self) -> Result<(), StoreError> {
        if let Some(tx) = &self.index_tx {
            let (rtx, rrx) = mpsc::sync_channel(1);
            if tx.send(IndexMsg::Sync(rtx)).is_ok() {
                rrx.recv()
                    .map_err(|_| StoreError::WriterGone("index thread exited".into()))?
                    .map_err(StoreError::WriterGone)?;
            }
        }
        Ok(())
    }

    /// Rotate the epoch key: checkpoint with the old key, record the rotation (signed by the
    /// old key, which is then erased) in the log, and checkpoint again with the new key.
    fn rotate(&mut self) -> Result<String, StoreError> {
        self.checkpoint(false)?;
        let size = self.frontier.size();
        let now = now_ns();
        let note = self
            .keys
            .rotate(size, now)
            .map_err(|e| StoreError::Key(e.to_string()))?;
        self.epoch_started_ns = now;
        let mut ev = Event::new(
            Kind::LedgerKeyRotation,
            Source::Ledger,
            None,
            &self.cfg.host_id,
            now,
        );
        ev.ledger = Some(Box::new(sandtrail_event::LedgerInfo {
            rotation: Some(sandtrail_event::RotationInfo {
                epoch: self.keys.epoch(),
                next_key: self.keys.signer().verifier().to_vkey(),
                tree_size: size,
            }),
            ..Default::default()
        }));
        self.append(ev)?;
        self.checkpoint(true)?;
        Ok(note)
    }

    fn shutdown(&mut self) -> Result<Commit, StoreError> {
        let result = self.flush();
        // Stop the sealer first (it may still talk to the indexer), then the indexer.
        self.seal_tx = None;
        let mut threads = std::mem::take(&mut self.threads).into_iter();
        if let Some(seal) = threads.next() {
            let _ = seal.join();
        }
        self.index_tx = None;
        for t in threads {
            let _ = t.join();
        }
        if let Some(e) = take_error(&self.errors) {
            return Err(StoreError::WriterGone(e));
        }
        let commit = result?;
        std::fs::remove_file(self.layout.running())
            .map_err(StoreError::io("removing the RUNNING marker"))?;
        sync_dir(self.layout.root()).map_err(StoreError::io("syncing the state directory"))?;
        Ok(commit)
    }
}

/// Committed batches waiting to be indexed together: with many sessions interleaved, each
/// SQLite transaction rewrites one page per session it touches, so fewer, larger transactions
/// cut the write volume many times over.
#[derive(Default)]
struct IndexBuffer {
    batches: Vec<Vec<Event>>,
    count: usize,
    oldest: Option<Instant>,
}

impl IndexBuffer {
    fn push(&mut self, batches: Vec<Vec<Event>>) {
        self.count += batches.iter().map(Vec::len).sum::<usize>();
        self.batches.extend(batches);
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn apply(&mut self, indexer: &mut Indexer, errors: &ErrorSlot) {
        if !self.batches.is_empty() {
            if let Err(e) = indexer.apply(self.batches.iter().flatten()) {
                record_error(errors, e);
            }
        }
        *self = IndexBuffer::default();
    }
}

fn index_loop(
    layout: Layout,
    mut indexer: Indexer,
    size: u64,
    interval: Duration,
    rx: Receiver<IndexMsg>,
    errors: ErrorSlot,
) {
    if let Err(e) = recovery::catch_up_index(&layout, &mut indexer, size) {
        record_error(&errors, e);
    }
    let mut buf = IndexBuffer::default();
    loop {
        let msg = match buf.oldest {
            Some(t) => match rx.recv_timeout(interval.saturating_sub(t.elapsed())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match msg {
            Some(IndexMsg::Batches(batches)) => {
                buf.push(batches);
                if buf.count >= INDEX_MAX_BUFFERED {
                    buf.apply(&mut indexer, &errors);
                }
            }
            Some(IndexMsg::Sealed(footer, reply)) => {
                buf.apply(&mut indexer, &errors);
                let _ = reply.send(indexer.apply_sealed(&footer).map_err(|e| e.to_string()));
            }
            Some(IndexMsg::Sync(reply)) => {
                buf.apply(&mut indexer, &errors);
                let r = match take_error(&errors) {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
                let _ = reply.send(r);
            }
            None => buf.apply(&mut indexer, &errors),
        }
    }
    buf.apply(&mut indexer, &errors);
    let _ = crate::layout::tighten_tree(layout.root());
}

fn seal_loop(
    layout: Layout,
    level: i32,
    rx: Receiver<SealJob>,
    index_tx: SyncSender<IndexMsg>,
    errors: ErrorSlot,
) {
    for job in rx {
        let raw = layout.raw_segment(job.first_seq);
        let sealed = layout.sealed_segment(job.first_seq);
        let result = seal(&raw, &sealed, &job.frontier, level)
            .map_err(|e| e.to_string())
            .and_then(|footer| {
                let (tx, rx) = mpsc::sync_channel(1);
                index_tx
                    .send(IndexMsg::Sealed(footer, tx))
                    .map_err(|_| "index thread exited".to_string())?;
                rx.recv().map_err(|_| "index thread exited".to_string())?
            })
            .and_then(|()| {
                std::fs::remove_file(&raw)
                    .and_then(|()| sync_dir(&layout.segments()))
                    .map_err(|e| format!("removing {}: {e}", raw.display()))
            });
        if let Err(e) = result {
            record_error(&errors, format!("sealing segment {}: {e}", job.first_seq));
        }
    }
}
