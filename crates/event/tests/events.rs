//! Round trips, canonical leaf encoding, validation messages, JSON-lines parsing and generators.

use std::collections::{BTreeMap, BTreeSet};

use sandtrail_event::generate::{Generator, SENSITIVE_FILES};
use sandtrail_event::*;

const T0: u64 = 1_782_727_440_000_000_000;

fn demo() -> Vec<Event> {
    Generator::new(7, "host-a", T0).demo_session("ses_demo")
}

fn ledger_events() -> Vec<Event> {
    let mut out = Vec::new();
    let mk = |kind, ledger: LedgerInfo| {
        let mut e = Event::new(kind, Source::Ledger, None, "host-a", T0 + 5);
        e.ledger = Some(Box::new(ledger));
        e
    };
    out.push(mk(
        Kind::LedgerCheckpoint,
        LedgerInfo {
            checkpoint: Some(CheckpointInfo {
                size: 1234,
                root: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into(),
            }),
            ..Default::default()
        },
    ));
    out.push(mk(
        Kind::LedgerKeyRotation,
        LedgerInfo {
            rotation: Some(RotationInfo {
                epoch: 2,
                next_key: "sandtrail+1a2b3c4d+AQID".into(),
                tree_size: 99,
            }),
            ..Default::default()
        },
    ));
    out.push(mk(
        Kind::LedgerRecovered,
        LedgerInfo {
            recovered: Some(RecoveredInfo {
                truncated_bytes: 17,
                torn_records: 1,
                last_good_seq: Some(98),
                index_rebuilt_from: Some(64),
                detail: Some("torn write at segment tail".into()),
            }),
            ..Default::default()
        },
    ));
    out.push(mk(
        Kind::LedgerPruned,
        LedgerInfo {
            pruned: Some(PrunedInfo {
                before_seq: 1000,
                count: 1000,
            }),
            ..Default::default()
        },
    ));
    out
}

fn all_samples() -> Vec<Event> {
    let mut v = demo();
    v.extend(ledger_events());
    v
}

fn first(kind: Kind) -> Event {
    all_samples()
        .into_iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no sample of {kind}"))
}

fn err_of(e: &Event) -> String {
    e.validate()
        .expect_err("expected a validation error")
        .to_string()
}

// ---------------------------------------------------------------- round trips and leaves

#[test]
fn demo_covers_every_non_ledger_kind_and_validates() {
    let events = demo();
    assert!((40..=70).contains(&events.len()), "{} events", events.len());
    let kinds: BTreeSet<Kind> = events.iter().map(|e| e.kind).collect();
    for k in Kind::all() {
        assert_eq!(kinds.contains(k), !k.is_ledger(), "{k}");
    }
    for w in events.windows(2) {
        assert!(w[0].ts_ns < w[1].ts_ns, "timestamps must increase");
    }
    for e in &events {
        e.validate()
            .unwrap_or_else(|err| panic!("{}: {err}", e.kind));
        assert_eq!(e.seq, 0);
        assert_eq!(e.session_id.as_deref(), Some("ses_demo"));
    }
    assert_eq!(events[0].kind, Kind::SessionCreate);
    assert_eq!(events.last().unwrap().kind, Kind::SessionCleanup);
    for e in ledger_events() {
        e.validate().unwrap();
    }
}

#[test]
fn json_round_trip_every_kind() {
    for e in all_samples() {
        let json = serde_json::to_string(&e).unwrap();
        let back = parse_json_line(&json).unwrap_or_else(|err| panic!("{}: {err}\n{json}", e.kind));
        assert_eq!(back, e);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let pretty = serde_json::to_string_pretty(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&pretty).unwrap(), e);
    }
}

#[test]
fn leaf_encoding_is_deterministic() {
    let mut buf = Vec::new();
    for e in all_samples() {
        let leaf = encode_leaf(&e);
        assert_eq!(leaf[0], LEAF_VERSION);
        assert_eq!(&leaf[1..], serde_json::to_vec(&e).unwrap().as_slice());
        let back = decode_leaf(&leaf).unwrap();
        assert_eq!(back, e);
        assert_eq!(encode_leaf(&back), leaf);
        assert_eq!(encode_leaf(&e.clone()), leaf);
        buf.clear();
        encode_leaf_into(&e, &mut buf);
        assert_eq!(buf, leaf);
    }
}

#[test]
fn encode_leaf_into_appends() {
    let events = demo();
    let mut buf = b"xyz".to_vec();
    encode_leaf_into(&events[0], &mut buf);
    let n = buf.len();
    encode_leaf_into(&events[1], &mut buf);
    assert_eq!(&buf[..3], b"xyz");
    assert_eq!(&buf[3..n], encode_leaf(&events[0]).as_slice());
    assert_eq!(&buf[n..], encode_leaf(&events[1]).as_slice());
}

/// Pins the canonical bytes: the ledger hashes these, so any change here breaks every
/// existing log and needs a new LEAF_VERSION.
#[test]
fn golden_leaf() {
    let mut e = Event::new(
        Kind::FileOpen,
        Source::Kernel,
        Some("ses_1".into()),
        "host-a",
        1_782_727_440_123_456_789,
    );
    e.seq = 42;
    e.process = Some(ProcessRef {
        pid: 7,
        ppid: 1,
        uid: 1000,
        euid: 0,
        gid: 1000,
        egid: 1000,
        exe: "/usr/bin/cat".into(),
        exec_id: "x1".into(),
        comm: Some("cat".into()),
    });
    e.tool_call_id = Some("call_1".into());
    e.file = Some(FileInfo {
        path: "/etc/passwd".into(),
        access: Some(Access::Read),
        created: true,
        flags: Some(0),
        result: Some("ok".into()),
        ..Default::default()
    });
    let expected = concat!(
        "\u{1}",
        r#"{"schema":"sandtrail.event/1","seq":42,"ts":"2026-06-29T10:04:00.123456789Z","ts_ns":1782727440123456789,"#,
        r#""session_id":"ses_1","host_id":"host-a","kind":"file.open","source":"kernel","severity":"info","#,
        r#""process":{"pid":7,"ppid":1,"uid":1000,"euid":0,"gid":1000,"egid":1000,"exe":"/usr/bin/cat","exec_id":"x1","comm":"cat"},"#,
        r#""tool_call_id":"call_1","file":{"path":"/etc/passwd","access":"read","created":true,"flags":0,"result":"ok"}}"#
    );
    assert_eq!(String::from_utf8(encode_leaf(&e)).unwrap(), expected);
}

#[test]
fn floats_round_trip_exactly() {
    let mut e = first(Kind::SessionCreate);
    for cpus in [
        0.1 + 0.2,
        1.0 / 3.0,
        2.5,
        1e-7,
        123_456.789_012_345_6,
        f64::MIN_POSITIVE,
    ] {
        e.session.as_mut().unwrap().resources.as_mut().unwrap().cpus = Some(cpus);
        let leaf = encode_leaf(&e);
        let back = decode_leaf(&leaf).unwrap();
        assert_eq!(back, e);
        assert_eq!(encode_leaf(&back), leaf);
    }
}

#[test]
fn decode_leaf_errors() {
    assert_eq!(
        decode_leaf(&[]).unwrap_err().to_string(),
        "leaf: empty record; a leaf is a version byte followed by the event's JSON"
    );
    let mut leaf = encode_leaf(&demo()[0]);
    leaf[0] = 9;
    assert_eq!(
        decode_leaf(&leaf).unwrap_err().to_string(),
        "leaf: unknown leaf encoding version 9 (this build reads version 1); read it with a sandtrail release that supports version 9"
    );
    let bad = [
        &[LEAF_VERSION][..],
        br#"{"schema":"sandtrail.event/1","seq":"x"}"#,
    ]
    .concat();
    let err = decode_leaf(&bad).unwrap_err();
    assert_eq!(err.path(), "seq");
    let mut trailing = encode_leaf(&demo()[0]);
    trailing.extend_from_slice(b" {}");
    assert!(decode_leaf(&trailing).is_err());
}

// ---------------------------------------------------------------- accessors

#[test]
fn accessors() {
    let events = demo();
    let rename = events.iter().find(|e| e.kind == Kind::FileRename).unwrap();
    assert_eq!(
        rename.paths().collect::<Vec<_>>(),
        ["/workspace/src/main.py.tmp", "/workspace/src/main.py"]
    );
    let exec = events.iter().find(|e| e.kind == Kind::ProcessExec).unwrap();
    assert_eq!(exec.paths().count(), 0);
    assert!(events
        .iter()
        .any(|e| e.paths().any(|p| p == "/home/agent/.aws/credentials")));

    let dns = events.iter().find(|e| e.kind == Kind::DnsQuery).unwrap();
    assert_eq!(dns.domains().collect::<Vec<_>>(), ["tools.example"]);
    let conn = events.iter().find(|e| e.kind == Kind::NetConnect).unwrap();
    assert_eq!(conn.domains().collect::<Vec<_>>(), ["tools.example"]);
    let mut trailing = dns.clone();
    trailing.dns.as_mut().unwrap().name = "tools.example.".into();
    assert_eq!(trailing.domains().collect::<Vec<_>>(), ["tools.example"]);

    let pkg = events
        .iter()
        .find(|e| e.kind == Kind::PackageInstall)
        .unwrap();
    assert_eq!(
        pkg.package_ref(),
        Some(("requests", Some("2.32.3"), Some("pip")))
    );
    assert_eq!(exec.package_ref(), None);

    let term = events
        .iter()
        .find(|e| e.kind == Kind::SessionTerminate)
        .unwrap();
    assert_eq!(term.terminate_reason(), Some(TerminateReason::Exit));
    let pause = events
        .iter()
        .find(|e| e.kind == Kind::SessionPause)
        .unwrap();
    assert_eq!(pause.terminate_reason(), None);
    assert_eq!(
        SessionReason::from(PauseReason::Autopause).as_pause(),
        Some(PauseReason::Autopause)
    );
    assert_eq!(SessionReason::Autopause.as_terminate(), None);
    assert_eq!("oom".parse::<TerminateReason>(), Ok(TerminateReason::Oom));
    assert_eq!(
        "oomm".parse::<TerminateReason>().unwrap_err().to_string(),
        r#"TerminateReason: unknown value "oomm"; use one of exit, timeout, oom, api, policy_violation, signal, internal_error"#
    );
    assert!(Severity::High > Severity::Medium && Severity::Info < Severity::Low);
    assert_eq!(signal_name(9), Some("SIGKILL"));
    assert_eq!(signal_name(0), None);
}

#[test]
fn event_new_defaults() {
    let e = Event::new(Kind::AuditLoss, Source::Kernel, None, "h", T0);
    assert_eq!(e.schema, SCHEMA);
    assert_eq!(e.ts, "2026-06-29T10:04:00.000000000Z");
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(e.seq, 0);
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"schema":"sandtrail.event/1","seq":0,"ts":"2026-06-29T10:04:00.000000000Z","ts_ns":1782727440000000000,"host_id":"h","kind":"audit.loss","source":"kernel","severity":"info"}"#
    );
}

// ---------------------------------------------------------------- validation messages

/// (sample kind, how to break it, the exact message expected)
type Case = (Kind, fn(&mut Event), &'static str);

#[test]
fn validate_envelope_messages() {
    let base = first(Kind::FileOpen);

    let mut e = base.clone();
    e.schema = "sandtrail.event/2".into();
    assert_eq!(
        err_of(&e),
        r#"schema: must be "sandtrail.event/1", got "sandtrail.event/2""#
    );

    let mut e = Event::new(Kind::FileOpen, Source::Kernel, Some("s".into()), "h", T0);
    e.file = base.file.clone();
    e.ts_ns += 1;
    assert_eq!(
        err_of(&e),
        r#"ts: "2026-06-29T10:04:00.000000000Z" is 1782727440000000000 ns but ts_ns is 1782727440000000001 (2026-06-29T10:04:00.000000001Z); set both from one clock reading"#
    );

    let mut e = base.clone();
    e.ts = "yesterday".into();
    assert_eq!(
        err_of(&e),
        r#"ts: not an RFC 3339 timestamp (expected a four-digit year first): "yesterday"; write e.g. "2026-06-29T10:04:00.123456789Z""#
    );

    // A non-canonical but equal ts is valid (normalize() rewrites it).
    let mut e = Event::new(Kind::FileOpen, Source::Kernel, Some("s".into()), "h", T0);
    e.file = base.file.clone();
    e.ts = "2026-06-29T12:04:00+02:00".into();
    e.validate().unwrap();
    e.normalize();
    assert_eq!(e.ts, "2026-06-29T10:04:00.000000000Z");

    let mut e = base.clone();
    e.host_id.clear();
    assert_eq!(err_of(&e), "host_id: must not be empty");

    let mut e = base.clone();
    e.session_id = None;
    assert_eq!(
        err_of(&e),
        r#"session_id: required for kind "file.open"; set it to the session's id (only ledger.*, alert and audit.loss events may omit it)"#
    );

    let mut e = base.clone();
    e.session_id = Some(String::new());
    assert_eq!(err_of(&e), "session_id: must not be empty");

    for kind in [Kind::Alert, Kind::AuditLoss, Kind::LedgerCheckpoint] {
        let mut e = first(kind);
        e.session_id = None;
        e.validate().unwrap();
    }
}

#[test]
fn validate_missing_bodies() {
    let cases: &[Case] = &[
        (
            Kind::ProcessExec,
            |e| e.exec = None,
            r#"exec: required for kind "process.exec"; add the "exec" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::ProcessExec,
            |e| e.process = None,
            r#"process: required for kind "process.exec"; add the "process" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::ProcessExit,
            |e| e.exit = None,
            r#"exit: required for kind "process.exit"; add the "exit" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::FileOpen,
            |e| e.file = None,
            r#"file: required for kind "file.open"; add the "file" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::FileDelete,
            |e| e.file = None,
            r#"file: required for kind "file.delete"; add the "file" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::FileRename,
            |e| e.file.as_mut().unwrap().new_path = None,
            r#"file.new_path: required for kind "file.rename"; set it to the absolute destination path"#,
        ),
        (
            Kind::FileLink,
            |e| e.file.as_mut().unwrap().new_path = None,
            r#"file.new_path: required for kind "file.link"; set it to the absolute destination path"#,
        ),
        (
            Kind::FileChmod,
            |e| e.file.as_mut().unwrap().mode = None,
            r#"file.mode: required for kind "file.chmod"; set it to the new mode bits (decimal, 493 = 0o755)"#,
        ),
        (
            Kind::FileChown,
            |e| {
                let f = e.file.as_mut().unwrap();
                f.uid = None;
                f.gid = None;
            },
            r#"file.uid: required for kind "file.chown"; set file.uid and/or file.gid to the new owner / group"#,
        ),
        (
            Kind::SessionTerminate,
            |e| e.session = None,
            r#"session: required for kind "session.terminate"; add the "session" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::SessionTerminate,
            |e| e.session.as_mut().unwrap().reason = None,
            r#"session.reason: required for kind "session.terminate"; set it to one of exit, timeout, oom, api, policy_violation, signal, internal_error"#,
        ),
        (
            Kind::SessionPause,
            |e| e.session.as_mut().unwrap().reason = None,
            r#"session.reason: required for kind "session.pause"; set it to one of api, timeout, autopause"#,
        ),
        (
            Kind::SessionResume,
            |e| e.session.as_mut().unwrap().actor = None,
            r#"session.actor: required for kind "session.resume"; set it to who resumed the session (user, token name or "system")"#,
        ),
        (
            Kind::SessionCleanup,
            |e| e.session.as_mut().unwrap().fs_state = None,
            r#"session.fs_state: required for kind "session.cleanup"; set it to one of preserved, deleted, snapshot"#,
        ),
        (
            Kind::SessionCleanup,
            |e| e.session.as_mut().unwrap().snapshot = None,
            r#"session.snapshot: required when session.fs_state is "snapshot"; add {path, sha256, bytes} of the archive"#,
        ),
        (
            Kind::NetConnect,
            |e| e.net = None,
            r#"net: required for kind "net.connect"; add the "net" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::NetFlow,
            |e| e.net = None,
            r#"net: required for kind "net.flow"; add the "net" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::NetListen,
            |e| e.net = None,
            r#"net: required for kind "net.listen"; add the "net" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::NetAccept,
            |e| e.net.as_mut().unwrap().src = None,
            r#"net.src: required for kind "net.accept"; set it to the remote peer {ip, port}"#,
        ),
        (
            Kind::DnsQuery,
            |e| e.dns = None,
            r#"dns: required for kind "dns.query"; add the "dns" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::PackageInstall,
            |e| e.package = None,
            r#"package: required for kind "package.install"; add the "package" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::ToolInvoke,
            |e| e.tool = None,
            r#"tool: required for kind "tool.invoke"; add the "tool" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::ModelCall,
            |e| e.model = None,
            r#"model: required for kind "model.call"; add the "model" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LimitHit,
            |e| e.limit = None,
            r#"limit: required for kind "limit.hit"; add the "limit" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::PolicyViolation,
            |e| e.policy = None,
            r#"policy: required for kind "policy.violation"; add the "policy" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::PolicyViolation,
            |e| e.policy.as_mut().unwrap().what = None,
            r#"policy.what: required for kind "policy.violation"; describe what was attempted"#,
        ),
        (
            Kind::Alert,
            |e| e.alert = None,
            r#"alert: required for kind "alert"; add the "alert" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::AuditLoss,
            |e| e.loss = None,
            r#"loss: required for kind "audit.loss"; add the "loss" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LedgerCheckpoint,
            |e| e.ledger = None,
            r#"ledger: required for kind "ledger.checkpoint"; add the "ledger" object (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LedgerCheckpoint,
            |e| e.ledger.as_mut().unwrap().checkpoint = None,
            r#"ledger.checkpoint: required for kind "ledger.checkpoint"; add it (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LedgerKeyRotation,
            |e| e.ledger.as_mut().unwrap().rotation = None,
            r#"ledger.rotation: required for kind "ledger.key_rotation"; add it (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LedgerRecovered,
            |e| e.ledger.as_mut().unwrap().recovered = None,
            r#"ledger.recovered: required for kind "ledger.recovered"; add it (see docs/schema/event.schema.json)"#,
        ),
        (
            Kind::LedgerPruned,
            |e| e.ledger.as_mut().unwrap().pruned = None,
            r#"ledger.pruned: required for kind "ledger.pruned"; add it (see docs/schema/event.schema.json)"#,
        ),
    ];
    for (kind, mutate, expected) in cases {
        let mut e = first(*kind);
        e.validate().unwrap();
        mutate(&mut e);
        assert_eq!(err_of(&e), *expected, "{kind}");
    }
}

#[test]
fn validate_field_rules() {
    let cases: &[Case] = &[
        (
            Kind::FileOpen,
            |e| e.file.as_mut().unwrap().path = "etc/passwd".into(),
            r#"file.path: must be absolute, got "etc/passwd""#,
        ),
        (
            Kind::FileRename,
            |e| e.file.as_mut().unwrap().new_path = Some("main.py".into()),
            r#"file.new_path: must be absolute, got "main.py""#,
        ),
        (
            Kind::FileOpen,
            |e| e.file.as_mut().unwrap().result = Some("fail".into()),
            r#"file.result: must be "ok" or an errno name like "ENOENT", got "fail""#,
        ),
        (
            Kind::FileOpen,
            |e| e.file.as_mut().unwrap().count = Some(0),
            "file.count: must be at least 1 (omit it for a single operation)",
        ),
        (
            Kind::ProcessExec,
            |e| e.exec.as_mut().unwrap().result = Some("failed".into()),
            r#"exec.result: must be "ok" or an errno name like "ENOENT", got "failed""#,
        ),
        (
            Kind::ProcessExec,
            |e| e.exec.as_mut().unwrap().path.clear(),
            "exec.path: must not be empty",
        ),
        (
            Kind::ProcessExec,
            |e| e.process.as_mut().unwrap().exec_id.clear(),
            "process.exec_id: must not be empty",
        ),
        (
            Kind::SessionTerminate,
            |e| e.session.as_mut().unwrap().reason = Some(SessionReason::Autopause),
            r#"session.reason: "autopause" is not a terminate reason; use one of exit, timeout, oom, api, policy_violation, signal, internal_error"#,
        ),
        (
            Kind::SessionPause,
            |e| e.session.as_mut().unwrap().reason = Some(TerminateReason::Oom.into()),
            r#"session.reason: "oom" is not a pause reason; use one of api, timeout, autopause"#,
        ),
        (
            Kind::SessionResume,
            |e| e.session.as_mut().unwrap().reason = Some(SessionReason::Exit),
            r#"session.reason: "exit" is not a pause reason; use one of api, timeout, autopause"#,
        ),
        (
            Kind::SessionCleanup,
            |e| {
                e.session
                    .as_mut()
                    .unwrap()
                    .snapshot
                    .as_mut()
                    .unwrap()
                    .sha256 = "ABC".into()
            },
            r#"session.snapshot.sha256: must be 64 lower-case hex digits, got "ABC""#,
        ),
        (
            Kind::SessionCleanup,
            |e| e.session.as_mut().unwrap().snapshot.as_mut().unwrap().path = "snap.tar".into(),
            r#"session.snapshot.path: must be absolute, got "snap.tar""#,
        ),
        (
            Kind::SessionCreate,
            |e| e.session.as_mut().unwrap().resources.as_mut().unwrap().cpus = Some(f64::NAN),
            "session.resources.cpus: must be a finite number of CPUs >= 0, got NaN",
        ),
        (
            Kind::SessionStart,
            |e| e.session.as_mut().unwrap().limits.as_mut().unwrap().cpus = Some(-1.0),
            "session.limits.cpus: must be a finite number of CPUs >= 0, got -1",
        ),
        (
            Kind::NetConnect,
            |e| e.net.as_mut().unwrap().dst.ip = "tools.example".into(),
            r#"net.dst.ip: must be an IPv4 or IPv6 address, got "tools.example""#,
        ),
        (
            Kind::NetConnect,
            |e| e.net.as_mut().unwrap().src.as_mut().unwrap().ip = "10.0.0".into(),
            r#"net.src.ip: must be an IPv4 or IPv6 address, got "10.0.0""#,
        ),
        (
            Kind::NetConnect,
            |e| e.net.as_mut().unwrap().dst.domain = Some("Tools.Example.".into()),
            r#"net.dst.domain: must be lower-case without a trailing dot, got "Tools.Example."; write "tools.example" (Event::normalize does this)"#,
        ),
        (
            Kind::NetConnect,
            |e| e.net.as_mut().unwrap().protocol.clear(),
            "net.protocol: must not be empty",
        ),
        (
            Kind::DnsQuery,
            |e| e.dns.as_mut().unwrap().name = "Tools.Example.".into(),
            r#"dns.name: must be lower-case without a trailing dot, got "Tools.Example."; write "tools.example" (Event::normalize does this)"#,
        ),
        (
            Kind::DnsQuery,
            |e| e.dns.as_mut().unwrap().name = ".".into(),
            r#"dns.name: must be a domain name, got ".""#,
        ),
        (
            Kind::PackageInstall,
            |e| e.package.as_mut().unwrap().name.clear(),
            "package.name: must not be empty",
        ),
        (
            Kind::PackageInstall,
            |e| e.package.as_mut().unwrap().manager.clear(),
            "package.manager: must not be empty",
        ),
        (
            Kind::ToolInvoke,
            |e| e.tool.as_mut().unwrap().name.clear(),
            "tool.name: must not be empty",
        ),
        (
            Kind::ModelCall,
            |e| e.model.as_mut().unwrap().name.clear(),
            "model.name: must not be empty",
        ),
        (
            Kind::Alert,
            |e| e.alert.as_mut().unwrap().rule_id.clear(),
            "alert.rule_id: must not be empty",
        ),
        (
            Kind::AuditLoss,
            |e| e.loss.as_mut().unwrap().count = 0,
            "loss.count: must be at least 1 (no loss is not an event)",
        ),
        (
            Kind::AuditLoss,
            |e| e.loss.as_mut().unwrap().source.clear(),
            "loss.source: must not be empty",
        ),
        (
            Kind::ToolInvoke,
            |e| e.tool_call_id = Some(String::new()),
            "tool_call_id: must not be empty",
        ),
    ];
    for (kind, mutate, expected) in cases {
        let mut e = first(*kind);
        e.validate().unwrap();
        mutate(&mut e);
        assert_eq!(err_of(&e), *expected, "{kind}");
    }
}

/// Every path in `required_fields` is reported, by name, when it is removed from the JSON.
#[test]
fn every_required_field_is_enforced() {
    for e in all_samples() {
        for path in required_fields(e.kind) {
            let mut v = serde_json::to_value(&e).unwrap();
            let segs: Vec<&str> = path.split('.').collect();
            let (last, parents) = segs.split_last().unwrap();
            let mut obj = &mut v;
            for s in parents {
                obj = obj.get_mut(*s).unwrap();
            }
            assert!(
                obj.as_object_mut().unwrap().remove(*last).is_some(),
                "{} has {path}",
                e.kind
            );
            let line = v.to_string();
            let err = parse_json_line(&line).expect_err(path);
            assert_eq!(err.path(), *path, "{}: {err}", e.kind);
        }
    }
}

// ---------------------------------------------------------------- parse_json_line

fn line_with(kind: &str, extra: &str) -> String {
    format!(
        r#"{{"schema":"sandtrail.event/1","ts":"2026-06-29T10:04:00.123456789Z","ts_ns":1782727440123456789,"session_id":"s","host_id":"h","kind":"{kind}","source":"ingest","severity":"info"{extra}}}"#
    )
}

#[test]
fn parse_ok_and_normalizes() {
    let e = parse_json_line(&line_with(
        "file.open",
        r#","file":{"path":"/etc/passwd","access":"read"}"#,
    ))
    .unwrap();
    assert_eq!(e.seq, 0);
    assert_eq!(e.source, Source::Ingest);
    assert_eq!(e.file.unwrap().access, Some(Access::Read));

    let line = r#"{"schema":"sandtrail.event/1","ts":"2026-06-29T12:04:00.123456789+02:00","ts_ns":1782727440123456789,"session_id":"s","host_id":"h","kind":"dns.query","source":"dns","severity":"low","dns":{"name":"Registry.Example.","type":"A"}}"#;
    let e = parse_json_line(line).unwrap();
    assert_eq!(e.ts, "2026-06-29T10:04:00.123456789Z");
    assert_eq!(e.dns.as_ref().unwrap().name, "registry.example");
    assert_eq!(e.domains().collect::<Vec<_>>(), ["registry.example"]);

    // Trailing whitespace / newline is fine.
    parse_json_line(&format!("{}\r\n", line_with("session.start", ""))).unwrap();
}

#[test]
fn parse_unknown_field_names_its_path() {
    let err = parse_json_line(&line_with(
        "file.open",
        r#","file":{"pathh":"/etc/passwd"}"#,
    ))
    .unwrap_err();
    assert_eq!(err.path(), "file.pathh");
    let msg = err.to_string();
    assert!(
        msg.starts_with("file.pathh: unknown field (at column "),
        "{msg}"
    );
    assert!(msg.ends_with("; fields allowed here: one of path, new_path, access, created, flags, result, count, mode, uid, gid, fstype, source, device"), "{msg}");

    let err = parse_json_line(&line_with("file.open", r#","colour":"red""#)).unwrap_err();
    assert_eq!(err.path(), "colour");
    let err = parse_json_line(&line_with("dns.query", r#","dns":{"name":"a.example","type":"A","answers":[{"type":"A","data":"192.0.2.1","ttl":1,"x":1}]}"#)).unwrap_err();
    assert_eq!(err.path(), "dns.answers[0].x");
}

#[test]
fn parse_unknown_kind_names_value_and_how_to_find_valid_ones() {
    let err = parse_json_line(&line_with("proces.exec", "")).unwrap_err();
    assert_eq!(err.path(), "kind");
    let msg = err.to_string();
    assert!(msg.starts_with(r#"kind: unknown kind "proces.exec" (did you mean "process.exec"?); valid kinds: session.create, "#), "{msg}");
    assert!(msg.contains("ledger.pruned"), "{msg}");
    assert!(
        msg.ends_with(r#"(also the "kind" enum in docs/schema/event.schema.json)"#),
        "{msg}"
    );

    let msg = parse_json_line(&line_with("qqqqqqqqqqqq", ""))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(r#"kind: unknown kind "qqqqqqqqqqqq"; valid kinds: "#),
        "{msg}"
    );
    assert_eq!(
        "proces.exec"
            .parse::<Kind>()
            .unwrap_err()
            .to_string()
            .lines()
            .count(),
        1
    );
    assert_eq!("file.open".parse::<Kind>().unwrap(), Kind::FileOpen);
}

#[test]
fn parse_other_errors() {
    let cases = [
        (
            r#"{"schema":"sandtrail.event/1","ts":"2026-06-29T10:04:00.123456789Z","session_id":"s","host_id":"h","kind":"file.open","source":"kernel","severity":"info"}"#.to_string(),
            "ts_ns",
            "ts_ns: required field is missing (at column 154); add it (see docs/schema/event.schema.json)",
        ),
        (
            line_with("file.open", r#","file":{}"#),
            "file.path",
            "file.path: required field is missing (at column 191); add it (see docs/schema/event.schema.json)",
        ),
        (
            line_with("process.exec", r#","exec":{"path":"/x","argv":["a",3]}"#),
            "exec.argv[1]",
            "exec.argv[1]: invalid type: integer `3`, expected a string (at column 218); see docs/schema/event.schema.json for the expected type",
        ),
        (
            line_with("file.open", r#","file":{"path":"/x","access":"append"}"#),
            "file.access",
            r#"file.access: unknown value "append" (at column 219); use one of read, write, readwrite"#,
        ),
        (
            line_with("file.open", r#","file":{"path":"/x","mode":-1}"#),
            "file.mode",
            "file.mode: invalid value: integer `-1`, expected u32 (at column 211); see docs/schema/event.schema.json for the expected type",
        ),
        (
            r#"{"schema":"sandtrail.event/1","ts":"#.to_string(),
            "ts",
            "ts: EOF while parsing a value (at column 35); each line must be one complete JSON object",
        ),
        (
            format!("{} x", line_with("session.start", "")),
            "event",
            "event: trailing characters (at column 188); put exactly one JSON object on each line",
        ),
        (
            line_with("file.open", r#","file":{"path":"etc/passwd"}"#),
            "file.path",
            r#"file.path: must be absolute, got "etc/passwd""#,
        ),
        (
            line_with("session.terminate", r#","session":{"reason":"crashed"}"#),
            "session.reason",
            r#"session.reason: unknown value "crashed" (at column 219); use one of exit, timeout, oom, api, policy_violation, signal, internal_error, autopause"#,
        ),
        ("[]".to_string(), "event", "event: must be a JSON object {...}, got \"[]\""),
        ("".to_string(), "event", "event: must be a JSON object {...}, got \"\""),
    ];
    let mut wrong = Vec::new();
    for (line, path, msg) in cases {
        let err = parse_json_line(&line).unwrap_err();
        if (err.path(), err.to_string().as_str()) != (path, msg) {
            wrong.push(format!(
                "{line}\n  got:  {} | {err}\n  want: {path} | {msg}",
                err.path()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------- generators

#[test]
fn demo_is_deterministic_and_uses_example_hosts_only() {
    let a = demo();
    let b = demo();
    assert_eq!(a, b);
    let c = Generator::new(8, "host-a", T0).demo_session("ses_demo");
    assert_ne!(a, c);
    for e in &a {
        for d in e.domains() {
            assert!(d.ends_with(".example"), "{d}");
        }
        if let Some(p) = &e.package {
            let url = &p.source.as_ref().unwrap().url;
            assert!(url.starts_with("https://registry.example/"), "{url}");
            assert!(p.hash.is_some() && p.approved == Some(true));
        }
        // Every URL anywhere in the event names an .example host.
        let json = serde_json::to_string(e).unwrap();
        for (i, _) in json.match_indices("://") {
            let host: String = json[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(host.ends_with(".example"), "{host} in {json}");
        }
    }
    let kinds = |k: Kind| a.iter().filter(move |e| e.kind == k);
    assert!(kinds(Kind::ProcessExec).any(|e| e
        .exec
        .as_ref()
        .unwrap()
        .argv
        .iter()
        .any(|x| x.contains("curl") && x.contains("| sh"))));
    assert!(kinds(Kind::ProcessExec).any(|e| e
        .exec
        .as_ref()
        .unwrap()
        .argv
        .starts_with(&["pip".to_string(), "install".to_string()])));
    assert!(kinds(Kind::NetFlow).all(|e| e
        .net
        .as_ref()
        .unwrap()
        .l7
        .as_ref()
        .unwrap()
        .sni
        .is_some()));
    assert!(kinds(Kind::DnsQuery).any(|e| !e.dns.as_ref().unwrap().answers.is_empty()));
    assert_eq!(
        kinds(Kind::AuditLoss)
            .next()
            .unwrap()
            .loss
            .as_ref()
            .unwrap()
            .count,
        3
    );
    assert_eq!(
        kinds(Kind::LimitHit)
            .next()
            .unwrap()
            .limit
            .as_ref()
            .unwrap()
            .limit_type,
        LimitType::CpuThrottle
    );
    assert!(kinds(Kind::SessionResume).all(|e| e.session.as_ref().unwrap().actor.is_some()));
    assert_eq!(
        kinds(Kind::SessionCleanup)
            .next()
            .unwrap()
            .session
            .as_ref()
            .unwrap()
            .fs_state,
        Some(FsState::Snapshot)
    );
    // Events during a tool call carry its id; the tool.invoke names it too.
    let tool = kinds(Kind::ToolInvoke).next().unwrap();
    let call = tool.tool.as_ref().unwrap().call_id.clone();
    assert!(a
        .iter()
        .filter(|e| e.kind == Kind::ProcessExec)
        .any(|e| e.tool_call_id == call));
}

#[test]
fn mixed_stream_is_realistic() {
    const N: usize = 200_000;
    let mut g = Generator::new(42, "host-b", T0);
    let events: Vec<Event> = g.mixed(16).take(N).collect();
    let again: Vec<Event> = Generator::new(42, "host-b", T0)
        .mixed(16)
        .take(2_000)
        .collect();
    assert_eq!(events[..2_000], again[..]);

    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut last_ts = 0;
    let mut state: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
    let mut calls: BTreeSet<String> = BTreeSet::new();
    let mut sensitive = 0;
    for e in &events {
        e.validate()
            .unwrap_or_else(|err| panic!("{err}\n{}", serde_json::to_string(e).unwrap()));
        assert!(e.ts_ns > last_ts);
        last_ts = e.ts_ns;
        *per_kind.entry(e.kind).or_default() += 1;
        if let Some(r) = e.terminate_reason() {
            *reasons.entry(r.as_str()).or_default() += 1;
        }
        if e.paths().any(|p| SENSITIVE_FILES.contains(&p)) {
            sensitive += 1;
        }
        let sid = e.session_id.clone().unwrap();
        let seen = state.entry(sid).or_default();
        if seen.is_empty() {
            assert_eq!(e.kind, Kind::SessionCreate);
        }
        assert!(
            !seen.contains(&Kind::SessionCleanup),
            "no events after cleanup"
        );
        if e.kind == Kind::SessionCleanup {
            assert_eq!(seen.last(), Some(&Kind::SessionTerminate));
        }
        seen.push(e.kind);
        if let Some(t) = &e.tool {
            calls.insert(t.call_id.clone().unwrap());
        }
    }
    let frac = |ks: &[Kind]| {
        ks.iter()
            .map(|k| per_kind.get(k).copied().unwrap_or(0))
            .sum::<usize>() as f64
            / N as f64
    };
    let open = frac(&[Kind::FileOpen]);
    let proc = frac(&[Kind::ProcessExec, Kind::ProcessExit]);
    let net = frac(&[
        Kind::NetConnect,
        Kind::NetListen,
        Kind::NetAccept,
        Kind::NetFlow,
        Kind::DnsQuery,
    ]);
    let agent = frac(&[Kind::ToolInvoke, Kind::ModelCall]);
    assert!((0.42..0.50).contains(&open), "file.open {open}");
    assert!((0.17..0.23).contains(&proc), "process {proc}");
    assert!((0.12..0.17).contains(&net), "net {net}");
    assert!((0.035..0.07).contains(&agent), "tool/model {agent}");
    for k in Kind::all().iter().filter(|k| !k.is_ledger()) {
        assert!(
            per_kind.contains_key(k),
            "{k} never generated: {per_kind:?}"
        );
    }
    for r in ["exit", "timeout", "oom", "policy_violation"] {
        assert!(reasons.contains_key(r), "no {r} terminations: {reasons:?}");
    }
    assert!(reasons.values().sum::<usize>() >= 50, "{reasons:?}");
    assert!(sensitive > 100, "{sensitive}");
    assert!(calls.len() > 100);
    assert!(events
        .iter()
        .any(|e| e.process.as_ref().is_some_and(|p| p.euid == 0)));
}
