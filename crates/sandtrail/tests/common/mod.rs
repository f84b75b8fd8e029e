//! Helpers for driving the real `sandtrail` binary in tests.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sandtrail"))
}

/// Run `sandtrail --state-dir DIR ARGS...` with `stdin` fed in.
pub fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sandtrail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Base time of crafted events: 2026-06-29T10:00:00Z.
pub const T: u64 = 1_782_727_200_000_000_000;

/// A crafted event at `T + secs`.
pub fn ev(kind: &str, session: &str, secs: u64, body: Value) -> Value {
    let ts_ns = T + secs * 1_000_000_000;
    let mut v = json!({
        "schema": "sandtrail.event/1",
        "ts": sandtrail_event::format_ts(ts_ns),
        "ts_ns": ts_ns,
        "session_id": session,
        "host_id": "host-test",
        "kind": kind,
        "source": "kernel",
        "severity": "info",
    });
    for (k, val) in body.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

/// The acting process of crafted events.
pub fn proc_(pid: u32, exe: &str) -> Value {
    json!({"pid": pid, "ppid": 1, "uid": 1000, "euid": 1000, "gid": 1000, "egid": 1000,
           "exe": exe, "exec_id": format!("x{pid}")})
}

/// JSON lines of three sessions with known answers to the five incident questions:
/// - ses_a reads /etc/shadow, resolves and connects to registry.example, installs
///   requests 2.32.3 and exits 0;
/// - ses_b writes /workspace/out.txt, connects to exfil.example and is OOM-killed;
/// - ses_c installs requests 2.31.0 from registry.example and times out.
pub fn incident_lines() -> String {
    let a = "ses_a";
    let b = "ses_b";
    let c = "ses_c";
    let create = |s: &str, t: u64| {
        ev(
            "session.create",
            s,
            t,
            json!({"source": "sandbox", "session": {"tenant_id": "acme", "template": "py"}}),
        )
    };
    let term = |s: &str, t: u64, reason: &str, code: i32| {
        ev(
            "session.terminate",
            s,
            t,
            json!({"source": "sandbox", "session": {"reason": reason, "exit_code": code}}),
        )
    };
    let open = |s: &str, t: u64, path: &str, access: &str| {
        ev(
            "file.open",
            s,
            t,
            json!({"process": proc_(10, "/bin/cat"), "file": {"path": path, "access": access}}),
        )
    };
    let dns = |s: &str, t: u64, name: &str| {
        ev(
            "dns.query",
            s,
            t,
            json!({"source": "dns", "process": proc_(11, "/usr/bin/curl"),
            "dns": {"name": name, "type": "A", "rcode": "NOERROR", "answers": [{"type": "A", "data": "192.0.2.7", "ttl": 60}]}}),
        )
    };
    let connect = |s: &str, t: u64, domain: &str| {
        ev(
            "net.connect",
            s,
            t,
            json!({"process": proc_(11, "/usr/bin/curl"),
            "net": {"protocol": "tcp", "dst": {"ip": "192.0.2.7", "port": 443, "domain": domain}, "result": "ok"}}),
        )
    };
    let install = |s: &str, t: u64, version: &str| {
        ev(
            "package.install",
            s,
            t,
            json!({"process": proc_(12, "/usr/bin/pip"),
            "package": {"manager": "pip", "name": "requests", "requested": version, "version": version,
                        "source": {"url": "https://registry.example/simple/requests/", "kind": "registry"},
                        "hash": {"algo": "sha256", "value": "00ff"}}}),
        )
    };
    let lines = [
        create(a, 0),
        create(b, 1),
        create(c, 2),
        open(a, 10, "/etc/shadow", "read"),
        dns(a, 11, "registry.example"),
        connect(a, 12, "registry.example"),
        install(a, 13, "2.32.3"),
        open(b, 14, "/workspace/out.txt", "write"),
        connect(b, 15, "exfil.example"),
        install(c, 16, "2.31.0"),
        dns(c, 17, "registry.example"),
        term(a, 20, "exit", 0),
        term(b, 21, "oom", 137),
        term(c, 22, "timeout", 124),
    ];
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The epoch-0 verifier key of the store in `dir`, from `sandtrail key show`.
pub fn anchor_key(dir: &Path) -> String {
    let o = run(dir, &["key", "show"], "");
    assert!(o.status.success(), "{}", err(&o));
    let shown = out(&o);
    let first = shown.lines().next().expect("key show prints epoch 0");
    first
        .strip_prefix("epoch 0: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected key show output: {shown}"))
        .to_string()
}

/// The events of one session, as `query --format jsonl` gives them.
pub fn events_of(dir: &Path, session: &str) -> Vec<Value> {
    let o = run(
        dir,
        &["query", "--session", session, "--format", "jsonl"],
        "",
    );
    assert!(o.status.success(), "{}", err(&o));
    out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The kinds of `evs`, in order.
pub fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The `session.*` events of `evs` (the lifecycle, without what the session's processes did).
pub fn session_events(evs: Vec<Value>) -> Vec<Value> {
    evs.into_iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("session."))
        .collect()
}

/// The kinds of the `session.*` events of `evs`, in order.
pub fn session_kinds(evs: &[Value]) -> Vec<String> {
    kinds(evs)
        .into_iter()
        .filter(|k| k.starts_with("session."))
        .collect()
}

/// The lifecycle of a session that ran to its end.
pub const LIFECYCLE: [&str; 4] = [
    "session.create",
    "session.start",
    "session.terminate",
    "session.cleanup",
];

/// The lifecycle of a session that was paused and resumed once.
pub const PAUSED_LIFECYCLE: [&str; 6] = [
    "session.create",
    "session.start",
    "session.pause",
    "session.resume",
    "session.terminate",
    "session.cleanup",
];

/// Root, or say loudly that the test is skipped.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!(
            "\n*** SKIPPED: sandtrail run tests need root (namespaces, mounts, cgroups) ***\n"
        );
    }
    root
}

/// The one event of `kind` (fails when there are none or several).
pub fn one<'a>(evs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = evs.iter().filter(|e| e["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind} in {:#?}", kinds(evs));
    found[0]
}

/// `sandtrail run --session-id ID OPTS... -- CMD...` on state dir `dir`.
pub fn sandtrail_run(dir: &Path, id: &str, opts: &[&str], cmd: &[&str]) -> Output {
    let mut args = vec!["run", "--session-id", id];
    args.extend_from_slice(opts);
    args.push("--");
    args.extend_from_slice(cmd);
    run(dir, &args, "")
}

/// `sandtrail verify` passes.
pub fn verify_ok(dir: &Path) {
    let o = run(dir, &["verify"], "");
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
}
