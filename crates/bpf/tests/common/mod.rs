//! Helpers shared by the root tests of the kernel programs (`process.rs`, `file.rs`, `net.rs`, the
//! collector's `kernel_files.rs` and crates/net's `l7.rs`): the skip banner, a cgroup of the test's own, loading the
//! probe, and reading records until a condition holds.

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use std::net::{SocketAddr, TcpListener};

use sandtrail_bpf::net::{NetProbe, NetRecord, PayloadRecord};
use sandtrail_bpf::{Probe, ProbeOptions, RawRecord};

/// Why the tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid}); BPF needs root"));
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    None
}

#[allow(unused_macros)] // net.rs has its own: it also skips in its helper child
macro_rules! require_root {
    ($name:expr) => {
        if let Some(why) = skip_reason() {
            skipped($name, &why);
            return;
        }
    };
}

/// Says loudly that test `name` did not run, and why (straight to fd 2: the test harness
/// captures eprintln! of passing tests).
pub fn skipped(name: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n################################################################\n\
         ## SKIPPED {name}: {why}\n\
         ## the BPF probe was NOT tested\n\
         ################################################################"
    );
}

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| f[1])
        })
        .collect();
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| points.contains(p))
        .map(PathBuf::from)
}

/// A cgroup of our own; removed (after killing what is left in it) on drop, also on failure.
pub struct TestCgroup {
    pub path: PathBuf,
    pub subdirs: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new() -> TestCgroup {
        let root = cgroup2_root().expect("cgroup v2 root");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = root.join(format!("sandtrail-test-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&path).expect("create test cgroup");
        TestCgroup {
            path,
            subdirs: Vec::new(),
        }
    }

    pub fn sub(&mut self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir(&p).expect("create sub cgroup");
        self.subdirs.push(p.clone());
        p
    }

    pub fn id(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    /// `cmd` moved into this cgroup before it execs (it writes "0" to cgroup.procs).
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: the closure runs between fork and exec and only calls the async-signal-safe
        // open/write/close on a CString prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn into test cgroup")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = self
            .subdirs
            .iter()
            .rev()
            .cloned()
            .chain([self.path.clone()])
            .collect();
        for dir in &dirs {
            for _ in 0..50 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                if procs.trim().is_empty() {
                    break;
                }
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory preconditions; pids come from our own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!(
                    "warning: could not remove test cgroup {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

/// Whether the kernel describes itself in BTF (what `sched_exec_btf` and the exit-only open
/// programs need).
pub fn kernel_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// Whether the running kernel's release is `major.minor` or later.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

pub fn load(opts: ProbeOptions) -> Probe {
    match Probe::load(opts) {
        Ok(p) => {
            if p.mounted_tracefs() {
                eprintln!(
                    "note: tracefs was not mounted; the probe mounted it at /sys/kernel/tracing"
                );
            }
            p
        }
        Err(e) => panic!("loading the probe as root failed: {e}"),
    }
}

/// Reads records until `done` says so (checked after each record) and then `linger` more.
pub fn collect(
    probe: &mut Probe,
    deadline: Duration,
    mut done: impl FnMut(&RawRecord) -> bool,
) -> Vec<RawRecord> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut finished_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= end || finished_at.is_some_and(|t| now >= t) {
            break;
        }
        if let Some(r) = probe.next_record(Duration::from_millis(100)).expect("read") {
            if finished_at.is_none() && done(&r) {
                finished_at = Some(Instant::now() + Duration::from_millis(300));
            }
            out.push(r);
        }
    }
    assert!(finished_at.is_some(), "timed out; records so far: {out:#?}");
    out
}

/// Reads records until process `pid` has exited (its `Exit` record) and 300 ms more.
pub fn collect_until_exit(probe: &mut Probe, deadline: Duration, pid: u32) -> Vec<RawRecord> {
    collect(
        probe,
        deadline,
        |r| matches!(r, RawRecord::Exit { task, .. } if task.pid == pid),
    )
}

// Egress helpers (net.rs, and crates/net's l7 test).

/// The record of `pid`'s attempt to reach `dst`, waiting up to 3 s for it.
pub fn record_for(probe: &mut NetProbe, pid: u32, dst: SocketAddr) -> NetRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(r) = probe.next_record(Duration::from_millis(100)).unwrap() {
            if r.task.pid == pid && r.dst == dst {
                return r;
            }
            seen.push(r);
        }
    }
    panic!("no record of pid {pid} to {dst}; saw {seen:#?}");
}

/// The first-payload record of socket `cookie`, waiting up to 3 s for it.
pub fn payload_for(probe: &mut NetProbe, cookie: u64) -> PayloadRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(p) = probe.next_payload(Duration::from_millis(100)).unwrap() {
            if p.socket_cookie == cookie {
                return p;
            }
            seen.push(p);
        }
    }
    panic!("no payload record for socket {cookie}; saw {seen:#?}");
}

/// A loopback peer for curl: answers an HTTP request with an empty 200, and closes a TLS
/// connection after the ClientHello (curl then gives up at once). Serves `n` connections.
pub fn loopback_peer(listener: TcpListener, n: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut got = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                buf.extend_from_slice(&chunk[..k]);
                if k == 0 || buf.first() == Some(&0x16) {
                    break;
                }
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    break;
                }
            }
            got.push(buf);
        }
        got
    })
}

/// `curl` (quiet, no config file, no proxy, 5 s at most) with `args`, in the cgroup; its pid.
pub fn curl_in(cg: &TestCgroup, args: &[&str]) -> u32 {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-s", "--noproxy", "*", "--max-time", "5"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cg.spawn(&mut cmd);
    let pid = child.id();
    child.wait().unwrap();
    pid
}
