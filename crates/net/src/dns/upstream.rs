//! The host's upstream resolvers and one exchange with them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::DnsError;

/// The `nameserver` addresses of a resolv.conf text, port 53. IPv6 addresses with a zone
/// (`fe80::1%eth0`) are skipped: a link-local upstream cannot be reached from a forwarder that
/// serves another interface.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let l = l.split(['#', ';']).next()?;
            let mut w = l.split_whitespace();
            if w.next()? != "nameserver" {
                return None;
            }
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The host's upstream resolvers from `path` (usually `/etc/resolv.conf`).
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|e| DnsError::ResolvConf {
        path: path.display().to_string(),
        msg: format!("cannot read it ({e}); the forwarder needs the host's resolvers there, or give it upstreams explicitly"),
    })?;
    let ups = parse_resolv_conf(&text);
    if ups.is_empty() {
        return Err(DnsError::ResolvConf {
            path: path.display().to_string(),
            msg: "names no usable nameserver; add a `nameserver ADDRESS` line, or give the forwarder upstreams explicitly".into(),
        });
    }
    Ok(ups)
}

/// A random 16-bit query id (SipHash with a fresh random key).
pub(crate) fn random_id() -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u16
}

/// Whether `resp` answers `query`: its id, the response bit and the same question section
/// (bytes 12.. up to the end of the question, compared case-insensitively).
fn answers(query: &[u8], resp: &[u8]) -> bool {
    if resp.len() < 12 || resp[0..2] != query[0..2] || resp[2] & 0x80 == 0 {
        return false;
    }
    // QDCOUNT must match; then compare the question bytes.
    if resp[4..6] != query[4..6] {
        return false;
    }
    let qlen = question_len(query).unwrap_or(0);
    resp.len() >= 12 + qlen && resp[12..12 + qlen].eq_ignore_ascii_case(&query[12..12 + qlen])
}

/// Length of the question section of a message with uncompressed question names.
fn question_len(msg: &[u8]) -> Option<usize> {
    let count = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let mut i = 12;
    for _ in 0..count {
        loop {
            let l = *msg.get(i)? as usize;
            i += 1;
            if l == 0 {
                break;
            }
            if l & 0xc0 != 0 {
                return None;
            }
            i += l;
        }
        i += 4;
    }
    (i <= msg.len()).then_some(i - 12)
}

/// One exchange with `upstream` over UDP (`tcp` false) or TCP. `query` must carry the id to
/// use; the answer must match it and the question.
pub(crate) fn exchange(
    upstream: SocketAddr,
    query: &[u8],
    tcp: bool,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    if tcp {
        let mut s = TcpStream::connect_timeout(&upstream, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        s.write_all(&framed)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf)?;
        if !answers(query, &buf) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the upstream's TCP answer does not match the query",
            ));
        }
        return Ok(buf);
    }
    let bind: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(upstream)?;
    s.send(query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        let n = s.recv(&mut buf)?;
        // A connected socket only hears the upstream; skip anything that is not our answer
        // (a late answer to an earlier query, or a spoofing attempt).
        if answers(query, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let t = "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53 # v6\nnameserver fe80::1%eth0\noptions edns0\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("resolv.conf");
        std::fs::write(&f, "search x\n").unwrap();
        let e = upstreams_from_resolv_conf(&f).unwrap_err().to_string();
        assert!(e.contains("nameserver ADDRESS"), "{e}");
        assert!(upstreams_from_resolv_conf(&dir.path().join("none"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn matching_answers() {
        // id 0x1234, RD, one question: a.test A IN
        let q = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 4, b't', b'e', b's', b't', 0,
            0, 1, 0, 1,
        ];
        assert_eq!(question_len(&q), Some(12));
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[15] = b'T'; // 0x20 case randomisation must still match
        assert!(answers(&q, &r));
        let mut wrong_id = r.clone();
        wrong_id[1] = 0x35;
        assert!(!answers(&q, &wrong_id));
        let mut wrong_name = r.clone();
        wrong_name[13] = b'b';
        assert!(!answers(&q, &wrong_name));
        assert!(!answers(&q, &q), "a query is not an answer");
    }
}
