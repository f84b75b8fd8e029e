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
use sandtrail_bpf::net::{PayloadRecord, Proto, Rule};
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
        e.net = Some(NetInfo {
            protocol: protocol(r.proto),
            dst: Endpoint {
                ip: dst.ip().to_string(),
                port: dst.port(),
                domain,
            },
            result: (dec == Decision::Deny).then_some(NetResult::Blocked),
            direction: Some(Direction::Outbound),
            ..Default::default()
        });
        e.policy = Some(PolicyInfo {
            decision: dec,
            rule: Some(rule),
            what: None,
        });
        if dec == Decision::Deny {
            e.severity = Severity::Medium;
        }
        out.insert(0, e);
        out
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
    ) -> Event {
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
        let mut e = self.event(Kind::NetFlow, self.wall(f.last_ktime_ns));
        e.process = process;
        e.net = Some(NetInfo {
            protocol: protocol(f.proto),
            src: Some(Endpoint {
                ip: canonical(f.src).ip().to_string(),
                port: f.src.port(),
                domain: None,
            }),
            dst: Endpoint {
                ip: dst.ip().to_string(),
                port: dst.port(),
                domain,
            },
            bytes_out: Some(f.bytes_out),
            bytes_in: Some(f.bytes_in),
            packets_out: Some(f.packets_out),
            packets_in: Some(f.packets_in),
            duration_ns: Some(f.last_ktime_ns.saturating_sub(f.first_ktime_ns)),
            direction: sock.is_some().then_some(Direction::Outbound),
            l7: self.l7.remove(&f.socket_cookie).flatten(),
            ..Default::default()
        });
        e
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
        let now = Instant::now();
        self.closed
            .retain(|_, c| now.duration_since(c.at) < CLOSED_KEEP);
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

fn transport(p: Proto) -> Option<Transport> {
    match p {
        Proto::Tcp => Some(Transport::Tcp),
        Proto::Udp => Some(Transport::Udp),
        Proto::Other { .. } => None,
    }
}

/// What the kernel record itself says of a process the collector does not know (its image
/// from `/proc`, best effort; the exec id says that the image is not known).
fn bare_process(t: &sandtrail_bpf::Task) -> ProcessRef {
    let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "[unknown]".into());
    ProcessRef {
        pid: t.pid,
        ppid: t.ppid,
        uid: t.uid,
        euid: t.uid,
        gid: t.gid,
        egid: t.gid,
        exe,
        exec_id: format!("{}-unknown", t.pid),
        comm: (!t.comm.is_empty()).then(|| t.comm.clone()),
    }
}
