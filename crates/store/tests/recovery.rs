//! Crash recovery done in-process: torn tails, lost indexes, interrupted seals, damage that
//! must not be papered over, and the permissions of everything created.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::*;
use sandtrail_store::query::{events, EventFilter};
use sandtrail_store::verify::{verify_store, VerifyOptions};
use sandtrail_store::{Layout, StoreError, Writer};

fn recovered_events(layout: &Layout) -> Vec<sandtrail_event::Event> {
    events(
        layout,
        &EventFilter {
            kinds: vec!["ledger.recovered".into()],
            ..Default::default()
        },
    )
    .unwrap()
}

/// Reopens the store as after a crash (the RUNNING marker left behind); the recovery report.
fn reopen_after_crash(layout: &Layout) -> sandtrail_store::recovery::RecoveryReport {
    std::fs::write(layout.running(), b"4242\n").unwrap();
    let w = Writer::open(layout, config(64 << 20)).unwrap();
    let report = w.recovery().clone();
    w.close().unwrap();
    assert!(report.unclean);
    report
}

#[test]
fn torn_tail_is_cut_and_reported_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let events = demo_events(2);
    let n = events.len() as u64;
    let layout = build(&dir.path().join("s"), events, 30, config(64 << 20));
    // Simulate a crash mid-write: half a frame at the tail and the RUNNING marker left behind.
    let path = raw_segment(&layout);
    let garbage = [0x99u8, 0x01, 0, 0, 1, 2, 3, 4, 5, 6, 7];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let report = reopen_after_crash(&layout);
    assert_eq!(report.size, n);
    assert_eq!(report.truncated_bytes, garbage.len() as u64);
    assert_eq!(
        report.torn.as_deref(),
        Some("record is cut short (11 of 36 bytes present)")
    );
    assert_eq!(report.uncovered_records, 0);

    let found = recovered_events(&layout);
    assert_eq!(found.len(), 1);
    let rec = found[0]
        .ledger
        .as_ref()
        .unwrap()
        .recovered
        .as_ref()
        .unwrap();
    assert_eq!(rec.truncated_bytes, 11);
    assert_eq!(rec.torn_records, 1);
    assert_eq!(rec.last_good_seq, Some(n - 1));
    assert_eq!(
        found[0].seq, n,
        "the recovery event follows the last intact record"
    );
    verifies_with(&layout, n + 1);
}

#[test]
fn segment_killed_while_being_created_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let events = demo_events(2);
    let n = events.len() as u64;
    let layout = build(&dir.path().join("s"), events, 30, config(64 << 20));
    // A writer killed while rotating to a new segment: older versions could leave the new
    // file with only part of its header; this one leaves at most a `.tmp`.
    let next = layout.raw_segment(n);
    std::fs::write(&next, &b"STSEG"[..]).unwrap();
    let mut tmp = next.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, b"").unwrap();
    let report = reopen_after_crash(&layout);
    assert_eq!(report.size, n);
    assert_eq!(
        report.torn.as_deref(),
        Some("a segment file without its whole header")
    );
    assert!(!std::path::Path::new(&tmp).exists(), "the .tmp is removed");
    assert_eq!(recovered_events(&layout).len(), 1);
    verifies_with(&layout, n + 1);
}

/// The store verifies and holds `records` records.
fn verifies_with(layout: &Layout, records: u64) {
    let r = verify_store(layout, &VerifyOptions::default()).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.records, records);
}

#[test]
fn segment_with_a_foreign_header_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let events = demo_events(1);
    let n = events.len() as u64;
    let layout = build(&dir.path().join("s"), events, 30, config(64 << 20));
    std::fs::write(layout.raw_segment(n), b"GIF8").unwrap();
    match Writer::open(&layout, config(64 << 20)) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("bad or missing header"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a file that is not ours was accepted"),
    }
    assert!(
        layout.raw_segment(n).exists(),
        "damage is left for the operator"
    );
}

#[test]
fn clean_reopen_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build(&dir.path().join("s"), demo_events(1), 100, config(64 << 20));
    let w = Writer::open(&layout, config(64 << 20)).unwrap();
    assert!(!w.recovery().unclean);
    w.close().unwrap();
    assert!(recovered_events(&layout).is_empty());
}

#[test]
fn lost_index_is_rebuilt_from_segments() {
    let dir = tempfile::tempdir().unwrap();
    let events = demo_events(4);
    let n = events.len() as u64;
    // Small segments: the rebuild must also restore the sealed blocks' locations.
    let layout = build(&dir.path().join("s"), events, 50, config(16 << 10));
    let before = events_of(&layout, "ses_002");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", layout.index().display()));
    }
    let w = Writer::open(&layout, config(16 << 10)).unwrap();
    assert_eq!(w.recovery().index_rebuilt_from, Some(0));
    w.close().unwrap();
    let after = events_of(&layout, "ses_002");
    assert_eq!(before, after);
    assert!(!after.is_empty());
    let idx = sandtrail_store::index::Index::open(&layout.index()).unwrap();
    assert_eq!(idx.indexed_size().unwrap(), n);
}

fn events_of(layout: &Layout, session: &str) -> Vec<sandtrail_event::Event> {
    events(
        layout,
        &EventFilter {
            session: Some(session.into()),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn interrupted_seal_is_redone_from_the_raw_segment() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build(&dir.path().join("s"), demo_events(1), 100, config(64 << 20));
    // A partial sealed file next to the raw one, as a crash during sealing leaves it.
    let raw = raw_segment(&layout);
    let sealed = raw.with_extension("sealed");
    std::fs::write(&sealed, b"STSEAL01 half written").unwrap();
    std::fs::write(layout.running(), b"1\n").unwrap();
    let w = Writer::open(&layout, config(64 << 20)).unwrap();
    assert_eq!(w.recovery().partial_seals_removed, vec![0]);
    w.close().unwrap();
    assert!(!sealed.exists());
    assert!(verify_store(&layout, &VerifyOptions::default())
        .unwrap()
        .ok());
}

#[test]
fn damage_under_a_checkpoint_is_refused_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build(&dir.path().join("s"), demo_events(2), 30, config(64 << 20));
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    let k = frames.len() - 1;
    let last = frames[k].1.len() - 3;
    frames[k].1[last] ^= 1;
    write_frames(&path, first, &frames);
    std::fs::write(layout.running(), b"1\n").unwrap();
    let err = match Writer::open(&layout, config(64 << 20)) {
        Err(e) => e,
        Ok(_) => panic!("opened a store whose checkpointed tail is damaged"),
    };
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("record seq {k}: record content does not match its stored leaf hash; it is covered by a signed checkpoint, so it is not cut")),
        "{msg}"
    );
    // Nothing was cut.
    assert_eq!(read_frames(&path).1.len(), k + 1);
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("s"));
    let w = Writer::open(&layout, config(64 << 20)).unwrap();
    let err = match Writer::open(&layout, config(64 << 20)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("two writers"),
    };
    assert!(
        err.starts_with("another sandtrail writer is using"),
        "{err}"
    );
    w.close().unwrap();
}

#[test]
fn store_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build(&dir.path().join("s"), demo_events(2), 30, config(8 << 10));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(layout.root()), 0o700);
    let mut files = 0;
    let mut stack = vec![layout.root().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 8, "only {files} files checked");
}
