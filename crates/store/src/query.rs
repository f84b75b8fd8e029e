//! Event queries: candidate sessions from the index, their events' seqs from the index,
//! the events themselves from the segments, then the fine filters on the decoded events.

use sandtrail_event::{Event, Kind};

use crate::index::{Index, SessionFilter, NO_SESSION};
use crate::layout::Layout;
use crate::reader::fetch_session;
use crate::StoreError;

/// Filters of `sandtrail query`; all given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this session.
    pub session: Option<String>,
    /// Not before (unix ns).
    pub since: Option<u64>,
    /// Not after (unix ns).
    pub until: Option<u64>,
    /// Kinds; an entry without a dot (`file`) matches the whole family (`file.*`).
    pub kinds: Vec<String>,
    /// Events on this path (`DIR/` or `DIR/*`: anything below DIR).
    pub path: Option<String>,
    /// Events naming this domain (`*.example.org`: any subdomain).
    pub domain: Option<String>,
    /// Installs of this package (and version).
    pub package: Option<(String, Option<String>)>,
    /// Events during this tool call.
    pub tool_call: Option<String>,
    /// Stop after this many events (0: no limit).
    pub limit: usize,
}

/// Check kind names given by a user; the error lists the valid ones.
pub fn check_kinds(kinds: &[String]) -> Result<(), String> {
    for k in kinds {
        let family = !k.contains('.');
        let known = Kind::all()
            .iter()
            .any(|x| x.as_str() == k || (family && x.as_str().split('.').next() == Some(k)));
        if !known {
            let names: Vec<&str> = Kind::all().iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "unknown kind {k:?}; kinds are: {} (a family such as `file` matches all file.* kinds)",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

fn kind_matches(kinds: &[String], kind: Kind) -> bool {
    kinds.is_empty()
        || kinds.iter().any(|k| {
            k == kind.as_str() || (!k.contains('.') && kind.as_str().split('.').next() == Some(k))
        })
}

fn path_matches(want: &str, have: &str) -> bool {
    match want.strip_suffix("/*").or_else(|| want.strip_suffix('/')) {
        Some(dir) => {
            have.len() > dir.len() && have.starts_with(dir) && have.as_bytes()[dir.len()] == b'/'
        }
        None => have == want,
    }
}

fn domain_matches(want: &str, have: &str) -> bool {
    let want = want.trim_end_matches('.').to_ascii_lowercase();
    match want.strip_prefix("*.") {
        Some(parent) => have.ends_with(&format!(".{parent}")),
        None => have == want,
    }
}

impl EventFilter {
    fn accepts(&self, e: &Event) -> bool {
        if !kind_matches(&self.kinds, e.kind) {
            return false;
        }
        if let Some(p) = &self.path {
            if !e.paths().any(|have| path_matches(p, have)) {
                return false;
            }
        }
        if let Some(d) = &self.domain {
            if !e.domains().any(|have| domain_matches(d, have)) {
                return false;
            }
        }
        if let Some((name, version)) = &self.package {
            match e.package_ref() {
                Some((n, v, _)) if n == name && (version.is_none() || v == version.as_deref()) => {}
                _ => return false,
            }
        }
        if let Some(t) = &self.tool_call {
            let in_call = e.tool_call_id.as_deref() == Some(t.as_str())
                || e.tool.as_ref().and_then(|x| x.call_id.as_deref()) == Some(t.as_str());
            if !in_call {
                return false;
            }
        }
        true
    }
}

/// Run an event query; events come back in time order.
pub fn events(layout: &Layout, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
    let index = Index::open(&layout.index())?;
    let sids: Vec<i64> = match &f.session {
        Some(id) => match index.sid(id)? {
            Some(sid) => vec![sid],
            None => return Ok(Vec::new()),
        },
        None => {
            let sf = SessionFilter {
                accessed: f.path.clone(),
                domain: f.domain.clone(),
                package: f.package.clone(),
                since: f.since,
                until: f.until,
                ..Default::default()
            };
            let mut sids: Vec<i64> = Vec::new();
            for row in index.sessions(&sf)? {
                if let Some(sid) = index.sid(&row.session_id)? {
                    sids.push(sid);
                }
            }
            if f.path.is_none()
                && f.domain.is_none()
                && f.package.is_none()
                && f.tool_call.is_none()
            {
                sids.push(NO_SESSION);
            }
            sids
        }
    };
    let mut out = Vec::new();
    for sid in sids {
        let seqs: Vec<u64> = index
            .session_events(sid, f.since, f.until)?
            .into_iter()
            .filter(|&(_, kind)| Kind::from_id(kind).is_some_and(|k| kind_matches(&f.kinds, k)))
            .map(|(seq, _)| seq)
            .collect();
        if seqs.is_empty() {
            continue;
        }
        let mut sorted = seqs;
        sorted.sort_unstable();
        for e in fetch_session(layout, &index, sid, &sorted)? {
            if f.accepts(&e) {
                out.push(e);
            }
        }
    }
    out.sort_by_key(|e| (e.ts_ns, e.seq));
    if f.limit > 0 && out.len() > f.limit {
        out.truncate(f.limit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        assert!(path_matches("/etc/", "/etc/shadow"));
        assert!(path_matches("/etc/*", "/etc/ssh/sshd_config"));
        assert!(!path_matches("/etc/", "/etcetera"));
        assert!(path_matches("/etc/shadow", "/etc/shadow"));
        assert!(!path_matches("/etc/shadow", "/etc/shadow2"));
        assert!(domain_matches("*.Example.org.", "api.example.org"));
        assert!(!domain_matches("*.example.org", "example.org"));
        assert!(domain_matches("example.org", "example.org"));
        assert!(kind_matches(&["file".into()], Kind::FileOpen));
        assert!(!kind_matches(&["file.delete".into()], Kind::FileOpen));
        assert!(check_kinds(&["file".into(), "process.exec".into()]).is_ok());
        let err = check_kinds(&["proc.exec".into()]).unwrap_err();
        assert!(
            err.starts_with("unknown kind \"proc.exec\"; kinds are: session.create"),
            "{err}"
        );
    }
}
