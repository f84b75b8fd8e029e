//! Event::validate / normalize and the translation of serde errors into field-path messages.

use crate::schema::{required_fields, session_id_optional};
use crate::{
    parse_ts, Event, EventError, FsState, Kind, PauseReason, Resources, TerminateReason, SCHEMA,
};

fn invalid(path: &str, msg: impl Into<String>) -> EventError {
    EventError::invalid(path, msg)
}

/// Whether the dotted `path` (one of those in [`required_fields`]) is present in `e`.
pub(crate) fn present(e: &Event, path: &str) -> bool {
    let s = e.session.as_ref();
    let l = e.ledger.as_ref();
    match path {
        "session_id" => e.session_id.is_some(),
        "session" => s.is_some(),
        "session.reason" => s.is_some_and(|s| s.reason.is_some()),
        "session.actor" => s.is_some_and(|s| s.actor.is_some()),
        "session.fs_state" => s.is_some_and(|s| s.fs_state.is_some()),
        "process" => e.process.is_some(),
        "exec" => e.exec.is_some(),
        "exit" => e.exit.is_some(),
        "file" => e.file.is_some(),
        "file.new_path" => e.file.as_ref().is_some_and(|f| f.new_path.is_some()),
        "file.mode" => e.file.as_ref().is_some_and(|f| f.mode.is_some()),
        "net" => e.net.is_some(),
        "net.src" => e.net.as_ref().is_some_and(|n| n.src.is_some()),
        "dns" => e.dns.is_some(),
        "policy" => e.policy.is_some(),
        "policy.what" => e.policy.as_ref().is_some_and(|p| p.what.is_some()),
        "package" => e.package.is_some(),
        "tool" => e.tool.is_some(),
        "model" => e.model.is_some(),
        "limit" => e.limit.is_some(),
        "alert" => e.alert.is_some(),
        "loss" => e.loss.is_some(),
        "ledger" => l.is_some(),
        "ledger.checkpoint" => l.is_some_and(|l| l.checkpoint.is_some()),
        "ledger.rotation" => l.is_some_and(|l| l.rotation.is_some()),
        "ledger.recovered" => l.is_some_and(|l| l.recovered.is_some()),
        "ledger.pruned" => l.is_some_and(|l| l.pruned.is_some()),
        other => unreachable!("required_fields names unknown path {other}"),
    }
}

fn names<T: std::fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to fix a missing required field.
fn fix_for(kind: Kind, path: &str) -> String {
    match path {
        "session_id" => {
            "set it to the session's id (only ledger.*, alert and audit.loss events may omit it)"
                .into()
        }
        "session.reason" if kind == Kind::SessionTerminate => {
            format!("set it to one of {}", names(TerminateReason::ALL))
        }
        "session.reason" => format!("set it to one of {}", names(PauseReason::ALL)),
        "session.actor" => {
            "set it to who resumed the session (user, token name or \"system\")".into()
        }
        "session.fs_state" => format!("set it to one of {}", names(FsState::ALL)),
        "file.new_path" => "set it to the absolute destination path".into(),
        "file.mode" => "set it to the new mode bits (decimal, 493 = 0o755)".into(),
        "net.src" => "set it to the remote peer {ip, port}".into(),
        "policy.what" => "describe what was attempted".into(),
        p if !p.contains('.') => {
            format!("add the \"{p}\" object (see docs/schema/event.schema.json)")
        }
        _ => "add it (see docs/schema/event.schema.json)".into(),
    }
}

fn non_empty(path: &str, v: &str) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    Ok(())
}

fn absolute(path: &str, v: &str) -> Result<(), EventError> {
    if !v.starts_with('/') {
        return Err(invalid(path, format!("must be absolute, got {v:?}")));
    }
    Ok(())
}

/// "ok" or an errno name.
pub(crate) fn is_result(v: &str) -> bool {
    v == "ok"
        || (v.len() >= 2
            && v.starts_with('E')
            && v.bytes()
                .skip(1)
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
}

fn result(path: &str, v: Option<&str>) -> Result<(), EventError> {
    match v {
        Some(v) if !is_result(v) => Err(invalid(
            path,
            format!("must be \"ok\" or an errno name like \"ENOENT\", got {v:?}"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn is_normal_domain(d: &str) -> bool {
    !d.is_empty() && !d.ends_with('.') && !d.bytes().any(|b| b.is_ascii_uppercase())
}

fn domain(path: &str, v: &str) -> Result<(), EventError> {
    if !is_normal_domain(v) {
        let fixed = v.trim_end_matches('.').to_ascii_lowercase();
        if fixed.is_empty() {
            return Err(invalid(path, format!("must be a domain name, got {v:?}")));
        }
        return Err(invalid(
            path,
            format!("must be lower-case without a trailing dot, got {v:?}; write {fixed:?} (Event::normalize does this)"),
        ));
    }
    Ok(())
}

fn ip(path: &str, v: &str) -> Result<(), EventError> {
    if v.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            path,
            format!("must be an IPv4 or IPv6 address, got {v:?}"),
        ));
    }
    Ok(())
}

fn resources(path: &str, r: Option<&Resources>) -> Result<(), EventError> {
    if let Some(c) = r.and_then(|r| r.cpus) {
        if !c.is_finite() || c < 0.0 {
            return Err(invalid(
                &format!("{path}.cpus"),
                format!("must be a finite number of CPUs >= 0, got {c}"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate(e: &Event) -> Result<(), EventError> {
    if e.schema != SCHEMA {
        return Err(invalid(
            "schema",
            format!("must be {SCHEMA:?}, got {:?}", e.schema),
        ));
    }
    // Fast path: the canonical form is what sandtrail itself writes.
    let mut canon = [0u8; 30];
    crate::ts::format_ts_bytes(e.ts_ns, &mut canon);
    if e.ts.as_bytes() != canon {
        let t = parse_ts(&e.ts)?;
        if t != e.ts_ns {
            return Err(invalid(
                "ts",
                format!(
                    "{:?} is {t} ns but ts_ns is {} ({}); set both from one clock reading",
                    e.ts,
                    e.ts_ns,
                    crate::format_ts(e.ts_ns)
                ),
            ));
        }
    }
    non_empty("host_id", &e.host_id)?;
    if let Some(id) = &e.session_id {
        non_empty("session_id", id)?;
    }
    let kind = e.kind;
    for path in required_fields(kind) {
        if !present(e, path) {
            return Err(invalid(
                path,
                format!(
                    "required for kind {:?}; {}",
                    kind.as_str(),
                    fix_for(kind, path)
                ),
            ));
        }
    }
    debug_assert!(session_id_optional(kind) || e.session_id.is_some());
    if let Some(tc) = &e.tool_call_id {
        non_empty("tool_call_id", tc)?;
    }
    if let Some(p) = &e.process {
        non_empty("process.exe", &p.exe)?;
        non_empty("process.exec_id", &p.exec_id)?;
    }
    if let Some(s) = &e.session {
        resources("session.resources", s.resources.as_ref())?;
        resources("session.limits", s.limits.as_ref())?;
        if let Some(r) = s.reason {
            match kind {
                Kind::SessionTerminate if r.as_terminate().is_none() => {
                    return Err(invalid(
                        "session.reason",
                        format!(
                            "{:?} is not a terminate reason; use one of {}",
                            r.as_str(),
                            names(TerminateReason::ALL)
                        ),
                    ));
                }
                Kind::SessionPause | Kind::SessionResume if r.as_pause().is_none() => {
                    return Err(invalid(
                        "session.reason",
                        format!(
                            "{:?} is not a pause reason; use one of {}",
                            r.as_str(),
                            names(PauseReason::ALL)
                        ),
                    ));
                }
                _ => {}
            }
        }
        if kind == Kind::SessionCleanup
            && s.fs_state == Some(FsState::Snapshot)
            && s.snapshot.is_none()
        {
            return Err(invalid(
                "session.snapshot",
                "required when session.fs_state is \"snapshot\"; add {path, sha256, bytes} of the archive",
            ));
        }
        if let Some(snap) = &s.snapshot {
            absolute("session.snapshot.path", &snap.path)?;
            if snap.sha256.len() != 64
                || !snap
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(
                    "session.snapshot.sha256",
                    format!("must be 64 lower-case hex digits, got {:?}", snap.sha256),
                ));
            }
        }
    }
    if let Some(x) = &e.exec {
        non_empty("exec.path", &x.path)?;
        result("exec.result", x.result.as_deref())?;
    }
    if let Some(f) = &e.file {
        absolute("file.path", &f.path)?;
        if let Some(np) = &f.new_path {
            absolute("file.new_path", np)?;
        }
        result("file.result", f.result.as_deref())?;
        if f.count == Some(0) {
            return Err(invalid(
                "file.count",
                "must be at least 1 (omit it for a single operation)",
            ));
        }
        if kind == Kind::FileChown && f.uid.is_none() && f.gid.is_none() {
            return Err(invalid(
                "file.uid",
                "required for kind \"file.chown\"; set file.uid and/or file.gid to the new owner / group",
            ));
        }
    }
    if let Some(n) = &e.net {
        non_empty("net.protocol", &n.protocol)?;
        if let Some(src) = &n.src {
            ip("net.src.ip", &src.ip)?;
        }
        ip("net.dst.ip", &n.dst.ip)?;
        if let Some(d) = &n.dst.domain {
            domain("net.dst.domain", d)?;
        }
    }
    if let Some(d) = &e.dns {
        domain("dns.name", &d.name)?;
        non_empty("dns.type", &d.qtype)?;
    }
    if let Some(p) = &e.package {
        non_empty("package.manager", &p.manager)?;
        non_empty("package.name", &p.name)?;
    }
    if let Some(t) = &e.tool {
        non_empty("tool.name", &t.name)?;
    }
    if let Some(m) = &e.model {
        non_empty("model.name", &m.name)?;
    }
    if let Some(a) = &e.alert {
        non_empty("alert.rule_id", &a.rule_id)?;
    }
    if let Some(l) = &e.loss {
        non_empty("loss.source", &l.source)?;
        if l.count == 0 {
            return Err(invalid(
                "loss.count",
                "must be at least 1 (no loss is not an event)",
            ));
        }
    }
    Ok(())
}

fn normalize_domain(d: &mut String) {
    if !is_normal_domain(d) {
        let fixed = d.trim_end_matches('.').to_ascii_lowercase();
        if !fixed.is_empty() {
            *d = fixed;
        }
    }
}

pub(crate) fn normalize(e: &mut Event) {
    if let Ok(t) = parse_ts(&e.ts) {
        if t == e.ts_ns {
            let mut canon = [0u8; 30];
            crate::ts::format_ts_bytes(t, &mut canon);
            if e.ts.as_bytes() != canon {
                e.ts = crate::format_ts(t);
            }
        }
    }
    if let Some(d) = &mut e.dns {
        normalize_domain(&mut d.name);
    }
    if let Some(d) = e.net.as_mut().and_then(|n| n.dst.domain.as_mut()) {
        normalize_domain(d);
    }
}

/// serde_json's message without its " at line L column C" suffix.
pub(crate) fn strip_position(err: &serde_json::Error) -> String {
    let s = err.to_string();
    match s.rfind(" at line ") {
        Some(i) if err.line() > 0 => s[..i].to_string(),
        _ => s,
    }
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Turns a path-tracking serde error into an [`EventError`] naming the field path.
pub(crate) fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> EventError {
    // serde_path_to_error marks segments it could not name (e.g. at end of input) with "?".
    let mut raw_path = err.path().to_string();
    while let Some(stripped) = raw_path.strip_suffix(".?") {
        raw_path = stripped.to_string();
    }
    if raw_path == "?" {
        raw_path = ".".to_string();
    }
    let inner = err.into_inner();
    let column = inner.column();
    let msg = strip_position(&inner);
    let at = if column > 0 {
        format!(" (at column {column})")
    } else {
        String::new()
    };
    let join = |field: &str| {
        if raw_path == "." {
            field.to_string()
        } else {
            format!("{raw_path}.{field}")
        }
    };

    if let Some(field) = backticked(&msg, "missing field `") {
        return EventError::Json {
            path: join(&field),
            msg: format!(
                "required field is missing{at}; add it (see docs/schema/event.schema.json)"
            ),
        };
    }
    if let Some(field) = backticked(&msg, "unknown field `") {
        let path = if raw_path == field || raw_path.ends_with(&format!(".{field}")) {
            raw_path.clone()
        } else {
            join(&field)
        };
        let expected = msg
            .split_once(", expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        let hint = if expected.is_empty() {
            String::new()
        } else {
            format!("; fields allowed here: {expected}")
        };
        return EventError::Json {
            path,
            msg: format!("unknown field{at}{hint}"),
        };
    }
    if let Some(value) = backticked(&msg, "unknown variant `") {
        if raw_path == "kind" {
            let suggestion = Kind::suggest(&value);
            return EventError::UnknownKind {
                path: raw_path,
                value,
                suggestion,
            };
        }
        let expected = msg
            .split_once(", expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        return EventError::Json {
            path: raw_path,
            msg: format!("unknown value {value:?}{at}; use {expected}"),
        };
    }
    let path = if raw_path == "." || raw_path.is_empty() {
        "event".to_string()
    } else {
        raw_path
    };
    let fix = if inner.is_syntax() || inner.is_eof() {
        "; each line must be one complete JSON object"
    } else {
        "; see docs/schema/event.schema.json for the expected type"
    };
    EventError::Json {
        path,
        msg: format!("{msg}{at}{fix}"),
    }
}
