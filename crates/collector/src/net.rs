//! A session's egress records in, `net.connect` / `net.flow` / `dns.query` events out.
//!
//! Three sources feed it: the kernel's decision on every `connect()` and unconnected
//! `sendmsg()` ([`AttemptRecord`]), the kernel's byte counters of every socket when it is
//! closed ([`FlowRecord`]), and the session's DNS forwarder ([`DnsRecord`]). It joins them:
//! a socket's flow names the process and the domain of its connect (by socket cookie); a
//! connection's domain is the name the session resolved its address from; a DNS query is
//! attributed to the process whose socket sent it, by matching the query's source port with
//! the local port of the kernel's socket (live or recently closed).
//!
//! Datagrams of an unconnected UDP socket are decided one by one; the first to each
//! destination (with each decision) is a `net.connect`, later ones are counted in the socket's
//! `net.flow` (packets, bytes) and, when blocked, in the session's blocked-egress count.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandtrail_bpf::net::{Decision as KDecision, FlowRecord, Hook, NetRecord as AttemptRecord};
use sandtrail_bpf::net::{InboundRecord, PayloadRecord, Proto, Rule};
use sandtrail_event::{
    Decision, Direction, Endpoint, Event, Kind, L7Info, NetInfo, NetResult, PolicyInfo, ProcessRef,
    Severity, Source,
};
use sandtrail_net::burst::BurstDetector;
use sandtrail_net::dns::{DnsRecord, Transport};
use sandtrail_net::resolved::ResolvedIps;

use crate::Scope;

/// How long a closed socket's local port stays known for attributing a late DNS record.
const CLOSED_KEEP: Duration = Duration::from_secs(10);
/// How long an allowed TCP connect waits for its outcome before it is logged without one.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// How many times a DNS record waits for its socket to show up before it is logged without
/// a process.
const DNS_TRIES: u32 = 5;

/// The name of a rule the kernel reported: an entry's id indexes `names`.
fn rule_name(rule: Rule, names: &[String]) -> String {
    match rule {
        Rule::Entry(id) => names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("entry:{id}")),
        Rule::Loopback => "allow:loopback".into(),
        Rule::DnsForwarder => "allow:dns-forwarder".into(),
        Rule::ModeNone => "mode:none".into(),
        Rule::DefaultAllowlist => "default:allowlist".into(),
        Rule::DefaultOpen => "default:open".into(),
        Rule::Unknown(r) => format!("builtin:{r:#x}"),
    }
}

fn protocol(p: Proto) -> String {
    match p {
        Proto::Tcp => "tcp".into(),
        Proto::Udp => "udp".into(),
        Proto::Other { protocol: 1, .. } | Proto::Other { protocol: 58, .. } => "icmp".into(),
        Proto::Other { protocol, .. } => format!("ip-proto-{protocol}"),
    }
}

fn decision(d: KDecision) -> Decision {
    match d {
        KDecision::Allow => Decision::Allow,
        KDecision::Deny => Decision::Deny,
        KDecision::Log => Decision::Log,
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(sandtrail_net::policy::canonical_ip(a.ip()), a.port())
}

/// What is known of one socket from its connect/sendmsg attempts.
#[derive(Debug)]
struct Sock {
    process: Option<ProcessRef>,
    dst: SocketAddr,
    domain: Option<String>,
    /// (destination, decision) pairs already logged (datagrams are logged once each).
    logged: HashSet<(SocketAddr, Decision)>,
    /// An accepted connection (`dst` is then the remote peer).
    inbound: bool,
}

/// A closed socket's local port, for DNS records that arrive after it closed.
#[derive(Debug)]
struct Closed {
    process: Option<ProcessRef>,
    at: Instant,
}

/// The egress side of one session; see the module docs.
pub struct NetCollector {
    scope: Scope,
    /// Wall-clock ns minus `CLOCK_MONOTONIC` ns.
    offset_ns: i128,
    /// Names of the kernel's entry rules, by id.
    rules: Vec<String>,
    resolved: Arc<ResolvedIps>,
    burst: Arc<Mutex<BurstDetector>>,
    sockets: HashMap<u64, Sock>,
    /// What each socket's first payload showed (the first record per socket counts).
    l7: HashMap<u64, Option<L7Info>>,
    /// Allowed TCP connects waiting for their outcome (handshake done, or the socket closed).
    connecting: HashMap<u64, (Event, Instant)>,
    /// Handshakes that completed before their connect's attempt record was read: local end.
    established: HashMap<u64, SocketAddr>,
    /// Who bound each socket (by cookie), for its `listen()`.
    bound: HashMap<u64, Option<ProcessRef>>,
    /// Who listens on each local port, for the connections accepted there.
    listeners: HashMap<(Transport, u16), Option<ProcessRef>>,
    closed: HashMap<(Transport, u16), Closed>,
    pending: Vec<(DnsRecord, u32)>,
    blocked: u64,
}

impl NetCollector {
    /// A collector for `scope`, whose kernel entries have the rule names `rules` (id = index),
    /// that takes domains from `resolved` and counts blocked attempts into `burst` (shared with
    /// the DNS forwarder).
    pub fn new(
        scope: Scope,
        rules: Vec<String>,
        resolved: Arc<ResolvedIps>,
        burst: Arc<Mutex<BurstDetector>>,
    ) -> Self {
        NetCollector {
            scope,
            offset_ns: crate::process::clock_offset_ns(),
            rules,
            resolved,
            burst,
            sockets: HashMap::new(),
            l7: HashMap::new(),
            connecting: HashMap::new(),
            established: HashMap::new(),
            bound: HashMap::new(),
            listeners: HashMap::new(),
            closed: HashMap::new(),
            pending: Vec::new(),
            blocked: 0,
        }
    }

    /// Egress attempts the policy blocked so far: kernel-denied connects and datagrams, and
    /// refused DNS queries.
    pub fn blocked(&self) -> u64 {
        self.blocked
    }

    fn wall(&self, ktime: u64) -> u64 {
        (ktime as i128 + self.offset_ns).max(0) as u64
    }

    fn event(&self, kind: Kind, ts_ns: u64) -> Event {
        Event::new(
            kind,
            Source::Kernel,
            Some(self.scope.session_id.clone()),
            &self.scope.host_id,
            ts_ns,
        )
    }

    fn domain_of(&self, ip: IpAddr) -> Option<String> {
        self.resolved
            .domain_of(ip, Instant::now())
            .map(|e| e.domain)
    }

    /// One connect or sendmsg decision of the kernel, by `process` (the collector's view of
    /// the task's pid, if it knows it): a `net.connect` (not for a repeated datagram), and a
    /// `policy.violation` when it completes a burst of blocked attempts.
    pub fn attempt(&mut self, r: &AttemptRecord, process: Option<ProcessRef>) -> Vec<Event> {
        let dst = canonical(r.dst);
        let dec = decision(r.decision);
        let rule = rule_name(r.rule, &self.rules);
        let domain = self.domain_of(dst.ip());
        let sock = self.sockets.entry(r.socket_cookie).or_insert_with(|| Sock {
            process: process.clone(),
            dst,
            domain: domain.clone(),
            logged: HashSet::new(),
            inbound: false,
        });
        if process.is_some() {
            sock.process = process.clone();
        }
        sock.dst = dst;
        sock.domain = domain.clone();
        let first = sock.logged.insert((dst, dec));
        let mut out = Vec::new();
        if dec == Decision::Deny {
            self.blocked += 1;
            let target = match &domain {
                Some(d) => format!("{d} ({dst})"),
                None => dst.to_string(),
            };
            let v = self
                .burst
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .blocked(Instant::now(), &target, &rule);
            if let Some(v) = v {
                let mut e = v.to_event(&self.scope.session_id, &self.scope.host_id);
                e.source = Source::Kernel;
                e.process = process.clone();
                out.push(e);
            }
        }
        if r.hook == Hook::Sendmsg && !first {
            return out;
        }
        let mut e = self.event(Kind::NetConnect, self.wall(r.task.ktime_ns));
        e.process = process.or_else(|| Some(bare_process(&r.task)));
        // A TCP connect's outcome comes with its handshake (or the socket's close); a UDP
        // connect or datagram has none beyond being let through.
        let waits = dec != Decision::Deny && r.hook == Hook::Connect && r.proto == Proto::Tcp;
        let result = match dec {
            Decision::Deny => Some(NetResult::Blocked),
            _ if waits => None,
            _ => Some(NetResult::Ok),
        };
        e.net = Some(Box::new(NetInfo {
            protocol: protocol(r.proto),
            dst: Endpoint {
                ip: dst.ip().to_string(),
                port: dst.port(),
                domain,
            },
            result,
            direction: Some(Direction::Outbound),
            ..Default::default()
        }));
        e.policy = Some(Box::new(PolicyInfo {
            decision: dec,
            rule: Some(rule),
            what: None,
        }));
        if dec == Decision::Deny {
            e.severity = Severity::Medium;
        }
        if waits {
            match self.established.remove(&r.socket_cookie) {
                Some(local) => out.insert(0, outcome(e, local, NetResult::Ok)),
                None => {
                    self.connecting.insert(r.socket_cookie, (e, Instant::now()));
                }
            }
        } else {
            out.insert(0, e);
        }
        out
    }

    /// Called at every look: forgets the ports of sockets closed more than [`CLOSED_KEEP`]
    /// ago, and returns the allowed TCP connects that have waited [`CONNECT_WAIT`] for an
    /// outcome (all of them when `last`), logged without one.
    pub fn expire(&mut self, last: bool) -> Vec<Event> {
        let now = Instant::now();
        self.closed
            .retain(|_, c| now.duration_since(c.at) < CLOSED_KEEP);
        let due: Vec<u64> = self
            .connecting
            .iter()
            .filter(|(_, (_, at))| last || now.duration_since(*at) >= CONNECT_WAIT)
            .map(|(c, _)| *c)
            .collect();
        let mut out: Vec<Event> = due
            .into_iter()
            .filter_map(|c| self.connecting.remove(&c).map(|(e, _)| e))
            .collect();
        out.sort_by_key(|e| e.ts_ns);
        if last {
            self.established.clear();
        }
        out
    }

    /// A bind, listen or accepted connection: `net.listen` for a TCP listener (named after
    /// the process that bound it) and for a bound UDP socket (its "listen"), `net.accept` for
    /// a connection taken on a listener (named after the listener's process: the kernel gives
    /// none at that point). An accepted socket's flow is then an inbound one.
    pub fn inbound(
        &mut self,
        r: &InboundRecord,
        process_of: &dyn Fn(u32) -> Option<ProcessRef>,
    ) -> Option<Event> {
        match r {
            InboundRecord::Bind {
                task,
                socket_cookie,
                proto,
                local,
            } => {
                let p = process_of(task.pid).or_else(|| Some(bare_process(task)));
                self.bound.insert(*socket_cookie, p.clone());
                let t = transport(*proto)?;
                self.listeners.insert((t, local.port()), p.clone());
                // A TCP socket listens (or connects) later; a UDP one receives from now on.
                (t == Transport::Udp).then(|| self.listen(task.ktime_ns, "udp", *local, p))
            }
            InboundRecord::Listen {
                socket_cookie,
                local,
                ktime_ns,
            } => {
                let p = self.bound.get(socket_cookie).cloned().flatten();
                self.listeners
                    .insert((Transport::Tcp, local.port()), p.clone());
                Some(self.listen(*ktime_ns, "tcp", *local, p))
            }
            InboundRecord::Connected {
                socket_cookie,
                local,
                ..
            } => match self.connecting.remove(socket_cookie) {
                Some((e, _)) => Some(outcome(e, *local, NetResult::Ok)),
                None => {
                    self.established.insert(*socket_cookie, *local);
                    None
                }
            },
            InboundRecord::Accept {
                socket_cookie,
                local,
                remote,
                ktime_ns,
            } => {
                let p = self
                    .listeners
                    .get(&(Transport::Tcp, local.port()))
                    .cloned()
                    .flatten();
                self.sockets.insert(
                    *socket_cookie,
                    Sock {
                        process: p.clone(),
                        dst: canonical(*remote),
                        domain: None,
                        logged: HashSet::new(),
                        inbound: true,
                    },
                );
                let mut e = self.event(Kind::NetAccept, self.wall(*ktime_ns));
                e.process = p;
                e.net = Some(Box::new(NetInfo {
                    protocol: "tcp".into(),
                    src: Some(endpoint(*remote)),
                    dst: endpoint(*local),
                    result: Some(NetResult::Ok),
                    direction: Some(Direction::Inbound),
                    ..Default::default()
                }));
                Some(e)
            }
        }
    }

    /// A `net.listen` on `local`.
    fn listen(
        &self,
        ktime: u64,
        protocol: &str,
        local: SocketAddr,
        process: Option<ProcessRef>,
    ) -> Event {
        let mut e = self.event(Kind::NetListen, self.wall(ktime));
        e.process = process;
        e.net = Some(Box::new(NetInfo {
            protocol: protocol.into(),
            dst: endpoint(local),
            direction: Some(Direction::Inbound),
            ..Default::default()
        }));
        e
    }

    /// A socket's first payload, captured by the kernel: its application protocol (TLS SNI,
    /// HTTP method/host/path, SSH, DNS) goes on the socket's `net.flow`. The bytes are not kept.
    pub fn payload(&mut self, p: &PayloadRecord) {
        self.l7.entry(p.socket_cookie).or_insert_with(|| {
            sandtrail_net::l7::identify(&p.bytes, p.proto == Proto::Tcp, p.dst.port())
        });
    }

    /// A closed socket's counters: its `net.flow`, with the process and domain of its connect
    /// (or, for a socket that never connected or sent to an address, the process that closed
    /// it, looked up with `process_of`).
    pub fn flow(
        &mut self,
        f: &FlowRecord,
        process_of: &dyn Fn(u32) -> Option<ProcessRef>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        self.established.remove(&f.socket_cookie);
        // Closed without completing its handshake: refused (something came back: a reset or
        // an ICMP error) or failed.
        if let Some((e, _)) = self.connecting.remove(&f.socket_cookie) {
            let result = if f.packets_in > 0 {
                NetResult::Refused
            } else {
                NetResult::Error
            };
            out.push(outcome(e, f.src, result));
        }
        let sock = self.sockets.remove(&f.socket_cookie);
        let process = sock
            .as_ref()
            .and_then(|s| s.process.clone())
            .or_else(|| f.closed_by.and_then(|(pid, _, _)| process_of(pid)));
        if let Some(t) = transport(f.proto) {
            self.closed.insert(
                (t, f.src.port()),
                Closed {
                    process: process.clone(),
                    at: Instant::now(),
                },
            );
        }
        let connected = !f.dst.ip().is_unspecified();
        let dst = if connected {
            canonical(f.dst)
        } else {
            sock.as_ref()
                .map(|s| s.dst)
                .unwrap_or_else(|| canonical(f.dst))
        };
        let domain = sock
            .as_ref()
            .and_then(|s| s.domain.clone())
            .or_else(|| self.domain_of(dst.ip()));
        let inbound = sock.as_ref().is_some_and(|s| s.inbound);
        // A bound socket that never connected: a listener (its handshakes) or a UDP receiver.
        let bound = self.bound.remove(&f.socket_cookie);
        let local = endpoint(f.src);
        let remote = Endpoint {
            ip: dst.ip().to_string(),
            port: dst.port(),
            domain,
        };
        // `src` is the end that started it: the peer, for an accepted connection.
        let (src, dst) = match (inbound, &bound) {
            (true, _) => (Some(remote), local),
            (false, Some(_)) if sock.is_none() && !connected => (None, local),
            _ => (Some(local), remote),
        };
        let direction = match (&sock, inbound) {
            (None, _) if bound.is_some() && !connected => Some(Direction::Inbound),
            (None, _) => None,
            (Some(_), true) => Some(Direction::Inbound),
            (Some(_), false) => Some(Direction::Outbound),
        };
        let process = process.or_else(|| bound.flatten());
        let mut e = self.event(Kind::NetFlow, self.wall(f.last_ktime_ns));
        e.process = process;
        e.net = Some(Box::new(NetInfo {
            protocol: protocol(f.proto),
            src,
            dst,
            bytes_out: Some(f.bytes_out),
            bytes_in: Some(f.bytes_in),
            packets_out: Some(f.packets_out),
            packets_in: Some(f.packets_in),
            duration_ns: Some(f.last_ktime_ns.saturating_sub(f.first_ktime_ns)),
            direction,
            l7: self.l7.remove(&f.socket_cookie).flatten(),
            ..Default::default()
        }));
        out.push(e);
        out
    }

    /// A query the session's forwarder answered. It becomes a `dns.query` once its socket is
    /// found ([`NetCollector::drain_dns`]).
    pub fn dns(&mut self, rec: DnsRecord) {
        if rec.decision == Decision::Deny {
            self.blocked += 1;
        }
        self.pending.push((rec, 0));
    }

    /// Whether DNS records wait for their sockets.
    pub fn dns_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The waiting DNS records whose sockets are now known, as `dns.query` events with their
    /// process: `live` are the counters of the sockets still open (for their local ports).
    /// Records whose socket has not shown up after a few calls, and all of them when `last`,
    /// are logged without a process.
    pub fn drain_dns(
        &mut self,
        live: &[FlowRecord],
        process_of: &dyn Fn(u32) -> Option<ProcessRef>,
        last: bool,
    ) -> Vec<Event> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        for (rec, tries) in pending {
            let found = self.owner(&rec, live, process_of);
            if found.is_none() && !last && tries + 1 < DNS_TRIES {
                self.pending.push((rec, tries + 1));
                continue;
            }
            let mut e = rec.to_event(&self.scope.session_id, &self.scope.host_id);
            e.process = found.flatten();
            out.push(e);
        }
        out
    }

    /// Whether the query's socket is known (`Some`) and who owns it.
    fn owner(
        &self,
        rec: &DnsRecord,
        live: &[FlowRecord],
        process_of: &dyn Fn(u32) -> Option<ProcessRef>,
    ) -> Option<Option<ProcessRef>> {
        let port = rec.client.port();
        let client_ip = sandtrail_net::policy::canonical_ip(rec.client.ip());
        if let Some(f) = live.iter().find(|f| {
            transport(f.proto) == Some(rec.transport)
                && f.src.port() == port
                && sandtrail_net::policy::canonical_ip(f.src.ip()) == client_ip
        }) {
            let p = self
                .sockets
                .get(&f.socket_cookie)
                .and_then(|s| s.process.clone())
                .or_else(|| f.closed_by.and_then(|(pid, _, _)| process_of(pid)));
            return Some(p);
        }
        self.closed
            .get(&(rec.transport, port))
            .map(|c| c.process.clone())
    }
}

/// An address and port as an event endpoint (IPv4-mapped addresses as IPv4), no domain.
fn endpoint(a: SocketAddr) -> Endpoint {
    let a = canonical(a);
    Endpoint {
        ip: a.ip().to_string(),
        port: a.port(),
        domain: None,
    }
}

/// A waiting connect with its outcome and source end.
fn outcome(mut e: Event, local: SocketAddr, result: NetResult) -> Event {
    if let Some(n) = e.net.as_mut() {
        n.src = Some(endpoint(local));
        n.result = Some(result);
    }
    e
}

fn transport(p: Proto) -> Option<Transport> {
    match p {
        Proto::Tcp => Some(Transport::Tcp),
        Proto::Udp => Some(Transport::Udp),
        Proto::Other { .. } => None,
    }
}

/// What the kernel record itself says of a process the collector does not know (its image and
/// parent from `/proc`, best effort; the exec id says that the image is not known).
fn bare_process(t: &sandtrail_bpf::Task) -> ProcessRef {
    let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "[unknown]".into());
    let ppid = std::fs::read_to_string(format!("/proc/{}/status", t.pid))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    ProcessRef {
        pid: t.pid,
        ppid,
        uid: t.uid,
        euid: t.uid,
        gid: t.gid,
        egid: t.gid,
        exe,
        exec_id: format!("{}-unknown", t.pid),
        comm: (!t.comm.is_empty()).then(|| t.comm.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandtrail_bpf::Task;
    use sandtrail_net::policy::{BurstConfig, Verdict};

    const COOKIE: u64 = 77;

    fn scope() -> Scope {
        Scope {
            session_id: "ses_t".into(),
            host_id: "host_t".into(),
        }
    }

    fn collector(burst: u32) -> (NetCollector, Arc<ResolvedIps>) {
        let resolved = Arc::new(ResolvedIps::new());
        let burst = Arc::new(Mutex::new(BurstDetector::new(BurstConfig {
            count: burst,
            window: Duration::from_secs(10),
        })));
        let c = NetCollector::new(
            scope(),
            vec![
                "allow:cidr:192.0.2.0/24".into(),
                "allow:domain:example.org".into(),
            ],
            resolved.clone(),
            burst,
        );
        (c, resolved)
    }

    fn proc_ref(pid: u32, exe: &str) -> ProcessRef {
        ProcessRef {
            pid,
            ppid: 1,
            exe: exe.into(),
            exec_id: format!("{pid}-1"),
            ..Default::default()
        }
    }

    fn attempt(hook: Hook, dst: &str, d: KDecision, rule: Rule, proto: Proto) -> AttemptRecord {
        AttemptRecord {
            task: Task {
                tid: 40,
                pid: 40,
                ppid: 1,
                uid: 65534,
                gid: 65534,
                cgroup_id: 9,
                ktime_ns: 1_000,
                comm: "curl".into(),
            },
            hook,
            dst: dst.parse().unwrap(),
            proto,
            decision: d,
            rule,
            socket_cookie: COOKIE,
        }
    }

    fn flow(src: &str, dst: &str, proto: Proto) -> FlowRecord {
        FlowRecord {
            socket_cookie: COOKIE,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            bytes_out: 640,
            bytes_in: 0,
            packets_out: 5,
            packets_in: 0,
            first_ktime_ns: 1_000,
            last_ktime_ns: 5_000,
            closed_by: Some((40, 65534, 9)),
        }
    }

    fn no_process(_: u32) -> Option<ProcessRef> {
        None
    }

    #[test]
    fn a_connect_names_its_rule_domain_and_process_and_its_flow_follows() {
        let (mut c, resolved) = collector(10);
        let allow = Verdict {
            decision: Decision::Allow,
            rule: "allow:domain:example.org".into(),
            domain: None,
        };
        let ip = "192.0.2.80".parse().unwrap();
        resolved.insert(ip, "example.org", &allow, 60, Instant::now());
        let r = attempt(
            Hook::Connect,
            "192.0.2.80:443",
            KDecision::Allow,
            Rule::Entry(1),
            Proto::Tcp,
        );
        // An allowed TCP connect waits for its handshake: then it is logged, with its source.
        assert!(c
            .attempt(&r, Some(proc_ref(40, "/usr/bin/curl")))
            .is_empty());
        let up = InboundRecord::Connected {
            socket_cookie: COOKIE,
            local: "10.200.0.2:40000".parse().unwrap(),
            remote: "192.0.2.80:443".parse().unwrap(),
            ktime_ns: 1_500,
        };
        let e = &c.inbound(&up, &no_process).unwrap();
        assert_eq!(e.kind, Kind::NetConnect);
        let net = e.net.as_ref().unwrap();
        assert_eq!(net.protocol, "tcp");
        assert_eq!(net.dst.ip, "192.0.2.80");
        assert_eq!(net.dst.port, 443);
        assert_eq!(net.dst.domain.as_deref(), Some("example.org"));
        assert_eq!(net.result, Some(NetResult::Ok));
        assert_eq!(net.src.as_ref().unwrap().port, 40000);
        let policy = e.policy.as_ref().unwrap();
        assert_eq!(policy.decision, Decision::Allow);
        assert_eq!(policy.rule.as_deref(), Some("allow:domain:example.org"));
        assert_eq!(e.process.as_ref().unwrap().exe, "/usr/bin/curl");
        assert_eq!(c.blocked(), 0);

        // Its first payload, then its close: the flow carries the process, domain and L7.
        let hello = b"GET /x HTTP/1.1\r\nHost: example.org\r\n\r\n".to_vec();
        c.payload(&PayloadRecord {
            socket_cookie: COOKIE,
            ktime_ns: 2_000,
            proto: Proto::Tcp,
            src: "10.200.0.2:40000".parse().unwrap(),
            dst: "192.0.2.80:443".parse().unwrap(),
            payload_len: hello.len() as u32,
            bytes: hello,
        });
        let f = c
            .flow(
                &flow("10.200.0.2:40000", "192.0.2.80:443", Proto::Tcp),
                &no_process,
            )
            .remove(0);
        assert_eq!(f.kind, Kind::NetFlow);
        assert_eq!(f.process.as_ref().unwrap().exec_id, "40-1");
        let net = f.net.unwrap();
        assert_eq!(net.dst.domain.as_deref(), Some("example.org"));
        assert_eq!(net.src.unwrap().port, 40000);
        assert_eq!(
            (net.bytes_out, net.packets_out, net.duration_ns),
            (Some(640), Some(5), Some(4_000))
        );
        let l7 = net.l7.unwrap();
        assert_eq!(l7.proto.as_deref(), Some("http"));
        assert_eq!(l7.host.as_deref(), Some("example.org"));
        assert_eq!(l7.path.as_deref(), Some("/x"));
    }

    #[test]
    fn datagrams_are_logged_once_per_destination_and_blocked_ones_counted() {
        let (mut c, _) = collector(3);
        let p = Some(proc_ref(40, "/usr/bin/python3"));
        let sent = attempt(
            Hook::Sendmsg,
            "192.0.2.9:9999",
            KDecision::Allow,
            Rule::Entry(0),
            Proto::Udp,
        );
        let mut n = 0;
        for _ in 0..5 {
            n += c.attempt(&sent, p.clone()).len();
        }
        assert_eq!(n, 1);
        let denied = attempt(
            Hook::Sendmsg,
            "198.51.100.1:53",
            KDecision::Deny,
            Rule::DefaultAllowlist,
            Proto::Udp,
        );
        let first = c.attempt(&denied, p.clone());
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].net.as_ref().unwrap().result,
            Some(NetResult::Blocked)
        );
        assert_eq!(
            first[0].policy.as_ref().unwrap().rule.as_deref(),
            Some("default:allowlist")
        );
        assert_eq!(first[0].severity, Severity::Medium);
        assert!(c.attempt(&denied, p.clone()).is_empty());
        // The third blocked attempt completes a burst of 3: one policy.violation.
        let third = c.attempt(&denied, p);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].kind, Kind::PolicyViolation);
        assert_eq!(third[0].source, Source::Kernel);
        assert_eq!(c.blocked(), 3);
        let f = c
            .flow(
                &flow("10.200.0.2:5000", "0.0.0.0:0", Proto::Udp),
                &no_process,
            )
            .remove(0);
        let net = f.net.unwrap();
        // An unconnected socket's flow names its latest destination.
        assert_eq!((net.dst.ip.as_str(), net.dst.port), ("198.51.100.1", 53));
    }

    fn dns(port: u16) -> DnsRecord {
        DnsRecord {
            time_ns: 1,
            duration_ns: 1,
            client: SocketAddr::new("10.200.0.2".parse().unwrap(), port),
            transport: Transport::Udp,
            listen: "10.200.0.1:53".parse().unwrap(),
            upstream: None,
            name: "example.org".into(),
            qtype: "A".into(),
            rcode: "NOERROR".into(),
            answers: vec![],
            decision: Decision::Allow,
            rule: "allow:domain:example.org".into(),
        }
    }

    #[test]
    fn a_query_is_attributed_by_its_source_port_live_or_closed() {
        let (mut c, _) = collector(10);
        let r = attempt(
            Hook::Connect,
            "10.255.255.53:53",
            KDecision::Allow,
            Rule::Entry(0),
            Proto::Udp,
        );
        c.attempt(&r, Some(proc_ref(40, "/usr/bin/getent")));
        // Live socket with the query's source port.
        c.dns(dns(5353));
        let live = [flow("10.200.0.2:5353", "10.255.255.53:53", Proto::Udp)];
        let evs = c.drain_dns(&live, &no_process, false);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, Kind::DnsQuery);
        assert_eq!(evs[0].process.as_ref().unwrap().exe, "/usr/bin/getent");
        // Closed socket: found by its port for a while.
        c.flow(&live[0], &no_process);
        c.dns(dns(5353));
        let evs = c.drain_dns(&[], &no_process, false);
        assert_eq!(evs[0].process.as_ref().unwrap().exe, "/usr/bin/getent");
        // Unknown port: waits a few looks, then is logged without a process.
        c.dns(dns(6000));
        for _ in 0..DNS_TRIES - 1 {
            assert!(c.drain_dns(&[], &no_process, false).is_empty());
        }
        let evs = c.drain_dns(&[], &no_process, false);
        assert_eq!(evs.len(), 1);
        assert!(evs[0].process.is_none());
        // At the end nothing waits.
        c.dns(dns(6001));
        assert_eq!(c.drain_dns(&[], &no_process, true).len(), 1);
        assert!(!c.dns_pending());
    }

    #[test]
    fn a_listener_names_its_accepts_and_their_flows_are_inbound() {
        let (mut c, _) = collector(10);
        let server = proc_ref(50, "/usr/bin/python3");
        let sp = server.clone();
        let process_of = move |pid: u32| (pid == 50).then(|| sp.clone());
        let mut task = attempt(
            Hook::Connect,
            "127.0.0.1:1",
            KDecision::Allow,
            Rule::Loopback,
            Proto::Tcp,
        )
        .task;
        task.pid = 50;
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let bind = InboundRecord::Bind {
            task,
            socket_cookie: 5,
            proto: Proto::Tcp,
            local,
        };
        assert!(c.inbound(&bind, &process_of).is_none());
        let listen = InboundRecord::Listen {
            socket_cookie: 5,
            local,
            ktime_ns: 2_000,
        };
        let l = c.inbound(&listen, &no_process).unwrap();
        assert_eq!(l.kind, Kind::NetListen);
        assert_eq!(l.process.as_ref().unwrap().exec_id, "50-1");
        assert_eq!(l.net.as_ref().unwrap().dst.port, 8080);
        let accept = InboundRecord::Accept {
            socket_cookie: COOKIE,
            local,
            remote: "127.0.0.1:40000".parse().unwrap(),
            ktime_ns: 3_000,
        };
        let a = c.inbound(&accept, &no_process).unwrap();
        assert_eq!(a.kind, Kind::NetAccept);
        assert_eq!(a.process.as_ref().unwrap().exec_id, "50-1");
        let net = a.net.unwrap();
        assert_eq!(net.src.unwrap().port, 40000);
        assert_eq!(net.direction, Some(Direction::Inbound));
        let f = c
            .flow(
                &flow("127.0.0.1:8080", "127.0.0.1:40000", Proto::Tcp),
                &no_process,
            )
            .remove(0);
        let net = f.net.unwrap();
        assert_eq!((net.src.unwrap().port, net.dst.port), (40000, 8080));
        assert_eq!(net.direction, Some(Direction::Inbound));
        assert_eq!(f.process.unwrap().exec_id, "50-1");
    }

    #[test]
    fn a_connect_without_a_handshake_is_refused_or_failed_or_logged_after_a_wait() {
        let (mut c, _) = collector(10);
        let r = attempt(
            Hook::Connect,
            "192.0.2.80:443",
            KDecision::Allow,
            Rule::Entry(0),
            Proto::Tcp,
        );
        assert!(c.attempt(&r, None).is_empty());
        // Closed after a reset came back: refused, logged before its flow.
        let mut f = flow("10.200.0.2:40001", "192.0.2.80:443", Proto::Tcp);
        f.packets_in = 1;
        let evs = c.flow(&f, &no_process);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].kind, Kind::NetConnect);
        let net = evs[0].net.as_ref().unwrap();
        assert_eq!(net.result, Some(NetResult::Refused));
        assert_eq!(net.src.as_ref().unwrap().port, 40001);
        assert_eq!(evs[1].kind, Kind::NetFlow);
        // Still connecting at the session's end: logged without an outcome.
        assert!(c.attempt(&r, None).is_empty());
        assert!(c.expire(false).is_empty());
        let evs = c.expire(true);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].net.as_ref().unwrap().result, None);
        // A UDP connect is let through at once.
        let u = attempt(
            Hook::Connect,
            "192.0.2.80:53",
            KDecision::Allow,
            Rule::Entry(0),
            Proto::Udp,
        );
        let evs = c.attempt(&u, None);
        assert_eq!(evs[0].net.as_ref().unwrap().result, Some(NetResult::Ok));
    }
}
