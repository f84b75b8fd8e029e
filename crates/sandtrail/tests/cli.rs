//! The command line as a user drives it: ingest, the incident questions, timelines, export
//! and offline verification, keys.

mod common;

use common::*;
use serde_json::Value;

fn ingest_incidents() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["ingest"], &incident_lines());
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).starts_with("14 events committed; the log holds 14 records, root "),
        "{}",
        out(&o)
    );
    dir
}

fn session_ids(dir: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut a = vec!["sessions", "--format", "json"];
    a.extend_from_slice(args);
    let o = run(dir, &a, "");
    assert!(o.status.success(), "{}", err(&o));
    let v: Vec<Value> = serde_json::from_str(&out(&o)).unwrap();
    v.iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_five_incident_questions() {
    let d = ingest_incidents();
    let dir = d.path();
    // Which sessions accessed path P?
    assert_eq!(session_ids(dir, &["--accessed", "/etc/shadow"]), ["ses_a"]);
    assert_eq!(session_ids(dir, &["--accessed", "/workspace/"]), ["ses_b"]);
    assert!(session_ids(dir, &["--accessed", "/etc/passwd"]).is_empty());
    // Which sessions connected to domain D?
    assert_eq!(
        session_ids(dir, &["--domain", "registry.example"]),
        ["ses_a", "ses_c"]
    );
    assert_eq!(session_ids(dir, &["--domain", "EXFIL.example."]), ["ses_b"]);
    assert_eq!(
        session_ids(dir, &["--domain", "*.example"]),
        ["ses_a", "ses_b", "ses_c"]
    );
    // Which sessions installed package V?
    assert_eq!(
        session_ids(dir, &["--package", "requests@2.32.3"]),
        ["ses_a"]
    );
    assert_eq!(
        session_ids(dir, &["--package", "requests"]),
        ["ses_a", "ses_c"]
    );
    // Which sessions terminated with reason R?
    assert_eq!(session_ids(dir, &["--terminated", "oom"]), ["ses_b"]);
    assert_eq!(session_ids(dir, &["--terminated", "timeout"]), ["ses_c"]);
    // Filters combine.
    assert_eq!(
        session_ids(
            dir,
            &["--domain", "registry.example", "--terminated", "exit"]
        ),
        ["ses_a"]
    );
    // What did session X do between T1 and T2?
    let t1 = sandtrail_event::format_ts(T + 11_000_000_000);
    let t2 = sandtrail_event::format_ts(T + 13_000_000_000);
    let o = run(
        dir,
        &[
            "query",
            "--session",
            "ses_a",
            "--since",
            &t1,
            "--until",
            &t2,
            "--format",
            "jsonl",
        ],
        "",
    );
    assert!(o.status.success(), "{}", err(&o));
    let kinds: Vec<(u64, String)> = out(&o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (4, "dns.query".to_string()),
            (5, "net.connect".to_string()),
            (6, "package.install".to_string())
        ]
    );
}

#[test]
fn query_filters_and_table() {
    let d = ingest_incidents();
    let o = run(
        d.path(),
        &["query", "--kind", "file", "--format", "jsonl"],
        "",
    );
    let paths: Vec<String> = out(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["file"]["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(paths, ["/etc/shadow", "/workspace/out.txt"]);
    let o = run(d.path(), &["query", "--package", "requests@2.31.0"], "");
    let table = out(&o);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("ses_c"), "{table}");
    assert!(
        table.contains("pip requests==2.31.0 from https://registry.example/simple/requests/"),
        "{table}"
    );
    assert_eq!(err(&o).trim(), "1 events");
    let o = run(d.path(), &["query", "--kind", "proc.exec"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("unknown kind \"proc.exec\"; kinds are: session.create"),
        "{}",
        err(&o)
    );
    let o = run(d.path(), &["sessions", "--terminated", "crashed"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("unknown termination reason \"crashed\"; reasons are: exit, timeout, oom"),
        "{}",
        err(&o)
    );
}

#[test]
fn timeline_tells_the_story() {
    let d = ingest_incidents();
    let o = run(d.path(), &["timeline", "ses_b"], "");
    assert!(o.status.success(), "{}", err(&o));
    let t = out(&o);
    assert!(t.starts_with("session ses_b: 4 events from 2026-06-29T10:00:01.000000000Z to 2026-06-29T10:00:21.000000000Z (20.00s)"), "{t}");
    assert!(
        t.contains("file.open          pid 10 uid 1000/1000 /workspace/out.txt  [write]"),
        "{t}"
    );
    assert!(
        t.contains("session.terminate  reason oom, exit code 137"),
        "{t}"
    );
    assert!(t.contains("  domains           : exfil.example\n"), "{t}");
    let o = run(d.path(), &["timeline", "ses_nope"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("no events for session \"ses_nope\""),
        "{}",
        err(&o)
    );
}

#[test]
fn bad_input_names_line_and_field_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = incident_lines().lines().map(str::to_string).collect();
    lines[3] = lines[3].replace("\"path\"", "\"pathh\"");
    let o = run(dir.path(), &["ingest"], &(lines.join("\n") + "\n"));
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.starts_with("sandtrail: error: line 4: file.pathh: unknown field"),
        "{e}"
    );
    assert!(
        e.contains("3 events committed; the log holds 3 records"),
        "{e}"
    );
    // The three accepted lines are durable, signed and verifiable.
    let o = run(dir.path(), &["verify"], "");
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).starts_with("OK: 3 records verified"), "{}", out(&o));
    // --keep-going skips the bad line and takes the rest.
    let o = run(
        dir.path(),
        &["ingest", "--keep-going"],
        &(lines.join("\n") + "\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("sandtrail: skipped line 4: file.pathh"),
        "{}",
        err(&o)
    );
    assert!(
        out(&o).starts_with("13 events committed; the log holds 16 records"),
        "{}",
        out(&o)
    );
    // Ledger events cannot be injected.
    let fake = ev(
        "ledger.recovered",
        "ses_a",
        1,
        serde_json::json!({"ledger": {"recovered": {"truncated_bytes": 0, "torn_records": 0}}}),
    );
    let o = run(dir.path(), &["ingest"], &format!("{fake}\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains(
            "line 1: kind: \"ledger.recovered\" events are written only by the ledger itself"
        ),
        "{}",
        err(&o)
    );
}

#[test]
fn export_verifies_offline_and_tampering_is_caught() {
    let d = ingest_incidents();
    let bundle = d.path().join("ses_a.bundle.json");
    let o = run(
        d.path(),
        &["export", "ses_a", "-o", bundle.to_str().unwrap()],
        "",
    );
    assert!(o.status.success(), "{}", err(&o));
    let key = anchor_key(d.path());
    // A machine with no store at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let nostore = elsewhere.path().join("none");
    let o = run(
        &nostore,
        &[
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            &key,
        ],
        "",
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert_eq!(
        out(&o).trim(),
        format!(
            "OK: bundle {} proves 6 events of session ses_a against a signed checkpoint of size 14",
            bundle.display()
        )
    );
    assert!(
        !nostore.exists(),
        "verifying a bundle must not create a store"
    );

    // Edit one event inside the bundle.
    let mut b: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf = b64
        .decode(b["events"][2]["leaf"].as_str().unwrap())
        .unwrap();
    let edited = String::from_utf8(leaf)
        .unwrap()
        .replace("registry.example", "registry.examplf");
    b["events"][2]["leaf"] = Value::String(b64.encode(edited.as_bytes()));
    let tampered = elsewhere.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&b).unwrap()).unwrap();
    let o = run(
        &nostore,
        &[
            "verify",
            "--bundle",
            tampered.to_str().unwrap(),
            "--key",
            &key,
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    assert!(
        text.starts_with(&format!(
            "FAILED: bundle {} has 1 problem(s):",
            tampered.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("[modified] event seq 4 is not proven by the checkpoint"),
        "{text}"
    );

    // The right bundle against somebody else's key.
    let other = tempfile::tempdir().unwrap();
    run(other.path(), &["ingest"], &incident_lines());
    let other_key = anchor_key(other.path());
    let o = run(
        &nostore,
        &[
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            &other_key,
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o)
            .contains("[bad_checkpoint] the bundle's checkpoint is forged, re-signed or damaged"),
        "{}",
        out(&o)
    );
}

#[test]
fn rotation_keeps_old_data_verifiable_from_the_first_key() {
    let d = ingest_incidents();
    let key0 = anchor_key(d.path());
    let skey0 = std::fs::read_to_string(d.path().join("keys/signer.skey")).unwrap();
    let o = run(d.path(), &["key", "rotate"], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).starts_with("epoch 1: "), "{}", out(&o));
    run(d.path(), &["ingest"], &incident_lines());
    let shown = out(&run(d.path(), &["key", "show"], ""));
    assert_eq!(shown.lines().count(), 2, "{shown}");
    let o = run(d.path(), &["verify", "--key", &key0], "");
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("(2 key epochs)"), "{}", out(&o));
    assert!(
        out(&o).starts_with("OK: 29 records verified"),
        "{}",
        out(&o)
    );
    // The old private key is gone from disk.
    for entry in std::fs::read_dir(d.path().join("keys")).unwrap() {
        let content = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&content);
        assert!(
            !text.contains(skey0.trim()),
            "epoch-0 private key still on disk"
        );
    }
}

#[test]
fn verify_against_a_saved_checkpoint_from_the_cli() {
    let d = ingest_incidents();
    let offsite = tempfile::tempdir().unwrap();
    let cp = offsite.path().join("offsite.note");
    let o = run(d.path(), &["checkpoints", "--last"], "");
    std::fs::write(&cp, out(&o)).unwrap();
    let o = run(
        d.path(),
        &["verify", "--checkpoint", cp.to_str().unwrap()],
        "",
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    // Wipe the whole store and start again: the saved checkpoint shows it.
    std::fs::remove_dir_all(d.path()).unwrap();
    std::fs::create_dir(d.path()).unwrap();
    std::fs::write(d.path().join("x"), "").unwrap();
    let first = incident_lines().lines().next().unwrap().to_string();
    let o = run(d.path(), &["ingest"], &format!("{first}\n"));
    assert!(o.status.success(), "{}", err(&o));
    let o = run(
        d.path(),
        &["verify", "--checkpoint", cp.to_str().unwrap()],
        "",
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        out(&o).contains("[bad_checkpoint] checkpoint from"),
        "{}",
        out(&o)
    );
}

#[test]
fn consistency_proof_shows_the_log_only_grew() {
    let d = ingest_incidents();
    let keep = tempfile::tempdir().unwrap();
    let old = keep.path().join("old.note");
    std::fs::write(&old, out(&run(d.path(), &["checkpoints", "--last"], ""))).unwrap();
    let key = anchor_key(d.path());
    // More activity, and a key rotation in between.
    run(d.path(), &["ingest"], &incident_lines());
    run(d.path(), &["key", "rotate"], "");
    run(d.path(), &["ingest"], &incident_lines());
    let proof = keep.path().join("proof.json");
    let o = run(
        d.path(),
        &[
            "consistency",
            old.to_str().unwrap(),
            "-o",
            proof.to_str().unwrap(),
        ],
        "",
    );
    assert!(o.status.success(), "{}", err(&o));
    let nostore = keep.path().join("none");
    let o = run(
        &nostore,
        &[
            "verify",
            "--consistency",
            proof.to_str().unwrap(),
            "--key",
            &key,
        ],
        "",
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert_eq!(
        out(&o).trim(),
        "OK: the signed log of size 43 extends the signed log of size 14: nothing the older checkpoint covered was changed or removed"
    );
    // A proof whose hashes were altered fails.
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    p["proof"][0] = Value::String("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    std::fs::write(&proof, serde_json::to_vec(&p).unwrap()).unwrap();
    let o = run(
        &nostore,
        &[
            "verify",
            "--consistency",
            proof.to_str().unwrap(),
            "--key",
            &key,
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).starts_with("FAILED: the log of size 43 does not extend the log of size 14: "),
        "{}",
        out(&o)
    );
    // Without --key there is nothing to trust.
    let o = run(
        &nostore,
        &["verify", "--consistency", proof.to_str().unwrap()],
        "",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--consistency needs --key"), "{}", err(&o));
}
