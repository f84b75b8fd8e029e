//! Every way of tampering with a store that `verify` must catch, each with its precise finding.

mod common;

use common::*;
use sandtrail_event::{decode_leaf, encode_leaf};
use sandtrail_ledger::checkpoint::Checkpoint;
use sandtrail_ledger::keys::{Rotation, ROTATIONS_FILE};
use sandtrail_ledger::leaf_hash;
use sandtrail_ledger::note::Signer;
use sandtrail_store::checkpoints;
use sandtrail_store::verify::{verify_store, ProblemKind, VerifyOptions, VerifyReport};
use sandtrail_store::{Layout, Writer};

fn fresh() -> (tempfile::TempDir, Layout, usize) {
    let dir = tempfile::tempdir().unwrap();
    let events = demo_events(3);
    let n = events.len();
    let layout = build(&dir.path().join("state"), events, 25, config(64 << 20));
    (dir, layout, n)
}

fn verify(layout: &Layout) -> VerifyReport {
    verify_store(layout, &VerifyOptions::default()).unwrap()
}

fn kinds(r: &VerifyReport) -> Vec<ProblemKind> {
    r.problems.iter().map(|p| p.kind).collect()
}

fn first_message(r: &VerifyReport, kind: ProblemKind) -> String {
    r.problems
        .iter()
        .find(|p| p.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} problem in {:#?}", r.problems))
        .message
        .clone()
}

#[test]
fn untouched_store_verifies() {
    let (_d, layout, n) = fresh();
    let r = verify(&layout);
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.records, n as u64);
    assert_eq!(r.covered, n as u64);
    assert!(r.checkpoints >= n / 25, "{} checkpoints", r.checkpoints);
    assert_eq!(r.epochs, 1);
}

#[test]
fn modified_record_is_named_by_position() {
    let (_d, layout, _) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    // Change one byte of record 10's content, keep its stored hash.
    let leaf = &mut frames[10].1;
    let at = leaf.len() - 5;
    leaf[at] ^= 0x20;
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    assert_eq!(
        r.problems[0].kind,
        ProblemKind::Modified,
        "{:#?}",
        r.problems
    );
    let msg = &r.problems[0].message;
    assert!(
        msg.starts_with("record at position 10 (")
            && msg.ends_with("was modified: its bytes no longer match its leaf hash"),
        "{msg}"
    );
    assert!(kinds(&r).contains(&ProblemKind::RootMismatch));
}

#[test]
fn modified_record_with_rehashed_frame_breaks_the_root() {
    let (_d, layout, _) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    // An attacker who also fixes the frame's hash: only the signed root can tell.
    let mut ev = decode_leaf(&frames[30].1).unwrap();
    ev.host_id = "host-elsewhere".into();
    let leaf = encode_leaf(&ev);
    frames[30] = (leaf_hash(&leaf), leaf);
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    assert_eq!(
        kinds(&r),
        vec![ProblemKind::RootMismatch],
        "{:#?}",
        r.problems
    );
    let msg = &r.problems[0].message;
    assert!(
        msg.starts_with("the records do not match checkpoint #"),
        "{msg}"
    );
    assert!(
        msg.contains("a record in seqs 25..49 was changed, inserted, removed or moved"),
        "{msg}"
    );
}

#[test]
fn deleted_record_is_reported_as_missing_seq() {
    let (_d, layout, _) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    frames.remove(17);
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    assert_eq!(
        first_message(&r, ProblemKind::Deleted),
        "seq 17 is missing: records were deleted from the log"
    );
    assert!(kinds(&r).contains(&ProblemKind::RootMismatch));
}

#[test]
fn reordered_records_are_reported() {
    let (_d, layout, _) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    frames.swap(40, 41);
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    let msg = first_message(&r, ProblemKind::Reordered);
    assert!(
        msg.starts_with("record seq 40 is at position 41 ("),
        "{msg}"
    );
    assert!(msg.ends_with("): records were reordered"), "{msg}");
    assert!(
        !kinds(&r).contains(&ProblemKind::Deleted),
        "{:#?}",
        r.problems
    );
}

#[test]
fn seq_gap_is_reported() {
    let (_d, layout, _) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    // Renumber everything from seq 60 on by +3 (as if 3 records had been cut out and the
    // frames rebuilt), fixing every frame hash.
    for f in frames.iter_mut().skip(60) {
        let mut ev = decode_leaf(&f.1).unwrap();
        ev.seq += 3;
        let leaf = encode_leaf(&ev);
        *f = (leaf_hash(&leaf), leaf);
    }
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    assert_eq!(
        first_message(&r, ProblemKind::Deleted),
        "seqs 60..62 are missing: records were deleted from the log"
    );
    assert!(kinds(&r).contains(&ProblemKind::RootMismatch));
}

#[test]
fn truncated_tail_is_caught_by_the_stores_checkpoints() {
    let (_d, layout, n) = fresh();
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    frames.truncate(n - 4);
    write_frames(&path, first, &frames);
    let r = verify(&layout);
    let msg = first_message(&r, ProblemKind::Truncated);
    assert!(
        msg.starts_with(&format!(
            "the store holds {} records but checkpoint #",
            n - 4
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "covers {n}: the log was truncated (4 records missing"
        )),
        "{msg}"
    );
}

#[test]
fn truncated_tail_with_checkpoints_removed_is_caught_by_a_saved_checkpoint() {
    let (d, layout, n) = fresh();
    // The security team shipped the newest checkpoint off the host.
    let saved = checkpoints::read(&layout.checkpoints())
        .unwrap()
        .notes
        .last()
        .unwrap()
        .clone();
    let saved_path = d.path().join("offsite.checkpoint");
    std::fs::write(&saved_path, &saved).unwrap();
    // The attacker cuts the tail AND every checkpoint that covered it.
    let path = raw_segment(&layout);
    let (first, mut frames) = read_frames(&path);
    frames.truncate(50);
    write_frames(&path, first, &frames);
    let log = checkpoints::read(&layout.checkpoints()).unwrap();
    let mut kept = Vec::new();
    for note in &log.notes {
        let body = note.split("\n\n").next().unwrap();
        let size: u64 = body.lines().nth(1).unwrap().parse().unwrap();
        if size <= 50 {
            kept.extend(checkpoints::frame(note));
        }
    }
    std::fs::write(layout.checkpoints(), kept).unwrap();
    // The store alone looks consistent ...
    let r = verify(&layout);
    assert!(
        kinds(&r).iter().all(|k| *k != ProblemKind::Truncated),
        "{:#?}",
        r.problems
    );
    // ... but not against the checkpoint held elsewhere.
    let r = verify_store(
        &layout,
        &VerifyOptions {
            extra_checkpoints: vec![("checkpoint from offsite".into(), saved)],
            ..Default::default()
        },
    )
    .unwrap();
    let msg = first_message(&r, ProblemKind::Truncated);
    assert!(
        msg.starts_with(&format!(
            "the store holds 50 records but checkpoint from offsite (size {n}"
        )),
        "{msg}"
    );
}

fn replace_last_checkpoint(layout: &Layout, note: &str) {
    let log = checkpoints::read(&layout.checkpoints()).unwrap();
    let mut out = Vec::new();
    for n in &log.notes[..log.notes.len() - 1] {
        out.extend(checkpoints::frame(n));
    }
    out.extend(checkpoints::frame(note));
    std::fs::write(layout.checkpoints(), out).unwrap();
}

#[test]
fn forged_checkpoint_is_rejected() {
    let (_d, layout, _) = fresh();
    let log = checkpoints::read(&layout.checkpoints()).unwrap();
    let last = log.notes.last().unwrap();
    // Same signature, different size line.
    let (body, sig) = last.split_once("\n\n").unwrap();
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    let size: u64 = lines[1].parse().unwrap();
    lines[1] = (size + 10).to_string();
    let forged = format!("{}\n\n{}", lines.join("\n"), sig);
    replace_last_checkpoint(&layout, &forged);
    let r = verify(&layout);
    let n = log.notes.len();
    let msg = first_message(&r, ProblemKind::BadCheckpoint);
    assert!(
        msg.starts_with(&format!(
            "checkpoint #{n} is forged, re-signed or damaged: "
        )),
        "{msg}"
    );
}

#[test]
fn checkpoint_signed_by_an_impostor_key_is_rejected() {
    let (_d, layout, n) = fresh();
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.store_json()).unwrap()).unwrap();
    let origin = info["origin"].as_str().unwrap();
    // A new key with the log's name: a checkpoint for a bigger log that never existed.
    let impostor = Signer::generate(origin).unwrap();
    let note = Checkpoint::new(origin, n as u64 + 5, [7u8; 32], T0)
        .sign(&impostor)
        .unwrap();
    replace_last_checkpoint(&layout, &note);
    let r = verify(&layout);
    assert_eq!(
        r.problems[0].kind,
        ProblemKind::BadCheckpoint,
        "{:#?}",
        r.problems
    );
    assert!(r.problems[0]
        .message
        .contains("is forged, re-signed or damaged"));
    assert!(
        !kinds(&r).contains(&ProblemKind::Truncated),
        "a rejected checkpoint must not count"
    );
}

#[test]
fn stolen_current_key_cannot_resign_history() {
    let (_d, layout, _) = fresh();
    // Rotate: epoch 1 starts at the current size; the epoch-0 key is erased.
    let mut w = Writer::open(&layout, config(64 << 20)).unwrap();
    let rot_size = w.flush().unwrap().size;
    w.rotate_key().unwrap();
    w.close().unwrap();
    assert!(verify(&layout).ok());
    // The attacker steals today's key and signs a checkpoint over an older, edited history.
    let skey = std::fs::read_to_string(layout.keys().join("signer.skey")).unwrap();
    let stolen = Signer::from_skey(skey.trim()).unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.store_json()).unwrap()).unwrap();
    let origin = info["origin"].as_str().unwrap();
    let note = Checkpoint::new(origin, rot_size - 10, [9u8; 32], T0)
        .sign(&stolen)
        .unwrap();
    replace_last_checkpoint(&layout, &note);
    let r = verify(&layout);
    let msg = first_message(&r, ProblemKind::BadCheckpoint);
    assert!(msg.contains("is forged, re-signed or damaged"), "{msg}");
    assert_eq!(r.epochs, 2);
}

#[test]
fn rotation_not_signed_by_previous_key_is_rejected() {
    let (_d, layout, _) = fresh();
    let mut w = Writer::open(&layout, config(64 << 20)).unwrap();
    w.rotate_key().unwrap();
    w.close().unwrap();
    assert!(verify(&layout).ok());
    // Replace the rotation record by one that names the attacker's key, signed by that key.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.store_json()).unwrap()).unwrap();
    let origin = info["origin"].as_str().unwrap();
    let attacker = Signer::generate(origin).unwrap();
    let rotation = Rotation {
        origin: origin.to_string(),
        epoch: 1,
        next: attacker.verifier(),
        tree_size: 10,
        time_ns: T0,
    };
    let signed = rotation.sign(&attacker).unwrap();
    std::fs::write(layout.keys().join(ROTATIONS_FILE), format!("{signed}\n")).unwrap();
    let r = verify(&layout);
    let msg = first_message(&r, ProblemKind::BadRotation);
    assert!(
        msg.starts_with("key rotation #1 (to epoch 1) is not valid: "),
        "{msg}"
    );
    // Checkpoints signed by the real epoch-1 key no longer verify either.
    assert!(kinds(&r).contains(&ProblemKind::BadCheckpoint));
}

#[test]
fn modified_sealed_segment_breaks_the_root() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments so that most of the log is sealed.
    let layout = build(
        &dir.path().join("state"),
        demo_events(6),
        40,
        config(8 << 10),
    );
    let segs = sandtrail_store::segment::list(&layout).unwrap();
    let sealed: Vec<_> = segs.values().filter_map(|f| f.sealed.clone()).collect();
    assert!(sealed.len() >= 2, "expected sealed segments, got {segs:?}");
    assert!(verify(&layout).ok());
    // Rewrite one sealed segment with a changed event (re-sealed by the attacker, so the file
    // itself is well-formed).
    let target = &sealed[1];
    let seg = sandtrail_store::segment::sealed::SealedSegment::open(target).unwrap();
    let mut leaves: Vec<(u64, Vec<u8>)> = Vec::new();
    for b in &seg.footer.blocks {
        leaves.extend(seg.read_block(b).unwrap());
    }
    leaves.sort();
    let frontier = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&seg.footer.frontier)
            .unwrap()
    };
    let first = seg.footer.first_seq;
    drop(seg);
    let mut ev = decode_leaf(&leaves[3].1).unwrap();
    ev.session_id = Some("ses_innocent".into());
    leaves[3].1 = encode_leaf(&ev);
    let raw = dir.path().join("forged.seg");
    write_frames(
        &raw,
        first,
        &leaves
            .iter()
            .map(|(_, l)| (leaf_hash(l), l.clone()))
            .collect::<Vec<_>>(),
    );
    sandtrail_store::segment::sealed::seal(&raw, target, &frontier, 3).unwrap();
    let r = verify(&layout);
    assert_eq!(
        kinds(&r),
        vec![ProblemKind::RootMismatch],
        "{:#?}",
        r.problems
    );
}
