//! Network egress of a real session (root, CI): the kernel's connect/sendmsg decisions, the
//! DNS forwarder, the byte counters and the first-payload identification, joined to processes.
//!
//! Destinations are only: the package registries this host is configured to use (discovered
//! at run time, never named here), the host end of the session's own veth, and a test host in
//! a network namespace this test creates.

mod common;

use std::net::{IpAddr, TcpListener};
use std::process::Command;

use common::*;
use sandtrail_net::registries::{discover, Registry};
use serde_json::Value;

/// The test host: a network namespace with one end of a veth pair; removed on drop.
struct TestHost;

const TEST_NS: &str = "sttest-egress";
const TEST_HOST_IF: &str = "sttegr0";
const TEST_HOST_IP: &str = "10.213.7.1";
const TEST_NET: &str = "10.213.7.0/30";

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(o.status.success(), "ip {args:?}: {}", err(&o));
}

impl TestHost {
    fn create() -> TestHost {
        // Leftovers of an interrupted run.
        let _ = Command::new("ip").args(["netns", "del", TEST_NS]).output();
        let _ = Command::new("ip")
            .args(["link", "del", TEST_HOST_IF])
            .output();
        ip(&["netns", "add", TEST_NS]);
        ip(&[
            "link",
            "add",
            TEST_HOST_IF,
            "type",
            "veth",
            "peer",
            "name",
            "sttegr1",
        ]);
        ip(&["link", "set", "sttegr1", "netns", TEST_NS]);
        ip(&["addr", "add", "10.213.7.2/30", "dev", TEST_HOST_IF]);
        ip(&["link", "set", TEST_HOST_IF, "up"]);
        ip(&[
            "netns",
            "exec",
            TEST_NS,
            "ip",
            "addr",
            "add",
            &format!("{TEST_HOST_IP}/30"),
            "dev",
            "sttegr1",
        ]);
        ip(&[
            "netns", "exec", TEST_NS, "ip", "link", "set", "sttegr1", "up",
        ]);
        TestHost
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", TEST_NS]).output();
        let _ = Command::new("ip")
            .args(["link", "del", TEST_HOST_IF])
            .output();
    }
}

/// A registry of `manager`s reachable over `scheme` on `port`, by name.
fn registry(regs: &[Registry], scheme: &str, port: u16) -> Option<Registry> {
    regs.iter()
        .find(|r| {
            r.url.starts_with(&format!("{scheme}://"))
                && r.port == port
                && r.host.parse::<IpAddr>().is_err()
        })
        .cloned()
}

/// The one line of the command's output that starts with `tag `, without the tag.
fn line<'a>(stdout: &'a str, tag: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no `{tag}` line in {stdout:?}"))
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// The exec id of the successful exec of `exe` whose argv contains `arg`.
fn exec_id_of(evs: &[Value], exe: &str, arg: &str) -> String {
    let found: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["kind"] == "process.exec"
                && e["exec"]["result"] == "ok"
                && e["process"]["exe"] == exe
                && e["exec"]["argv"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_str().is_some_and(|x| x.contains(arg)))
                })
        })
        .collect();
    assert_eq!(found.len(), 1, "one exec of {exe} with {arg}: {found:#?}");
    found[0]["process"]["exec_id"].as_str().unwrap().to_string()
}

fn by<'a>(evs: &'a [Value], kind: &str, exec_id: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["kind"] == kind && e["process"]["exec_id"] == exec_id)
        .collect()
}

#[test]
fn egress_is_decided_in_the_kernel_and_logged_with_dns_bytes_and_processes() {
    if !can_run() {
        return;
    }
    let regs = discover().registries;
    let Some(plain) = registry(&regs, "http", 80) else {
        eprintln!("\n*** SKIPPED: no http registry (port 80) configured on this host ***\n");
        return;
    };
    let Some(tls) = registry(&regs, "https", 443) else {
        eprintln!("\n*** SKIPPED: no https registry (port 443) configured on this host ***\n");
        return;
    };
    let _host = TestHost::create();
    // A listener on the host that the sandbox may not reach (the host end of its veth is not
    // in the policy): if enforcement failed, the connection would land here.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let d = tempfile::tempdir().unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("mode = \"allowlist\"\n[allow]\ncidrs = [\"{TEST_NET}\"]\n"),
    )
    .unwrap();
    let script = format!(
        r#"
curl -q -s -o /dev/null -w 'http %{{http_code}} %{{size_download}} %{{size_header}} %{{size_request}}\n' http://{plain}/ || echo "http failed $?"
gw=$(ip route | awk '/^default/ {{ print $3 }}')
t0=$(date +%s%N)
curl -q -s -m 5 -o /dev/null http://$gw:{port}/
rc=$?
echo "blocked $rc $(( ($(date +%s%N) - t0) / 1000000 )) $gw"
for i in 1 2 3 4 5 6 7 8 9 10; do curl -q -s -m 2 -o /dev/null http://$gw:{port}/burst$i; done
t0=$(date +%s%N)
getent hosts refused.invalid
echo "refused $? $(( ($(date +%s%N) - t0) / 1000000 ))"
echo "dig $(dig +time=3 +tries=1 +short @{TEST_HOST_IP} {plain} A | tail -n 1)"
python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b'x' * 100, ('{TEST_HOST_IP}', 9999))
"
curl -q -s -I -o /dev/null -w 'https %{{http_code}}\n' https://{tls}/ || echo "https failed $?"
exit 0
"#,
        plain = plain.host,
        tls = tls.host,
    );
    let o = sandtrail_run(
        d.path(),
        "ses_egress",
        &["--policy", policy.to_str().unwrap()],
        &["sh", "-c", &script],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let stdout = out(&o);
    let evs = events_of(d.path(), "ses_egress");

    // 1. curl to an allowed registry: its lookup, its connection (with the domain) and its
    //    bytes, all naming curl's process.
    let http: Vec<&str> = line(&stdout, "http").split(' ').collect();
    assert_ne!(http[0], "000", "{stdout}");
    let (body, headers, request) = (num(http[1]), num(http[2]), num(http[3]));
    let curl = exec_id_of(&evs, "/usr/bin/curl", &format!("http://{}/", plain.host));
    let dns = by(&evs, "dns.query", &curl);
    let a = dns
        .iter()
        .find(|e| e["dns"]["type"] == "A" && e["dns"]["name"] == plain.host.as_str())
        .unwrap_or_else(|| panic!("curl's A query: {dns:#?}"));
    assert_eq!(a["policy"]["decision"], "allow");
    assert_eq!(
        a["policy"]["rule"],
        format!("allow:registry:{}", plain.manager)
    );
    let answers: Vec<&str> = a["dns"]["answers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == "A")
        .map(|x| x["data"].as_str().unwrap())
        .collect();
    assert!(!answers.is_empty(), "{a}");
    let connects = by(&evs, "net.connect", &curl);
    let c = connects
        .iter()
        .find(|e| e["net"]["dst"]["port"] == 80)
        .unwrap_or_else(|| panic!("curl's connect: {connects:#?}"));
    assert_eq!(c["net"]["protocol"], "tcp");
    assert_eq!(c["net"]["dst"]["domain"], plain.host.as_str());
    assert!(
        answers.contains(&c["net"]["dst"]["ip"].as_str().unwrap()),
        "{c}"
    );
    assert_eq!(c["policy"]["decision"], "allow");
    assert_eq!(
        c["policy"]["rule"],
        format!("allow:registry:{}", plain.manager)
    );
    let flows = by(&evs, "net.flow", &curl);
    let f = flows
        .iter()
        .find(|e| e["net"]["protocol"] == "tcp" && e["net"]["dst"]["port"] == 80)
        .unwrap_or_else(|| panic!("curl's flow: {flows:#?}"));
    assert_eq!(f["net"]["dst"]["domain"], plain.host.as_str());
    assert_eq!(f["net"]["dst"]["ip"], c["net"]["dst"]["ip"]);
    // The connect's outcome and source port, from its handshake.
    assert_eq!(c["net"]["result"], "ok", "{c}");
    assert_eq!(c["net"]["src"]["port"], f["net"]["src"]["port"]);
    assert_eq!(c["net"]["src"]["ip"], f["net"]["src"]["ip"]);
    // The kernel counts IP packets: what curl reports plus the IP and TCP headers of each
    // packet (at most 80 bytes each with options).
    let n = &f["net"];
    let (bytes_in, packets_in) = (
        n["bytes_in"].as_u64().unwrap(),
        n["packets_in"].as_u64().unwrap(),
    );
    let (bytes_out, packets_out) = (
        n["bytes_out"].as_u64().unwrap(),
        n["packets_out"].as_u64().unwrap(),
    );
    assert!(
        bytes_in >= body + headers && bytes_in <= body + headers + 80 * packets_in,
        "in: {bytes_in} B in {packets_in} packets for {body} + {headers} B: {f}"
    );
    assert!(
        bytes_out >= request && bytes_out <= request + 80 * packets_out,
        "out: {bytes_out} B in {packets_out} packets for a {request} B request: {f}"
    );
    assert_eq!(n["l7"]["proto"], "http", "{f}");
    assert_eq!(n["l7"]["method"], "GET", "{f}");
    assert_eq!(n["l7"]["path"], "/", "{f}");
    assert_eq!(n["l7"]["host"], plain.host.as_str(), "{f}");
    // The lookup's own socket: a UDP flow of curl to port 53, identified as DNS.
    assert!(
        flows
            .iter()
            .any(|e| e["net"]["protocol"] == "udp" && e["net"]["dst"]["port"] == 53),
        "{flows:#?}"
    );

    // 2. A destination no rule allows: refused at connect with EPERM (curl: "couldn't
    //    connect", 7), at once, logged with the rule; nothing reached the listener.
    let blocked: Vec<&str> = line(&stdout, "blocked").split(' ').collect();
    assert_eq!(blocked[0], "7", "{stdout}");
    assert!(
        num(blocked[1]) < 1000,
        "a blocked connect took {} ms",
        blocked[1]
    );
    let gw = blocked[2];
    let b: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["kind"] == "net.connect"
                && e["net"]["dst"]["ip"] == gw
                && e["net"]["dst"]["port"] == port
        })
        .collect();
    assert!(!b.is_empty(), "no blocked connect to {gw}:{port}");
    for e in &b {
        assert_eq!(e["net"]["result"], "blocked", "{e}");
        assert_eq!(e["policy"]["decision"], "deny", "{e}");
        assert_eq!(e["policy"]["rule"], "default:allowlist", "{e}");
        assert_eq!(e["process"]["exe"], "/usr/bin/curl", "{e}");
    }
    assert_eq!(b.len(), 11, "one connect and ten more, each logged");
    assert!(listener.accept().is_err(), "a blocked connection arrived");
    // Eleven blocked attempts within seconds: a burst, one policy.violation.
    let burst: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["kind"] == "policy.violation" && e["policy"]["rule"] == "burst:blocked-egress"
        })
        .collect();
    assert_eq!(burst.len(), 1, "{burst:#?}");
    assert_eq!(burst[0]["severity"], "high");
    assert!(
        burst[0]["policy"]["what"]
            .as_str()
            .unwrap()
            .contains(&format!("{gw}:{port}")),
        "{}",
        burst[0]
    );

    // 3. A name no rule allows: refused by the forwarder (no answer to connect to), at once.
    let refused: Vec<&str> = line(&stdout, "refused").split(' ').collect();
    assert_ne!(refused[0], "0", "{stdout}");
    assert!(
        num(refused[1]) < 1000,
        "a refused lookup took {} ms",
        refused[1]
    );
    let q: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "dns.query" && e["dns"]["name"] == "refused.invalid")
        .collect();
    assert!(!q.is_empty());
    for e in &q {
        assert_eq!(e["dns"]["rcode"], "REFUSED", "{e}");
        assert_eq!(e["policy"]["rule"], "default:allowlist", "{e}");
        assert_eq!(e["process"]["exe"], "/usr/bin/getent", "{e}");
    }

    // 4. dig @ the test host's address: redirected to the session's forwarder (which answers:
    //    the test host runs no resolver) and logged as dig's.
    let dug = line(&stdout, "dig");
    assert!(dug.parse::<IpAddr>().is_ok(), "dig got no answer: {stdout}");
    let dig = exec_id_of(&evs, "/usr/bin/dig", TEST_HOST_IP);
    let dc = by(&evs, "net.connect", &dig);
    assert!(
        dc.iter().any(|e| e["net"]["dst"]["ip"] == TEST_HOST_IP
            && e["net"]["dst"]["port"] == 53
            && e["policy"]["rule"] == "allow:dns-redirect"),
        "{dc:#?}"
    );
    let dq = by(&evs, "dns.query", &dig);
    assert!(
        dq.iter()
            .any(|e| e["dns"]["name"] == plain.host.as_str() && e["dns"]["rcode"] == "NOERROR"),
        "{dq:#?}"
    );

    // 5. Datagrams of an unconnected UDP socket: one decision logged, all five counted.
    let py: Vec<&Value> = evs
        .iter()
        .filter(|e| e["net"]["dst"]["ip"] == TEST_HOST_IP && e["net"]["dst"]["port"] == 9999)
        .collect();
    let pc: Vec<&&Value> = py.iter().filter(|e| e["kind"] == "net.connect").collect();
    assert_eq!(pc.len(), 1, "{py:#?}");
    assert_eq!(pc[0]["net"]["protocol"], "udp");
    assert_eq!(pc[0]["policy"]["rule"], format!("allow:cidr:{TEST_NET}"));
    let pf: Vec<&&Value> = py.iter().filter(|e| e["kind"] == "net.flow").collect();
    assert_eq!(pf.len(), 1, "{py:#?}");
    assert_eq!(pf[0]["net"]["packets_out"], 5);
    assert_eq!(pf[0]["net"]["bytes_out"], 5 * (100 + 28));
    assert_eq!(pf[0]["process"]["exec_id"], pc[0]["process"]["exec_id"]);
    assert!(
        pf[0]["process"]["exe"]
            .as_str()
            .unwrap()
            .starts_with("/usr/bin/python3"),
        "{}",
        pf[0]
    );

    // 6. HTTPS: the server name from the TLS ClientHello.
    let https = line(&stdout, "https");
    assert_ne!(https, "000", "{stdout}");
    let tf: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "net.flow" && e["net"]["dst"]["port"] == 443)
        .collect();
    assert!(
        tf.iter().any(|e| e["net"]["l7"]["proto"] == "tls"
            && e["net"]["l7"]["sni"] == tls.host.as_str()
            && e["net"]["dst"]["domain"] == tls.host.as_str()),
        "{tf:#?}"
    );

    // The session's summary counts what was blocked; the incident query finds it by domain.
    let usage = &one(&evs, "session.terminate")["session"]["usage"];
    assert!(usage["egress_blocked"].as_u64().unwrap() >= (b.len() + q.len()) as u64);
    assert_eq!(usage["events_lost"], 0, "{usage}");
    let o = run(d.path(), &["sessions", "--domain", &plain.host], "");
    assert!(out(&o).contains("ses_egress"), "{}{}", out(&o), err(&o));
    verify_ok(d.path());
}

#[test]
fn inbound_connections_are_listen_accept_and_inbound_flows() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // A server and its client in one process, on the sandbox's loopback.
    let script = r#"python3 -c "
import socket
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(1)
port = s.getsockname()[1]
c = socket.create_connection(('127.0.0.1', port))
print('ports', port, c.getsockname()[1], flush=True)
c.sendall(b'z' * 300)
a, _ = s.accept()
got = 0
while got < 300:
    got += len(a.recv(1000))
a.close()
c.close()
try:
    socket.create_connection(('127.0.0.1', 1))
except ConnectionRefusedError:
    print('refused yes', flush=True)
""#;
    let o = sandtrail_run(d.path(), "ses_inbound", &[], &["sh", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let stdout = out(&o);
    let ports: Vec<u64> = line(&stdout, "ports").split(' ').map(num).collect();
    let (port, client_port) = (ports[0], ports[1]);
    let evs = events_of(d.path(), "ses_inbound");
    let py = |e: &Value| {
        e["process"]["exe"]
            .as_str()
            .is_some_and(|x| x.starts_with("/usr/bin/python3"))
    };
    let listen: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "net.listen").collect();
    assert_eq!(listen.len(), 1, "{listen:#?}");
    assert_eq!(listen[0]["net"]["protocol"], "tcp");
    assert_eq!(listen[0]["net"]["dst"]["ip"], "127.0.0.1");
    assert_eq!(listen[0]["net"]["dst"]["port"], port);
    assert!(py(listen[0]), "{}", listen[0]);
    let accept: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "net.accept").collect();
    assert_eq!(accept.len(), 1, "{accept:#?}");
    let a = &accept[0]["net"];
    assert_eq!(
        (&a["src"]["ip"], &a["src"]["port"]),
        (&Value::from("127.0.0.1"), &Value::from(client_port))
    );
    assert_eq!(a["dst"]["port"], port);
    assert_eq!(a["direction"], "inbound");
    assert_eq!(
        accept[0]["process"]["exec_id"],
        listen[0]["process"]["exec_id"]
    );
    // The accepted socket's flow: inbound, from the client's port, the 300 bytes received.
    let flows: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["kind"] == "net.flow"
                && e["net"]["direction"] == "inbound"
                && e["net"]["src"]["port"] == client_port
        })
        .collect();
    assert_eq!(flows.len(), 1, "{flows:#?}");
    let f = &flows[0]["net"];
    assert_eq!(f["src"]["port"], client_port);
    assert_eq!(f["dst"]["port"], port);
    let bytes_in = f["bytes_in"].as_u64().unwrap();
    let packets_in = f["packets_in"].as_u64().unwrap();
    assert!(
        bytes_in >= 300 && bytes_in <= 300 + 80 * packets_in,
        "{}",
        flows[0]
    );
    assert!(py(flows[0]), "{}", flows[0]);
    // A connect to a closed port: refused (the reset came back), with its source port.
    assert_eq!(line(&stdout, "refused"), "yes");
    let refused: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "net.connect" && e["net"]["dst"]["port"] == 1)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["net"]["result"], "refused");
    assert!(refused[0]["net"]["src"]["port"].as_u64().unwrap() > 0);
    // The listener's own flow (the handshakes it answered): inbound, on its port, no peer.
    let lf: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["kind"] == "net.flow"
                && e["net"]["direction"] == "inbound"
                && e["net"].get("src").is_none()
        })
        .collect();
    assert_eq!(lf.len(), 1, "{lf:#?}");
    assert_eq!(lf[0]["net"]["dst"]["port"], port);
    assert!(py(lf[0]), "{}", lf[0]);
    verify_ok(d.path());
}
