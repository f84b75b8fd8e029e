//! Writing the index: one transaction per committed group of events.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use sandtrail_event::{Event, Kind};

use super::run::RunBuilder;
use super::schema::{INDEX_VERSION, SCHEMA};
use crate::segment::sealed::SealedFooter;
use crate::StoreError;

/// Session id row used for events that belong to no session (ledger events).
pub const NO_SESSION: i64 = 0;

/// The single writer of the index.
pub struct Indexer {
    conn: Connection,
    sids: HashMap<String, i64>,
    next_sid: i64,
    seen: Seen,
    indexed: u64,
}

/// What is already in the aggregate tables, so repeats cost no SQL.
#[derive(Default)]
struct Seen {
    path_ids: HashMap<String, i64>,
    domain_ids: HashMap<String, i64>,
    paths: HashSet<(i64, i64)>,
    domains: HashSet<(i64, i64)>,
    packages: HashSet<(String, String, String, i64)>,
}

/// Open the index database with the pragmas every connection uses.
pub fn open_db(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; \
         PRAGMA temp_store=MEMORY; PRAGMA busy_timeout=10000;",
    )?;
    Ok(conn)
}

impl Indexer {
    /// Open (creating) the index at `path`. A missing or incompatible index starts empty.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_db(path)?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if version.is_some_and(|v| v != INDEX_VERSION) {
            drop(conn);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            conn = open_db(path)?;
            conn.execute_batch(SCHEMA)?;
        }
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('version', ?1)",
            [INDEX_VERSION],
        )?;
        crate::layout::tighten_file(path).map_err(StoreError::io("setting index permissions"))?;
        let indexed: i64 = conn
            .query_row("SELECT value FROM meta WHERE key='indexed_size'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let mut sids = HashMap::new();
        let mut next_sid = 1;
        {
            let mut st = conn.prepare("SELECT sid, session_id FROM sessions")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (sid, id) = row?;
                next_sid = next_sid.max(sid + 1);
                sids.insert(id, sid);
            }
        }
        let path_ids = load_ids(&conn, "SELECT id, path FROM paths")?;
        let domain_ids = load_ids(&conn, "SELECT id, domain FROM domains")?;
        Ok(Indexer {
            conn,
            sids,
            next_sid,
            seen: Seen {
                path_ids,
                domain_ids,
                ..Default::default()
            },
            indexed: indexed as u64,
        })
    }

    /// Number of leading records (seq 0..n) the index covers.
    pub fn indexed_size(&self) -> u64 {
        self.indexed
    }

    /// Index consecutive events starting at seq `indexed_size()`, in one transaction.
    pub fn apply<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<(), StoreError> {
        let mut events = events.into_iter().peekable();
        if events.peek().is_none() {
            return Ok(());
        }
        let mut last = self.indexed;
        let mut runs: HashMap<i64, RunBuilder> = HashMap::default();
        let tx = self.conn.transaction()?;
        {
            let mut ins_session = tx.prepare_cached(
                "INSERT INTO sessions(sid, session_id, first_seq, last_seq, first_ts, last_ts) \
                 VALUES(?1, ?2, ?3, ?3, ?4, ?4)",
            )?;
            for ev in events {
                last = ev.seq + 1;
                let sid = match &ev.session_id {
                    None => NO_SESSION,
                    Some(id) => match self.sids.get(id) {
                        Some(&sid) => sid,
                        None => {
                            let sid = self.next_sid;
                            self.next_sid += 1;
                            ins_session.execute(params![
                                sid,
                                id,
                                ev.seq as i64,
                                ev.ts_ns as i64
                            ])?;
                            self.sids.insert(id.clone(), sid);
                            sid
                        }
                    },
                };
                runs.entry(sid)
                    .or_default()
                    .push(ev.seq, ev.kind.id(), ev.ts_ns);
                if sid != NO_SESSION {
                    index_details(&tx, &mut self.seen, sid, ev)?;
                }
            }
            let mut ins_run = tx.prepare_cached(
                "INSERT INTO runs(sid, first_seq, min_ts, max_ts, n, packed) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut upd = tx.prepare_cached(
                "UPDATE sessions SET last_seq = max(last_seq, ?2), last_ts = max(last_ts, ?3), \
                 first_ts = min(first_ts, ?4), events = events + ?5 WHERE sid = ?1",
            )?;
            for (&sid, run) in &runs {
                let (first, last_seq, min_ts, max_ts, packed) = run.parts();
                ins_run.execute(params![
                    sid,
                    first as i64,
                    min_ts as i64,
                    max_ts as i64,
                    run.len() as i64,
                    packed
                ])?;
                if sid != NO_SESSION {
                    upd.execute(params![
                        sid,
                        last_seq as i64,
                        max_ts as i64,
                        min_ts as i64,
                        run.len() as i64
                    ])?;
                }
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('indexed_size', ?1)",
            [last as i64],
        )?;
        tx.commit()?;
        self.indexed = last;
        Ok(())
    }
}

fn index_details(
    tx: &rusqlite::Transaction<'_>,
    seen: &mut Seen,
    sid: i64,
    ev: &Event,
) -> Result<(), StoreError> {
    for path in ev.paths() {
        let id = intern(tx, &mut seen.path_ids, "paths", "path", path)?;
        if seen.paths.insert((id, sid)) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO session_paths(path, sid, first_seq) VALUES(?1, ?2, ?3)",
            )?
            .execute(params![id, sid, ev.seq as i64])?;
        }
    }
    for domain in ev.domains() {
        let id = intern(tx, &mut seen.domain_ids, "domains", "domain", domain)?;
        if seen.domains.insert((id, sid)) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO session_domains(domain, sid, first_seq) VALUES(?1, ?2, ?3)",
            )?
            .execute(params![id, sid, ev.seq as i64])?;
        }
    }
    if let Some((name, version, manager)) = ev.package_ref() {
        let key = (
            name.to_string(),
            version.unwrap_or("").to_string(),
            manager.unwrap_or("").to_string(),
            sid,
        );
        if !seen.packages.contains(&key) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO session_packages(name, version, manager, sid, first_seq) \
                     VALUES(?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![key.0, key.1, key.2, sid, ev.seq as i64])?;
            seen.packages.insert(key);
        }
    }
    match ev.kind {
        Kind::SessionCreate => {
            if let Some(s) = &ev.session {
                tx.prepare_cached(
                    "UPDATE sessions SET tenant = ?2, user = ?3, template = ?4 WHERE sid = ?1",
                )?
                .execute(params![sid, s.tenant_id, s.user, s.template])?;
            }
        }
        Kind::SessionTerminate => {
            let s = ev.session.as_ref();
            let reason = ev.terminate_reason().map(|r| r.as_str());
            tx.prepare_cached(
                "UPDATE sessions SET terminated_ts = ?2, reason = ?3, exit_code = ?4, signal = ?5 \
                     WHERE sid = ?1",
            )?
            .execute(params![
                sid,
                ev.ts_ns as i64,
                reason,
                s.and_then(|s| s.exit_code).map(i64::from),
                s.and_then(|s| s.signal).map(i64::from),
            ])?;
        }
        _ => {}
    }
    Ok(())
}

impl Indexer {
    /// Record where a sealed segment's blocks are, so queries read only what they need.
    pub fn apply_sealed(&mut self, footer: &SealedFooter) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO blocks(sid, first_seq, last_seq, segment, offset, len, \
                 min_ts, max_ts, count) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for b in &footer.blocks {
                let sid = match &b.session {
                    None => NO_SESSION,
                    // A block of a session the index has not seen yet cannot happen: events
                    // are indexed before their segment is sealed. Skip defensively.
                    Some(id) => match self.sids.get(id) {
                        Some(&sid) => sid,
                        None => continue,
                    },
                };
                ins.execute(params![
                    sid,
                    b.first_seq as i64,
                    b.last_seq as i64,
                    footer.first_seq as i64,
                    b.offset as i64,
                    b.len as i64,
                    b.min_ts as i64,
                    b.max_ts as i64,
                    b.count as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn load_ids(conn: &Connection, sql: &str) -> Result<HashMap<String, i64>, StoreError> {
    let mut st = conn.prepare(sql)?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(0)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (k, v) = row?;
        out.insert(k, v);
    }
    Ok(out)
}

fn intern(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<String, i64>,
    table: &str,
    column: &str,
    value: &str,
) -> Result<i64, StoreError> {
    if let Some(&id) = cache.get(value) {
        return Ok(id);
    }
    tx.prepare_cached(&format!("INSERT INTO {table}({column}) VALUES(?1)"))?
        .execute([value])?;
    let id = tx.last_insert_rowid();
    cache.insert(value.to_string(), id);
    Ok(id)
}

impl Indexer {
    /// True when the blocks of the sealed segment starting at `segment` are recorded.
    pub fn has_blocks(&self, segment: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM blocks WHERE segment = ?1 LIMIT 1",
                [segment as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Delete the index at `path` (and its WAL files) and open a fresh one.
    pub fn reset(path: &Path) -> Result<Self, StoreError> {
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{}{suffix}", path.display());
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {p}"))(e)),
            }
        }
        Indexer::open(path)
    }
}
