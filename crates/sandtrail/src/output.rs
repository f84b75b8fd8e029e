//! Rendering events and sessions for people: one-line summaries, tables, sizes.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use sandtrail_event::{Event, Kind};

/// A progress reporter for long work: on a terminal, rewrites one stderr line at most twice a
/// second (`LABEL N records`); elsewhere it stays silent. Call [`finish_progress`] after.
pub fn progress(label: &'static str) -> impl Fn(u64) + Send + Sync {
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new(Instant::now());
    move |n| {
        if !tty {
            return;
        }
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed().as_millis() >= 500 {
            *last = Instant::now();
            eprint!("\r{label} {n} records");
        }
    }
}

/// End a progress line (on a terminal).
pub fn finish_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

/// Human size with binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human duration from nanoseconds.
pub fn duration(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.1}min", s / 60.0)
    }
}

/// Quote an argument for display only if it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A one-line description of what the event says happened.
pub fn summary(e: &Event) -> String {
    let who = e
        .process
        .as_ref()
        .map(|p| format!("pid {} uid {}/{} ", p.pid, p.uid, p.euid))
        .unwrap_or_default();
    let s = match e.kind {
        Kind::SessionCreate | Kind::SessionStart => {
            let s = e.session.as_ref();
            let mut parts = Vec::new();
            if let Some(s) = s {
                if let Some(t) = &s.tenant_id {
                    parts.push(format!("tenant {t}"));
                }
                if let Some(u) = &s.user {
                    parts.push(format!("user {u}"));
                }
                if let Some(t) = &s.template {
                    parts.push(format!("template {t}"));
                }
                if let Some(h) = &s.host_id {
                    parts.push(format!("host {h}"));
                }
                if let Some(r) = s.resources.as_ref().or(s.limits.as_ref()) {
                    if let Some(m) = r.memory_bytes {
                        parts.push(format!("memory {}", bytes(m)));
                    }
                    if let Some(c) = r.cpus {
                        parts.push(format!("cpus {c}"));
                    }
                    if let Some(p) = r.pids {
                        parts.push(format!("pids {p}"));
                    }
                    if let Some(t) = r.timeout_s {
                        parts.push(format!("timeout {t}s"));
                    }
                }
            }
            parts.join(", ")
        }
        Kind::SessionPause | Kind::SessionResume => {
            let s = e.session.as_ref();
            format!(
                "reason {}, actor {}",
                s.and_then(|s| s.reason).map(|r| r.as_str()).unwrap_or("-"),
                s.and_then(|s| s.actor.as_deref()).unwrap_or("-")
            )
        }
        Kind::SessionTerminate => {
            let s = e.session.as_ref();
            let mut out = format!(
                "reason {}",
                s.and_then(|s| s.reason).map(|r| r.as_str()).unwrap_or("-")
            );
            if let Some(c) = s.and_then(|s| s.exit_code) {
                out.push_str(&format!(", exit code {c}"));
            }
            if let Some(sig) = s.and_then(|s| s.signal) {
                out.push_str(&format!(
                    ", signal {}",
                    sandtrail_event::signal_name(sig).unwrap_or("?")
                ));
            }
            if let Some(u) = s.and_then(|s| s.usage.as_ref()) {
                if let Some(d) = u.duration_ns {
                    out.push_str(&format!(", ran {}", duration(d)));
                }
                if let Some(m) = u.peak_memory_bytes {
                    out.push_str(&format!(", peak memory {}", bytes(m)));
                }
                if let Some(b) = u.egress_blocked {
                    out.push_str(&format!(", {b} egress blocked"));
                }
                if let Some(n) = u.events_lost.filter(|n| *n > 0) {
                    out.push_str(&format!(", {n} records LOST"));
                }
            }
            out
        }
        Kind::SessionCleanup => {
            let s = e.session.as_ref();
            let mut out = format!(
                "filesystem {}",
                s.and_then(|s| s.fs_state)
                    .map(|f| f.as_str())
                    .unwrap_or("-")
            );
            if let Some(snap) = s.and_then(|s| s.snapshot.as_ref()) {
                out.push_str(&format!(
                    ", snapshot {} ({}, sha256 {})",
                    snap.path,
                    bytes(snap.bytes),
                    snap.sha256
                ));
            }
            out
        }
        Kind::ProcessExec => {
            let x = e.exec.as_ref();
            let argv = x
                .map(|x| {
                    x.argv
                        .iter()
                        .map(|a| shell_word(a))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let mut out = format!("{who}{argv}");
            if let Some(cwd) = x.and_then(|x| x.cwd.as_deref()) {
                out.push_str(&format!("  (cwd {cwd})"));
            }
            if let Some(r) = x.and_then(|x| x.result.as_deref()).filter(|r| *r != "ok") {
                out.push_str(&format!("  FAILED {r}"));
            }
            out
        }
        Kind::ProcessExit => {
            let x = e.exit.as_ref();
            match (x.and_then(|x| x.signal), x.and_then(|x| x.code)) {
                (Some(sig), _) => format!(
                    "{who}killed by {}{}",
                    sandtrail_event::signal_name(sig).unwrap_or("?"),
                    if x.is_some_and(|x| x.core_dumped) {
                        " (core dumped)"
                    } else {
                        ""
                    }
                ),
                (None, Some(c)) => format!("{who}exit {c}"),
                _ => format!("{who}exit"),
            }
        }
        k if k.as_str().starts_with("file.") => {
            let f = e.file.as_ref();
            let mut out = format!("{who}{}", f.map(|f| f.path.as_str()).unwrap_or("?"));
            if let Some(n) = f.and_then(|f| f.new_path.as_deref()) {
                out.push_str(&format!(" -> {n}"));
            }
            if let Some(a) = f.and_then(|f| f.access) {
                out.push_str(&format!(
                    "  [{}{}]",
                    a.as_str(),
                    if f.is_some_and(|f| f.created) {
                        ", created"
                    } else {
                        ""
                    }
                ));
            }
            if let Some(c) = f.and_then(|f| f.count).filter(|&c| c > 1) {
                out.push_str(&format!("  x{c}"));
            }
            if let Some(r) = f.and_then(|f| f.result.as_deref()).filter(|r| *r != "ok") {
                out.push_str(&format!("  FAILED {r}"));
            }
            out
        }
        Kind::NetConnect | Kind::NetFlow | Kind::NetListen | Kind::NetAccept => {
            let n = e.net.as_ref();
            let mut out = who.clone();
            if let Some(n) = n {
                if e.kind == Kind::NetAccept {
                    if let Some(src) = &n.src {
                        out.push_str(&format!("from {}:{} ", src.ip, src.port));
                    }
                }
                out.push_str(&format!("{} {}:{}", n.protocol, n.dst.ip, n.dst.port));
                if let Some(d) = &n.dst.domain {
                    out.push_str(&format!(" ({d})"));
                }
                if n.direction == Some(sandtrail_event::Direction::Inbound)
                    && e.kind == Kind::NetFlow
                {
                    if let Some(src) = &n.src {
                        out.push_str(&format!(" from {}:{}", src.ip, src.port));
                    }
                }
                if let Some(r) = n.result {
                    out.push_str(&format!("  {}", r.as_str()));
                }
                if n.bytes_out.is_some() || n.bytes_in.is_some() {
                    out.push_str(&format!(
                        "  out {} in {}",
                        bytes(n.bytes_out.unwrap_or(0)),
                        bytes(n.bytes_in.unwrap_or(0))
                    ));
                }
                if let Some(l) = &n.l7 {
                    out.push_str(&l7_text(l));
                }
            }
            if let Some(p) = &e.policy {
                out.push_str(&format!(
                    "  policy {}{}",
                    p.decision.as_str(),
                    p.rule
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
            out
        }
        Kind::DnsQuery => {
            let d = e.dns.as_ref();
            let mut out = who.clone();
            if let Some(d) = d {
                out.push_str(&format!("{} {}", d.qtype, d.name));
                if let Some(rc) = &d.rcode {
                    out.push_str(&format!(" -> {rc}"));
                }
                let answers: Vec<_> = d.answers.iter().map(|a| a.data.as_str()).collect();
                if !answers.is_empty() {
                    out.push_str(&format!(" [{}]", answers.join(", ")));
                }
            }
            if let Some(p) = &e.policy {
                out.push_str(&format!("  policy {}", p.decision.as_str()));
            }
            out
        }
        Kind::PackageInstall => {
            let p = e.package.as_ref();
            p.map(|p| {
                format!(
                    "{who}{} {}{}{}{}",
                    p.manager,
                    p.name,
                    p.version
                        .as_deref()
                        .map(|v| format!("=={v}"))
                        .unwrap_or_default(),
                    p.source
                        .as_ref()
                        .map(|s| format!(" from {}", s.url))
                        .unwrap_or_default(),
                    p.hash
                        .as_ref()
                        .map(|h| format!(" {}:{}", h.algo, h.value))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default()
        }
        Kind::ToolInvoke => e
            .tool
            .as_ref()
            .map(|t| {
                format!(
                    "{} -> {}{}",
                    t.name,
                    t.status.as_str(),
                    t.input_summary
                        .as_deref()
                        .map(|s| format!("  ({s})"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default(),
        Kind::ModelCall => e
            .model
            .as_ref()
            .map(|m| {
                format!(
                    "{} in {} / out {} tokens",
                    m.name,
                    m.input_tokens.unwrap_or(0),
                    m.output_tokens.unwrap_or(0)
                )
            })
            .unwrap_or_default(),
        Kind::LimitHit => e
            .limit
            .as_ref()
            .map(|l| {
                format!(
                    "{} {} of {} {} -> {}",
                    l.limit_type.as_str(),
                    l.measured,
                    l.limit,
                    l.unit,
                    l.action.as_str()
                )
            })
            .unwrap_or_default(),
        Kind::PolicyViolation => e
            .policy
            .as_ref()
            .map(|p| {
                format!(
                    "{}{} ({})",
                    who,
                    p.what.as_deref().unwrap_or("?"),
                    p.rule.as_deref().unwrap_or("-")
                )
            })
            .unwrap_or_default(),
        Kind::Alert => e
            .alert
            .as_ref()
            .map(|a| format!("[{}] {} ({})", a.severity.as_str(), a.title, a.rule_id))
            .unwrap_or_default(),
        Kind::AuditLoss => e
            .loss
            .as_ref()
            .map(|l| format!("{} events lost at {}", l.count, l.source))
            .unwrap_or_default(),
        _ => e
            .ledger
            .as_ref()
            .map(|l| {
                if let Some(r) = &l.recovered {
                    r.detail.clone().unwrap_or_default()
                } else if let Some(r) = &l.rotation {
                    format!("epoch {} key {}", r.epoch, r.next_key)
                } else if let Some(c) = &l.checkpoint {
                    format!("checkpoint size {}", c.size)
                } else if let Some(p) = &l.pruned {
                    format!("pruned {} records before seq {}", p.count, p.before_seq)
                } else {
                    String::new()
                }
            })
            .unwrap_or_default(),
    };
    s.trim_end().to_string()
}

/// "exit code 3", "killed by SIGKILL", or "ended" when there is no single first process.
pub fn exit_text(exit: Option<sandtrail_sandbox::isolate::Exit>) -> String {
    use sandtrail_sandbox::isolate::Exit;
    match exit {
        Some(Exit::Code(c)) => format!("exit code {c}"),
        Some(Exit::Signal { signal, .. }) => format!(
            "killed by {}",
            sandtrail_event::signal_name(signal).unwrap_or("a signal")
        ),
        None => "its last process ended".into(),
    }
}

/// A flow's application protocol in a few words: `  tls sni H`, `  http GET H/P`, `  ssh`.
fn l7_text(l: &sandtrail_event::L7Info) -> String {
    let mut out = String::new();
    if let Some(p) = &l.proto {
        out.push_str(&format!("  {p}"));
    }
    if let Some(sni) = &l.sni {
        out.push_str(&format!(" sni {sni}"));
    }
    if let Some(m) = &l.method {
        out.push_str(&format!(" {m}"));
    }
    match (&l.host, &l.path) {
        (Some(h), Some(p)) => out.push_str(&format!(" {h}{p}")),
        (Some(h), None) => out.push_str(&format!(" {h}")),
        (None, Some(p)) => out.push_str(&format!(" {p}")),
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandtrail_event::L7Info;

    #[test]
    fn l7_in_a_few_words() {
        let tls = L7Info {
            proto: Some("tls".into()),
            sni: Some("api.example.org".into()),
            ..Default::default()
        };
        assert_eq!(l7_text(&tls), "  tls sni api.example.org");
        let http = L7Info {
            proto: Some("http".into()),
            method: Some("GET".into()),
            host: Some("h.test".into()),
            path: Some("/x?y".into()),
            ..Default::default()
        };
        assert_eq!(l7_text(&http), "  http GET h.test/x?y");
        assert_eq!(l7_text(&L7Info::default()), "");
    }
}
