//! The forwarder serving a network namespace over a veth pair, as it serves a sandbox: root
//! only (CI runs as root). The namespace has no route but the veth's own /30, so the only
//! address it can reach is the forwarder on the host end. Upstreams: a DNS server of our own
//! on loopback, and (for the registry test) the host's own resolvers, asked only for a package
//! registry this host is configured to use.

mod common;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sandtrail_event::Decision;
use sandtrail_net::dns::{
    upstreams_from_resolv_conf, DnsRecord, Forwarder, ForwarderConfig, NetRecord,
};
use sandtrail_net::policy::Policy;
use sandtrail_net::registries::discover;

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "\n!!!!!!!! SKIPPED: not root — the network-namespace DNS tests need root !!!!!!!!\n"
        );
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("\n!!!!!!!! SKIPPED: `ip` is missing (apt-get install iproute2) !!!!!!!!\n");
        return false;
    }
    true
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace `sttest<pid><tag>` joined to the host by a veth pair, and its
/// resolv.conf (`/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over
/// /etc/resolv.conf). Dropping it removes all three, also when the test failed.
struct TestNet {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    etc: PathBuf,
}

impl TestNet {
    fn create(tag: char) -> TestNet {
        let pid = std::process::id();
        let ns = format!("sttest{pid}{tag}");
        let used = String::from_utf8(run(&["ip", "-o", "-4", "addr", "show"]).stdout).unwrap();
        // A free /30 in 10.253.0.0/16 (the sandboxes use 10.200.0.0/16).
        let (host_ip, ns_ip) = (0..256u32)
            .map(|i| {
                let block = (pid * 4 + tag as u32 + i * 7) % 16384;
                let base = u32::from(Ipv4Addr::new(10, 253, 0, 0)) + block * 4;
                (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
            })
            .find(|(h, s)| !used.contains(&format!(" {h}/")) && !used.contains(&format!(" {s}/")))
            .expect("no free /30 in 10.253.0.0/16");
        let net = TestNet {
            host_if: format!("{ns}h"),
            etc: Path::new("/etc/netns").join(&ns),
            ns,
            host_ip,
            ns_ip,
        };
        // From here on, Drop cleans up whatever was made.
        let peer = format!("{}n", net.ns);
        must(&["ip", "netns", "add", &net.ns]);
        must(&[
            "ip",
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &net.ns,
        ]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &net.host_if,
        ]);
        must(&["ip", "link", "set", &net.host_if, "up"]);
        must(&[
            "ip",
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        must(&["ip", "-n", &net.ns, "link", "set", &peer, "up"]);
        must(&["ip", "-n", &net.ns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(&net.etc).unwrap();
        std::fs::write(
            net.etc.join("resolv.conf"),
            format!("nameserver {host_ip}\n"),
        )
        .unwrap();
        net
    }

    /// Runs a command inside the namespace, with the forwarder as its resolver.
    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.ns.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A UDP socket created inside the namespace (a thread enters it; the socket stays there).
    fn udp_socket(&self) -> UdpSocket {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let f = File::open(&path).unwrap();
                // SAFETY: setns on a valid namespace fd; it moves only this short-lived
                // thread, which creates the socket and ends.
                let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.etc);
        // Only if empty: other users of /etc/netns keep theirs.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

fn start(
    net: &TestNet,
    policy: Policy,
    upstreams: Vec<SocketAddr>,
) -> (Forwarder, Receiver<NetRecord>) {
    let (tx, rx) = channel();
    let cfg = ForwarderConfig::new(
        SocketAddr::new(IpAddr::V4(net.host_ip), 53),
        upstreams,
        Arc::new(policy),
        tx,
    );
    (Forwarder::start(cfg).unwrap(), rx)
}

fn dns_records(rx: &Receiver<NetRecord>) -> Vec<DnsRecord> {
    rx.try_iter()
        .filter_map(|r| match r {
            NetRecord::Dns(d) => Some(d),
            NetRecord::Violation(_) => None,
        })
        .collect()
}

#[test]
fn namespace_resolves_through_the_forwarder_and_blocked_names_fail_fast() {
    if !can_run() {
        return;
    }
    let net = TestNet::create('a');
    let up = FakeUpstream::start();
    let policy = Policy::from_toml(
        "[allow]\ndomains = [\"*.allowed.test\"]\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let (fwd, rx) = start(&net, policy, vec![up.addr]);

    // Our own client inside the namespace: the record names its address and port.
    let sock = net.udp_socket();
    let port = sock.local_addr().unwrap().port();
    let server = fwd.local_addr();
    let m = ask_udp_from(&sock, server, "www.allowed.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    let recs = dns_records(&rx);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].client, SocketAddr::new(IpAddr::V4(net.ns_ip), port));
    assert_eq!(recs[0].answers[0].ttl, TTL);

    // libc's resolver inside the namespace (getent), with the forwarder in its resolv.conf.
    let out = net.exec(&["getent", "ahostsv4", "api.allowed.test"]);
    assert!(out.status.success(), "getent: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&A_ADDR.to_string()));
    let asked_before = up.count();

    let t = Instant::now();
    let out = net.exec(&["getent", "ahostsv4", "blocked.invalid"]);
    let took = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(2),
        "getent of a blocked name: {out:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "a blocked name took {took:?}"
    );
    assert_eq!(
        up.count(),
        asked_before,
        "the upstream was asked for a blocked name: {:?}",
        up.asked
    );

    let recs = dns_records(&rx);
    let allowed: Vec<_> = recs
        .iter()
        .filter(|r| r.name == "api.allowed.test")
        .collect();
    assert!(!allowed.is_empty(), "{recs:?}");
    assert!(allowed
        .iter()
        .all(|r| r.client.ip() == IpAddr::V4(net.ns_ip) && r.decision == Decision::Allow));
    let blocked: Vec<_> = recs
        .iter()
        .filter(|r| r.name == "blocked.invalid")
        .collect();
    assert!(!blocked.is_empty(), "{recs:?}");
    for r in blocked {
        assert_eq!(
            (r.rcode.as_str(), r.rule.as_str()),
            ("REFUSED", "default:allowlist")
        );
        assert_eq!(r.upstream, None);
    }
    fwd.stop();
}

#[test]
fn a_discovered_registry_resolves_through_the_hosts_resolvers() {
    if !can_run() {
        return;
    }
    let d = discover();
    // A name, not an address literal, from the host's apt sources (never printed).
    let Some(reg) = d
        .of("apt")
        .find(|r| r.host.parse::<IpAddr>().is_err())
        .cloned()
    else {
        eprintln!("\n!!!!!!!! SKIPPED: no apt source with a host name on this machine !!!!!!!!\n");
        return;
    };
    let upstreams = match upstreams_from_resolv_conf(Path::new("/etc/resolv.conf")) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("\n!!!!!!!! SKIPPED: {e} !!!!!!!!\n");
            return;
        }
    };
    let net = TestNet::create('b');
    let mut policy = Policy::default();
    policy.add_registries(d.registries.clone());
    let (fwd, rx) = start(&net, policy.clone(), upstreams);

    let sock = net.udp_socket();
    let m = ask_udp_from(&sock, fwd.local_addr(), &reg.host, RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let recs = dns_records(&rx);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.name, reg.host);
    assert_eq!(
        (r.decision, r.rule.as_str()),
        (Decision::Allow, "allow:registry:apt")
    );
    assert_eq!(r.rcode, "NOERROR");
    let a: Vec<IpAddr> = r
        .answers
        .iter()
        .filter(|x| x.rtype == "A")
        .map(|x| x.data.parse().unwrap())
        .collect();
    assert!(!a.is_empty(), "no A answers: {} answers", r.answers.len());
    assert!(r.answers.iter().all(|x| !x.data.is_empty()));
    eprintln!(
        "registry answer: {} records, TTLs {:?}",
        r.answers.len(),
        r.answers.iter().map(|x| x.ttl).collect::<Vec<_>>()
    );
    // Its addresses are allowed for the session now, on the registry's port only.
    let now = Instant::now();
    for ip in &a {
        let v = policy.decide_addr(*ip, Some(reg.port), &fwd.resolved(), now);
        assert_eq!(
            (v.decision, v.rule.as_str()),
            (Decision::Allow, "allow:registry:apt")
        );
        assert_eq!(v.domain.as_deref(), Some(reg.host.as_str()));
        assert_eq!(
            policy
                .decide_addr(*ip, Some(2222), &fwd.resolved(), now)
                .decision,
            Decision::Deny
        );
    }

    // libc inside the namespace gets the same.
    let out = net.exec(&["getent", "ahostsv4", &reg.host]);
    assert!(
        out.status.success(),
        "getent of the registry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And a name nobody allowed is refused, with nothing sent upstream (see the test above
    // for the proof against a counting upstream).
    let out = net.exec(&["getent", "ahostsv4", "blocked.invalid"]);
    assert_eq!(out.status.code(), Some(2));
    let recs = dns_records(&rx);
    assert!(recs
        .iter()
        .any(|r| r.name == "blocked.invalid" && r.rcode == "REFUSED" && r.upstream.is_none()));
    fwd.stop();
}
