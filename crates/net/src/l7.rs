//! Application-layer identification of a flow from the first bytes its socket sent (the kernel's
//! first-payload capture, at most 512 bytes: `sandtrail_bpf::net::PayloadRecord`).
//!
//! [`identify`] recognizes, in this order:
//!
//! - **TLS**: a handshake record holding a ClientHello → `proto "tls"`, and `sni` from its
//!   `server_name` extension when the bytes reach it (a ClientHello cut off before the extension,
//!   or one without it, gives `sni: None`). Encrypted Client Hello hides the real name: what is
//!   seen is the outer (public) name.
//! - **HTTP/1.x**: a request line `METHOD SP target SP HTTP/1.x` → `proto "http"`, `method`,
//!   `path` (the request target as sent) and `host` (the `Host` header, when it is in the bytes).
//! - **SSH**: the identification string `SSH-2.0-…` (or `SSH-1.99-…`) → `proto "ssh"`.
//! - **DNS**: destination port 53 (UDP, or TCP with its 2-byte length prefix) and a plausible
//!   query header → `proto "dns"`.
//!
//! Anything else (HTTP/2 with prior knowledge, QUIC, other protocols) gives `None`. Parsing is
//! bounds-checked throughout: no input makes it panic. The payload itself is never kept; only
//! the fields returned.

use sandtrail_event::L7Info;

/// Identifies the application protocol of a flow from the first payload bytes it sent.
/// `proto_is_tcp` is the transport (TCP, else UDP); `dst_port` the destination port.
pub fn identify(payload: &[u8], proto_is_tcp: bool, dst_port: u16) -> Option<L7Info> {
    if proto_is_tcp {
        if let Some(info) = tls(payload)
            .or_else(|| http(payload))
            .or_else(|| ssh(payload))
        {
            return Some(info);
        }
    }
    if dst_port == 53 && dns(payload, proto_is_tcp) {
        return Some(L7Info {
            proto: Some("dns".into()),
            ..L7Info::default()
        });
    }
    None
}

/// A cursor over bytes that may end anywhere: every read is checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        let s = self.take(3)?;
        Some(usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2]))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }
}

const TLS_HANDSHAKE: u8 = 0x16;
const TLS_CLIENT_HELLO: u8 = 1;
const TLS_EXT_SERVER_NAME: u16 = 0;
const SNI_HOST_NAME: u8 = 0;

/// A TLS ClientHello: `Some` with proto "tls" once the record and handshake headers say so,
/// `sni` when the server_name extension is complete in the bytes.
fn tls(b: &[u8]) -> Option<L7Info> {
    let mut r = Reader::new(b);
    // TLSPlaintext: content type, legacy version (3.x), length.
    if r.u8()? != TLS_HANDSHAKE || r.u8()? != 3 || r.u8()? > 4 {
        return None;
    }
    let record_len = usize::from(r.u16()?);
    if record_len < 4 {
        return None;
    }
    // Handshake: type, 24-bit length.
    if r.u8()? != TLS_CLIENT_HELLO {
        return None;
    }
    let hs_len = r.u24()?;
    if hs_len < 38 {
        return None;
    }
    let info = L7Info {
        proto: Some("tls".into()),
        sni: client_hello_sni(&mut r),
        ..L7Info::default()
    };
    Some(info)
}

/// The host_name of the server_name extension of a ClientHello body (after its header).
fn client_hello_sni(r: &mut Reader<'_>) -> Option<String> {
    // legacy_version (2), random (32), legacy_session_id (<0..32>).
    r.skip(2 + 32)?;
    let sid = usize::from(r.u8()?);
    r.skip(sid)?;
    // cipher_suites <2..2^16-2>, legacy_compression_methods <1..2^8-1>.
    let suites = usize::from(r.u16()?);
    r.skip(suites)?;
    let comp = usize::from(r.u8()?);
    r.skip(comp)?;
    // extensions <8..2^16-1>: type (2), length (2), data.
    let ext_total = usize::from(r.u16()?);
    let ext_end = r.pos.saturating_add(ext_total);
    while r.pos < ext_end {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if ty != TLS_EXT_SERVER_NAME {
            r.skip(len)?;
            continue;
        }
        let mut e = Reader::new(r.take(len)?);
        // ServerNameList <1..2^16-1>: name_type (1), HostName <1..2^16-1>.
        let list_len = usize::from(e.u16()?);
        let mut l = Reader::new(e.take(list_len)?);
        while let Some(name_type) = l.u8() {
            let n = usize::from(l.u16()?);
            let name = l.take(n)?;
            if name_type == SNI_HOST_NAME {
                return host_name(name);
            }
        }
        return None;
    }
    None
}

/// A DNS host name as sent (letters, digits, `-`, `_`, `.`), lower-cased; else `None`.
fn host_name(b: &[u8]) -> Option<String> {
    if b.is_empty()
        || b.len() > 253
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return None;
    }
    Some(String::from_utf8_lossy(b).to_ascii_lowercase())
}

/// Request methods of HTTP/1.x (RFC 9110 and PATCH).
const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// An HTTP/1.x request line, and the Host header when it is in the bytes.
fn http(b: &[u8]) -> Option<L7Info> {
    let sp = b.iter().take(8).position(|&c| c == b' ')?;
    let method = std::str::from_utf8(&b[..sp]).ok()?;
    if !HTTP_METHODS.contains(&method) {
        return None;
    }
    let rest = &b[sp + 1..];
    // The request target: visible ASCII up to the next space.
    let tlen = rest.iter().position(|&c| c == b' ')?;
    let target = &rest[..tlen];
    if target.is_empty() || !target.iter().all(|c| (0x21..0x7f).contains(c)) {
        return None;
    }
    // The version; the line may be cut off by the capture, but what there is must match.
    let version = &rest[tlen + 1..];
    let want = b"HTTP/1.";
    let n = version.len().min(want.len());
    if n == 0 || version[..n] != want[..n] {
        return None;
    }
    Some(L7Info {
        proto: Some("http".into()),
        method: Some(method.to_owned()),
        path: Some(String::from_utf8_lossy(target).into_owned()),
        host: http_host(version),
        ..L7Info::default()
    })
}

/// The value of the first `Host:` header line that is complete in the bytes (CRLF-ended).
fn http_host(after_target: &[u8]) -> Option<String> {
    let mut lines = after_target.split(|&c| c == b'\n');
    lines.next(); // the rest of the request line
    for line in lines {
        // Header lines end in CRLF; a piece without the CR is the tail of the bytes (a line cut
        // off by the capture) or not HTTP: stop there rather than report a partial value.
        let line = line.strip_suffix(b"\r")?;
        if line.is_empty() {
            return None; // end of the header section
        }
        let colon = line.iter().position(|&c| c == b':')?;
        if line[..colon].eq_ignore_ascii_case(b"host") {
            let value = line[colon + 1..].trim_ascii();
            if value.is_empty() || !value.iter().all(|c| (0x21..0x7f).contains(c)) {
                return None;
            }
            return Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    None
}

/// The SSH identification string (RFC 4253 4.2).
fn ssh(b: &[u8]) -> Option<L7Info> {
    if b.starts_with(b"SSH-2.0-") || b.starts_with(b"SSH-1.99-") {
        Some(L7Info {
            proto: Some("ssh".into()),
            ..L7Info::default()
        })
    } else {
        None
    }
}

/// A plausible DNS query: a 12-byte header (after TCP's 2-byte length prefix) with QR 0, a
/// standard opcode (QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO), and 1 to 16 questions (or an
/// UPDATE's zones).
fn dns(b: &[u8], tcp: bool) -> bool {
    let mut r = Reader::new(b);
    if tcp {
        match r.u16() {
            Some(len) if len >= 12 => {}
            _ => return false,
        }
    }
    let Some(h) = r.take(12) else {
        return false;
    };
    let qr = h[2] & 0x80 != 0;
    let opcode = (h[2] >> 3) & 0x0f;
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    !qr && matches!(opcode, 0 | 1 | 2 | 4 | 5 | 6) && (1..=16).contains(&qdcount)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS 1.2/1.3 ClientHello naming `sni` (omitted when `None`), built field by field as
    /// RFC 8446 4.1.2 lays it out, with a second extension after the server_name.
    fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let name = name.as_bytes();
            exts.extend_from_slice(&[0x00, 0x00]); // extension type: server_name (0)
            let ext_len = 2 + 1 + 2 + name.len();
            exts.extend_from_slice(&(ext_len as u16).to_be_bytes()); // extension length
            exts.extend_from_slice(&((1 + 2 + name.len()) as u16).to_be_bytes()); // list len
            exts.push(0x00); // name_type: host_name (0)
            exts.extend_from_slice(&(name.len() as u16).to_be_bytes()); // HostName length
            exts.extend_from_slice(name); // HostName
        }
        exts.extend_from_slice(&[0x00, 0x2b]); // extension type: supported_versions (43)
        exts.extend_from_slice(&[0x00, 0x03]); // extension length 3
        exts.extend_from_slice(&[0x02, 0x03, 0x04]); // list of 2 bytes: TLS 1.3 (0x0304)

        let mut body = Vec::new();
        body.extend_from_slice(&[0x03, 0x03]); // legacy_version: TLS 1.2
        body.extend_from_slice(&[0xab; 32]); // random
        body.push(32); // legacy_session_id length
        body.extend_from_slice(&[0xcd; 32]); // legacy_session_id
        body.extend_from_slice(&[0x00, 0x04]); // cipher_suites length: 2 suites
        body.extend_from_slice(&[0x13, 0x01, 0x13, 0x02]); // TLS_AES_128_GCM_SHA256, _256_
        body.push(1); // legacy_compression_methods length
        body.push(0); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes()); // extensions length
        body.extend_from_slice(&exts);

        let mut hs = vec![0x01]; // handshake type: client_hello (1)
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]); // 24-bit length
        hs.extend_from_slice(&body);

        let mut rec = vec![0x16, 0x03, 0x01]; // handshake record, legacy version TLS 1.0
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes()); // record length
        rec.extend_from_slice(&hs);
        rec
    }

    fn tls_info(sni: Option<&str>) -> L7Info {
        L7Info {
            proto: Some("tls".into()),
            sni: sni.map(str::to_owned),
            ..L7Info::default()
        }
    }

    #[test]
    fn tls_client_hello_gives_the_sni() {
        let b = client_hello(Some("API.Example.org"));
        // Record header (type, version, length 112), then the handshake type.
        assert_eq!(b[..6], [0x16, 0x03, 0x01, 0x00, 0x70, 0x01]);
        assert_eq!(b.len(), 5 + 0x70);
        assert_eq!(
            identify(&b, true, 443),
            Some(tls_info(Some("api.example.org")))
        );
        // On any port: the bytes decide.
        assert_eq!(
            identify(&b, true, 8443),
            Some(tls_info(Some("api.example.org")))
        );
        // Not over UDP.
        assert_eq!(identify(&b, false, 443), None);
        // No server_name extension.
        assert_eq!(
            identify(&client_hello(None), true, 443),
            Some(tls_info(None))
        );
    }

    #[test]
    fn tls_cut_before_or_inside_the_sni_is_tls_without_sni() {
        let b = client_hello(Some("sni-test.example"));
        let name_at = b
            .windows(16)
            .position(|w| w == b"sni-test.example")
            .unwrap();
        // Cut anywhere after the handshake header, before the whole name: tls, no sni.
        for cut in 9..name_at + 16 {
            assert_eq!(
                identify(&b[..cut], true, 443),
                Some(tls_info(None)),
                "{cut}"
            );
        }
        // From the end of the name on: the sni.
        for cut in name_at + 16..=b.len() {
            assert_eq!(
                identify(&b[..cut], true, 443),
                Some(tls_info(Some("sni-test.example"))),
                "{cut}"
            );
        }
        // Shorter than the record and handshake headers: not identified.
        for cut in 0..9 {
            assert_eq!(identify(&b[..cut], true, 443), None);
        }
    }

    #[test]
    fn tls_with_a_malformed_name_has_no_sni() {
        let b = client_hello(Some("bad name!"));
        assert_eq!(identify(&b, true, 443), Some(tls_info(None)));
        // A server hello or an application data record is not a client's first flight.
        let mut b = client_hello(Some("a.test"));
        b[5] = 2;
        assert_eq!(identify(&b, true, 443), None);
        b[5] = 1;
        b[0] = 0x17;
        assert_eq!(identify(&b, true, 443), None);
    }

    /// A real ClientHello, as curl 7.88.1 with OpenSSL 3.0 sent it to a listener of ours on
    /// 127.0.0.1 (`curl -k --resolve sni-test.example:PORT:127.0.0.1 https://sni-test.example:PORT/`):
    /// 517 bytes, padded; the kernel captures its first 512.
    const CURL_CLIENT_HELLO: &[u8] = include_bytes!("../testdata/curl-client-hello.bin");

    #[test]
    fn a_real_client_hello_whole_and_as_captured() {
        assert_eq!(CURL_CLIENT_HELLO.len(), 517);
        let want = Some(tls_info(Some("sni-test.example")));
        assert_eq!(identify(CURL_CLIENT_HELLO, true, 443), want);
        assert_eq!(identify(&CURL_CLIENT_HELLO[..512], true, 443), want);
    }

    fn http_info(method: &str, path: &str, host: Option<&str>) -> L7Info {
        L7Info {
            proto: Some("http".into()),
            method: Some(method.into()),
            path: Some(path.into()),
            host: host.map(str::to_owned),
            ..L7Info::default()
        }
    }

    const HTTP_GET: &[u8] = b"GET /some/path?q=1 HTTP/1.1\r\nUser-Agent: curl/7.88.1\r\n\
        hOsT:  h.test:8080 \r\nAccept: */*\r\n\r\n";

    #[test]
    fn http_request_line_and_host() {
        assert_eq!(
            identify(HTTP_GET, true, 80),
            Some(http_info("GET", "/some/path?q=1", Some("h.test:8080")))
        );
        let post = b"POST /upload HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            identify(post, true, 8000),
            Some(http_info("POST", "/upload", None))
        );
        let connect = b"CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n\r\n";
        assert_eq!(
            identify(connect, true, 3128),
            Some(http_info(
                "CONNECT",
                "registry.test:443",
                Some("registry.test:443")
            ))
        );
        // Host after the end of the headers is the body, not a header.
        let body = b"PUT /x HTTP/1.1\r\n\r\nHost: no.test\r\n";
        assert_eq!(identify(body, true, 80), Some(http_info("PUT", "/x", None)));
        // Not HTTP/1.x: HTTP/2's preface, unknown methods, lower case, no version.
        assert_eq!(
            identify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, 80),
            None
        );
        assert_eq!(identify(b"FETCH / HTTP/1.1\r\n", true, 80), None);
        assert_eq!(identify(b"get / HTTP/1.1\r\n", true, 80), None);
        assert_eq!(identify(b"GET / SPDY/3\r\n", true, 80), None);
        assert_eq!(identify(HTTP_GET, false, 80), None);
    }

    #[test]
    fn http_cut_by_the_capture() {
        // The request line cut in the version: still http, no host.
        assert_eq!(
            identify(b"GET /long HTTP/1", true, 80),
            Some(http_info("GET", "/long", None))
        );
        // Cut in the Host line: no host (a partial value would be wrong).
        let cut = HTTP_GET.windows(6).position(|w| w == b"h.test").unwrap();
        assert_eq!(
            identify(&HTTP_GET[..cut + 3], true, 80),
            Some(http_info("GET", "/some/path?q=1", None))
        );
        // Cut in the target: not identified (the path would be wrong).
        assert_eq!(identify(b"GET /some/pa", true, 80), None);
    }

    #[test]
    fn ssh_banner() {
        let ssh = L7Info {
            proto: Some("ssh".into()),
            ..L7Info::default()
        };
        assert_eq!(
            identify(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", true, 22),
            Some(ssh.clone())
        );
        assert_eq!(identify(b"SSH-1.99-old\r\n", true, 2222), Some(ssh));
        assert_eq!(identify(b"SSH-1.5-older\r\n", true, 22), None);
    }

    /// A query for `a.test` A, id 0x1234, recursion desired.
    const DNS_QUERY: &[u8] = &[
        0x12, 0x34, // id
        0x01, 0x00, // flags: QR 0, opcode QUERY, RD
        0x00, 0x01, // QDCOUNT 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ANCOUNT, NSCOUNT, ARCOUNT
        1, b'a', 4, b't', b'e', b's', b't', 0, // QNAME a.test
        0x00, 0x01, 0x00, 0x01, // QTYPE A, QCLASS IN
    ];

    #[test]
    fn dns_on_port_53() {
        let dns = Some(L7Info {
            proto: Some("dns".into()),
            ..L7Info::default()
        });
        assert_eq!(identify(DNS_QUERY, false, 53), dns);
        let mut tcp = (DNS_QUERY.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(DNS_QUERY);
        assert_eq!(identify(&tcp, true, 53), dns);
        // Not on another port; not an answer; not without a question; not a short header.
        assert_eq!(identify(DNS_QUERY, false, 5353), None);
        let mut answer = DNS_QUERY.to_vec();
        answer[2] |= 0x80;
        assert_eq!(identify(&answer, false, 53), None);
        let mut empty = DNS_QUERY.to_vec();
        empty[5] = 0;
        assert_eq!(identify(&empty, false, 53), None);
        assert_eq!(identify(&DNS_QUERY[..11], false, 53), None);
        assert_eq!(identify(DNS_QUERY, true, 53), None, "TCP needs the length");
    }

    #[test]
    fn unknown_bytes_are_not_identified() {
        assert_eq!(identify(b"", true, 443), None);
        assert_eq!(identify(b"", false, 53), None);
        assert_eq!(identify(b"hello", true, 80), None);
        // A QUIC Initial (long header) is not identified.
        assert_eq!(identify(&[0xc3, 0, 0, 0, 1, 8], false, 443), None);
    }

    /// Every prefix of every sample, and random bytes (also behind valid headers), never panic.
    #[test]
    fn never_panics() {
        let samples: Vec<Vec<u8>> = vec![
            client_hello(Some("sni-test.example")),
            client_hello(None),
            HTTP_GET.to_vec(),
            b"SSH-2.0-x\r\n".to_vec(),
            DNS_QUERY.to_vec(),
            CURL_CLIENT_HELLO.to_vec(),
        ];
        for s in &samples {
            for cut in 0..=s.len() {
                for tcp in [true, false] {
                    let _ = identify(&s[..cut], tcp, 53);
                    let _ = identify(&s[..cut], tcp, 443);
                }
            }
        }
        // xorshift64: deterministic random bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let hello = client_hello(Some("sni-test.example"));
        for i in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half of them start like a ClientHello, so that the extension walk sees garbage.
            if i % 2 == 0 {
                let keep = (next() as usize % hello.len()).min(b.len());
                b[..keep].copy_from_slice(&hello[..keep]);
                // And corrupt one length byte of the real structure.
                if keep > 0 {
                    let at = next() as usize % keep;
                    b[at] = next() as u8;
                }
            }
            let _ = identify(&b, next() % 2 == 0, if i % 3 == 0 { 53 } else { 443 });
        }
    }
}
