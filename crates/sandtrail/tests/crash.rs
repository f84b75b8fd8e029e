//! `kill -9` of the writer at many different moments, then restart: nothing a checkpoint
//! covered is lost, a torn tail is cut, and each crash is logged as `ledger.recovered`.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sandtrail_event::generate::Generator;

fn newest_checkpoint_size(dir: &std::path::Path) -> u64 {
    let log = sandtrail_store::checkpoints::read(&dir.join("checkpoints.log")).unwrap();
    log.notes
        .iter()
        .map(|n| n.lines().nth(1).unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap_or(0)
}

#[test]
fn kill_dash_nine_at_any_moment_loses_nothing_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut g = Generator::new(3, "host-test", T);
    let lines: String = g
        .mixed(20)
        .take(20_000)
        .map(|e| serde_json::to_string(&e).unwrap() + "\n")
        .collect();
    let rounds = 8;
    for round in 0..rounds {
        let mut child = bin()
            .arg("--state-dir")
            .arg(&state)
            .arg("ingest")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = lines.clone();
        let feeder = std::thread::spawn(move || {
            // Feed until the writer dies (broken pipe).
            while stdin.write_all(data.as_bytes()).is_ok() {}
        });
        // Wait until the writer has the store open, then let it work for a while that
        // differs per round (so the kill lands in appends, fsyncs, checkpoints, seals...).
        let start = Instant::now();
        while !state.join("RUNNING").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "writer never opened the store"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(30 + 97 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        feeder.join().unwrap();
        let covered = newest_checkpoint_size(&state);

        // Restart: recovery runs, reports, and the store verifies.
        let o = run(&state, &["ingest"], "");
        assert!(o.status.success(), "round {round}: {}", err(&o));
        assert!(
            err(&o).starts_with(
                "sandtrail: recovered: previous writer stopped without closing the store"
            ),
            "round {round}: {}",
            err(&o)
        );
        let o = run(&state, &["verify", "--json"], "");
        let report: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert!(o.status.success(), "round {round}: {report:#}");
        let records = report["records"].as_u64().unwrap();
        assert!(
            records > covered,
            "round {round}: {records} records, but a checkpoint covered {covered} before the crash"
        );
    }
    // One ledger.recovered event per crash.
    let o = run(
        &state,
        &["query", "--kind", "ledger.recovered", "--format", "jsonl"],
        "",
    );
    assert_eq!(out(&o).lines().count(), rounds as usize, "{}", out(&o));
}
