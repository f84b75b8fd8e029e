//! `sandtrail query` and `sandtrail sessions`.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use sandtrail_store::index::{Index, SessionFilter};
use sandtrail_store::query::{check_kinds, events, EventFilter};
use sandtrail_store::Layout;

use crate::output::summary;
use crate::timearg::parse_time;

/// Output formats of listings.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Split `NAME[@VERSION]`.
pub fn parse_package(s: &str) -> (String, Option<String>) {
    match s.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() => (name.to_string(), Some(version.to_string())),
        _ => (s.to_string(), None),
    }
}

/// Arguments of `query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Only events of this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Not before: RFC 3339, unix ns, or an age (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Not after: RFC 3339, unix ns, or an age.
    #[arg(long)]
    pub until: Option<String>,
    /// Event kind (repeatable); a family such as `file` matches every file.* kind.
    #[arg(long)]
    pub kind: Vec<String>,
    /// Events on this path; `DIR/` matches everything below DIR.
    #[arg(long)]
    pub path: Option<String>,
    /// Events naming this domain (DNS or connection); `*.example.org` matches subdomains.
    #[arg(long)]
    pub domain: Option<String>,
    /// Installs of NAME or NAME@VERSION.
    #[arg(long)]
    pub package: Option<String>,
    /// Events during this agent tool call.
    #[arg(long)]
    pub tool_call: Option<String>,
    /// At most this many events (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `sessions`.
#[derive(Args, Debug)]
pub struct SessionsArgs {
    /// Sessions that accessed this path; `DIR/` matches anything below DIR.
    #[arg(long)]
    pub accessed: Option<String>,
    /// Sessions that resolved or connected to this domain; `*.example.org` matches subdomains.
    #[arg(long)]
    pub domain: Option<String>,
    /// Sessions that installed NAME or NAME@VERSION.
    #[arg(long)]
    pub package: Option<String>,
    /// Sessions that terminated with this reason: exit, timeout, oom, api, policy_violation, signal, internal_error.
    #[arg(long)]
    pub terminated: Option<String>,
    /// Sessions active at or after this time.
    #[arg(long)]
    pub since: Option<String>,
    /// Sessions active at or before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

const REASONS: [&str; 7] = [
    "exit",
    "timeout",
    "oom",
    "api",
    "policy_violation",
    "signal",
    "internal_error",
];

fn opt_time(s: &Option<String>) -> Result<Option<u64>> {
    s.as_deref().map(parse_time).transpose()
}

/// Run `query`.
pub fn run_query(layout: &Layout, a: QueryArgs) -> Result<ExitCode> {
    check_kinds(&a.kind).map_err(|e| anyhow!(e))?;
    let f = EventFilter {
        session: a.session,
        since: opt_time(&a.since)?,
        until: opt_time(&a.until)?,
        kinds: a.kind,
        path: a.path,
        domain: a.domain,
        package: a.package.as_deref().map(parse_package),
        tool_call: a.tool_call,
        limit: a.limit,
    };
    let found = events(layout, &f)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&found)?),
        Format::Jsonl => {
            for e in &found {
                println!("{}", serde_json::to_string(e)?);
            }
        }
        Format::Table => {
            println!(
                "{:<30} {:>8}  {:<22} {:<18} WHAT",
                "TIME", "SEQ", "SESSION", "KIND"
            );
            for e in &found {
                println!(
                    "{:<30} {:>8}  {:<22} {:<18} {}",
                    e.ts,
                    e.seq,
                    e.session_id.as_deref().unwrap_or("-"),
                    e.kind.as_str(),
                    summary(e)
                );
            }
            eprintln!("{} events", found.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `sessions`.
pub fn run_sessions(layout: &Layout, a: SessionsArgs) -> Result<ExitCode> {
    if let Some(r) = &a.terminated {
        if !REASONS.contains(&r.as_str()) {
            return Err(anyhow!(
                "unknown termination reason {r:?}; reasons are: {}",
                REASONS.join(", ")
            ));
        }
    }
    let f = SessionFilter {
        accessed: a.accessed,
        domain: a.domain,
        package: a.package.as_deref().map(parse_package),
        terminated: a.terminated,
        since: opt_time(&a.since)?,
        until: opt_time(&a.until)?,
    };
    let rows = Index::open(&layout.index())?.sessions(&f)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Jsonl => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Format::Table => {
            println!(
                "{:<24} {:<12} {:<18} {:<30} {:>8}  ENDED",
                "SESSION", "TENANT", "TEMPLATE", "STARTED", "EVENTS"
            );
            for r in &rows {
                let ended = match (&r.reason, r.exit_code, r.signal) {
                    (Some(reason), Some(c), _) => format!("{reason} (exit {c})"),
                    (Some(reason), None, Some(s)) => format!("{reason} (signal {s})"),
                    (Some(reason), None, None) => reason.clone(),
                    (None, ..) => "running or unknown".into(),
                };
                println!(
                    "{:<24} {:<12} {:<18} {:<30} {:>8}  {}",
                    r.session_id,
                    r.tenant.as_deref().unwrap_or("-"),
                    r.template.as_deref().unwrap_or("-"),
                    sandtrail_event::format_ts(r.first_ts),
                    r.events,
                    ended
                );
            }
            eprintln!("{} sessions", rows.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
