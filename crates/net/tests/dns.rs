//! The forwarder against a real DNS server on loopback (tests/common): real DNS exchanges
//! over UDP and TCP, only on 127.0.0.1. No root needed.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sandtrail_event::{Decision, Kind};
use sandtrail_net::burst::BURST_RULE;
use sandtrail_net::dns::{DnsRecord, Forwarder, ForwarderConfig, NetRecord, Transport};
use sandtrail_net::policy::Policy;

const POLICY: &str = r#"
[allow]
domains = ["*.allowed.test"]
[deny]
domains = ["bad.allowed.test"]
[burst]
count = 3
window_secs = 60
"#;

fn start(policy: &str, upstreams: Vec<SocketAddr>) -> (Forwarder, Receiver<NetRecord>) {
    let p = Policy::from_toml(policy, Path::new("test.toml")).unwrap();
    let (tx, rx) = channel();
    let cfg = ForwarderConfig::new("127.0.0.1:0".parse().unwrap(), upstreams, Arc::new(p), tx);
    (Forwarder::start(cfg).unwrap(), rx)
}

fn next_dns(rx: &Receiver<NetRecord>) -> DnsRecord {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            NetRecord::Dns(d) => return d,
            NetRecord::Violation(_) => continue,
        }
    }
}

#[test]
fn allowed_names_are_forwarded_answered_recorded_and_remembered() {
    let up = FakeUpstream::start();
    let (fwd, rx) = start(POLICY, vec![up.addr]);
    let m = ask_udp(fwd.local_addr(), "www.Allowed.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, TTL);
    let r = next_dns(&rx);
    assert_eq!(r.name, "www.allowed.test");
    assert_eq!(r.qtype, "A");
    assert_eq!(r.rcode, "NOERROR");
    assert_eq!(r.decision, Decision::Allow);
    assert_eq!(r.rule, "allow:domain:*.allowed.test");
    assert_eq!(r.upstream, Some(up.addr));
    assert_eq!(r.listen, fwd.local_addr());
    assert_eq!(r.transport, Transport::Udp);
    assert_eq!(r.client.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].rtype, "A");
    assert_eq!(r.answers[0].data, A_ADDR.to_string());
    assert_eq!(r.answers[0].ttl, TTL);
    assert_eq!(up.count(), 1);

    // AAAA too, and both addresses are now allowed for the session through the name.
    let m = ask_udp(fwd.local_addr(), "www.allowed.test", RecordType::AAAA);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(next_dns(&rx).answers[0].data, AAAA_ADDR.to_string());
    let now = Instant::now();
    for ip in [IpAddr::V4(A_ADDR), IpAddr::V6(AAAA_ADDR)] {
        let e = fwd.resolved().allowed_ip(ip, now).unwrap();
        assert_eq!(e.domain, "www.allowed.test");
        assert_eq!(e.rule, "allow:domain:*.allowed.test");
    }

    // The event built from the record is a valid dns.query.
    let e = r.to_event("ses_test", "host-test");
    e.validate().unwrap();
    assert_eq!(e.kind, Kind::DnsQuery);
    fwd.stop();
}

#[test]
fn denied_names_are_refused_at_once_and_never_forwarded() {
    let up = FakeUpstream::start();
    let (fwd, rx) = start(POLICY, vec![up.addr]);
    for (name, rule) in [
        ("blocked.invalid", "default:allowlist"),
        ("bad.allowed.test", "deny:domain:bad.allowed.test"),
        ("allowed.test", "default:allowlist"),
        ("metadata.google.internal", "deny:metadata"),
    ] {
        let t = Instant::now();
        let m = ask_udp(fwd.local_addr(), name, RecordType::A);
        let took = t.elapsed();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1, "the question is echoed");
        assert!(took < Duration::from_secs(1), "{name} took {took:?}");
        let r = next_dns(&rx);
        assert_eq!((r.name.as_str(), r.rcode.as_str()), (name, "REFUSED"));
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.rule, rule);
        assert_eq!(r.upstream, None);
        let e = r.to_event("ses_test", "host-test");
        e.validate().unwrap();
        assert_eq!(e.dns.unwrap().resolver, Some(fwd.local_addr().to_string()));
    }
    assert_eq!(up.count(), 0, "the upstream was asked: {:?}", up.asked);
}

#[test]
fn a_burst_of_denied_queries_raises_one_violation() {
    let up = FakeUpstream::start();
    let (fwd, rx) = start(POLICY, vec![up.addr]);
    for i in 0..4 {
        let m = ask_udp(fwd.local_addr(), &format!("x{i}.invalid"), RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
    drop(fwd);
    let all: Vec<NetRecord> = rx.iter().collect();
    let v: Vec<_> = all
        .iter()
        .filter_map(|r| match r {
            NetRecord::Violation(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(v.len(), 1, "{all:?}");
    assert_eq!(v[0].count, 3);
    assert_eq!(v[0].targets, vec!["x0.invalid", "x1.invalid", "x2.invalid"]);
    let e = v[0].to_event("ses_test", "host-test");
    e.validate().unwrap();
    assert_eq!(e.kind, Kind::PolicyViolation);
    assert_eq!(e.policy.unwrap().rule.as_deref(), Some(BURST_RULE));
    assert_eq!(all.len(), 5, "4 queries and 1 violation");
}

#[test]
fn tcp_clients_get_whole_answers_udp_clients_get_tc() {
    let up = FakeUpstream::start();
    let (fwd, rx) = start(POLICY, vec![up.addr]);
    let m = ask_udp(fwd.local_addr(), "big.allowed.test", RecordType::TXT);
    assert!(
        m.metadata.truncation,
        "UDP: the upstream's TC bit is passed on"
    );
    assert!(m.answers.is_empty());
    assert_eq!(next_dns(&rx).transport, Transport::Udp);
    let m = ask_tcp(fwd.local_addr(), "big.allowed.test", RecordType::TXT);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    let r = next_dns(&rx);
    assert_eq!(r.transport, Transport::Tcp);
    assert_eq!(r.answers.len(), 40);
    assert_eq!(r.answers[0].rtype, "TXT");
    // Over TCP the forwarder asked over UDP, saw TC, and asked again over TCP.
    let asked = up.asked.lock().unwrap().clone();
    assert_eq!(
        asked.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        vec!["udp", "udp", "tcp"]
    );
    // A denied name over TCP is refused too.
    let m = ask_tcp(fwd.local_addr(), "blocked.invalid", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.count(), 3);
}

#[test]
fn nxdomain_and_a_dead_upstream_are_recorded() {
    let up = FakeUpstream::start();
    // The first upstream is a loopback port nobody listens on: refused at once, so the
    // forwarder goes on to the next.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let (fwd, rx) = start("mode = \"open\"\n", vec![dead_addr, up.addr]);
    let m = ask_udp(fwd.local_addr(), "nothing.example", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let r = next_dns(&rx);
    assert_eq!(r.rcode, "NXDOMAIN");
    assert_eq!(r.decision, Decision::Log);
    assert_eq!(r.rule, "default:open");
    assert_eq!(r.upstream, Some(up.addr));
    drop(fwd);

    let (fwd, rx) = start("mode = \"open\"\n", vec![dead_addr]);
    let m = ask_udp(fwd.local_addr(), "a.allowed.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let r = next_dns(&rx);
    assert_eq!(r.rcode, "SERVFAIL");
    assert_eq!(r.upstream, None);
}

#[test]
fn garbage_gets_formerr_and_config_errors_are_clear() {
    let up = FakeUpstream::start();
    let (fwd, _rx) = start(POLICY, vec![up.addr]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(
        &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 99],
        fwd.local_addr(),
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(up.count(), 0);

    let p = Arc::new(Policy::default());
    let (tx, _rx) = channel();
    let e = Forwarder::start(ForwarderConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![],
        p.clone(),
        tx.clone(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("no upstream"), "{e}");
    let taken = fwd.local_addr();
    let e = Forwarder::start(ForwarderConfig::new(taken, vec![up.addr], p, tx)).unwrap_err();
    assert!(e.to_string().contains(&taken.to_string()), "{e}");
    assert!(e.to_string().contains("port free"), "{e}");
}
