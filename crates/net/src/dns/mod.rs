//! The per-session DNS forwarder and what it records.
//!
//! The sandbox's resolver is the host end of its veth (`10.200.x.1`, UDP and TCP port 53).
//! [`Forwarder`] listens there, decides every queried name with the session's
//! [`Policy`](crate::policy::Policy), and:
//!
//! - **allowed** (or logged, in open mode): forwards the query unchanged (under a fresh random
//!   id) to the host's upstream resolvers ([`upstreams_from_resolv_conf`]) and returns their
//!   answer; the A/AAAA answers go into the shared [`ResolvedIps`](crate::resolved::ResolvedIps)
//!   table with their TTLs;
//! - **denied**: answers `REFUSED` at once, never forwarding. REFUSED rather than NXDOMAIN:
//!   it says "not here, by policy" instead of "this name does not exist", so it is not cached as
//!   a negative answer and does not mislead whoever debugs the agent. glibc's resolver gives up
//!   on it at once when it comes from the only nameserver (tested: `getent` inside a namespace
//!   fails in milliseconds); other stubs were not tried.
//!
//! Every query yields one [`DnsRecord`] on the forwarder's channel (as [`NetRecord::Dns`]),
//! and a burst of denied queries yields a [`NetRecord::Violation`].
//!
//! Design: plain threads and blocking sockets (no async runtime in sandtrail); hickory-proto
//! parses and builds the messages. One thread receives UDP, one accepts TCP; each UDP query
//! and each TCP connection is handled on its own short-lived thread, at most
//! [`MAX_IN_FLIGHT`] at a time (beyond that: SERVFAIL, still recorded). Nothing is cached:
//! every allowed query goes upstream, so every answer's TTL is the upstream's.

mod forwarder;
mod upstream;

pub use forwarder::{Forwarder, ForwarderConfig, MAX_IN_FLIGHT};
pub use upstream::{parse_resolv_conf, upstreams_from_resolv_conf};

use std::net::SocketAddr;

use sandtrail_event::{Decision, DnsAnswer, DnsInfo, Event, Kind, PolicyInfo, Severity, Source};

use crate::burst::Violation;

/// Errors of the DNS side; each says what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The forwarder cannot listen.
    #[error("cannot listen for DNS on {addr} ({proto}): {source}; {hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The cause.
        source: std::io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// resolv.conf is missing or names no usable resolver.
    #[error("{path}: {msg}")]
    ResolvConf {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// The configuration cannot work.
    #[error("invalid DNS forwarder config: {0}")]
    Config(String),
}

/// UDP or TCP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// Length-prefixed messages on a stream.
    Tcp,
}

/// One query the forwarder handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// Unix time the query arrived, ns.
    pub time_ns: u64,
    /// How long until the answer was sent, ns.
    pub duration_ns: u64,
    /// Who asked: the sandbox's address and source port (what the kernel side matches to the
    /// sending socket's process).
    pub client: SocketAddr,
    /// Over UDP or TCP.
    pub transport: Transport,
    /// The forwarder's own address (the resolver the client asked).
    pub listen: SocketAddr,
    /// The upstream that answered, if the query was forwarded and answered.
    pub upstream: Option<SocketAddr>,
    /// Queried name, lower case, no trailing dot (`.` for the root).
    pub name: String,
    /// Query type ("A", "AAAA", "TXT", ...).
    pub qtype: String,
    /// Response code sent to the client ("NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL", ...).
    pub rcode: String,
    /// Answer records (type, data in presentation form, TTL).
    pub answers: Vec<DnsAnswer>,
    /// The policy's decision on the name.
    pub decision: Decision,
    /// The rule that decided.
    pub rule: String,
}

impl DnsRecord {
    /// The `dns.query` event (severity low when denied, info otherwise). `resolver` is the
    /// upstream that answered, or the forwarder itself when it answered alone.
    pub fn to_event(&self, session_id: &str, host_id: &str) -> Event {
        let mut e = Event::new(
            Kind::DnsQuery,
            Source::Dns,
            Some(session_id.to_string()),
            host_id,
            self.time_ns,
        );
        if self.decision == Decision::Deny {
            e.severity = Severity::Low;
        }
        e.dns = Some(Box::new(DnsInfo {
            name: self.name.clone(),
            qtype: self.qtype.clone(),
            rcode: Some(self.rcode.clone()),
            answers: self.answers.clone(),
            resolver: Some(self.upstream.unwrap_or(self.listen).to_string()),
        }));
        e.policy = Some(Box::new(PolicyInfo {
            decision: self.decision,
            rule: Some(self.rule.clone()),
            what: None,
        }));
        e
    }
}

/// What the forwarder sends on its channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetRecord {
    /// One query and its answer.
    Dns(DnsRecord),
    /// A burst of blocked attempts.
    Violation(Violation),
}

/// The presentation name of a response code ("NOERROR", "NXDOMAIN", ...).
pub fn rcode_name(code: u16) -> String {
    let s = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        n => return format!("RCODE{n}"),
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_to_event_validates() {
        let r = DnsRecord {
            time_ns: 1_782_727_440_123_456_789,
            duration_ns: 1000,
            client: "10.200.0.2:40000".parse().unwrap(),
            transport: Transport::Udp,
            listen: "10.200.0.1:53".parse().unwrap(),
            upstream: Some("127.0.0.1:5353".parse().unwrap()),
            name: "a.test".into(),
            qtype: "A".into(),
            rcode: "NOERROR".into(),
            answers: vec![DnsAnswer {
                rtype: "A".into(),
                data: "192.0.2.1".into(),
                ttl: 300,
            }],
            decision: Decision::Allow,
            rule: "allow:domain:a.test".into(),
        };
        let e = r.to_event("ses_1", "host-a");
        e.validate().unwrap();
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["dns"]["answers"][0]["ttl"], 300);
        assert_eq!(j["dns"]["resolver"], "127.0.0.1:5353");
        assert_eq!(j["policy"]["rule"], "allow:domain:a.test");
        let refused = DnsRecord {
            upstream: None,
            rcode: "REFUSED".into(),
            answers: vec![],
            decision: Decision::Deny,
            rule: "default:allowlist".into(),
            ..r
        };
        let e = refused.to_event("ses_1", "host-a");
        e.validate().unwrap();
        assert_eq!(e.dns.unwrap().resolver.as_deref(), Some("10.200.0.1:53"));
        assert_eq!(e.severity, Severity::Low);
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(23), "RCODE23");
    }
}
