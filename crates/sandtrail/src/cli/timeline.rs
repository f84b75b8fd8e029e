//! `sandtrail timeline`: the story of one session, in order, with a summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use sandtrail_event::{Event, Kind};
use sandtrail_store::query::{events, EventFilter};
use sandtrail_store::Layout;

use crate::output::{bytes, duration, summary};

/// Arguments of `timeline`.
#[derive(Args, Debug)]
pub struct TimelineArgs {
    /// The session id.
    pub session: String,
    /// Print the events as JSON lines instead of the story.
    #[arg(long)]
    pub jsonl: bool,
}

/// Run `timeline`.
pub fn run(layout: &Layout, a: TimelineArgs) -> Result<ExitCode> {
    let evs = events(
        layout,
        &EventFilter {
            session: Some(a.session.clone()),
            ..Default::default()
        },
    )?;
    if evs.is_empty() {
        bail!(
            "no events for session {:?}; `sandtrail sessions` lists the sessions in {}",
            a.session,
            layout.root().display()
        );
    }
    if a.jsonl {
        for e in &evs {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&a.session, &evs));
    Ok(ExitCode::SUCCESS)
}

/// Render the story of a session.
pub fn render(session: &str, evs: &[Event]) -> String {
    let mut out = String::new();
    let t0 = evs[0].ts_ns;
    let last = evs.last().expect("non-empty").ts_ns;
    out.push_str(&format!(
        "session {session}: {} events from {} to {} ({})\n\n",
        evs.len(),
        evs[0].ts,
        evs.last().expect("non-empty").ts,
        duration(last - t0)
    ));
    // Depth of each process in the tree, from exec parent links.
    let mut depth: HashMap<u32, usize> = HashMap::new();
    for e in evs {
        let rel = e.ts_ns.saturating_sub(t0);
        let mut indent = 0;
        if let Some(p) = &e.process {
            if e.kind == Kind::ProcessExec {
                let d = depth.get(&p.ppid).map(|d| d + 1).unwrap_or(0);
                depth.insert(p.pid, d);
            }
            indent = depth.get(&p.pid).copied().unwrap_or(0);
        }
        out.push_str(&format!(
            "+{:>9.3}s  {:<18} {}{}\n",
            rel as f64 / 1e9,
            e.kind.as_str(),
            "  ".repeat(indent.min(8)),
            summary(e)
        ));
    }
    out.push('\n');
    out.push_str(&summarize(evs));
    out
}

fn summarize(evs: &[Event]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut written = BTreeSet::new();
    let mut reads = BTreeSet::new();
    let mut domains = BTreeSet::new();
    let mut packages = BTreeSet::new();
    let mut tools: BTreeMap<String, usize> = BTreeMap::new();
    let (mut bytes_out, mut bytes_in) = (0u64, 0u64);
    let mut lost = 0u64;
    for e in evs {
        *counts.entry(e.kind.as_str()).or_default() += 1;
        if let Some(f) = &e.file {
            if e.kind == Kind::FileOpen && f.access == Some(sandtrail_event::Access::Read) {
                reads.insert(f.path.clone());
            } else {
                written.insert(f.path.clone());
            }
        }
        domains.extend(e.domains().map(str::to_string));
        if let Some((n, v, m)) = e.package_ref() {
            packages.insert(format!(
                "{}:{}{}",
                m.unwrap_or("?"),
                n,
                v.map(|v| format!("=={v}")).unwrap_or_default()
            ));
        }
        if let Some(t) = &e.tool {
            *tools.entry(t.name.clone()).or_default() += 1;
        }
        if e.kind == Kind::NetFlow {
            if let Some(n) = &e.net {
                bytes_out += n.bytes_out.unwrap_or(0);
                bytes_in += n.bytes_in.unwrap_or(0);
            }
        }
        if let Some(l) = &e.loss {
            lost += l.count;
        }
    }
    let list = |s: &BTreeSet<String>| {
        if s.is_empty() {
            "none".to_string()
        } else {
            s.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    let mut out = String::from("summary\n");
    out.push_str(&format!(
        "  processes started : {}\n",
        counts.get("process.exec").unwrap_or(&0)
    ));
    out.push_str(&format!("  files changed     : {}\n", list(&written)));
    out.push_str(&format!("  files read        : {}\n", list(&reads)));
    out.push_str(&format!("  domains           : {}\n", list(&domains)));
    out.push_str(&format!(
        "  network           : out {} / in {}\n",
        bytes(bytes_out),
        bytes(bytes_in)
    ));
    out.push_str(&format!("  packages          : {}\n", list(&packages)));
    out.push_str(&format!(
        "  tools             : {}\n",
        if tools.is_empty() {
            "none".to_string()
        } else {
            tools
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    for (label, kind) in [
        ("limit hits", "limit.hit"),
        ("policy violations", "policy.violation"),
        ("alerts", "alert"),
    ] {
        out.push_str(&format!(
            "  {label:<18}: {}\n",
            counts.get(kind).unwrap_or(&0)
        ));
    }
    out.push_str(&format!("  events lost       : {lost}\n"));
    out
}
