//! End to end, root only: the kernel's first-payload capture (`sandtrail_bpf::net`, a
//! `NetProbe` attached to a cgroup of our own) feeding `l7::identify`. A real curl in the cgroup
//! talks TLS and plain HTTP to a listener of ours on 127.0.0.1 (outside the cgroup); the
//! identified fields must be exactly what curl sent. Nothing but loopback is used.
//!
//! Not root, or no cgroup v2: a loud SKIPPED banner and a pass.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandtrail_bpf::net::{NetOptions, NetProbe, PayloadRecord, Proto};
use sandtrail_event::L7Info;
use sandtrail_net::l7::identify;

fn cgroup2_root() -> Option<PathBuf> {
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

fn can_run(name: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let why = if euid != 0 {
        format!("not root (euid {euid}); BPF needs root")
    } else if cgroup2_root().is_none() {
        "no cgroup v2 hierarchy mounted".to_owned()
    } else {
        return true;
    };
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n################################################################\n\
         ## SKIPPED {name}: {why}\n\
         ## the kernel's first-payload capture and l7::identify were NOT tested together\n\
         ################################################################"
    );
    false
}

/// A cgroup v2 directory of our own, emptied and removed on drop (also when the test fails).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> TestCgroup {
        let path = cgroup2_root()
            .unwrap()
            .join(format!("sandtrail-test-l7-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap();
        TestCgroup(path)
    }

    /// Runs `cmd` in the cgroup (moved there before it execs) to its end; its pid.
    fn run(&self, cmd: &mut Command) -> u32 {
        let procs = CString::new(self.0.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
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
        let mut child = cmd.spawn().expect("spawn into the test cgroup");
        let pid = child.id();
        child.wait().unwrap();
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory preconditions; pids come from our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// curl (quiet, no config file, no proxy, 5 s at most) with `args`.
fn curl(args: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-s", "--noproxy", "*", "--max-time", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The first payload of the socket that `pid` connected to `dst`: the connect record gives the
/// socket cookie, which names the payload record. Waits up to 3 s.
fn payload_of(probe: &mut NetProbe, pid: u32, dst: SocketAddr) -> PayloadRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    let cookie = loop {
        assert!(Instant::now() < deadline, "no connect record of {pid}");
        if let Some(r) = probe.next_record(Duration::from_millis(100)).unwrap() {
            if r.task.pid == pid && r.dst == dst {
                break r.socket_cookie;
            }
        }
    };
    loop {
        assert!(Instant::now() < deadline, "no payload of socket {cookie}");
        if let Some(p) = probe.next_payload(Duration::from_millis(100)).unwrap() {
            if p.socket_cookie == cookie {
                return p;
            }
        }
    }
}

#[test]
fn tls_sni_and_http_host_of_real_curl_flows() {
    if !can_run("tls_sni_and_http_host_of_real_curl_flows") {
        return;
    }
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test runs curl (apt-get install curl)"
    );
    let cg = TestCgroup::new();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.attach(&cg.0).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = listener.local_addr().unwrap();
    let port = dst.port();
    // The peer: closes a TLS connection after the ClientHello (curl then gives up at once),
    // answers an HTTP request with an empty 200.
    let peer = std::thread::spawn(move || {
        for _ in 0..2 {
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
        }
    });

    let pid = cg.run(&mut curl(&[
        "-k",
        "--resolve",
        &format!("sni-test.example:{port}:127.0.0.1"),
        &format!("https://sni-test.example:{port}/"),
    ]));
    let p = payload_of(&mut probe, pid, dst);
    assert_eq!((p.proto, p.dst), (Proto::Tcp, dst));
    assert_eq!(
        identify(&p.bytes, p.proto == Proto::Tcp, p.dst.port()),
        Some(L7Info {
            proto: Some("tls".into()),
            sni: Some("sni-test.example".into()),
            ..L7Info::default()
        }),
        "captured {} of {} bytes",
        p.bytes.len(),
        p.payload_len
    );

    let pid = cg.run(&mut curl(&[
        "-H",
        "Host: h.test",
        &format!("http://127.0.0.1:{port}/some/path"),
    ]));
    let p = payload_of(&mut probe, pid, dst);
    assert_eq!(
        identify(&p.bytes, p.proto == Proto::Tcp, p.dst.port()),
        Some(L7Info {
            proto: Some("http".into()),
            method: Some("GET".into()),
            path: Some("/some/path".into()),
            host: Some("h.test".into()),
            ..L7Info::default()
        })
    );
    peer.join().unwrap();
    assert_eq!(probe.losses().unwrap().payload_ring_buffer_full, 0);
}
