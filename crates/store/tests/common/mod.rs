//! Shared helpers for the store's integration tests: building stores and editing their files
//! the way an attacker with write access to the state directory would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandtrail_event::generate::Generator;
use sandtrail_event::Event;
use sandtrail_ledger::Hash;
use sandtrail_store::segment::frame::push_frame;
use sandtrail_store::segment::raw::{RawSegment, RAW_HEADER};
use sandtrail_store::{Layout, StoreConfig, Writer};

/// Fixed start time so stores are reproducible.
pub const T0: u64 = 1_782_727_440_000_000_000;

/// A config that never rotates keys on its own and seals only when asked to by size.
pub fn config(segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes,
        epoch_interval: None,
        host_id: "host-test".into(),
        commit_interval: Duration::from_millis(5),
        ..Default::default()
    }
}

/// `n` demo sessions' worth of events.
pub fn demo_events(sessions: usize) -> Vec<Event> {
    let mut g = Generator::new(7, "host-test", T0);
    (0..sessions)
        .flat_map(|i| g.demo_session(&format!("ses_{i:03}")))
        .collect()
}

/// Build a store in `dir`, flushing after each chunk so several checkpoints exist.
pub fn build(dir: &Path, events: Vec<Event>, chunk: usize, cfg: StoreConfig) -> Layout {
    let layout = Layout::new(dir);
    let mut w = Writer::open(&layout, cfg).expect("open writer");
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        for e in it.by_ref().take(chunk) {
            w.append(e).unwrap();
        }
        w.flush().unwrap();
    }
    w.close().unwrap();
    layout
}

/// Path of the only raw segment.
pub fn raw_segment(layout: &Layout) -> PathBuf {
    let segs = sandtrail_store::segment::list(layout).unwrap();
    let (_, files) = segs.iter().next_back().unwrap();
    files.raw.clone().expect("a raw segment")
}

/// The frames of a raw segment as (stored hash, leaf).
pub fn read_frames(path: &Path) -> (u64, Vec<(Hash, Vec<u8>)>) {
    let seg = RawSegment::read(path).unwrap();
    let frames = seg
        .frames(false)
        .map(|f| {
            let (_, f) = f.unwrap();
            (*f.stored_hash, f.leaf.to_vec())
        })
        .collect();
    (seg.first_seq, frames)
}

/// Rewrite a raw segment with the given frames.
pub fn write_frames(path: &Path, first_seq: u64, frames: &[(Hash, Vec<u8>)]) {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"STSEG001");
    buf.extend_from_slice(&first_seq.to_le_bytes());
    assert_eq!(buf.len(), RAW_HEADER);
    for (h, leaf) in frames {
        push_frame(&mut buf, h, leaf);
    }
    std::fs::write(path, buf).unwrap();
}
