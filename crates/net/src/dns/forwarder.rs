//! The forwarder's sockets, threads and per-query logic.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RData;
use sandtrail_event::{Decision, DnsAnswer};

use super::upstream::{exchange, random_id};
use super::{rcode_name, DnsError, DnsRecord, NetRecord, Transport};
use crate::burst::{unix_ns, BurstDetector};
use crate::policy::{normalize_name, Policy, Verdict};
use crate::resolved::ResolvedIps;

/// Queries (UDP) and connections (TCP) handled at once; more get SERVFAIL (still recorded).
pub const MAX_IN_FLIGHT: usize = 128;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How often the listening threads look at the stop flag.
const TICK: Duration = Duration::from_millis(200);

/// What a [`Forwarder`] needs.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// Where to listen, UDP and TCP (the host end of the session's veth, port 53; port 0
    /// picks a free port, for tests).
    pub listen: SocketAddr,
    /// Upstream resolvers, tried in order (usually [`super::upstreams_from_resolv_conf`]).
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for one upstream before trying the next (default 2 s).
    pub upstream_timeout: Duration,
    /// The session's policy.
    pub policy: Arc<Policy>,
    /// Where allowed answers' addresses go (shared with the enforcement).
    pub resolved: Arc<ResolvedIps>,
    /// Blocked queries feed this (shared with the enforcement, which feeds it blocked
    /// connections).
    pub burst: Arc<Mutex<BurstDetector>>,
    /// Where the records go.
    pub records: Sender<NetRecord>,
}

impl ForwarderConfig {
    /// A config with a fresh resolved table, a burst detector with the policy's threshold
    /// and a 2 s upstream timeout.
    pub fn new(
        listen: SocketAddr,
        upstreams: Vec<SocketAddr>,
        policy: Arc<Policy>,
        records: Sender<NetRecord>,
    ) -> ForwarderConfig {
        let burst = Arc::new(Mutex::new(BurstDetector::new(policy.burst)));
        ForwarderConfig {
            listen,
            upstreams,
            upstream_timeout: Duration::from_secs(2),
            policy,
            resolved: Arc::new(ResolvedIps::new()),
            burst,
            records,
        }
    }
}

struct Inner {
    cfg: ForwarderConfig,
    local: SocketAddr,
    stop: AtomicBool,
    in_flight: AtomicUsize,
    lost: AtomicU64,
}

/// Decrements the in-flight count when a worker ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn try_slot(&self) -> Option<Slot<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(&self.in_flight);
        (n < MAX_IN_FLIGHT).then_some(slot)
    }

    fn emit(&self, r: NetRecord) {
        if self.cfg.records.send(r).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn blocked(&self, name: &str, rule: &str) {
        let v = self
            .cfg
            .burst
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocked(Instant::now(), name, rule);
        if let Some(v) = v {
            self.emit(NetRecord::Violation(v));
        }
    }

    /// Handles one query; the bytes to send back, if any. `overloaded`: answer SERVFAIL
    /// without forwarding.
    fn handle(
        &self,
        query: &[u8],
        client: SocketAddr,
        transport: Transport,
        overloaded: bool,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        let time_ns = unix_ns(SystemTime::now());
        let req = match Message::from_vec(query) {
            Ok(m) => m,
            // Not a DNS message: answer FORMERR if it has a header at all; nothing to record
            // (no name), and nothing leaves the host.
            Err(_) if query.len() >= 12 => {
                let mut m = Message::error_msg(
                    u16::from_be_bytes([query[0], query[1]]),
                    OpCode::Query,
                    ResponseCode::FormErr,
                );
                m.metadata.recursion_available = true;
                return m.to_vec().ok();
            }
            Err(_) => return None,
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let Some(q) = req.queries.first() else {
            return reply(&req, ResponseCode::FormErr);
        };
        let name = {
            let n = normalize_name(&q.name.to_ascii());
            if n.is_empty() {
                ".".to_string()
            } else {
                n
            }
        };
        let qtype = q.query_type.to_string();
        let mut verdict = self.cfg.policy.decide_domain(&name);
        let unsupported = req.metadata.op_code != OpCode::Query || req.queries.len() != 1;
        if unsupported && verdict.decision != Decision::Deny {
            verdict = Verdict {
                decision: Decision::Deny,
                rule: "dns:unsupported".into(),
                domain: None,
            };
        }
        let mut rec = DnsRecord {
            time_ns,
            duration_ns: 0,
            client,
            transport,
            listen: self.local,
            upstream: None,
            name: name.clone(),
            qtype,
            rcode: String::new(),
            answers: Vec::new(),
            decision: verdict.decision,
            rule: verdict.rule.clone(),
        };
        let finish = |mut rec: DnsRecord, out: Option<Vec<u8>>| {
            rec.duration_ns = start.elapsed().as_nanos() as u64;
            self.emit(NetRecord::Dns(rec));
            out
        };
        if verdict.decision == Decision::Deny {
            let code = if unsupported {
                if req.metadata.op_code != OpCode::Query {
                    ResponseCode::NotImp
                } else {
                    ResponseCode::FormErr
                }
            } else {
                ResponseCode::Refused
            };
            rec.rcode = rcode_name(u16::from(code));
            let out = reply(&req, code);
            self.blocked(&name, &verdict.rule);
            return finish(rec, out);
        }
        if overloaded {
            rec.rcode = "SERVFAIL".into();
            return finish(rec, reply(&req, ResponseCode::ServFail));
        }
        // Forward under a fresh id; the client's id goes back on the answer.
        let mut fwd = query.to_vec();
        fwd[0..2].copy_from_slice(&random_id().to_be_bytes());
        let mut answer = None;
        for &up in &self.cfg.upstreams {
            let timeout = self.cfg.upstream_timeout;
            let got = exchange(up, &fwd, false, timeout).and_then(|resp| {
                // Truncated: a TCP client gets the whole answer; a UDP client gets TC and
                // asks again over TCP itself.
                if transport == Transport::Tcp && resp.len() > 2 && resp[2] & 0x02 != 0 {
                    exchange(up, &fwd, true, timeout)
                } else {
                    Ok(resp)
                }
            });
            if let Ok(resp) = got {
                answer = Some((up, resp));
                break;
            }
        }
        let Some((up, mut resp)) = answer else {
            rec.rcode = "SERVFAIL".into();
            return finish(rec, reply(&req, ResponseCode::ServFail));
        };
        rec.upstream = Some(up);
        resp[0..2].copy_from_slice(&query[0..2]);
        match Message::from_vec(&resp) {
            Ok(m) => {
                rec.rcode = rcode_name(u16::from(m.metadata.response_code));
                let now = Instant::now();
                for r in &m.answers {
                    rec.answers.push(DnsAnswer {
                        rtype: r.record_type().to_string(),
                        data: r.data.to_string(),
                        ttl: r.ttl,
                    });
                    let ip = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    self.cfg.resolved.insert(ip, &name, &verdict, r.ttl, now);
                }
            }
            Err(_) => rec.rcode = rcode_name((resp[3] & 0x0f) as u16),
        }
        finish(rec, Some(resp))
    }
}

/// An answer to `req` with `code`, echoing its question (and EDNS when it used EDNS).
fn reply(req: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(req.metadata.id, req.metadata.op_code, code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().ok()
}

/// A running forwarder; [`Forwarder::stop`] (or drop) stops it.
pub struct Forwarder {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("local", &self.inner.local)
            .field("upstreams", &self.inner.cfg.upstreams)
            .finish()
    }
}

const BIND_HINT: &str = "the address must be on this host (the session's veth must be up) and the port free; port 53 needs root";

impl Forwarder {
    /// Binds UDP and TCP on `cfg.listen` and starts serving.
    pub fn start(cfg: ForwarderConfig) -> Result<Forwarder, DnsError> {
        if cfg.upstreams.is_empty() {
            return Err(DnsError::Config(
                "no upstream resolvers; give at least one (see upstreams_from_resolv_conf)".into(),
            ));
        }
        if cfg.upstreams.contains(&cfg.listen) {
            return Err(DnsError::Config(format!(
                "upstream {} is the forwarder's own address: it would ask itself; use the host's resolvers",
                cfg.listen
            )));
        }
        let bind_err = |proto, addr, source| DnsError::Bind {
            addr,
            proto,
            source,
            hint: BIND_HINT,
        };
        // With port 0, UDP picks the port and TCP must get the same one: retry a few times.
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(cfg.listen).map_err(|e| bind_err("udp", cfg.listen, e))?;
            let local = udp
                .local_addr()
                .map_err(|e| bind_err("udp", cfg.listen, e))?;
            match TcpListener::bind(local) {
                Ok(t) => break (udp, t),
                Err(e) if cfg.listen.port() == 0 && tries < 10 => {
                    tries += 1;
                    let _ = e;
                }
                Err(e) => return Err(bind_err("tcp", local, e)),
            }
        };
        let local = udp
            .local_addr()
            .map_err(|e| bind_err("udp", cfg.listen, e))?;
        udp.set_read_timeout(Some(TICK))
            .map_err(|e| bind_err("udp", local, e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| bind_err("tcp", local, e))?;
        let inner = Arc::new(Inner {
            cfg,
            local,
            stop: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        });
        let u = inner.clone();
        let t = inner.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("dns-udp".into())
                .spawn(move || udp_loop(u, udp))
                .map_err(|e| DnsError::Config(format!("cannot start a thread: {e}")))?,
            std::thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || tcp_loop(t, tcp))
                .map_err(|e| DnsError::Config(format!("cannot start a thread: {e}")))?,
        ];
        Ok(Forwarder { inner, threads })
    }

    /// The address it listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The table of addresses allowed names resolved to.
    pub fn resolved(&self) -> Arc<ResolvedIps> {
        self.inner.cfg.resolved.clone()
    }

    /// Records that could not be delivered because the receiver was gone.
    pub fn lost_records(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Stops listening and waits for the listening threads (queries in progress finish on
    /// their own, within the upstream timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn udp_loop(inner: Arc<Inner>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    while !inner.stop.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                // E.g. ICMP errors from an earlier send; keep serving.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let overloaded = inner.in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT;
        if overloaded {
            if let Some(out) = inner.handle(&query, peer, Transport::Udp, true) {
                let _ = sock.send_to(&out, peer);
            }
            continue;
        }
        let (i, s) = (inner.clone(), sock.clone());
        let spawned = std::thread::Builder::new()
            .name("dns-query".into())
            .spawn(move || {
                let Some(_slot) = i.try_slot() else {
                    if let Some(out) = i.handle(&query, peer, Transport::Udp, true) {
                        let _ = s.send_to(&out, peer);
                    }
                    return;
                };
                if let Some(out) = i.handle(&query, peer, Transport::Udp, false) {
                    let _ = s.send_to(&out, peer);
                }
            });
        if spawned.is_err() {
            // No thread left: the client times out and retries; never silent.
            inner.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is a valid, initialized pollfd that lives across the call, and the count
    // passed is 1, the number of entries it points to.
    unsafe {
        libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int);
    }
}

fn tcp_loop(inner: Arc<Inner>, listener: TcpListener) {
    while !inner.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let i = inner.clone();
                let _ = std::thread::Builder::new()
                    .name("dns-tcp-conn".into())
                    .spawn(move || tcp_conn(i, stream, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_readable(listener.as_raw_fd(), TICK)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn tcp_conn(inner: Arc<Inner>, mut s: TcpStream, peer: SocketAddr) {
    let slot = inner.try_slot();
    let overloaded = slot.is_none();
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(TCP_IDLE)).is_err()
        || s.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    while !inner.stop.load(Ordering::SeqCst) {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).is_err() {
            return;
        }
        let Some(out) = inner.handle(&q, peer, Transport::Tcp, overloaded) else {
            continue;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        if s.write_all(&framed).is_err() {
            return;
        }
    }
}
