//! Session network tests: real sandboxes and veths, so they need root (CI runs them as root).
//!
//! They only ever talk to the host end of the session's own veth; nothing else is contacted.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandtrail_sandbox::net::{self, NetConfig, NetError, SessionNet};

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("\n!!!!!!!! SKIPPED: not root — network tests need root !!!!!!!!\n");
        return false;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("\n!!!!!!!! SKIPPED: nft is missing (apt-get install nftables) !!!!!!!!\n");
        return false;
    }
    true
}

/// A child in a new network namespace (only: it runs as root on the host's filesystem), that
/// runs `script` once [`Child::go`] is called: like a sandbox's init between clone and exec.
/// Independent of `SandboxSpec`, whose fields other work changes; `sandtrail run` tests cover
/// the session network on a full sandbox.
struct Child {
    proc: std::process::Child,
}

impl Child {
    fn new(script: &str) -> Child {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls unshare, an
        // async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Child {
            proc: cmd.spawn().unwrap(),
        }
    }

    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    fn go(&mut self) {
        self.proc.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// Whether the kernel has what the rate limit needs (tbf and ingress qdiscs, u32, mirred, IFB):
/// tried on a probe IFB of this test's own, then removed. Says loudly what is missing if not.
fn can_shape() -> bool {
    let dev = format!("rtprobe{}", std::process::id() % 100_000_000);
    let steps: [&[&str]; 4] = [
        &["ip", "link", "add", "name", &dev, "type", "ifb"],
        &[
            "tc", "qdisc", "add", "dev", &dev, "root", "handle", "1:", "tbf", "rate", "1mbit",
            "burst", "4096", "limit", "16384",
        ],
        &[
            "tc", "qdisc", "add", "dev", &dev, "handle", "ffff:", "ingress",
        ],
        &[
            "tc", "filter", "add", "dev", &dev, "parent", "ffff:", "protocol", "all", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &dev,
        ],
    ];
    let mut missing = None;
    for step in steps {
        match Command::new(step[0]).args(&step[1..]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                missing = Some(format!(
                    "`{}` failed: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                break;
            }
            Err(e) => {
                missing = Some(format!("`{}` could not run: {e}", step.join(" ")));
                break;
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", "dev", &dev])
        .output();
    match missing {
        None => true,
        Some(why) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: this kernel cannot shape traffic ({why}); the rate limit needs tbf, ingress, u32, mirred and ifb !!!!!!!!\n"
            );
            false
        }
    }
}

fn qdiscs() -> String {
    String::from_utf8(
        Command::new("tc")
            .args(["qdisc", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

/// Accepts one connection within `limit`.
fn accept_within(listener: &TcpListener, limit: Duration) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                conn.set_write_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                return conn;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the sandbox did not connect within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A test session's id, alive the way a `sandtrail run` is alive: it holds the session's
/// liveness lock (`/run/sandtrail/sessions/ID.lock`, see `sandtrail::session::liveness`).
/// A `sandtrail run` started meanwhile on this host (another test suite, say) sweeps the
/// networks of every session whose lock nobody holds; without the lock it would pull this
/// test's veth or IFB out from under it.
struct Session {
    id: String,
    lock: std::path::PathBuf,
    _held: std::fs::File,
}

impl std::ops::Deref for Session {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

fn session(tag: &str) -> Session {
    let id = format!("nettest-{tag}-{}", std::process::id());
    let dir = std::path::Path::new("/run/sandtrail/sessions");
    std::fs::create_dir_all(dir).unwrap();
    let lock = dir.join(format!("{id}.lock"));
    let held = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .unwrap();
    held.try_lock().unwrap();
    Session {
        id,
        lock,
        _held: held,
    }
}

fn links() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn tables() -> String {
    String::from_utf8(
        Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

#[test]
fn sandbox_reaches_the_host_end_and_bytes_are_counted() {
    if !can_run() {
        return;
    }
    let id = session("reach");
    // The host end's address and the listener's port are only known after setup: the script
    // reads them from its stdin after the go-ahead line.
    let mut child = Child::new(
        "read h p; ip -4 addr show eth0; ip route; \
         python3 -c 'import socket, sys; \
         s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); \
         s.sendall(b\"x\" * 1000); s.close()' \"$h\" \"$p\"",
    );
    let net = SessionNet::setup(&NetConfig::for_session(&id), child.pid()).unwrap();
    let listener = TcpListener::bind((net.host_ip(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(net.sandbox_if(), "eth0");
    assert_eq!(net.prefix(), 30);
    assert!(net.host_if().starts_with("st-"));
    assert_eq!(net.table(), format!("sandtrail_{id}"));
    assert!(
        links().contains(&format!(": {}@", net.host_if())),
        "{}",
        links()
    );
    assert!(tables().contains(&format!("table inet sandtrail_{id}")));
    let mut stdin = child.proc.stdin.take().unwrap();
    write!(stdin, "go\n{} {port}\n", net.host_ip()).unwrap();
    drop(stdin);

    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    loop {
        match listener.accept() {
            Ok((mut conn, peer)) => {
                assert_eq!(peer.ip(), std::net::IpAddr::V4(net.sandbox_ip()));
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                conn.read_to_end(&mut got).unwrap();
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(exit) = child.proc.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ = child.proc.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("the child ended ({exit:?}) without connecting: {err}");
                }
                assert!(Instant::now() < deadline, "no connection within 20s");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    assert_eq!(got.len(), 1000);
    let mut out = String::new();
    child
        .proc
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.proc.wait().unwrap().success(), "{out}");
    assert!(
        out.contains(&format!("inet {}/30", net.sandbox_ip())),
        "{out}"
    );
    assert!(
        out.contains(&format!("default via {}", net.host_ip())),
        "{out}"
    );

    // The child has ended, but the counters are still readable until teardown.
    let (bytes_out, bytes_in) = net.counters().unwrap();
    assert!(bytes_out >= 1000, "out {bytes_out}");
    assert!(bytes_in > 0, "in {bytes_in} (SYN-ACK, ACKs)");

    let host_if = net.host_if().to_string();
    net.teardown().unwrap();
    assert!(!links().contains(&format!(": {host_if}@")), "{}", links());
    assert!(
        !tables().contains(&format!("sandtrail_{id}")),
        "{}",
        tables()
    );
}

#[test]
fn sweep_removes_a_leftover_and_keeps_the_rest() {
    if !can_run() {
        return;
    }
    let gone = session("gone");
    let live = session("live");
    let mut nets = Vec::new();
    let mut children = Vec::new();
    for id in [&gone, &live] {
        let mut c = Child::new("sleep 30");
        nets.push(SessionNet::setup(&NetConfig::for_session(id), c.pid()).unwrap());
        c.go();
        children.push(c);
    }
    assert_ne!(nets[0].host_ip(), nets[1].host_ip());
    let gone_if = nets[0].host_if().to_string();
    let live_net = nets.pop().unwrap();
    // "sandtrail died": the first session's SessionNet is dropped without teardown while its
    // process still runs, so the veth and the table remain.
    drop(nets);
    assert!(links().contains(&format!(": {gone_if}@")));

    let removed = net::sweep(&|s| s != &*gone).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed
        .iter()
        .any(|r| r.contains(&format!("sandtrail_{gone}"))));
    assert!(removed.iter().any(|r| r.contains(&gone_if)));
    assert!(!links().contains(&format!(": {gone_if}@")));
    assert!(!tables()
        .lines()
        .any(|l| l == format!("table inet sandtrail_{gone}")));
    // The other session is untouched.
    assert!(links().contains(&format!(": {}@", live_net.host_if())));
    assert!(tables().contains(&format!("sandtrail_{live}")));
    drop(children);
    // Teardown after the process is gone still works, and is idempotent in effect.
    live_net.teardown().unwrap();
    assert!(!tables().contains(&format!("sandtrail_{live}")));
}

#[test]
fn bad_session_or_pid_fails_clearly() {
    if !can_run() {
        return;
    }
    let e = SessionNet::setup(
        &NetConfig {
            session: "bad name;".into(),
            index: 0,
            rate_bps: None,
            dns_redirect: false,
        },
        1,
    )
    .unwrap_err();
    assert!(matches!(e, NetError::InvalidConfig(_)), "{e}");
    let nopid = session("nopid");
    let e = SessionNet::setup(&NetConfig::for_session(&nopid), i32::MAX).unwrap_err();
    assert!(e.to_string().contains("network namespace"), "{e}");
    assert!(!tables().contains(&*nopid));
}

#[test]
fn rate_limit_shapes_both_directions_and_counts_it() {
    if !can_run() || !can_shape() {
        return;
    }
    const RATE: u64 = 1_000_000;
    const N: usize = 2_000_000;
    let id = session("rate");
    // Inside: upload N bytes to the first port while downloading from the second, both from
    // the host end only; print how much came down.
    let mut child = Child::new(
        r#"read h pu pd; python3 -c '
import socket, sys, threading
h, pu, pd, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def up():
    s = socket.create_connection((h, pu), timeout=60)
    s.sendall(b"u" * n)
    s.close()
def down():
    s = socket.create_connection((h, pd), timeout=60)
    got = 0
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
    s.close()
    print("down", got)
t = threading.Thread(target=up)
t.start()
down()
t.join()
' "$h" "$pu" "$pd" 2000000"#,
    );
    let cfg = NetConfig {
        rate_bps: Some(RATE),
        ..NetConfig::for_session(&id)
    };
    let net = SessionNet::setup(&cfg, child.pid()).unwrap();
    assert_eq!(net.rate_bps(), Some(RATE));
    let ifb = net.ifb().unwrap().to_string();
    assert_eq!(ifb, format!("{}-ifb", net.host_if()));
    let q = qdiscs();
    assert!(
        q.contains(&format!("qdisc tbf 1: dev {} root", net.host_if())),
        "{q}"
    );
    assert!(
        q.contains(&format!("qdisc ingress ffff: dev {}", net.host_if())),
        "{q}"
    );
    assert!(q.contains(&format!("qdisc tbf 1: dev {ifb} root")), "{q}");
    let before = net.rate_stats().unwrap();

    let up_listener = TcpListener::bind((net.host_ip(), 0)).unwrap();
    let down_listener = TcpListener::bind((net.host_ip(), 0)).unwrap();
    let mut stdin = child.proc.stdin.take().unwrap();
    write!(
        stdin,
        "go\n{} {} {}\n",
        net.host_ip(),
        up_listener.local_addr().unwrap().port(),
        down_listener.local_addr().unwrap().port()
    )
    .unwrap();
    drop(stdin);

    // Each side's clock starts when its connection is accepted and stops at the last byte.
    let up = std::thread::spawn(move || {
        let mut conn = accept_within(&up_listener, Duration::from_secs(30));
        let t = Instant::now();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        (got.len(), t.elapsed())
    });
    let down = std::thread::spawn(move || {
        let mut conn = accept_within(&down_listener, Duration::from_secs(30));
        let t = Instant::now();
        conn.write_all(&vec![b'd'; N]).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        // The sandbox closes once it has everything.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        (N, t.elapsed())
    });
    let (up_bytes, up_time) = up.join().unwrap();
    let (down_bytes, down_time) = down.join().unwrap();

    let status = child.proc.wait().unwrap();
    let mut out = String::new();
    child
        .proc
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .proc
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{out}{err}");
    assert_eq!(up_bytes, N);
    assert!(out.contains(&format!("down {N}")), "{out}{err}");

    // Payload bit rates. The shaper counts link-layer bytes, so the payload cannot beat the
    // rate by more than the bucket and queue let through at once (~17 KB of 2 MB): 3x the
    // rate is a bound no timing noise reaches, while an unshaped veth is orders of magnitude
    // faster.
    let bps = |bytes: usize, t: Duration| (bytes as f64 * 8.0 / t.as_secs_f64()) as u64;
    let (up_bps, down_bps) = (bps(up_bytes, up_time), bps(down_bytes, down_time));
    eprintln!(
        "rate limit {RATE} bit/s: upload {up_bytes} B in {up_time:?} = {up_bps} bit/s, download {down_bytes} B in {down_time:?} = {down_bps} bit/s"
    );
    assert!(up_bps < 3 * RATE, "upload not limited: {up_bps} bit/s");
    assert!(
        down_bps < 3 * RATE,
        "download not limited: {down_bps} bit/s"
    );

    // The sandbox has ended; the counters are still there until teardown.
    let stats = net.rate_stats().unwrap();
    eprintln!("before: {before:?}\nafter: {stats:?}");
    for (dir, d, b) in [
        ("download", stats.download, before.download),
        ("upload", stats.upload, before.upload),
    ] {
        assert!(d.bytes_sent >= b.bytes_sent + N as u64, "{dir}: {d:?}");
        assert!(
            d.dropped + d.overlimits > b.dropped + b.overlimits,
            "{dir}: the shaper neither delayed nor dropped: {d:?}"
        );
    }

    let host_if = net.host_if().to_string();
    net.teardown().unwrap();
    let l = links();
    assert!(!l.contains(&format!(": {host_if}@")), "{l}");
    assert!(!l.contains(&format!(": {ifb}:")), "{l}");
    let q = qdiscs();
    assert!(!q.contains(&format!("dev {host_if} ")), "{q}");
    assert!(!q.contains(&format!("dev {ifb} ")), "{q}");
    assert!(!tables().contains(&format!("sandtrail_{id}")));
}

#[test]
fn sweep_removes_a_leftover_ifb() {
    if !can_run() || !can_shape() {
        return;
    }
    let id = session("rategone");
    let mut c = Child::new("sleep 30");
    let cfg = NetConfig {
        rate_bps: Some(8_000),
        ..NetConfig::for_session(&id)
    };
    let net = SessionNet::setup(&cfg, c.pid()).unwrap();
    c.go();
    let (host_if, ifb) = (net.host_if().to_string(), net.ifb().unwrap().to_string());
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/net/{ifb}/ifalias"))
            .unwrap()
            .trim(),
        format!("sandtrail:{id}")
    );
    // "sandtrail died" with the sandbox still running.
    drop(net);
    let removed = net::sweep(&|s| s != &*id).unwrap();
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert!(
        removed.contains(&format!("ifb {ifb} of session {id}")),
        "{removed:?}"
    );
    assert!(
        removed.contains(&format!("veth {host_if} of session {id}")),
        "{removed:?}"
    );
    let l = links();
    assert!(!l.contains(&format!(": {ifb}:")), "{l}");
    assert!(!l.contains(&format!(": {host_if}@")), "{l}");
    let q = qdiscs();
    assert!(!q.contains(&format!("dev {host_if} ")), "{q}");
    assert!(!q.contains(&format!("dev {ifb} ")), "{q}");
}

#[test]
fn rate_limit_out_of_range_fails_clearly() {
    if !can_run() {
        return;
    }
    let id = session("badrate");
    let c = Child::new("sleep 30");
    for bps in [0, 7_999, 100_000_000_001] {
        let cfg = NetConfig {
            rate_bps: Some(bps),
            ..NetConfig::for_session(&id)
        };
        let e = SessionNet::setup(&cfg, c.pid()).unwrap_err();
        assert!(matches!(e, NetError::InvalidConfig(_)), "{e}");
        assert!(e.to_string().contains(&format!("{bps} bit/s")), "{e}");
    }
    // Nothing was created.
    let host_if = net::host_if_name(&id);
    assert!(!links().contains(&host_if), "{}", links());
    assert!(!tables().contains(&*id));
    // A session without a rate limit has no rate counters, and says so.
    let net = SessionNet::setup(&NetConfig::for_session(&id), c.pid()).unwrap();
    let e = net.rate_stats().unwrap_err();
    assert!(e.to_string().contains("no network rate limit"), "{e}");
    net.teardown().unwrap();
}
