//! Time-driven behaviour of the writer: events are signed and indexed without anyone calling
//! flush, and an idle log still gets heartbeat checkpoints.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandtrail_store::checkpoints;
use sandtrail_store::index::Index;
use sandtrail_store::{Layout, StoreConfig, Writer};

fn sizes(layout: &Layout) -> Vec<u64> {
    checkpoints::read(&layout.checkpoints())
        .unwrap()
        .notes
        .iter()
        .map(|n| n.lines().nth(1).unwrap().parse().unwrap())
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn quiet_producer_is_signed_and_indexed_without_flush_and_heartbeats_follow() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("s"));
    let cfg = StoreConfig {
        checkpoint_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(200),
        ..config(64 << 20)
    };
    let mut w = Writer::open(&layout, cfg).unwrap();
    for e in demo_events(1).into_iter().take(3) {
        w.append(e).unwrap();
    }
    // Nobody flushes: the writer's own clock must sign and index the three events.
    wait_for("a checkpoint covering 3 events", || {
        sizes(&layout).contains(&3)
    });
    wait_for("the index to reach 3 events", || {
        Index::open(&layout.index())
            .and_then(|i| i.indexed_size())
            .is_ok_and(|n| n == 3)
    });
    // Idle: heartbeat checkpoints keep coming, all of size 3.
    let before = sizes(&layout).len();
    wait_for("two heartbeat checkpoints", || {
        sizes(&layout).len() >= before + 2
    });
    assert!(sizes(&layout)[before..].iter().all(|&s| s == 3));
    w.close().unwrap();
}
