//! Root integration tests of the file programs on the real kernel: a session cgroup of our own
//! under the cgroup v2 hierarchy, a real bash + python3 script in it, exact file records (paths
//! as passed, dirfds, flags, results) out of the ring buffer. The helpers are those of
//! `tests/process.rs`.
//!
//! Not root, or no cgroup v2 hierarchy: every test prints a loud SKIPPED banner and passes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sandtrail_bpf::{FileCall, FileOp, Probe, ProbeOptions, RawRecord};

#[macro_use]
mod common;
use common::*;

const O_ACCMODE: u64 = 0o3;
const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_DIRECTORY: u64 = 0o200000;
const AT_FDCWD: i32 = -100;

/// The file script: bash redirections, `mv`, `cd` then relative paths, `rm`, a failed open,
/// python's `os.open(name, flags, dir_fd=fd)`, a read under a sensitive-looking directory.
const SCRIPT: &str = r#"set -e
cd "$DIR"
echo hi > created.txt
mv created.txt renamed.txt
mkdir sub
cd sub
echo x > ../rel.txt
rm ../renamed.txt
cat /nonexistent-sandtrail-file 2>/dev/null || true
python3 -c 'import os, sys
d = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
f = os.open("viafd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=d)
os.close(f)
os.close(d)' "$DIR"
cat "$DIR/.aws/credentials" > /dev/null
cat /etc/shadow > /dev/null
exit 0"#;

/// File records of the session: (pid, call, result).
fn files(records: &[RawRecord]) -> Vec<(u32, FileCall, Option<i64>)> {
    records
        .iter()
        .filter_map(|r| match r {
            RawRecord::File { task, call, result } => Some((task.pid, call.clone(), *result)),
            _ => None,
        })
        .collect()
}

fn find<'a>(
    files: &'a [(u32, FileCall, Option<i64>)],
    op: FileOp,
    path: &str,
) -> &'a (u32, FileCall, Option<i64>) {
    files
        .iter()
        .find(|(_, c, _)| c.op == op && c.path == Path::new(path))
        .unwrap_or_else(|| panic!("no {op:?} of {path}; file records: {files:#?}"))
}

/// The probe as the file tests load it: with the file calls recorded at their exit alone (one
/// program, one record per call), which this kernel must accept when it has BTF (a refusal is
/// a failure, not a skip), or (`paired`) with the entry/exit pairs, the fallback of kernels
/// without BTF or bpf_task_pt_regs.
fn load_files(test: &str, paired: bool) -> Probe {
    let probe = load(ProbeOptions {
        calls_at_exit: !paired,
        ..Default::default()
    });
    if paired {
        assert!(probe.calls_at_exit().is_err());
    } else if kernel_btf() {
        probe
            .calls_at_exit()
            .expect("the file programs at exit on a kernel with BTF");
    } else {
        skipped(
            &format!("{test} (file calls at exit)"),
            "no kernel BTF (/sys/kernel/btf/vmlinux): the entry/exit pairs ran instead",
        );
    }
    probe
}

#[test]
fn file_script_exact_records() {
    require_root!("file_script_exact_records");
    file_script(load_files("file_script_exact_records", false), "at-exit");
}

/// The same script and assertions with the entry/exit program pairs.
#[test]
fn file_script_exact_records_with_paired_programs() {
    require_root!("file_script_exact_records_with_paired_programs");
    file_script(
        load_files("file_script_exact_records_with_paired_programs", true),
        "paired",
    );
}

fn file_script(mut probe: Probe, variant: &str) {
    let cg = TestCgroup::new();
    let dir = std::env::temp_dir().join(format!(
        "sandtrail-file-test-{}-{variant}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".aws")).unwrap();
    std::fs::write(dir.join(".aws/credentials"), "[default]\n").unwrap();
    probe.watch_cgroup(cg.path.as_path()).expect("watch");

    let mut child = cg.spawn(
        Command::new("/bin/bash")
            .args(["-c", SCRIPT])
            .env("DIR", &dir),
    );
    let bash = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(30), bash);
    let status = child.wait().expect("wait bash");
    let losses = probe.losses().expect("losses");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0));
    let files = files(&records);
    let d = dir.to_str().unwrap();

    // cd "$DIR": chdir with the absolute path, ok.
    let (pid, c, res) = find(&files, FileOp::Chdir, d);
    assert_eq!((*pid, *res), (bash, Some(0)));
    assert_eq!(c.dirfd, AT_FDCWD);

    // echo hi > created.txt: bash's openat(AT_FDCWD, "created.txt", O_WRONLY|O_CREAT|O_TRUNC).
    let (pid, c, res) = find(&files, FileOp::Open, "created.txt");
    assert_eq!(*pid, bash);
    assert_eq!(c.dirfd, AT_FDCWD);
    assert_eq!(
        c.flags & (O_ACCMODE | O_CREAT | O_TRUNC),
        O_WRONLY | O_CREAT | O_TRUNC
    );
    assert_eq!(c.mode, 0o666);
    assert!(res.unwrap() >= 0, "an fd: {res:?}");

    // mv: both paths as passed.
    let (pid, c, res) = find(&files, FileOp::Rename, "created.txt");
    assert_ne!(*pid, bash, "mv is its own process");
    assert_eq!(c.path2.as_deref(), Some(Path::new("renamed.txt")));
    assert_eq!(*res, Some(0));
    // The ppid of file records: mv's is bash (the programs' fork tracking); bash's, forked
    // outside the cgroup, comes from /proc (this test).
    let ppid_of = |op: FileOp, path: &str| {
        records
            .iter()
            .find_map(|r| match r {
                RawRecord::File { task, call, .. }
                    if call.op == op && call.path == Path::new(path) =>
                {
                    Some(task.ppid)
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(ppid_of(FileOp::Rename, "created.txt"), bash);
    assert_eq!(ppid_of(FileOp::Open, "created.txt"), std::process::id());

    // mkdir sub: relative. `cd sub`: bash (logical mode) makes the path absolute itself.
    let (_, c, res) = find(&files, FileOp::Mkdir, "sub");
    assert_eq!((c.mode, *res), (0o777, Some(0)));
    let (pid, _, res) = find(&files, FileOp::Chdir, &format!("{d}/sub"));
    assert_eq!((*pid, *res), (bash, Some(0)));

    // After cd: relative paths with "..".
    let (pid, c, res) = find(&files, FileOp::Open, "../rel.txt");
    assert_eq!(*pid, bash);
    assert_eq!(c.flags & O_CREAT, O_CREAT);
    assert!(res.unwrap() >= 0);
    let (_, c, res) = find(&files, FileOp::Unlink, "../renamed.txt");
    assert_eq!((c.dirfd, *res), (AT_FDCWD, Some(0)));

    // A failed open: ENOENT.
    let (_, c, res) = find(&files, FileOp::Open, "/nonexistent-sandtrail-file");
    assert_eq!(c.flags & O_ACCMODE, 0, "read-only");
    assert_eq!(*res, Some(-(libc::ENOENT as i64)));

    // python: a directory fd, then an open relative to it.
    let (py, c, res) = find(&files, FileOp::Open, d);
    assert_eq!(c.flags & O_DIRECTORY, O_DIRECTORY);
    let dirfd = res.expect("result") as i32;
    assert!(dirfd >= 0);
    let (pid, c, res) = find(&files, FileOp::Open, "viafd.txt");
    assert_eq!(pid, py);
    assert_eq!(c.dirfd, dirfd, "openat relative to the directory fd");
    assert_eq!(c.flags & (O_ACCMODE | O_CREAT), O_WRONLY | O_CREAT);
    assert_eq!(c.mode, 0o600);
    assert!(res.unwrap() >= 0);

    // Sensitive reads: read-only opens with absolute paths, ok.
    for p in [format!("{d}/.aws/credentials"), "/etc/shadow".to_string()] {
        let (_, c, res) = find(&files, FileOp::Open, &p);
        assert_eq!(c.flags & O_ACCMODE, 0, "{p}");
        assert!(res.unwrap() >= 0, "{p}: {res:?}");
    }

    // Every path was read (at entry, or at exit: exit-only opens, and entry reads that found
    // the page not yet faulted in).
    assert!(
        files.iter().all(|(_, c, _)| !c.path_fault),
        "a path unread: {files:#?}"
    );
    // Every file call got its result, and nothing was lost.
    assert!(
        files.iter().all(|(_, _, r)| r.is_some()),
        "a result missing: {files:#?}"
    );
    assert_eq!(losses.total(), 0, "{losses:?}");
}

#[test]
fn file_records_only_from_the_watched_cgroup() {
    require_root!("file_records_only_from_the_watched_cgroup");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    probe.watch_cgroup(cg.path.as_path()).expect("watch");
    let marker = format!("/nonexistent-sandtrail-outside-{}", std::process::id());
    // Outside the cgroup: no record. Inside: one.
    let _ = std::fs::metadata(&marker);
    let _ = std::fs::File::open(&marker);
    let mut child = cg.spawn(
        Command::new("/bin/cat")
            .arg(format!("{marker}-inside"))
            .stderr(std::process::Stdio::null()),
    );
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    child.wait().unwrap();
    let files = files(&records);
    assert!(
        files.iter().all(|(p, _, _)| *p == pid),
        "a record from outside: {files:#?}"
    );
    assert!(files.iter().all(|(_, c, _)| c.path != Path::new(&marker)));
    let (_, _, res) = find(&files, FileOp::Open, &format!("{marker}-inside"));
    assert_eq!(*res, Some(-(libc::ENOENT as i64)));
}

/// A second thread of a process running as nobody opens a file: the record names that thread
/// (tid), its process (pid), the real uid and gid and the session's cgroup, and its time lies
/// between the test's clock readings. The at-exit programs read these from the task through
/// BTF, the pairs with helpers: both must give the same.
#[test]
fn file_records_carry_the_callers_ids() {
    require_root!("file_records_carry_the_callers_ids");
    callers_ids(load_files("file_records_carry_the_callers_ids", false));
}

#[test]
fn file_records_carry_the_callers_ids_with_paired_programs() {
    require_root!("file_records_carry_the_callers_ids_with_paired_programs");
    callers_ids(load_files(
        "file_records_carry_the_callers_ids_with_paired_programs",
        true,
    ));
}

fn callers_ids(mut probe: Probe) {
    let cg = TestCgroup::new();
    let target = std::env::temp_dir().join(format!("sandtrail-ids-{}.txt", std::process::id()));
    std::fs::write(&target, "x").unwrap();
    probe.watch_cgroup(cg.path.as_path()).expect("watch");
    let before = monotonic_ns();
    let child = cg.spawn(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            // Debian's python3 by its path: a PATH may list directories nobody cannot search.
            .args(["/usr/bin/python3", "-c"])
            .arg(
                "import os, sys, threading\n\
                 tid = []\n\
                 def t():\n    tid.append(threading.get_native_id())\n    os.close(os.open(sys.argv[1], os.O_RDONLY))\n\
                 th = threading.Thread(target=t)\nth.start()\nth.join()\n\
                 print(os.getpid(), tid[0])",
            )
            .arg(&target)
            .current_dir("/")
            .stdout(std::process::Stdio::piped()),
    );
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    let out = child.wait_with_output().expect("wait python3");
    let after = monotonic_ns();
    let _ = std::fs::remove_file(&target);
    assert!(out.status.success(), "python3 failed: {out:?}");
    let printed: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        printed[0], pid,
        "python3 is the spawned process (setpriv execs it)"
    );
    let thread = printed[1];
    assert_ne!(thread, pid);
    let task = records
        .iter()
        .find_map(|r| match r {
            RawRecord::File { task, call, .. }
                if call.op == FileOp::Open && call.path == target =>
            {
                Some(task)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no open of {target:?}; records: {records:#?}"));
    assert_eq!(
        (task.tid, task.pid, task.uid, task.gid),
        (thread, pid, 65534, 65534)
    );
    assert_eq!(task.cgroup_id, TestCgroup::id(&cg.path));
    assert!(
        (before..=after).contains(&task.ktime_ns),
        "time {} outside {before}..={after}",
        task.ktime_ns
    );
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid one passed.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// chmod, chown, link, symlink, truncate, ftruncate, fchdir, rmdir, mount and umount, each with
/// its exact arguments and result.
const SCRIPT2: &str = r#"set -e
cd "$DIR"
python3 -c 'import os
open("f", "w").close()
os.chmod("f", 0o640)
os.chown("f", 65534, -1)
os.link("f", "hard")
os.symlink("../target", "soft")
os.truncate("f", 10)
fd = os.open("f", os.O_WRONLY)
os.ftruncate(fd, 3)
os.fchmod(fd, 0o600)
os.fchown(fd, -1, 65534)
os.lchown("soft", 65534, -1)
os.mkdir("d")
dfd = os.open("d", os.O_RDONLY)
os.fchdir(dfd)
os.chdir("..")
os.rmdir("d")'
mkdir mnt
mount -t tmpfs -o size=1m sandtrail-test mnt
umount mnt
exit 0"#;

#[test]
fn file_script_other_operations() {
    require_root!("file_script_other_operations");
    other_operations(load_files("file_script_other_operations", false), "at-exit");
}

/// The same script and assertions with the entry/exit program pairs.
#[test]
fn file_script_other_operations_with_paired_programs() {
    require_root!("file_script_other_operations_with_paired_programs");
    other_operations(
        load_files("file_script_other_operations_with_paired_programs", true),
        "paired",
    );
}

fn other_operations(mut probe: Probe, variant: &str) {
    let cg = TestCgroup::new();
    let dir = std::env::temp_dir().join(format!(
        "sandtrail-file-test2-{}-{variant}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    probe.watch_cgroup(cg.path.as_path()).expect("watch");
    let mut child = cg.spawn(
        Command::new("/bin/bash")
            .args(["-c", SCRIPT2])
            .env("DIR", &dir),
    );
    let bash = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(30), bash);
    let status = child.wait().expect("wait bash");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0));
    let files = files(&records);

    let (_, c, res) = find(&files, FileOp::Chmod, "f");
    assert_eq!((c.mode, *res), (0o640, Some(0)));
    let (_, c, res) = find(&files, FileOp::Chown, "f");
    assert_eq!((c.uid, c.gid, *res), (65534, u32::MAX, Some(0)));
    let (_, c, res) = find(&files, FileOp::Link, "f");
    assert_eq!(
        (c.path2.as_deref(), *res),
        (Some(Path::new("hard")), Some(0))
    );
    let (_, c, res) = find(&files, FileOp::Symlink, "../target");
    assert_eq!(
        (c.path2.as_deref(), *res),
        (Some(Path::new("soft")), Some(0))
    );
    let (_, c, res) = find(&files, FileOp::Truncate, "f");
    assert_eq!((c.length, *res), (10, Some(0)));
    // The fd of `os.open("f", O_WRONLY)` (not the O_CREAT one of `open("f", "w")`).
    let fd_open = files
        .iter()
        .find(|(_, c, _)| {
            c.op == FileOp::Open
                && c.path == Path::new("f")
                && c.flags & (O_ACCMODE | O_CREAT) == O_WRONLY
        })
        .and_then(|(_, _, r)| *r)
        .unwrap_or_else(|| panic!("no O_WRONLY open of f: {files:#?}"));
    let ft = files
        .iter()
        .find(|(_, c, _)| c.op == FileOp::Ftruncate)
        .unwrap_or_else(|| panic!("no ftruncate: {files:#?}"));
    assert_eq!(
        (ft.1.fd, ft.1.length, ft.2),
        (Some(fd_open as i32), 3, Some(0))
    );
    let fcm = files
        .iter()
        .find(|(_, c, _)| c.op == FileOp::Chmod && c.fd.is_some())
        .unwrap_or_else(|| panic!("no fchmod: {files:#?}"));
    assert_eq!(
        (fcm.1.fd, fcm.1.mode, fcm.2),
        (Some(fd_open as i32), 0o600, Some(0))
    );
    let fco = files
        .iter()
        .find(|(_, c, _)| c.op == FileOp::Chown && c.fd.is_some())
        .unwrap_or_else(|| panic!("no fchown: {files:#?}"));
    assert_eq!((fco.1.uid, fco.1.gid, fco.2), (u32::MAX, 65534, Some(0)));
    let (_, c, res) = find(&files, FileOp::Chown, "soft");
    assert_eq!((c.uid, c.flags, *res), (65534, 0x100, Some(0)), "lchown");
    let (_, _, res) = find(&files, FileOp::Mkdir, "d");
    assert_eq!(*res, Some(0));
    let dfd = files
        .iter()
        .find(|(_, c, _)| c.op == FileOp::Open && c.path == Path::new("d"))
        .and_then(|(_, _, r)| *r)
        .unwrap();
    let fc = files
        .iter()
        .find(|(_, c, _)| c.op == FileOp::Fchdir)
        .unwrap_or_else(|| panic!("no fchdir: {files:#?}"));
    assert_eq!((fc.1.fd, fc.2), (Some(dfd as i32), Some(0)));
    let (_, _, res) = find(&files, FileOp::Chdir, "..");
    assert_eq!(*res, Some(0));
    let (_, c, res) = find(&files, FileOp::Rmdir, "d");
    assert_eq!(*res, Some(0), "{c:?}");
    // util-linux's mount and umount pass the canonical absolute path.
    let (_, c, res) = find(&files, FileOp::Mount, &format!("{}/mnt", dir.display()));
    assert_eq!(c.path2.as_deref(), Some(Path::new("sandtrail-test")));
    assert_eq!((c.fstype.as_deref(), *res), (Some("tmpfs"), Some(0)));
    let (_, _, res) = find(&files, FileOp::Umount, &format!("{}/mnt", dir.display()));
    assert_eq!(*res, Some(0));
    assert!(files.iter().all(|(_, c, r)| r.is_some() && !c.path_fault));
}

/// Runs `script` with `/usr/bin/python3` (not the PATH's, which may be a shim making fds of its
/// own) in a watched test cgroup; the script writes space-separated fd numbers to the file
/// named by its first argument. Returns those numbers and, in order, the results of the
/// process's records of copies of fd -1 (the fds the collector must forget what it knew of)
/// made by the script itself: those after a marker open that runs before it (python makes fds
/// of its own at its start and at `import socket`, an epoll instance, whose numbers the
/// script's may reuse; the modules the scripts use are imported before the marker).
fn python_fd_copies(probe: &mut Probe, tag: &str, script: &str) -> (Vec<i64>, Vec<Option<i64>>) {
    let cg = TestCgroup::new();
    probe.watch_cgroup(cg.path.as_path()).expect("watch");
    let out = std::env::temp_dir().join(format!("sandtrail-{tag}-{}", std::process::id()));
    let marker = format!("/nonexistent-sandtrail-{tag}-{}", std::process::id());
    let script = format!(
        "import ctypes, os, socket, struct, sys\ntry:\n    open({marker:?})\nexcept OSError:\n    pass\n{script}"
    );
    let mut child =
        cg.spawn(Command::new("/usr/bin/python3").args(["-c", &script, out.to_str().unwrap()]));
    let pid = child.id();
    let records = collect_until_exit(probe, Duration::from_secs(30), pid);
    let status = child.wait().expect("wait python3");
    assert_eq!(status.code(), Some(0), "{records:#?}");
    let fds: Vec<i64> = std::fs::read_to_string(&out)
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let _ = std::fs::remove_file(&out);
    let files = files(&records);
    let start = files
        .iter()
        .position(|(p, c, _)| *p == pid && c.op == FileOp::Open && c.path == Path::new(&marker))
        .expect("the marker open is recorded");
    let copies = files[start..]
        .iter()
        .filter(|(p, c, _)| *p == pid && c.op == FileOp::Dup && c.fd == Some(-1))
        .map(|(_, _, r)| *r)
        .collect();
    (fds, copies)
}

/// Descriptors handed over by another process: a directory fd received over a unix socket
/// (`SCM_RIGHTS`, here onto the number of an fd the process had closed) and a copy taken with
/// `pidfd_getfd` are each recorded as a copy of fd -1 with the new fd as the result.
#[test]
fn received_descriptors_are_recorded() {
    require_root!("received_descriptors_are_recorded");
    let mut probe = load_files("received_descriptors_are_recorded", false);
    if let Err(why) = probe.received_fds() {
        // They need the at-exit programs (kernel BTF) and bpf_loop (5.17): a refusal where
        // both are there is a failure, not a skip.
        assert!(
            !(kernel_btf() && kernel_at_least(5, 17)),
            "received fds not recorded on a kernel with BTF and bpf_loop: {why}"
        );
        skipped("received_descriptors_are_recorded", why);
        return;
    }
    let (fds, received) = python_fd_copies(
        &mut probe,
        "recv-fds",
        r#"import ctypes, os, socket, sys
a, b = socket.socketpair(socket.AF_UNIX)
d = os.open("/etc", os.O_RDONLY)
stale = os.open("/tmp", os.O_RDONLY)
os.close(stale)
socket.send_fds(a, [b"x"], [d])
fds = socket.recv_fds(b, 1, 4)[1]
assert fds == [stale], (fds, stale)
pidfd = os.pidfd_open(os.getpid())
got = ctypes.CDLL(None).syscall(438, pidfd, d, 0)
assert got >= 0, ctypes.get_errno()
open(sys.argv[1], "w").write(f"{a.fileno()} {b.fileno()} {stale} {pidfd} {got}")"#,
    );
    // With the programs for fds made without a path, the socketpair's and the pidfd are
    // recorded too.
    let expected: Vec<Option<i64>> = match probe.new_fds() {
        Ok(()) => fds.iter().map(|&fd| Some(fd)).collect(),
        Err(_) => vec![Some(fds[2]), Some(fds[4])],
    };
    assert_eq!(received, expected);
}

/// Descriptors a process makes without a path (a memfd onto the number of a closed file, a
/// pipe's two ends, a socket, the pidfds of a clone3 and a clone with `CLONE_PIDFD`) are each
/// recorded as a copy of fd -1 with the new fd as the result, in order.
#[test]
fn descriptors_made_without_a_path_are_recorded() {
    require_root!("descriptors_made_without_a_path_are_recorded");
    let mut probe = load_files("descriptors_made_without_a_path_are_recorded", false);
    if let Err(why) = probe.new_fds() {
        // They run with the at-exit programs (kernel BTF): a refusal where those are attached
        // is a failure, not a skip.
        assert!(
            probe.calls_at_exit().is_err(),
            "fds made without a path not recorded though the at-exit programs are attached: {why}"
        );
        skipped("descriptors_made_without_a_path_are_recorded", why);
        return;
    }
    let (fds, made) = python_fd_copies(
        &mut probe,
        "new-fds",
        r#"import os, socket, sys
f = os.open("/etc/hostname", os.O_RDONLY)
os.close(f)
m = os.memfd_create("scratch")
assert m == f, (m, f)
r, w = os.pipe()
s = socket.socket()
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
CLONE_PIDFD, SIGCHLD = 0x1000, 17
def forked(pid):
    if pid == 0:
        os._exit(0)
    assert pid > 0, ctypes.get_errno()
    os.waitpid(pid, 0)
# clone3(struct clone_args {flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls})
p3 = ctypes.c_int(-1)
a = ctypes.create_string_buffer(struct.pack("8Q", CLONE_PIDFD, ctypes.addressof(p3), 0, 0, SIGCHLD, 0, 0, 0), 64)
forked(libc.syscall(435, a, 64))
# clone(flags, newsp, parent_tid, child_tid, tls): the pidfd goes to parent_tid
p1 = ctypes.c_int(-1)
forked(libc.syscall(56, CLONE_PIDFD | SIGCHLD, 0, ctypes.byref(p1), 0, 0))
open(sys.argv[1], "w").write(f"{m} {r} {w} {s.fileno()} {p3.value} {p1.value}")"#,
    );
    let fds: Vec<Option<i64>> = fds.into_iter().map(Some).collect();
    assert_eq!(made, fds);
}

/// The programs remember their last cgroup-filter answer per CPU; watching and unwatching must
/// void it at once. A process busy in its cgroup before the watch (so the answer "not watched"
/// is remembered) is recorded from its first call after the watch, and not after the unwatch.
#[test]
fn watch_and_unwatch_take_effect_at_once_for_a_busy_process() {
    require_root!("watch_and_unwatch_take_effect_at_once_for_a_busy_process");
    use std::io::{BufRead, BufReader, Write};
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    let tag = format!("/nonexistent-sandtrail-filter-{}", std::process::id());
    let mut child = cg.spawn(
        Command::new("python3")
            .args([
                "-c",
                "import os, sys\n\
                 for line in sys.stdin:\n\
                 \x20   name, n = line.split()\n\
                 \x20   for _ in range(int(n)):\n\
                 \x20       try: os.close(os.open(name, os.O_RDONLY))\n\
                 \x20       except OSError: pass\n\
                 \x20   print('done', flush=True)\n",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut step = |name: &str, n: u32| {
        writeln!(stdin, "{name} {n}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    };
    let opens_of = |records: &[RawRecord], name: &str| {
        files(records)
            .iter()
            .filter(|(_, c, _)| c.op == FileOp::Open && c.path == Path::new(name))
            .count()
    };
    // Busy before the watch: thousands of calls answered "not watched".
    step(&format!("{tag}-before"), 20_000);
    let id = probe.watch_cgroup(cg.path.as_path()).expect("watch");
    step(&format!("{tag}-watched"), 3);
    let watched_name = format!("{tag}-watched");
    let records = collect(
        &mut probe,
        Duration::from_secs(10),
        |r| matches!(r, RawRecord::File { call, .. } if call.path == Path::new(&watched_name)),
    );
    assert_eq!(opens_of(&records, &format!("{tag}-before")), 0);
    assert_eq!(opens_of(&records, &watched_name), 3, "{records:#?}");
    probe.unwatch(id).expect("unwatch");
    step(&format!("{tag}-unwatched"), 3);
    let mut after = Vec::new();
    while let Some(r) = probe.next_record(Duration::from_millis(500)).expect("read") {
        after.push(r);
    }
    assert_eq!(
        opens_of(&after, &format!("{tag}-unwatched")),
        0,
        "{after:#?}"
    );
    drop(stdin);
    child.wait().unwrap();
}
