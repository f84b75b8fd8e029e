//! Root integration tests of the egress programs on the real kernel: a cgroup of our own, a
//! network namespace of our own joined to the host by a veth pair of our own (10.254.x.x and
//! fd54::/16 addresses, names `sttest<pid><tag>`), a TCP listener and a UDP receiver inside it,
//! and child processes in the cgroup connecting and sending to its addresses and to loopback.
//! No other destination is ever used: if enforcement failed, the packets would go to our own
//! namespace.
//!
//! Not root, no cgroup v2, or no `ip` command: every test prints a loud SKIPPED banner and passes.

use std::ffi::CString;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sandtrail_bpf::net::{
    Decision, FlowRecord, Hook, InboundRecord, NetMode, NetOptions, NetProbe, Proto, Rule,
    PAYLOAD_MAX,
};

mod common;
use common::{cgroup2_root, curl_in, loopback_peer, payload_for, record_for, TestCgroup};

/// Env var that turns the `zz_child_helper` test into the child's action.
const HELPER_ENV: &str = "STTEST_NET_HELPER";

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid}); BPF needs root"));
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command (iproute2)".into());
    }
    None
}

macro_rules! require_root {
    ($name:expr) => {
        if std::env::var_os(HELPER_ENV).is_some() {
            return;
        }
        if let Some(why) = skip_reason() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n################################################################\n\
                 ## SKIPPED {}: {why}\n\
                 ## the BPF egress programs were NOT tested\n\
                 ################################################################",
                $name
            );
            return;
        }
    };
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace and a veth pair of our own: host side `.1`/`::1`, namespace side `.2`
/// and `.3` (`::2`, `::3`), all in 10.254.<n>.0/24 and fd54:<n>::/64. Deleted on drop.
struct TestNet {
    name: String,
    n: u8,
}

impl TestNet {
    fn new(tag: char) -> TestNet {
        let pid = std::process::id();
        let name = format!("sttest{pid}{tag}");
        assert!(name.len() <= 15, "interface name {name} too long");
        let n = ((pid.wrapping_mul(7).wrapping_add(tag as u32)) % 250 + 1) as u8;
        // Leftovers of an earlier run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let net = TestNet { name, n };
        let nm = net.name.as_str();
        ip(&[
            "link", "add", nm, "type", "veth", "peer", "name", nm, "netns", nm,
        ]);
        ip(&["addr", "add", &format!("10.254.{n}.1/24"), "dev", nm]);
        ip(&[
            "addr",
            "add",
            &format!("fd54:{n}::1/64"),
            "dev",
            nm,
            "nodad",
        ]);
        ip(&["link", "set", nm, "up"]);
        for host in [2, 3] {
            ip(&[
                "-n",
                nm,
                "addr",
                "add",
                &format!("10.254.{n}.{host}/24"),
                "dev",
                nm,
            ]);
            let v6 = format!("fd54:{n}::{host}/64");
            ip(&["-n", nm, "addr", "add", &v6, "dev", nm, "nodad"]);
        }
        ip(&["-n", nm, "link", "set", nm, "up"]);
        ip(&["-n", nm, "link", "set", "lo", "up"]);
        net
    }

    fn v4(&self, host: u8, port: u16) -> SocketAddr {
        format!("10.254.{}.{host}:{port}", self.n).parse().unwrap()
    }

    fn v6(&self, host: u8, port: u16) -> SocketAddr {
        format!("[fd54:{}::{host}]:{port}", self.n).parse().unwrap()
    }

    /// A TCP listener and a UDP receiver in the namespace, on every address, dual stack.
    fn servers(&self, udp_port: u16) -> (TcpListener, UdpSocket) {
        let ns = CString::new(format!("/run/netns/{}", self.name).as_bytes()).unwrap();
        std::thread::spawn(move || {
            // SAFETY: `ns` is a valid NUL-terminated path; the fd is closed below.
            let fd = unsafe { libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            assert!(fd >= 0, "open netns: {}", std::io::Error::last_os_error());
            // SAFETY: setns on an open netns fd affects only this thread, which ends after
            // making the sockets (they stay in the namespace they were made in).
            let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            // SAFETY: fd is ours and open.
            unsafe { libc::close(fd) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let tcp = TcpListener::bind("[::]:0").unwrap();
            let udp = UdpSocket::bind(format!("[::]:{udp_port}")).unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            (tcp, udp)
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// What the child reported: Ok, or the errno of the failed call, and how long it took.
#[derive(Debug)]
struct Outcome {
    pid: u32,
    errno: Option<i32>,
    took: Duration,
}

/// Runs `action` (`tcp ADDR`, `udp ADDR`) in a child process placed in `cg` before it execs.
fn run_child(cg: &TestCgroup, action: &str) -> Outcome {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "zz_child_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HELPER_ENV, action)
    .stdout(std::process::Stdio::piped());
    let child = cg.spawn(&mut cmd);
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("STTEST_RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child gave no result for {action}: {stdout}"));
    let mut f = line.split(' ');
    let errno = match f.next().unwrap() {
        "ok" => None,
        "errno" => Some(f.next().unwrap().parse().unwrap()),
        other => panic!("child result {other}"),
    };
    let micros: u64 = f.next_back().unwrap().parse().unwrap();
    Outcome {
        pid,
        errno,
        took: Duration::from_micros(micros),
    }
}

/// Not a test: the body of the children of the tests above (does nothing when run as a test).
#[test]
fn zz_child_helper() {
    let Ok(action) = std::env::var(HELPER_ENV) else {
        return;
    };
    let (kind, addr) = action.split_once(' ').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let start = Instant::now();
    let result = match kind {
        "tcp" => TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(|_| ()),
        // Send 10,000 bytes, read the answer to its end.
        "tcpio" => TcpStream::connect_timeout(&addr, Duration::from_secs(3)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(&[7u8; 10_000])?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)?;
            assert_eq!(answer.len(), 5_000);
            Ok(())
        }),
        "udp" => {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            UdpSocket::bind(bind).and_then(|s| s.send_to(b"sttest", addr).map(|_| ()))
        }
        other => panic!("unknown action {other}"),
    };
    let took = start.elapsed().as_micros();
    match result {
        Ok(()) => println!("STTEST_RESULT ok {took}"),
        Err(e) => println!(
            "STTEST_RESULT errno {} {took}",
            e.raw_os_error().unwrap_or(-1)
        ),
    }
}

fn assert_eperm_fast(o: &Outcome, what: &str) {
    assert_eq!(o.errno, Some(libc::EPERM), "{what}: {o:?}");
    assert!(
        o.took < Duration::from_millis(500),
        "{what} not fast: {o:?}"
    );
}

#[test]
fn allow_deny_and_loopback_for_tcp_and_udp() {
    require_root!("allow_deny_and_loopback_for_tcp_and_udp");
    let net = TestNet::new('a');
    let cg = TestCgroup::new();
    let (tcp, udp) = net.servers(0);
    let tport = tcp.local_addr().unwrap().port();
    let uport = udp.local_addr().unwrap().port();
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = local.local_addr().unwrap().port();

    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.set_mode(NetMode::Allowlist).unwrap();
    let n = net.n;
    probe
        .allow(format!("10.254.{n}.2").parse().unwrap(), Some(tport), 11)
        .unwrap();
    probe
        .allow(format!("10.254.{n}.2").parse().unwrap(), Some(uport), 12)
        .unwrap();
    probe
        .allow(format!("10.254.{n}.0/24").parse().unwrap(), None, 13)
        .unwrap();
    probe
        .deny(format!("10.254.{n}.3/32").parse().unwrap(), 14)
        .unwrap();
    probe
        .allow(format!("fd54:{n}::2").parse().unwrap(), Some(tport), 15)
        .unwrap();
    probe.attach(&cg.path).unwrap();

    // TCP to the allowed peer and port: connects, accepted in the namespace.
    let dst = net.v4(2, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "allowed TCP connect: {o:?}");
    tcp.set_nonblocking(true).unwrap();
    tcp.accept()
        .expect("the namespace's listener accepted the allowed connection");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Entry(11)));
    assert_eq!((r.hook, r.proto), (Hook::Connect, Proto::Tcp));
    // comm is the calling thread's: the test harness names it after the test.
    assert_eq!(r.task.comm, "zz_child_helper");
    assert_eq!(r.task.uid, 0);
    assert_ne!(r.socket_cookie, 0);
    let cg_id = std::fs::metadata(&cg.path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(r.task.cgroup_id, cg_id.unwrap());

    // TCP to the second address: denied by the deny entry although the /24 allows it.
    let dst = net.v4(3, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eperm_fast(&o, "denied TCP connect");
    assert_eq!(
        tcp.accept().map(|_| ()).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "a denied connection reached the listener"
    );
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Deny, Rule::Entry(14)));

    // The same address through an IPv4-mapped IPv6 destination: decided by the IPv4 rules.
    let mapped: SocketAddr = format!("[::ffff:10.254.{n}.3]:{tport}").parse().unwrap();
    let o = run_child(&cg, &format!("tcp {mapped}"));
    assert_eperm_fast(&o, "denied mapped TCP connect");
    let r = record_for(&mut probe, o.pid, mapped);
    assert_eq!((r.decision, r.rule), (Decision::Deny, Rule::Entry(14)));

    // The allowed peer on another port: no port entry, the any-port /24 entry allows.
    let o = run_child(&cg, &format!("tcp {}", net.v4(2, 1)));
    assert_eq!(o.errno, Some(libc::ECONNREFUSED), "{o:?}");
    let r = record_for(&mut probe, o.pid, net.v4(2, 1));
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Entry(13)));

    // UDP sendto: allowed to .2, the datagram arrives; denied to .3 with EPERM.
    let dst = net.v4(2, uport);
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eq!(o.errno, None, "allowed UDP send: {o:?}");
    let mut buf = [0u8; 64];
    let (len, _) = udp.recv_from(&mut buf).expect("the datagram arrived");
    assert_eq!(&buf[..len], b"sttest");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Entry(12)));
    assert_eq!((r.hook, r.proto), (Hook::Sendmsg, Proto::Udp));

    let dst = net.v4(3, uport);
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eperm_fast(&o, "denied UDP send");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Deny, Rule::Entry(14)));
    assert_eq!((r.hook, r.proto), (Hook::Sendmsg, Proto::Udp));

    // IPv6: the allowed peer connects, the other address is denied by the default.
    let dst = net.v6(2, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "allowed TCP6 connect: {o:?}");
    tcp.accept().expect("accepted over IPv6");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Entry(15)));
    let dst = net.v6(3, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eperm_fast(&o, "denied TCP6 connect");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!(
        (r.decision, r.rule),
        (Decision::Deny, Rule::DefaultAllowlist)
    );

    // Loopback: always allowed.
    let dst: SocketAddr = format!("127.0.0.1:{lport}").parse().unwrap();
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "loopback: {o:?}");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Loopback));
    // 0.0.0.0 goes to this host too.
    let dst: SocketAddr = format!("0.0.0.0:{lport}").parse().unwrap();
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "0.0.0.0: {o:?}");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::Loopback));

    assert_eq!(probe.losses().unwrap().ring_buffer_full, 0);

    // Detached with the probe: the denied address is reachable again.
    drop(probe);
    let o = run_child(&cg, &format!("tcp {}", net.v4(3, tport)));
    assert_eq!(o.errno, None, "after detaching: {o:?}");
}

#[test]
fn modes_and_dns_forwarder() {
    require_root!("modes_and_dns_forwarder");
    let net = TestNet::new('b');
    let cg = TestCgroup::new();
    let (tcp, udp) = net.servers(53);
    let tport = tcp.local_addr().unwrap().port();
    let n = net.n;
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe
        .set_dns_forwarder(Some(format!("10.254.{n}.2").parse().unwrap()), None, 53)
        .unwrap();
    probe
        .deny(format!("10.254.{n}.3").parse().unwrap(), 1)
        .unwrap();
    probe.attach(&cg.path).unwrap();

    // Allowlist with no allow entry: the forwarder on 53 passes, the same host on another
    // port does not, another resolver does not.
    let dst = net.v4(2, 53);
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eq!(o.errno, None, "DNS forwarder: {o:?}");
    let mut buf = [0u8; 64];
    udp.recv_from(&mut buf)
        .expect("the query reached the forwarder");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Allow, Rule::DnsForwarder));
    let dst = net.v4(2, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eperm_fast(&o, "forwarder host, other port");
    assert_eq!(
        record_for(&mut probe, o.pid, dst).rule,
        Rule::DefaultAllowlist
    );
    let dst = net.v4(3, 53);
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eperm_fast(&o, "another resolver");
    assert_eq!(record_for(&mut probe, o.pid, dst).rule, Rule::Entry(1));

    // Open: what no entry names passes, logged; the deny entry still denies.
    probe.set_mode(NetMode::Open).unwrap();
    let dst = net.v4(2, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "open mode: {o:?}");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Log, Rule::DefaultOpen));
    let dst = net.v4(3, tport);
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eperm_fast(&o, "deny entry in open mode");
    assert_eq!(record_for(&mut probe, o.pid, dst).rule, Rule::Entry(1));
    // Entries removed take effect at once.
    assert!(probe
        .remove_deny(format!("10.254.{n}.3").parse().unwrap())
        .unwrap());
    assert!(!probe
        .remove_deny(format!("10.254.{n}.3").parse().unwrap())
        .unwrap());
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "after remove_deny: {o:?}");
    assert_eq!(record_for(&mut probe, o.pid, dst).rule, Rule::DefaultOpen);
    probe.set_mode(NetMode::Allowlist).unwrap();
    probe
        .allow(format!("10.254.{n}.3").parse().unwrap(), Some(tport), 5)
        .unwrap();
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eq!(o.errno, None, "allowed: {o:?}");
    assert_eq!(record_for(&mut probe, o.pid, dst).rule, Rule::Entry(5));
    assert!(probe
        .remove_allow(format!("10.254.{n}.3").parse().unwrap(), Some(tport))
        .unwrap());
    let o = run_child(&cg, &format!("tcp {dst}"));
    assert_eperm_fast(&o, "after remove_allow");
    assert_eq!(
        record_for(&mut probe, o.pid, dst).rule,
        Rule::DefaultAllowlist
    );

    // None: even the forwarder is denied; loopback still passes.
    probe.set_mode(NetMode::None).unwrap();
    let dst = net.v4(2, 53);
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eperm_fast(&o, "mode none");
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!((r.decision, r.rule), (Decision::Deny, Rule::ModeNone));
    let local = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = local.local_addr().unwrap();
    let o = run_child(&cg, &format!("udp {dst}"));
    assert_eq!(o.errno, None, "loopback in mode none: {o:?}");
    assert_eq!(record_for(&mut probe, o.pid, dst).rule, Rule::Loopback);
}

/// The closed flow of socket `cookie`, waiting up to 3 s for it.
fn flow_for(probe: &mut NetProbe, cookie: u64) -> FlowRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(f) = probe.next_flow(Duration::from_millis(100)).unwrap() {
            if f.socket_cookie == cookie {
                return f;
            }
            seen.push(f);
        }
    }
    panic!("no closed flow for socket {cookie}; saw {seen:#?}");
}

#[test]
fn flows_count_bytes_and_packets_both_ways() {
    require_root!("flows_count_bytes_and_packets_both_ways");
    let net = TestNet::new('c');
    let cg = TestCgroup::new();
    let (tcp, _udp) = net.servers(0);
    let tport = tcp.local_addr().unwrap().port();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.set_mode(NetMode::Allowlist).unwrap();
    probe
        .allow(format!("10.254.{}.2", net.n).parse().unwrap(), None, 1)
        .unwrap();
    probe.attach(&cg.path).unwrap();

    // The peer in the namespace: reads the 10,000 bytes, answers 5,000, closes.
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = tcp.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&[9u8; 5_000]).unwrap();
        got.len()
    });
    let dst = net.v4(2, tport);
    let o = run_child(&cg, &format!("tcpio {dst}"));
    assert_eq!(o.errno, None, "{o:?}");
    assert_eq!(server.join().unwrap(), 10_000);
    let r = record_for(&mut probe, o.pid, dst);
    assert_eq!(r.decision, Decision::Allow);
    let f = flow_for(&mut probe, r.socket_cookie);
    assert_eq!(f.dst, dst);
    assert_eq!(f.src.ip(), net.v4(1, 0).ip());
    assert_ne!(f.src.port(), 0);
    assert_eq!(f.proto, Proto::Tcp);
    // Payload plus IP and TCP headers (at least 40 bytes a packet); the closing handshake's
    // last packets may come after the release and are not in the record.
    assert!(f.packets_out >= 3 && f.packets_in >= 3, "{f:?}");
    assert!(f.bytes_out >= 10_000 + 40 * f.packets_out, "{f:?}");
    assert!(f.bytes_out < 10_000 + 100 * f.packets_out, "{f:?}");
    assert!(f.bytes_in >= 5_000 + 40 * f.packets_in, "{f:?}");
    assert!(f.bytes_in < 5_000 + 100 * f.packets_in, "{f:?}");
    assert!(f.first_ktime_ns <= f.last_ktime_ns);
    let (pid, uid, cgroup_id) = f.closed_by.unwrap();
    assert_eq!((pid, uid), (o.pid, 0));
    assert_ne!(cgroup_id, 0);
    assert_eq!(probe.losses().unwrap().flow_ring_buffer_full, 0);
}

#[test]
fn first_payload_of_tls_http_and_udp_sockets() {
    require_root!("first_payload_of_tls_http_and_udp_sockets");
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test runs curl (apt-get install curl)"
    );
    let cg = TestCgroup::new();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.attach(&cg.path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let peer = loopback_peer(listener, 2);

    // A real TLS client: its ClientHello names the server, sni-test.example.
    let pid = curl_in(
        &cg,
        &[
            "-k",
            "--resolve",
            &format!("sni-test.example:{port}:127.0.0.1"),
            &format!("https://sni-test.example:{port}/"),
        ],
    );
    let cookie = record_for(&mut probe, pid, dst).socket_cookie;
    let p = payload_for(&mut probe, cookie);
    assert_eq!((p.proto, p.dst, p.src.ip()), (Proto::Tcp, dst, dst.ip()));
    // The connect completed its handshake: the same socket, its source port, the peer.
    let deadline = Instant::now() + Duration::from_secs(3);
    let up = loop {
        assert!(
            Instant::now() < deadline,
            "no Connected record for {cookie}"
        );
        if let Some(r @ InboundRecord::Connected { .. }) =
            probe.next_inbound(Duration::from_millis(100)).unwrap()
        {
            if r.socket_cookie() == cookie {
                break r;
            }
        }
    };
    let InboundRecord::Connected { local, remote, .. } = up else {
        unreachable!()
    };
    assert_eq!((local, remote), (p.src, dst));
    assert_ne!(p.src.port(), 0);
    // A TLS handshake record (0x16, version 3.x) holding a ClientHello (handshake type 1),
    // sent whole in one packet over loopback; at most its first 512 bytes captured.
    assert_eq!((p.bytes[0], p.bytes[1], p.bytes[5]), (0x16, 3, 1), "{p:?}");
    let record_len = u32::from(u16::from_be_bytes([p.bytes[3], p.bytes[4]]));
    assert_eq!(p.payload_len, 5 + record_len, "{p:?}");
    assert_eq!(p.bytes.len(), (p.payload_len as usize).min(PAYLOAD_MAX));
    assert!(
        p.bytes.windows(16).any(|w| w == b"sni-test.example"),
        "no SNI in {p:?}"
    );

    // Plain HTTP: the whole request is captured.
    let pid = curl_in(
        &cg,
        &[
            "-H",
            "Host: h.test",
            &format!("http://127.0.0.1:{port}/some/path"),
        ],
    );
    let cookie = record_for(&mut probe, pid, dst).socket_cookie;
    let p = payload_for(&mut probe, cookie);
    assert!(
        p.bytes.starts_with(b"GET /some/path HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&p.bytes)
    );
    assert!(p.bytes.windows(16).any(|w| w == b"\r\nHost: h.test\r\n"));
    assert_eq!(p.payload_len as usize, p.bytes.len());
    let got = peer.join().unwrap();
    assert_eq!(got[1], p.bytes, "the peer got what was captured");

    // UDP, IPv4 and IPv6: the datagram's payload, the addresses of the packet.
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let rx = UdpSocket::bind(addr).unwrap();
        let to = rx.local_addr().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["zz_child_helper", "--exact", "--test-threads=1"])
            .env(HELPER_ENV, format!("udp {to}"))
            .stdout(std::process::Stdio::null());
        let mut child = cg.spawn(&mut cmd);
        let pid = child.id();
        child.wait().unwrap();
        let cookie = record_for(&mut probe, pid, to).socket_cookie;
        let p = payload_for(&mut probe, cookie);
        assert_eq!((p.proto, p.dst), (Proto::Udp, to));
        assert_eq!(p.src.ip(), to.ip());
        assert_eq!((p.bytes.as_slice(), p.payload_len), (&b"sttest"[..], 6));
    }
    assert_eq!(probe.losses().unwrap().payload_ring_buffer_full, 0);
}

// ------------------------------------------------------------------ inbound (listen, accept)

/// A python3 in the cgroup: binds a UDP socket on [::1]:0 and a TCP listener on 127.0.0.1:0,
/// prints both ports, accepts one connection, counts what it receives until EOF, prints it.
const INBOUND_PY: &str = r#"
import socket
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.bind(("::1", 0))
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], u.getsockname()[1], flush=True)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.close()
print(n, flush=True)
"#;

/// `python3 -c script` in the cgroup; the ports it prints on its first line.
fn python_in(
    cg: &TestCgroup,
    script: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    Vec<u16>,
) {
    use std::io::BufRead;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", script])
        .stdout(std::process::Stdio::piped());
    let mut child = cg.spawn(&mut cmd);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ports = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (child, out, ports)
}

#[test]
fn inbound_bind_listen_accept() {
    use std::io::{BufRead, Write};
    require_root!("inbound_bind_listen_accept");
    let cg = common::TestCgroup::new();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.attach(&cg.path).unwrap();

    let (mut child, mut out, ports) = python_in(&cg, INBOUND_PY);
    let pid = child.id();
    let mut line = String::new();
    let (tport, uport) = (ports[0], ports[1]);
    let listen: SocketAddr = format!("127.0.0.1:{tport}").parse().unwrap();

    // The test (outside the cgroup) connects and sends 3,000 bytes.
    let mut client = TcpStream::connect(listen).unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(&[7u8; 3_000]).unwrap();
    drop(client);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "3000");
    assert!(child.wait().unwrap().success());

    let mut binds = Vec::new();
    let mut listens = Vec::new();
    let mut accepts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && (binds.len() < 2 || listens.is_empty() || accepts.is_empty())
    {
        match probe.next_inbound(Duration::from_millis(100)).unwrap() {
            Some(r @ InboundRecord::Bind { .. }) => binds.push(r),
            Some(r @ InboundRecord::Listen { .. }) => listens.push(r),
            Some(r @ InboundRecord::Accept { .. }) => accepts.push(r),
            // The connecting side (this test) is outside the cgroup.
            Some(r @ InboundRecord::Connected { .. }) => panic!("unexpected {r:?}"),
            None => {}
        }
    }
    let all = format!("binds {binds:#?} listens {listens:#?} accepts {accepts:#?}");
    assert_eq!(
        (binds.len(), listens.len(), accepts.len()),
        (2, 1, 1),
        "{all}"
    );

    // UDP bind on ::1 (post_bind6), with the port the kernel chose.
    let InboundRecord::Bind {
        task,
        socket_cookie: udp_cookie,
        proto,
        local,
    } = &binds[0]
    else {
        unreachable!()
    };
    assert_eq!((task.pid, task.uid), (pid, 0), "{all}");
    assert_eq!(task.comm, "python3");
    assert_eq!(task.cgroup_id, common::TestCgroup::id(&cg.path));
    assert_eq!(*proto, Proto::Udp);
    assert_eq!(*local, format!("[::1]:{uport}").parse().unwrap());
    assert_ne!(*udp_cookie, 0);

    // TCP bind on 127.0.0.1 (post_bind4).
    let InboundRecord::Bind {
        task,
        socket_cookie: bind_cookie,
        proto,
        local,
    } = binds[1].clone()
    else {
        unreachable!()
    };
    assert_eq!((task.pid, task.tid, task.uid), (pid, pid, 0), "{all}");
    assert_eq!(task.cgroup_id, common::TestCgroup::id(&cg.path));
    assert_eq!((proto, local), (Proto::Tcp, listen), "{all}");

    // listen() on the same socket.
    let InboundRecord::Listen {
        socket_cookie,
        local,
        ..
    } = listens[0]
    else {
        unreachable!()
    };
    assert_eq!((socket_cookie, local), (bind_cookie, listen), "{all}");

    // The accepted connection: a socket of its own, the client's address exactly.
    let InboundRecord::Accept {
        socket_cookie: accepted,
        local,
        remote,
        ..
    } = accepts[0]
    else {
        unreachable!()
    };
    assert_eq!((local, remote), (listen, client_addr), "{all}");
    assert_ne!(accepted, bind_cookie);
    assert_ne!(accepted, 0);

    // Its closed flow: what the client sent, received by the accepted socket.
    let f = flow_for(&mut probe, accepted);
    assert_eq!((f.src, f.dst, f.proto), (listen, client_addr, Proto::Tcp));
    assert!(f.bytes_in >= 3_000 + 40 * f.packets_in, "{f:?}");
    assert!(f.bytes_in < 3_000 + 100 * f.packets_in, "{f:?}");
    assert_eq!(f.closed_by.map(|c| c.0), Some(pid));
    assert_eq!(probe.losses().unwrap().inbound_ring_buffer_full, 0);
}

/// A dual-stack TCP listener on [::]:0 and a TCP socket that listens without a bind; prints both
/// ports, then accepts two connections on the first.
const INBOUND_DUAL_PY: &str = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0))
s.listen(2)
a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
a.listen(1)
print(s.getsockname()[1], a.getsockname()[1], flush=True)
for _ in range(2):
    c, _ = s.accept()
    c.close()
"#;

#[test]
fn inbound_dual_stack_and_listen_without_bind() {
    require_root!("inbound_dual_stack_and_listen_without_bind");
    let cg = common::TestCgroup::new();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.attach(&cg.path).unwrap();

    let (mut child, _out, ports) = python_in(&cg, INBOUND_DUAL_PY);
    let pid = child.id();
    let (port, unbound_port) = (ports[0], ports[1]);
    let c4 = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let c6 = TcpStream::connect(format!("[::1]:{port}")).unwrap();
    let (a4, a6) = (c4.local_addr().unwrap(), c6.local_addr().unwrap());
    assert!(child.wait().unwrap().success());

    let mut recs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && recs.len() < 5 {
        if let Some(r) = probe.next_inbound(Duration::from_millis(100)).unwrap() {
            recs.push(r);
        }
    }
    let InboundRecord::Bind {
        task,
        socket_cookie: bound,
        proto,
        local,
    } = &recs[0]
    else {
        panic!("{recs:#?}");
    };
    assert_eq!(task.pid, pid);
    assert_eq!(*proto, Proto::Tcp);
    assert_eq!(*local, format!("[::]:{port}").parse().unwrap());
    assert!(
        matches!(recs[1], InboundRecord::Listen { socket_cookie, local: l, .. }
            if socket_cookie == *bound && l == *local),
        "{recs:#?}"
    );
    // listen() without bind(): a listen record, no bind record.
    let InboundRecord::Listen { local, .. } = recs[2] else {
        panic!("{recs:#?}");
    };
    assert_eq!(local, format!("0.0.0.0:{unbound_port}").parse().unwrap());
    // The dual-stack listener accepting over IPv4 reports IPv4-mapped addresses.
    let mapped = |a: SocketAddr| -> SocketAddr {
        match a {
            SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            v6 => v6,
        }
    };
    let accepts: Vec<(SocketAddr, SocketAddr)> = recs[3..]
        .iter()
        .map(|r| match r {
            InboundRecord::Accept { local, remote, .. } => (*local, *remote),
            _ => panic!("{recs:#?}"),
        })
        .collect();
    assert_eq!(
        accepts,
        [
            (
                mapped(format!("127.0.0.1:{port}").parse().unwrap()),
                mapped(a4)
            ),
            (format!("[::1]:{port}").parse().unwrap(), a6),
        ],
        "{recs:#?}"
    );
    assert_eq!(recs.len(), 5, "{recs:#?}");
}
