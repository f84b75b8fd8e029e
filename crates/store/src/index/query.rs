//! Reading the index: the incident questions and the lookups behind `query` and `timeline`.

use std::path::Path;

use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::run::unpack;
use crate::StoreError;

/// Filters of `sandtrail sessions`; all given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Sessions that accessed this path; `DIR/` or `DIR/*` matches everything below DIR.
    pub accessed: Option<String>,
    /// Sessions that resolved or connected to this domain; `*.example.org` matches subdomains.
    pub domain: Option<String>,
    /// Sessions that installed this package, optionally at this version.
    pub package: Option<(String, Option<String>)>,
    /// Sessions that terminated with this reason (`exit`, `timeout`, `oom`, ...).
    pub terminated: Option<String>,
    /// Sessions active at or after this time (unix ns).
    pub since: Option<u64>,
    /// Sessions active at or before this time (unix ns).
    pub until: Option<u64>,
}

/// One session as the index knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionRow {
    /// Session id.
    pub session_id: String,
    /// Tenant, from session.create.
    pub tenant: Option<String>,
    /// User, from session.create.
    pub user: Option<String>,
    /// Template or image, from session.create.
    pub template: Option<String>,
    /// Time of its first event (unix ns).
    pub first_ts: u64,
    /// Time of its last event (unix ns).
    pub last_ts: u64,
    /// Seq of its first event.
    pub first_seq: u64,
    /// Number of events.
    pub events: u64,
    /// Termination reason, if it terminated.
    pub reason: Option<String>,
    /// Exit code at termination.
    pub exit_code: Option<i64>,
    /// Killing signal at termination.
    pub signal: Option<i64>,
}

/// Where a sealed block of one session is.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRow {
    /// First seq of the segment file.
    pub segment: u64,
    /// Byte offset of the compressed block.
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// Smallest seq in the block.
    pub first_seq: u64,
    /// Largest seq in the block.
    pub last_seq: u64,
    /// Records in the block.
    pub count: u64,
}

/// A read-only view of the index.
pub struct Index {
    conn: Connection,
}

/// Escape a string for use inside a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Index {
    /// Open the index read-only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NoIndex(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout=10000; PRAGMA cache_size=-65536;")?;
        Ok(Index { conn })
    }

    /// Number of leading records the index covers.
    pub fn indexed_size(&self) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='indexed_size'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Sessions matching every given filter, oldest first.
    pub fn sessions(&self, f: &SessionFilter) -> Result<Vec<SessionRow>, StoreError> {
        let mut sql = String::from(
            "SELECT session_id, tenant, user, template, first_ts, last_ts, first_seq, events, \
             reason, exit_code, signal FROM sessions s WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(p) = &f.accessed {
            let dir = p.strip_suffix("/*").or_else(|| p.strip_suffix('/'));
            match dir {
                Some(dir) => {
                    // Everything below DIR sorts between "DIR/" and "DIR0" ('0' follows '/'):
                    // a range the UNIQUE index on paths.path serves.
                    sql.push_str(
                        " AND s.sid IN (SELECT sp.sid FROM session_paths sp JOIN paths p ON \
                         p.id = sp.path WHERE p.path >= ? AND p.path < ?)",
                    );
                    args.push(format!("{dir}/").into());
                    args.push(format!("{dir}0").into());
                }
                None => {
                    sql.push_str(
                        " AND s.sid IN (SELECT sp.sid FROM session_paths sp JOIN paths p ON \
                         p.id = sp.path WHERE p.path = ?)",
                    );
                    args.push(p.clone().into());
                }
            }
        }
        if let Some(d) = &f.domain {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            match d.strip_prefix("*.") {
                Some(parent) => {
                    sql.push_str(
                        " AND s.sid IN (SELECT sd.sid FROM session_domains sd JOIN domains d ON \
                         d.id = sd.domain WHERE d.domain LIKE ? ESCAPE '\\')",
                    );
                    args.push(format!("%.{}", like_escape(parent)).into());
                }
                None => {
                    sql.push_str(
                        " AND s.sid IN (SELECT sd.sid FROM session_domains sd JOIN domains d ON \
                         d.id = sd.domain WHERE d.domain = ?)",
                    );
                    args.push(d.into());
                }
            }
        }
        if let Some((name, version)) = &f.package {
            sql.push_str(" AND s.sid IN (SELECT sid FROM session_packages WHERE name = ?");
            args.push(name.clone().into());
            if let Some(v) = version {
                sql.push_str(" AND version = ?");
                args.push(v.clone().into());
            }
            sql.push(')');
        }
        if let Some(r) = &f.terminated {
            sql.push_str(" AND s.reason = ?");
            args.push(r.clone().into());
        }
        if let Some(t) = f.since {
            sql.push_str(" AND s.last_ts >= ?");
            args.push((t as i64).into());
        }
        if let Some(t) = f.until {
            sql.push_str(" AND s.first_ts <= ?");
            args.push((t as i64).into());
        }
        sql.push_str(" ORDER BY s.first_seq");
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params_from_iter(args), |r| {
            Ok(SessionRow {
                session_id: r.get(0)?,
                tenant: r.get(1)?,
                user: r.get(2)?,
                template: r.get(3)?,
                first_ts: r.get::<_, i64>(4)? as u64,
                last_ts: r.get::<_, i64>(5)? as u64,
                first_seq: r.get::<_, i64>(6)? as u64,
                events: r.get::<_, i64>(7)? as u64,
                reason: r.get(8)?,
                exit_code: r.get(9)?,
                signal: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Internal id of a session.
    pub fn sid(&self, session_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sid FROM sessions WHERE session_id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Seqs and kind ids of a session's events in `[since, until]`, in time order.
    pub fn session_events(
        &self,
        sid: i64,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<(u64, u8)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT first_seq, n, packed FROM runs WHERE sid = ?1 AND max_ts >= ?2 AND min_ts <= ?3",
        )?;
        let lo = since.unwrap_or(0);
        let hi = until.unwrap_or(u64::MAX);
        let rows = st.query_map(
            rusqlite::params![
                sid,
                lo.min(i64::MAX as u64) as i64,
                hi.min(i64::MAX as u64) as i64
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        let mut out: Vec<(u64, u64, u8)> = Vec::new();
        for row in rows {
            let (first, n, packed) = row?;
            let events = unpack(first, n, &packed).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "index run of session {sid} at seq {first} is damaged; delete index.sqlite to rebuild it"
                ))
            })?;
            out.extend(
                events
                    .into_iter()
                    .filter(|&(_, _, ts)| ts >= lo && ts <= hi)
                    .map(|(seq, kind, ts)| (ts, seq, kind)),
            );
        }
        out.sort_unstable();
        Ok(out.into_iter().map(|(_, seq, kind)| (seq, kind)).collect())
    }

    /// Sealed blocks of a session that may hold seqs in `[first, last]`.
    pub fn blocks(&self, sid: i64, first: u64, last: u64) -> Result<Vec<BlockRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT segment, offset, len, first_seq, last_seq, count FROM blocks \
             WHERE sid = ?1 AND first_seq <= ?3 AND last_seq >= ?2 ORDER BY first_seq",
        )?;
        let rows = st.query_map(rusqlite::params![sid, first as i64, last as i64], |r| {
            Ok(BlockRow {
                segment: r.get::<_, i64>(0)? as u64,
                offset: r.get::<_, i64>(1)? as u64,
                len: r.get::<_, i64>(2)? as u64,
                first_seq: r.get::<_, i64>(3)? as u64,
                last_seq: r.get::<_, i64>(4)? as u64,
                count: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Seqs of events that belong to no session (ledger events).
    pub fn ledger_events(&self) -> Result<Vec<(u64, u8)>, StoreError> {
        self.session_events(super::writer::NO_SESSION, None, None)
    }
}
