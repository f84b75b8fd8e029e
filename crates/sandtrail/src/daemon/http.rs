//! The little HTTP/1.1 the API needs: one request per connection (`Connection: close`), a
//! `Content-Length` body, JSON in and out. Anything else is refused with a status that says why.

use std::io::{BufRead, BufReader, Read, Write};

/// Largest request head (request line + headers).
const MAX_HEAD: usize = 16 << 10;
/// Largest request body.
const MAX_BODY: usize = 1 << 20;

/// A parsed request.
#[derive(Debug, Default, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The bearer token of `Authorization: Bearer ...`, if any.
    pub bearer: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A response: status and JSON body.
#[derive(Debug, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Response { status, body }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Response {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one request. `Err(response)` is what to answer when it is malformed.
pub fn read_request(conn: impl Read) -> Result<Request, Response> {
    let mut r = BufReader::new(conn.take((MAX_HEAD + MAX_BODY) as u64));
    let mut head_len = 0usize;
    let mut line = String::new();
    let mut next_line = |r: &mut BufReader<_>, line: &mut String| -> Result<(), Response> {
        line.clear();
        let n = r
            .read_line(line)
            .map_err(|e| Response::error(400, format!("reading the request: {e}")))?;
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(Response::error(413, "request head larger than 16 KiB"));
        }
        if n == 0 {
            return Err(Response::error(
                400,
                "connection closed inside the request head",
            ));
        }
        Ok(())
    };
    next_line(&mut r, &mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(
            400,
            format!("malformed request line {:?}", line.trim_end()),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::error(
            400,
            format!("unsupported protocol {version}: use HTTP/1.1"),
        ));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        ..Default::default()
    };
    let mut length: Option<usize> = None;
    loop {
        next_line(&mut r, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(Response::error(400, format!("malformed header line {l:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse().map_err(|_| {
                    Response::error(400, format!("Content-Length {value:?} is not a number"))
                })?)
            }
            "transfer-encoding" => {
                return Err(Response::error(
                    411,
                    "chunked bodies are not supported: send Content-Length",
                ))
            }
            "authorization" => {
                let mut it = value.splitn(2, ' ');
                if it.next().is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
                    req.bearer = it.next().map(|t| t.trim().to_string());
                }
            }
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Response::error(413, "request body larger than 1 MiB"));
    }
    req.body.resize(length, 0);
    r.read_exact(&mut req.body)
        .map_err(|e| Response::error(400, format!("reading the {length}-byte body: {e}")))?;
    Ok(req)
}

/// Writes `resp` and ends the exchange.
pub fn write_response(mut conn: impl Write, resp: &Response) -> std::io::Result<()> {
    let mut body = serde_json::to_vec_pretty(&resp.body).expect("JSON values serialize");
    body.push(b'\n');
    write!(
        conn,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    )?;
    conn.write_all(&body)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_post_with_body_and_token() {
        let raw = b"POST /v1/sessions?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\n\r\n{}";
        let r = read_request(&raw[..]).unwrap();
        assert_eq!(
            r,
            Request {
                method: "POST".into(),
                path: "/v1/sessions".into(),
                bearer: Some("s3cret".into()),
                body: b"{}".to_vec(),
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_handle() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(read_request(&chunked[..]).unwrap_err().status, 411);
        let big = b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert_eq!(read_request(&big[..]).unwrap_err().status, 413);
        let short = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}";
        assert_eq!(read_request(&short[..]).unwrap_err().status, 400);
        let garbage = b"hello\r\n\r\n";
        assert_eq!(read_request(&garbage[..]).unwrap_err().status, 400);
        let huge_head = [b'a'; 20_000];
        assert_eq!(read_request(&huge_head[..]).unwrap_err().status, 413);
    }

    #[test]
    fn writes_json_with_length() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::error(404, "no")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 20\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\n{\n  \"error\": \"no\"\n}\n"), "{s}");
    }
}
