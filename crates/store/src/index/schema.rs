//! The SQLite schema of the index.
//!
//! The index is derived data: everything in it can be rebuilt from the segments. It holds
//! runs (one row per session per index transaction listing that session's events: seq, kind
//! and time, varint-packed) and per-session aggregates that answer the incident questions
//! directly: which sessions touched a path, a domain, a package, and how each session ended.
//!
//! Why runs and not a row per event: sessions interleave, and a row per event keyed by session
//! makes every transaction rewrite one B-tree page per session it touches (about 2.4 KB written
//! per event with 1000 sessions and 5000-event transactions). A run is one insert per session
//! per transaction.

/// Schema version stored in `meta`; a different version makes the store rebuild the index.
pub const INDEX_VERSION: i64 = 2;

/// DDL, applied idempotently.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    sid INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    tenant TEXT, user TEXT, template TEXT,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    terminated_ts INTEGER, reason TEXT, exit_code INTEGER, signal INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_reason ON sessions(reason);
CREATE TABLE IF NOT EXISTS runs(
    sid INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, n INTEGER NOT NULL,
    packed BLOB NOT NULL,
    PRIMARY KEY(sid, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paths(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS session_paths(
    path INTEGER NOT NULL, sid INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    PRIMARY KEY(path, sid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domains(id INTEGER PRIMARY KEY, domain TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS session_domains(
    domain INTEGER NOT NULL, sid INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    PRIMARY KEY(domain, sid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_packages(
    name TEXT NOT NULL, version TEXT NOT NULL, manager TEXT NOT NULL, sid INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY(name, version, manager, sid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks(
    sid INTEGER NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    segment INTEGER NOT NULL, offset INTEGER NOT NULL, len INTEGER NOT NULL,
    min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY(sid, first_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_segment ON blocks(segment);
"#;
