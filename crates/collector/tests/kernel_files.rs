//! Root end-to-end test of file collection: the kernel's records of a real bash + python3
//! script, fed to the collector, give `file.*` events with exact absolute paths (after `cd`,
//! with `..`, relative to a Python `dir_fd`), `mkdir` and `mknod` with their modes, sensitive
//! reads logged and other reads summarized.
//! The cgroup helpers are those of `crates/bpf/tests/`.
//!
//! Not root, or no cgroup v2 hierarchy: the test prints a loud SKIPPED banner and passes.

use std::process::Command;
use std::time::{Duration, Instant};

use sandtrail_bpf::{ProbeOptions, RawRecord};
use sandtrail_collector::{Collector, Scope};
use sandtrail_event::{Access, Event, FileInfo, Kind};

#[path = "../../bpf/tests/common/mod.rs"]
#[macro_use]
mod common;
use common::*;

const SCRIPT: &str = r#"set -e
cd "$DIR"
echo hi > created.txt
mv created.txt renamed.txt
mkdir sub
cd sub
mkfifo pipe
echo x > ../rel.txt
rm ../renamed.txt
cat /nonexistent-sandtrail-file 2>/dev/null || true
cat ../rel.txt ../rel.txt > /dev/null
python3 -c 'import os, stat, sys
os.mknod("chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
d = os.open(sys.argv[1], os.O_RDONLY)
f = os.open("viafd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=d)
os.close(f)
os.close(d)' "$DIR"
cat "$DIR/.aws/credentials" > /dev/null
cat /etc/shadow > /dev/null
exit 0"#;

fn file_events(events: &[Event]) -> Vec<(Kind, String, FileInfo)> {
    events
        .iter()
        .filter_map(|e| {
            let f = e.file.clone()?;
            Some((e.kind, e.process.as_ref().unwrap().exe.clone(), f))
        })
        .collect()
}

#[test]
fn a_script_gives_file_events_with_absolute_paths() {
    require_root!("a_script_gives_file_events_with_absolute_paths");
    let cg = TestCgroup::new();
    let dir = std::env::temp_dir().join(format!("sandtrail-collect-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".aws")).unwrap();
    std::fs::write(dir.join(".aws/credentials"), "[default]\n").unwrap();
    let mut probe = load(ProbeOptions::default());
    let cg_id = probe.watch_cgroup(cg.path.as_path()).expect("watch");
    let mut collector = Collector::new();
    collector.watch(
        cg_id,
        Scope {
            session_id: "ses_files".into(),
            host_id: "test".into(),
        },
    );

    let mut child = cg.spawn(
        Command::new("/bin/bash")
            .args(["-c", SCRIPT])
            .env("DIR", &dir),
    );
    let bash = child.id();
    // Feed the collector as the records come, as a session's reader does.
    let mut events = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    let mut linger: Option<Instant> = None;
    while Instant::now() < end && linger.is_none_or(|t| Instant::now() < t) {
        if let Some(r) = probe.next_record(Duration::from_millis(100)).expect("read") {
            if matches!(&r, RawRecord::Exit { task, .. } if task.pid == bash) {
                linger = Some(Instant::now() + Duration::from_millis(300));
            }
            events.extend(collector.record(r).into_iter().map(|(_, e)| e));
        }
    }
    assert!(linger.is_some(), "timed out");
    events.extend(collector.unwatch(cg_id).into_iter().map(|(_, e)| e));
    let status = child.wait().expect("wait bash");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0));
    for e in &events {
        e.validate().unwrap_or_else(|err| panic!("{err:?}: {e:#?}"));
    }
    let files = file_events(&events);
    let d = dir.to_str().unwrap();
    let find = |kind: Kind, path: &str, count: Option<u64>| -> &FileInfo {
        files
            .iter()
            .find(|(k, _, f)| *k == kind && f.path == path && f.count == count)
            .map(|(_, _, f)| f)
            .unwrap_or_else(|| panic!("no {kind:?} of {path} ({count:?}): {files:#?}"))
    };

    let f = find(Kind::FileOpen, &format!("{d}/created.txt"), None);
    assert_eq!(
        (f.access, f.created, f.mode),
        (Some(Access::Write), true, Some(0o666))
    );
    assert_eq!(f.result.as_deref(), Some("ok"));
    let f = find(Kind::FileRename, &format!("{d}/created.txt"), None);
    assert_eq!(
        f.new_path.as_deref(),
        Some(format!("{d}/renamed.txt").as_str())
    );
    // The events of one kind: (executable, file).
    let of_kind = |kind: Kind| -> Vec<(&str, &FileInfo)> {
        files
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, exe, f)| (exe.as_str(), f))
            .collect()
    };
    // `mkdir sub` (relative, after cd): one event, exact.
    let mkdirs = of_kind(Kind::FileMkdir);
    assert_eq!(mkdirs.len(), 1, "{files:#?}");
    assert!(mkdirs[0].0.ends_with("/mkdir"), "{mkdirs:?}");
    assert_eq!(
        mkdirs[0].1,
        &FileInfo {
            path: format!("{d}/sub"),
            mode: Some(0o777),
            result: Some("ok".into()),
            ..Default::default()
        }
    );
    // `mkfifo pipe` and Python's `os.mknod` of a character device (relative, after cd):
    // one event each, exact, with the file type bits and the device number.
    let mknods = of_kind(Kind::FileMknod);
    assert_eq!(mknods.len(), 2, "{files:#?}");
    assert!(mknods[0].0.ends_with("/mkfifo"), "{mknods:?}");
    assert_eq!(
        mknods[0].1,
        &FileInfo {
            path: format!("{d}/sub/pipe"),
            mode: Some(0o10666),
            result: Some("ok".into()),
            ..Default::default()
        }
    );
    assert!(mknods[1].0.contains("python3"), "{mknods:?}");
    assert_eq!(
        mknods[1].1,
        &FileInfo {
            path: format!("{d}/sub/chr"),
            mode: Some(0o20600),
            device: Some("1:3".into()),
            result: Some("ok".into()),
            ..Default::default()
        }
    );
    let f = find(Kind::FileOpen, &format!("{d}/rel.txt"), None);
    assert_eq!(f.access, Some(Access::Write), "../rel.txt after cd sub");
    let f = find(Kind::FileDelete, &format!("{d}/renamed.txt"), None);
    assert_eq!(f.result.as_deref(), Some("ok"));
    let f = find(Kind::FileOpen, &format!("{d}/viafd.txt"), None);
    assert_eq!(
        (f.access, f.mode),
        (Some(Access::Write), Some(0o600)),
        "dir_fd"
    );
    // Sensitive reads: one event each, no count.
    for p in [format!("{d}/.aws/credentials"), "/etc/shadow".into()] {
        let f = find(Kind::FileOpen, &p, None);
        assert_eq!(f.access, Some(Access::Read), "{p}");
        assert_eq!(f.result.as_deref(), Some("ok"));
    }
    // Ordinary reads: summarized with their count; a failed one with its errno.
    let f = find(Kind::FileOpen, "/nonexistent-sandtrail-file", Some(1));
    assert_eq!(f.result.as_deref(), Some("ENOENT"));
    let f = find(Kind::FileOpen, &format!("{d}/rel.txt"), Some(2));
    assert_eq!(f.access, Some(Access::Read), "cat read it twice");
    // Nothing unresolved (an unknown cwd or fd would be named through /proc/<pid>/).
    let unresolved = |p: &str| {
        p == "/(unreadable)"
            || (p.starts_with("/proc/") && (p.contains("/cwd") || p.contains("/fd/")))
    };
    assert!(
        files.iter().all(|(_, _, f)| !unresolved(&f.path)),
        "{files:#?}"
    );
}
