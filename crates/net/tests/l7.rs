//! End to end, root only: the kernel's first-payload capture (`sandtrail_bpf::net`, a
//! `NetProbe` attached to a cgroup of our own) feeding `l7::identify`. A real curl in the cgroup
//! talks TLS and plain HTTP to a listener of ours on 127.0.0.1 (outside the cgroup); the
//! identified fields must be exactly what curl sent. Nothing but loopback is used.
//!
//! Not root, or no cgroup v2: a loud SKIPPED banner and a pass.

use std::net::TcpListener;
use std::process::Command;

use sandtrail_bpf::net::{NetOptions, NetProbe, Proto};
use sandtrail_event::L7Info;
use sandtrail_net::l7::identify;

#[path = "../../bpf/tests/common/mod.rs"]
#[macro_use]
mod common;
use common::*;

#[test]
fn tls_sni_and_http_host_of_real_curl_flows() {
    require_root!("tls_sni_and_http_host_of_real_curl_flows");
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test runs curl (apt-get install curl)"
    );
    let cg = TestCgroup::new();
    let mut probe = NetProbe::load(NetOptions::default()).unwrap();
    probe.attach(&cg.path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = listener.local_addr().unwrap();
    let port = dst.port();
    let peer = loopback_peer(listener, 2);

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
