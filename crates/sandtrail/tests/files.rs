//! File operations of a real session, found in the store (root, CI): absolute paths for relative
//! paths, after `cd` and through a Python `dir_fd`; sensitive reads one by one; other reads
//! summarized with a count per process and file.

mod common;

use common::*;
use serde_json::Value;

const SCRIPT: &str = r#"set -e
mkdir -p /tmp/proj/sub
cd /tmp/proj
echo hi > notes.txt
mv notes.txt moved.txt
cd sub
echo x > ../rel.txt
rm ../moved.txt
chmod 600 ../rel.txt
python3 -c 'import os
d = os.open("/tmp/proj", os.O_RDONLY)
f = os.open("viafd.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=d)
os.close(f)
import ctypes
# fchmodat2 (452) called directly, as no libc wrapper of this Debian does.
assert ctypes.CDLL(None).syscall(452, d, b"viafd.txt", 0o604, 0) == 0
import fcntl
s = os.open("/tmp/proj/sub", os.O_RDONLY)
os.dup2(s, d)
os.close(os.open("viadup.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=d))
e = fcntl.fcntl(s, fcntl.F_DUPFD_CLOEXEC, 40)
os.close(os.open("viafcntl.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=e))
for _ in range(5):
    open("/usr/lib/os-release").read()
'
cat /etc/shadow > /dev/null
python3 -c 'import os, socket
a, b = socket.socketpair(socket.AF_UNIX)
d = os.open("/etc", os.O_RDONLY)
stale = os.open("/tmp/proj", os.O_RDONLY)
os.close(stale)
socket.send_fds(a, [b"x"], [d])
fds = socket.recv_fds(b, 1, 1)[1]
assert fds == [stale], (fds, stale)
os.close(os.open("shadow", os.O_RDONLY, dir_fd=fds[0]))
'
python3 -c 'import os, socket
f = os.open("/etc/hostname", os.O_RDONLY)
os.close(f)
m = os.memfd_create("scratch")
assert m == f, (m, f)
os.ftruncate(m, 4096)
f = os.open("/etc/hosts", os.O_RDONLY)
os.close(f)
r, w = os.pipe()
assert r == f, (r, f)
os.fchmod(r, 0o600)
f = os.open("/etc/passwd", os.O_RDONLY)
os.close(f)
s = socket.socket()
assert s.fileno() == f, (s.fileno(), f)
os.fchmod(s.fileno(), 0o600)
'
ln -s /etc /tmp/proj/etc-link
cat /tmp/proj/etc-link/shadow > /dev/null
cat /proc/self/root/etc/shadow > /dev/null
ln -s /usr/lib /tmp/proj/lib-link
cat /tmp/proj/lib-link/os-release > /dev/null
mkdir -p /root/.aws
echo '[default]' > /root/.aws/credentials
cat /root/.aws/credentials > /dev/null
"#;

/// The file events of `kind` on `path`.
fn on<'a>(evs: &'a [Value], kind: &str, path: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["kind"] == kind && e["file"]["path"] == path)
        .collect()
}

fn exe(e: &Value) -> &str {
    e["process"]["exe"].as_str().unwrap()
}

#[test]
fn a_sessions_file_operations_are_in_the_store_with_absolute_paths() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let o = sandtrail_run(
        d.path(),
        "ses_files",
        &["--as-root", "--no-network"],
        &["bash", "-c", SCRIPT],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let evs = events_of(d.path(), "ses_files");

    // `mkdir -p`: each directory it made, absolute, with the mode it asked for.
    let made = on(&evs, "file.mkdir", "/tmp/proj/sub");
    assert_eq!(made.len(), 1, "{made:#?}");
    assert_eq!(made[0]["file"]["result"], "ok");
    assert_eq!(made[0]["file"]["mode"], 0o777);
    assert_eq!(exe(made[0]), "/usr/bin/mkdir");
    // Written through a relative path after `cd`: absolute in the event.
    let w = on(&evs, "file.open", "/tmp/proj/notes.txt");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0]["file"]["access"], "write");
    assert_eq!(w[0]["file"]["created"], true);
    assert_eq!(w[0]["file"]["result"], "ok");
    assert_eq!(exe(w[0]), "/usr/bin/bash");
    assert_eq!(w[0]["process"]["uid"], 0);
    assert_eq!(w[0]["process"]["euid"], 0);
    let mv = on(&evs, "file.rename", "/tmp/proj/notes.txt");
    assert_eq!(mv.len(), 1, "{mv:#?}");
    assert_eq!(mv[0]["file"]["new_path"], "/tmp/proj/moved.txt");
    assert_eq!(exe(mv[0]), "/usr/bin/mv");
    // `..` from /tmp/proj/sub.
    let rel = on(&evs, "file.open", "/tmp/proj/rel.txt");
    assert_eq!(rel.len(), 1, "{rel:#?}");
    assert_eq!(rel[0]["file"]["access"], "write");
    let rm = on(&evs, "file.delete", "/tmp/proj/moved.txt");
    assert_eq!(rm.len(), 1, "{rm:#?}");
    assert_eq!(exe(rm[0]), "/usr/bin/rm");
    let chmod = on(&evs, "file.chmod", "/tmp/proj/rel.txt");
    assert_eq!(chmod.len(), 1, "{chmod:#?}");
    assert_eq!(chmod[0]["file"]["mode"], 0o600);
    // Relative to a directory fd.
    let viafd = on(&evs, "file.open", "/tmp/proj/viafd.txt");
    assert_eq!(viafd.len(), 1, "{viafd:#?}");
    assert_eq!(viafd[0]["file"]["created"], true);
    assert!(exe(viafd[0]).starts_with("/usr/bin/python3"));
    // fchmodat2 through the directory fd.
    let chmod2 = on(&evs, "file.chmod", "/tmp/proj/viafd.txt");
    assert_eq!(chmod2.len(), 1, "{chmod2:#?}");
    assert_eq!(chmod2[0]["file"]["mode"], 0o604);
    assert_eq!(chmod2[0]["file"]["result"], "ok");
    // Through copies of a directory fd: dup2 of another directory onto it, F_DUPFD_CLOEXEC.
    for name in ["viadup.txt", "viafcntl.txt"] {
        let path = format!("/tmp/proj/sub/{name}");
        let ev = on(&evs, "file.open", &path);
        assert_eq!(
            ev.len(),
            1,
            "{path}: {:#?}",
            on(&evs, "file.open", &format!("/tmp/proj/{name}"))
        );
        assert_eq!(ev[0]["file"]["created"], true);
    }

    // Sensitive reads, each one logged.
    let shadow = on(&evs, "file.open", "/etc/shadow");
    assert_eq!(shadow.len(), 1, "{shadow:#?}");
    assert_eq!(shadow[0]["file"]["access"], "read");
    assert_eq!(shadow[0]["file"].get("count"), None);
    assert_eq!(exe(shadow[0]), "/usr/bin/cat");
    // ... and under other names: through a link the session made, through /proc.
    let link = on(&evs, "file.link", "/etc");
    assert_eq!(link.len(), 1, "{link:#?}");
    assert_eq!(link[0]["file"]["new_path"], "/tmp/proj/etc-link");
    for path in ["/tmp/proj/etc-link/shadow", "/proc/self/root/etc/shadow"] {
        let ev = on(&evs, "file.open", path);
        assert_eq!(ev.len(), 1, "{path}: {ev:#?}");
        assert_eq!(ev[0]["file"]["access"], "read");
        assert_eq!(ev[0]["file"]["result"], "ok");
        assert_eq!(ev[0]["file"].get("count"), None);
        assert_eq!(exe(ev[0]), "/usr/bin/cat");
    }
    // Through a directory fd received over a unix socket onto the number of a closed one: not
    // named by the closed one's path, and logged one by one.
    assert_eq!(
        on(&evs, "file.open", "/tmp/proj/shadow"),
        Vec::<&Value>::new()
    );
    let received: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            let path = e["file"]["path"].as_str().unwrap_or("");
            e["kind"] == "file.open" && path.starts_with("/proc/") && path.contains("/fd/")
        })
        .collect();
    assert_eq!(received.len(), 1, "{received:#?}");
    let path = received[0]["file"]["path"].as_str().unwrap();
    let fd_and_name = path
        .strip_prefix(&format!("/proc/{}/fd/", received[0]["process"]["pid"]))
        .and_then(|rest| rest.split_once('/'));
    assert!(
        matches!(fd_and_name, Some((fd, "shadow")) if fd.parse::<u32>().is_ok()),
        "{path}"
    );
    assert_eq!(received[0]["file"].get("count"), None);
    assert!(exe(received[0]).starts_with("/usr/bin/python3"));
    // A memfd, a pipe and a socket, each given the number of a closed /etc file: calls through
    // them by number are named by /proc, not logged as changes of those files.
    assert_eq!(
        on(&evs, "file.truncate", "/etc/hostname"),
        Vec::<&Value>::new()
    );
    for path in ["/etc/hosts", "/etc/passwd"] {
        assert_eq!(on(&evs, "file.chmod", path), Vec::<&Value>::new(), "{path}");
    }
    let by_number = |kind: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["kind"] == kind && exe(e).starts_with("/usr/bin/python3"))
            .filter(|e| {
                let path = e["file"]["path"].as_str().unwrap_or("");
                path.strip_prefix(&format!("/proc/{}/fd/", e["process"]["pid"]))
                    .is_some_and(|fd| fd.parse::<u32>().is_ok())
            })
            .collect()
    };
    let truncated = by_number("file.truncate");
    assert_eq!(truncated.len(), 1, "{truncated:#?}");
    assert_eq!(truncated[0]["file"]["result"], "ok");
    let chmods = by_number("file.chmod");
    assert_eq!(chmods.len(), 2, "{chmods:#?}");
    assert!(chmods.iter().all(|e| e["file"]["mode"] == 0o600));
    // A link to an ordinary directory changes nothing: summarized.
    let lib: Vec<&Value> = on(&evs, "file.open", "/tmp/proj/lib-link/os-release")
        .into_iter()
        .filter(|e| exe(e) == "/usr/bin/cat")
        .collect();
    assert_eq!(lib.len(), 1, "{lib:#?}");
    assert_eq!(lib[0]["file"]["count"], 1);
    let creds = on(&evs, "file.open", "/root/.aws/credentials");
    let read: Vec<&&Value> = creds
        .iter()
        .filter(|e| e["file"]["access"] == "read")
        .collect();
    assert_eq!(read.len(), 1, "{creds:#?}");
    assert_eq!(exe(read[0]), "/usr/bin/cat");
    // An ordinary file read five times by one process: one event with the count.
    let os_release: Vec<&Value> = on(&evs, "file.open", "/usr/lib/os-release")
        .into_iter()
        .filter(|e| exe(e).starts_with("/usr/bin/python3"))
        .collect();
    assert_eq!(os_release.len(), 1, "{os_release:#?}");
    assert_eq!(os_release[0]["file"]["count"], 5);
    assert_eq!(os_release[0]["file"]["access"], "read");

    // Nothing lost; the log verifies.
    assert!(evs.iter().all(|e| e["kind"] != "audit.loss"));
    let usage = &one(&evs, "session.terminate")["session"]["usage"];
    assert_eq!(usage["events_lost"], 0, "{usage}");
    verify_ok(d.path());
}

#[test]
fn sensitive_paths_are_the_operators_choice() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let o = sandtrail_run(
        d.path(),
        "ses_sensitive",
        &["--no-network", "--sensitive-path", ".pgpass"],
        &[
            "sh",
            "-c",
            "echo secret > /tmp/.pgpass && cat /tmp/.pgpass /tmp/.pgpass > /dev/null",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let evs = events_of(d.path(), "ses_sensitive");
    // Each read logged on its own, not summarized.
    let reads: Vec<&Value> = on(&evs, "file.open", "/tmp/.pgpass")
        .into_iter()
        .filter(|e| e["file"]["access"] == "read")
        .collect();
    assert_eq!(reads.len(), 2, "{reads:#?}");
    assert!(reads.iter().all(|e| e["file"].get("count").is_none()));
    // A pattern that can never match is refused before anything starts.
    let o = sandtrail_run(
        d.path(),
        "ses_badpattern",
        &["--sensitive-path", "a*b*c"],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("has more than one `*`"), "{}", err(&o));
    assert!(events_of(d.path(), "ses_badpattern").is_empty());
}
