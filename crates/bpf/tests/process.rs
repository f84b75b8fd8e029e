//! Root integration tests of the process probe on the real kernel: a session cgroup of our own
//! under the cgroup v2 hierarchy, real shell scripts in it, exact records out of the ring buffer.
//!
//! Not root, or no cgroup v2 hierarchy: every test prints a loud SKIPPED banner and passes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sandtrail_bpf::{CredCall, ExitStatus, Probe, ProbeOptions, RawRecord, WaitStatus};

#[macro_use]
mod common;
use common::*;

fn exec_argv(r: &RawRecord) -> Option<(u32, Vec<String>)> {
    match r {
        RawRecord::Exec {
            task,
            args: Some(a),
            ..
        } => Some((task.pid, a.argv_lossy())),
        _ => None,
    }
}

const SCRIPT: &str = r#"ls /nonexistent-dir; echo hi | cat; /no/such/binary; sh -c "exit 3"; sleep 5 & kill -9 $!; sleep 6 & kill -TERM $!; sh -c 'kill -SEGV $$'; sh -c "echo 0 > $SUB/cgroup.procs; exec /bin/echo nested"; wait; exit 0"#;

/// With wait4/waitid read at their exit alone (`call_wait4`, `call_waitid`), which this kernel
/// must accept when it has BTF (a refusal is a failure, not a skip).
#[test]
fn shell_session_exact_records() {
    require_root!("shell_session_exact_records");
    let probe = load(ProbeOptions::default());
    if kernel_btf() {
        probe
            .calls_at_exit()
            .expect("the programs at exit on a kernel with BTF");
    } else {
        skipped(
            "shell_session_exact_records (calls at exit)",
            "no kernel BTF (/sys/kernel/btf/vmlinux): the entry/exit pairs ran instead",
        );
    }
    shell_session(probe);
}

/// The same script and assertions with the entry/exit program pairs of wait4/waitid.
#[test]
fn shell_session_exact_records_with_paired_programs() {
    require_root!("shell_session_exact_records_with_paired_programs");
    let probe = load(ProbeOptions {
        calls_at_exit: false,
        ..Default::default()
    });
    assert!(probe.calls_at_exit().is_err());
    shell_session(probe);
}

fn shell_session(mut probe: Probe) {
    let mut cg = TestCgroup::new();
    let sub = cg.sub("nested");
    let id = probe.watch_cgroup(cg.path.as_path()).expect("watch");
    assert_eq!(id, TestCgroup::id(&cg.path));

    let mut child = cg.spawn(
        Command::new("/bin/bash")
            .args(["-c", SCRIPT])
            .env("SUB", &sub),
    );
    let bash = child.id();
    // A process outside the session, started while it runs: must produce no record.
    let outside = Command::new("/bin/true").status().expect("run true");
    assert!(outside.success());

    let records = collect_until_exit(&mut probe, Duration::from_secs(30), bash);
    let status = child.wait().expect("wait bash");
    assert_eq!(status.code(), Some(0));

    // The session's process tree, from the fork records.
    let mut tree: HashSet<u32> = HashSet::from([bash]);
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    for r in &records {
        if let RawRecord::Fork { parent, child_pid } = r {
            assert!(tree.contains(&parent.pid), "fork by a stranger: {r:?}");
            tree.insert(*child_pid);
            parent_of.insert(*child_pid, parent.pid);
        }
    }
    for r in &records {
        let pid = match r {
            RawRecord::Exec { task, .. }
            | RawRecord::ExecFailed { task, .. }
            | RawRecord::Exit { task, .. }
            | RawRecord::Cred { task, .. }
            | RawRecord::File { task, .. } => task.pid,
            RawRecord::Fork { parent, .. } => parent.pid,
            RawRecord::Reaped { reaper, .. } => reaper.pid,
        };
        assert!(tree.contains(&pid), "record outside the session: {r:?}");
        if let RawRecord::Exec { args: Some(a), .. } = r {
            assert_ne!(
                a.filename,
                Path::new("/bin/true"),
                "outside process recorded: {r:?}"
            );
        }
    }

    let execs: Vec<(u32, Vec<String>)> = records.iter().filter_map(exec_argv).collect();
    let argvs: Vec<Vec<String>> = execs.iter().map(|(_, a)| a.clone()).collect();
    let want: Vec<Vec<String>> = [
        vec!["/bin/bash", "-c", SCRIPT],
        vec!["ls", "/nonexistent-dir"],
        vec!["cat"],
        vec!["sh", "-c", "exit 3"],
        vec!["sleep", "5"],
        vec!["sleep", "6"],
        vec!["sh", "-c", "kill -SEGV $$"],
        vec![
            "sh",
            "-c",
            &format!(
                "echo 0 > {}/cgroup.procs; exec /bin/echo nested",
                sub.display()
            ),
        ],
        vec!["/bin/echo", "nested"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    // kill may run before the background sleep execs; then that exec is not there at all.
    let sleeps_ok = |a: &Vec<String>| a[0] != "sleep";
    assert_eq!(
        argvs.iter().filter(|a| sleeps_ok(a)).collect::<Vec<_>>(),
        want.iter().filter(|a| sleeps_ok(a)).collect::<Vec<_>>(),
        "all records: {records:#?}"
    );

    let exec_pid = |argv0: &str, argv1: Option<&str>| -> Option<u32> {
        execs
            .iter()
            .find(|(_, a)| {
                a[0] == argv0 && argv1.is_none_or(|x| a.get(1).map(String::as_str) == Some(x))
            })
            .map(|(p, _)| *p)
    };
    let exit_of = |pid: u32| -> ExitStatus {
        records
            .iter()
            .find_map(|r| match r {
                RawRecord::Exit { task, status } if task.pid == pid => Some(*status),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no exit of {pid}: {records:#?}"))
    };

    // ppid: every direct child of bash names bash, as its fork record does.
    for (pid, argv) in &execs {
        if *pid == bash {
            continue;
        }
        let rec_ppid = records
            .iter()
            .find_map(|r| match r {
                RawRecord::Exec { task, .. } if task.pid == *pid => Some(task.ppid),
                _ => None,
            })
            .unwrap();
        assert_eq!(rec_ppid, bash, "{argv:?}");
        assert_eq!(parent_of.get(pid), Some(&bash), "{argv:?}");
    }

    let ls = exec_pid("ls", None).unwrap();
    assert_eq!(exit_of(ls), ExitStatus::Code(2));
    assert_eq!(exit_of(exec_pid("cat", None).unwrap()), ExitStatus::Code(0));
    assert_eq!(
        exit_of(exec_pid("sh", Some("-c")).unwrap()),
        ExitStatus::Code(3)
    );
    let segv = execs
        .iter()
        .find(|(_, a)| a.get(2).map(String::as_str) == Some("kill -SEGV $$"))
        .unwrap()
        .0;
    assert_eq!(
        exit_of(segv),
        ExitStatus::Signal {
            signal: 11,
            core_signal: true
        }
    );
    assert_eq!(exit_of(bash), ExitStatus::Code(0));

    // bash reaped every child it forked, and the status it got (the kernel's own word) agrees
    // with the exit record built from the exit/signal tracepoints.
    let reaped: HashMap<u32, WaitStatus> = records
        .iter()
        .filter_map(|r| match r {
            RawRecord::Reaped {
                reaper,
                child_pid,
                status,
            } if reaper.pid == bash => Some((*child_pid, *status)),
            _ => None,
        })
        .collect();
    for &child in parent_of.keys() {
        let got = *reaped
            .get(&child)
            .unwrap_or_else(|| panic!("{child} not reaped: {records:#?}"));
        match (exit_of(child), got) {
            (ExitStatus::Code(c), WaitStatus::Exited(w)) => assert_eq!(c, w, "{child}"),
            (ExitStatus::Signal { signal, .. }, WaitStatus::Signaled { signal: w, .. }) => {
                assert_eq!(signal, w, "{child}")
            }
            (e, w) => panic!("{child}: exit record {e:?} but bash got {w:?}"),
        }
    }
    assert_eq!(reaped.get(&ls), Some(&WaitStatus::Exited(2)));
    assert!(matches!(
        reaped.get(&segv),
        Some(WaitStatus::Signaled { signal: 11, .. })
    ));

    // bash's own fork happened outside the cgroup: its ppid (this test) comes from /proc, read
    // while bash is alive or a zombie (we reap it only after collecting), and sticks to its exit.
    for r in &records {
        match r {
            RawRecord::Exec { task, .. } | RawRecord::Exit { task, .. } if task.pid == bash => {
                assert_eq!(task.ppid, std::process::id(), "{r:?}");
            }
            _ => {}
        }
    }

    // The failed exec: ENOENT, with its argv, by a fork of bash that then exits 127.
    let failed: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            RawRecord::ExecFailed {
                task,
                args: Some(a),
                errno,
            } => Some((task.pid, a.argv_lossy(), *errno)),
            _ => None,
        })
        // A background sleep killed in the middle of its execve fails it (EINTR-like); fine.
        .filter(|(_, argv, _)| argv[0] != "sleep")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?} in {records:#?}");
    assert_eq!(failed[0].1, vec!["/no/such/binary".to_string()]);
    assert_eq!(failed[0].2, libc::ENOENT);
    assert_eq!(parent_of.get(&failed[0].0), Some(&bash));
    assert_eq!(exit_of(failed[0].0), ExitStatus::Code(127));

    // The background sleeps: killed by SIGKILL and SIGTERM. Whether or not each exec'd before
    // the kill, bash forked them; find them as the forks whose exit is a signal.
    let killed: Vec<ExitStatus> = parent_of
        .keys()
        .map(|&p| exit_of(p))
        .filter(|s| matches!(s, ExitStatus::Signal { signal: 9 | 15, .. }))
        .collect();
    assert!(
        killed.contains(&ExitStatus::Signal {
            signal: 9,
            core_signal: false
        }),
        "{killed:?} {records:#?}"
    );
    assert!(
        killed.contains(&ExitStatus::Signal {
            signal: 15,
            core_signal: false
        }),
        "{killed:?} {records:#?}"
    );

    // The exec in the nested cgroup is recorded (descendant of the watched one) with its id.
    let nested = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec {
                task,
                args: Some(a),
                ..
            } if a.argv_lossy() == ["/bin/echo", "nested"] => Some(task.cgroup_id),
            _ => None,
        })
        .unwrap();
    assert_eq!(nested, TestCgroup::id(&sub));

    let losses = probe.losses().unwrap();
    assert_eq!(losses.total(), 0, "{losses:?}");
}

#[test]
fn argv_cap_truncates() {
    require_root!("argv_cap_truncates");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions {
        argv_cap: 32,
        ..ProbeOptions::default()
    });
    probe.watch_cgroup(cg.path.as_path()).unwrap();
    let long = "x".repeat(100);
    let mut child = cg.spawn(Command::new("/bin/echo").args(["short", &long, "tail"]));
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    child.wait().unwrap();
    let args = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec { args: Some(a), .. } => Some(a.clone()),
            _ => None,
        })
        .expect("exec record");
    assert!(args.argv_truncated, "{args:?}");
    let argv = args.argv_lossy();
    assert_eq!(argv[0], "/bin/echo");
    assert_eq!(argv[1], "short");
    // 32 bytes in all, NULs included: "/bin/echo\0" (10) + "short\0" (6) + 15 x's and a NUL.
    assert_eq!(argv[2], "x".repeat(15));
    assert_eq!(argv.len(), 3);
    assert_eq!(probe.losses().unwrap().total(), 0);
}

#[test]
fn tiny_ring_buffer_counts_losses() {
    require_root!("tiny_ring_buffer_counts_losses");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions {
        ring_buffer_bytes: 4096,
        ..ProbeOptions::default()
    });
    probe.watch_cgroup(cg.path.as_path()).unwrap();
    // Flood without reading: 300 forks and execs in the session.
    let status = cg
        .spawn(Command::new("/bin/bash").args(["-c", "for i in $(seq 300); do /bin/true $i; done"]))
        .wait()
        .unwrap();
    assert!(status.success());
    let losses = probe.losses().unwrap();
    assert!(losses.ring_buffer_full > 0, "{losses:?}");
    eprintln!("tiny ring buffer: {losses:?}");
    // What did fit still decodes.
    let mut n = 0;
    while let Some(r) = probe.next_record(Duration::from_millis(200)).unwrap() {
        let _ = r;
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn setresuid_transition_is_recorded() {
    require_root!("setresuid_transition_is_recorded");
    if !Path::new("/usr/bin/setpriv").exists() {
        panic!("/usr/bin/setpriv (util-linux) is missing");
    }
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    probe.watch_cgroup(cg.path.as_path()).unwrap();
    let mut child = cg.spawn(Command::new("/usr/bin/setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/bin/true",
    ]));
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    assert!(child.wait().unwrap().success());
    let creds: Vec<(u32, CredCall)> = records
        .iter()
        .filter_map(|r| match r {
            RawRecord::Cred { task, call } => Some((task.uid, *call)),
            _ => None,
        })
        .collect();
    // The uid change: effective (and real) uid 65534, seen after the call as the real uid.
    assert!(
        creds
            .iter()
            .any(|(uid, c)| *uid == 65534 && c.new_euid() == Some(65534)),
        "{records:#?}"
    );
    assert!(
        creds.iter().any(|(_, c)| c.new_egid() == Some(65534)),
        "{records:#?}"
    );
    // The exec after it runs as 65534.
    let true_exec = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec {
                task,
                args: Some(a),
                ..
            } if a.filename == Path::new("/bin/true") => Some(task.clone()),
            _ => None,
        })
        .expect("exec of /bin/true");
    assert_eq!((true_exec.uid, true_exec.gid), (65534, 65534));
    if kernel_btf() {
        // And its effective ids, as the kernel read them at the exec.
        probe
            .exec_creds()
            .expect("sched_exec_btf on a kernel with BTF");
        let ids = records.iter().find_map(|r| match r {
            RawRecord::Exec {
                args: Some(a),
                euid,
                egid,
                ..
            } if a.filename == Path::new("/bin/true") => Some((*euid, *egid)),
            _ => None,
        });
        assert_eq!(ids, Some((Some(65534), Some(65534))), "{records:#?}");
    }
    assert_eq!(probe.losses().unwrap().total(), 0);
}

/// Threads: a non-leader thread's execve (the kernel's de_thread kills the other threads and
/// the process takes the leader's pid), and exit_group() from a non-leader thread (the kernel
/// SIGKILLs the other threads). Neither may be reported as a death by SIGKILL, and thread
/// creation is not a fork.
#[test]
fn thread_exec_and_thread_exit_group() {
    require_root!("thread_exec_and_thread_exit_group");
    let python = Path::new("/usr/bin/python3");
    assert!(python.exists(), "/usr/bin/python3 is needed by this test");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    probe.watch_cgroup(cg.path.as_path()).unwrap();

    let exec_in_thread = "import os, threading, time\n\
        threading.Thread(target=lambda: os.execv('/bin/sh', ['sh', '-c', 'exit 7'])).start()\n\
        time.sleep(10)\n";
    let mut a = cg.spawn(Command::new(python).args(["-c", exec_in_thread]));
    let a_pid = a.id();
    let records_a = collect_until_exit(&mut probe, Duration::from_secs(20), a_pid);
    assert_eq!(a.wait().unwrap().code(), Some(7));

    let exit_in_thread = "import os, threading, time\n\
        threading.Thread(target=lambda: os._exit(5)).start()\n\
        time.sleep(10)\n";
    let mut b = cg.spawn(Command::new(python).args(["-c", exit_in_thread]));
    let b_pid = b.id();
    let records_b = collect_until_exit(&mut probe, Duration::from_secs(20), b_pid);
    assert_eq!(b.wait().unwrap().code(), Some(5));

    // The exec by the thread: joined with its arguments through old_tid.
    let (task, old_tid) = records_a
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec {
                task,
                old_tid,
                args: Some(args),
                ..
            } if args.argv_lossy() == ["sh", "-c", "exit 7"] => Some((task.clone(), *old_tid)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec of sh: {records_a:#?}"));
    assert_eq!(task.pid, a_pid);
    assert_eq!(task.tid, a_pid);
    assert_ne!(old_tid, a_pid, "the exec came from a non-leader thread");
    let exit_status = |records: &[RawRecord], pid: u32| {
        records.iter().find_map(|r| match r {
            RawRecord::Exit { task, status } if task.pid == pid => Some(*status),
            _ => None,
        })
    };
    assert_eq!(exit_status(&records_a, a_pid), Some(ExitStatus::Code(7)));
    assert_eq!(exit_status(&records_b, b_pid), Some(ExitStatus::Code(5)));
    // Thread creation is not a fork.
    for r in records_a.iter().chain(&records_b) {
        if let RawRecord::Fork { parent, .. } = r {
            assert!(
                parent.pid != a_pid && parent.pid != b_pid,
                "thread reported as fork: {r:?}"
            );
        }
    }
    assert_eq!(probe.losses().unwrap().total(), 0);
}

/// More argv entries than the programs read (1024): argv_truncated, the first 1024 kept.
#[test]
fn argv_entry_limit_truncates() {
    require_root!("argv_entry_limit_truncates");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    probe.watch_cgroup(cg.path.as_path()).unwrap();
    let args: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
    let mut child = cg.spawn(Command::new("/bin/true").args(&args));
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    child.wait().unwrap();
    let got = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec { args: Some(a), .. } => Some(a.clone()),
            _ => None,
        })
        .expect("exec record");
    assert!(got.argv_truncated);
    let argv = got.argv_lossy();
    assert_eq!(argv.len(), 1024);
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(argv[1..], args[..1023]);
    // A command line just under the limit is complete.
    let mut child = cg.spawn(Command::new("/bin/true").args(&args[..1023]));
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    child.wait().unwrap();
    let got = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec {
                task,
                args: Some(a),
                ..
            } if task.pid == pid => Some(a.clone()),
            _ => None,
        })
        .expect("exec record");
    assert!(!got.argv_truncated, "{:?}", got.argv.len());
    assert_eq!(got.argv.len(), 1024);
    assert_eq!(probe.losses().unwrap().total(), 0);
}

#[test]
fn a_setuid_exec_has_the_new_euid_from_the_kernel() {
    require_root!("a_setuid_exec_has_the_new_euid_from_the_kernel");
    let cg = TestCgroup::new();
    let mut probe = load(ProbeOptions::default());
    let dir = std::env::temp_dir().join(format!("sandtrail-setuid-test-{}", std::process::id()));
    let missing = if !kernel_btf() {
        Some("no kernel BTF (/sys/kernel/btf/vmlinux): euid at exec comes from /proc")
    } else if nosuid(&std::env::temp_dir()) {
        Some("the temporary directory is mounted nosuid")
    } else {
        None
    };
    if let Some(why) = missing {
        skipped("a_setuid_exec_has_the_new_euid_from_the_kernel", why);
        return;
    }
    // With BTF the program must have been taken: a refusal is a failure, not a skip.
    probe
        .exec_creds()
        .expect("sched_exec_btf on a kernel with BTF");
    // A setuid-root copy of `id`, run as uid/gid 65534: the exec's euid is 0.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("id-setuid");
    std::fs::copy("/usr/bin/id", &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    probe.watch_cgroup(cg.path.as_path()).unwrap();
    let child = cg.spawn(
        Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .arg("-u")
            .stdout(std::process::Stdio::piped()),
    );
    let pid = child.id();
    let records = collect_until_exit(&mut probe, Duration::from_secs(20), pid);
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "id -u under setuid"
    );
    let exec = records
        .iter()
        .find_map(|r| match r {
            RawRecord::Exec {
                task,
                args: Some(a),
                euid,
                egid,
                ..
            } if a.filename == exe => Some((task.uid, task.gid, *euid, *egid)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec of {exe:?}: {records:#?}"));
    // Real ids 65534; effective uid root (the file's owner), effective gid unchanged.
    assert_eq!(exec, (65534, 65534, Some(0), Some(65534)));
    assert_eq!(probe.losses().unwrap().total(), 0);
}

/// Whether the file system holding `dir` ignores setuid bits.
fn nosuid(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs is plain integers, for which all zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs, the only
    // memory statvfs(3) writes.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_NOSUID != 0
}
