//! sandtrail's store: the single-writer pipeline that turns events into a tamper-evident,
//! queryable log.
//!
//! - [`segment`]: append-only segment files, the source of truth;
//! - [`index`]: the SQLite index that answers incident questions;
//! - [`writer`]: the single writer (seq assignment, Merkle frontier, group commit, signed
//!   checkpoints, key rotation, sealing) and [`recovery`] after a crash;
//! - [`reader`]: fetching events back; [`verify`]: checking the whole store;
//!   [`bundle`]: self-contained exports that verify offline.

pub mod bundle;
pub mod checkpoints;
pub mod index;
pub mod keyfiles;
pub mod layout;
pub mod proofs;
pub mod query;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod verify;
pub mod writer;

pub use layout::Layout;
pub use writer::{Commit, StoreConfig, Writer};

/// Everything that can go wrong in the store, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another process holds the writer lock.
    #[error(
        "another sandtrail writer is using {0}; stop it first (only one writer may own a store)"
    )]
    Locked(String),
    /// No store exists at the path.
    #[error("no sandtrail store at {0}: ingest or run something first, or pass --state-dir")]
    NoStore(String),
    /// The index is missing.
    #[error("no index at {0}: open the store once with a writer (e.g. `sandtrail ingest < /dev/null`) to rebuild it")]
    NoIndex(String),
    /// Stored data is damaged in a way recovery must not paper over.
    #[error("store is damaged: {0}; run `sandtrail verify` for a full report")]
    Corrupt(String),
    /// Keys or signatures failed.
    #[error("keys: {0}")]
    Key(String),
    /// An event could not be decoded or is invalid.
    #[error("event: {0}")]
    Event(#[from] sandtrail_event::EventError),
    /// The writer's background thread stopped.
    #[error("the store writer stopped: {0}")]
    WriterGone(String),
}

impl StoreError {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}

/// Current time in unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
