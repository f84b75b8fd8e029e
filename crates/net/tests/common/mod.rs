//! Test helpers: a real DNS server on loopback (built with hickory-proto) that answers fixed
//! records for `*.test` names and counts what it is asked, and a small DNS client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The address every `*.allowed.test` A query gets.
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// ... and AAAA.
pub const AAAA_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// TTL of the fixed answers.
pub const TTL: u32 = 300;

/// The fixed zone: `*.test` names exist (A, AAAA), `big.*.test` has TXT records too large for
/// a UDP answer, everything else is NXDOMAIN.
fn answer(req: &Message, udp: bool) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(req.queries.iter().cloned());
    let Some(q) = req.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    let name = q.name.to_ascii().to_ascii_lowercase();
    if !name.trim_end_matches('.').ends_with(".test") {
        m.metadata.response_code = ResponseCode::NXDomain;
        return m;
    }
    match q.query_type {
        RecordType::A => {
            m.add_answer(Record::from_rdata(q.name.clone(), TTL, RData::A(A(A_ADDR))));
        }
        RecordType::AAAA => {
            m.add_answer(Record::from_rdata(
                q.name.clone(),
                TTL,
                RData::AAAA(AAAA(AAAA_ADDR)),
            ));
        }
        RecordType::TXT if name.starts_with("big.") => {
            if udp {
                m.metadata.truncation = true;
            } else {
                for i in 0..40 {
                    m.add_answer(Record::from_rdata(
                        q.name.clone(),
                        TTL,
                        RData::TXT(TXT::new(vec![format!("{i:02}-{}", "x".repeat(60))])),
                    ));
                }
            }
        }
        _ => {}
    }
    m
}

/// A DNS server on 127.0.0.1 (UDP and TCP, same port).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// Every name asked, in order, with the transport ("udp"/"tcp").
    pub asked: Arc<Mutex<Vec<(String, &'static str)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start() -> FakeUpstream {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(t) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, t);
            }
        };
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a1, s1) = (asked.clone(), stop.clone());
        let t1 = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s1.load(Ordering::SeqCst) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(q) = req.queries.first() {
                    a1.lock().unwrap().push((q.name.to_ascii(), "udp"));
                }
                let out = answer(&req, true).to_vec().unwrap();
                let _ = udp.send_to(&out, peer);
            }
        });
        let (a2, s2) = (asked.clone(), stop.clone());
        let t2 = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                let Ok(req) = Message::from_vec(&q) else {
                    continue;
                };
                if let Some(q) = req.queries.first() {
                    a2.lock().unwrap().push((q.name.to_ascii(), "tcp"));
                }
                let out = answer(&req, false).to_vec().unwrap();
                let _ = s.write_all(&(out.len() as u16).to_be_bytes());
                let _ = s.write_all(&out);
            }
        });
        FakeUpstream {
            addr,
            asked,
            stop,
            threads: vec![t1, t2],
        }
    }

    pub fn count(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn query_bytes(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// One query over UDP from `sock` (already bound, in whatever namespace) to `server`.
pub fn ask_udp_from(
    sock: &UdpSocket,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Message {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.send_to(&query_bytes(name, qtype, 0x4242), server)
        .unwrap();
    let mut buf = [0u8; 65535];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, server);
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 0x4242, "the client's id comes back");
    m
}

pub fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    ask_udp_from(&sock, server, name, qtype)
}

pub fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let q = query_bytes(name, qtype, 0x4343);
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, 0x4343);
    m
}
