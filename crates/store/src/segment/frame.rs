//! Record framing inside raw segments: `u32 LE length | 32-byte leaf hash | leaf bytes`.
//!
//! The leaf hash makes a torn or corrupted record recognisable on its own, without the tree.

use sandtrail_ledger::{leaf_hash, Hash};

/// Bytes before the leaf data in a frame.
pub const FRAME_HEADER: usize = 4 + 32;
/// Largest leaf accepted (an event is far smaller; a bigger length means corruption).
pub const MAX_LEAF: usize = 16 << 20;

/// Append one framed record to `buf`.
pub fn push_frame(buf: &mut Vec<u8>, hash: &Hash, leaf: &[u8]) {
    buf.extend_from_slice(&(leaf.len() as u32).to_le_bytes());
    buf.extend_from_slice(hash);
    buf.extend_from_slice(leaf);
}

/// One record read back from a frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The leaf hash stored in the frame.
    pub stored_hash: &'a [u8; 32],
    /// The leaf bytes.
    pub leaf: &'a [u8],
    /// Total bytes the frame occupies.
    pub len: usize,
}

/// Why the bytes at some offset are not a whole, intact frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameFault {
    /// Fewer bytes remain than the header or the announced length needs (a torn write).
    Short { have: usize, need: usize },
    /// The announced length is implausible.
    BadLength(usize),
    /// The data does not hash to the stored leaf hash.
    HashMismatch,
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::Short { have, need } => {
                write!(f, "record is cut short ({have} of {need} bytes present)")
            }
            FrameFault::BadLength(n) => write!(f, "record length {n} is implausible"),
            FrameFault::HashMismatch => {
                write!(f, "record content does not match its stored leaf hash")
            }
        }
    }
}

/// Parse the frame at the start of `buf`; `check_hash` recomputes the leaf hash.
pub fn read_frame(buf: &[u8], check_hash: bool) -> Result<Frame<'_>, FrameFault> {
    if buf.len() < FRAME_HEADER {
        return Err(FrameFault::Short {
            have: buf.len(),
            need: FRAME_HEADER,
        });
    }
    let n = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if n == 0 || n > MAX_LEAF {
        return Err(FrameFault::BadLength(n));
    }
    if buf.len() < FRAME_HEADER + n {
        return Err(FrameFault::Short {
            have: buf.len(),
            need: FRAME_HEADER + n,
        });
    }
    let stored_hash: &[u8; 32] = buf[4..36].try_into().expect("32 bytes");
    let leaf = &buf[FRAME_HEADER..FRAME_HEADER + n];
    if check_hash && leaf_hash(leaf) != *stored_hash {
        return Err(FrameFault::HashMismatch);
    }
    Ok(Frame {
        stored_hash,
        leaf,
        len: FRAME_HEADER + n,
    })
}

/// Read the `seq` of a canonical leaf without decoding the whole event.
///
/// Canonical leaves start with the version byte and `{"schema":"sandtrail.event/1","seq":`
/// (the struct's field order is part of the canonical encoding), so the number is at a fixed
/// place. Returns `None` when the leaf does not have that shape.
pub fn leaf_seq(leaf: &[u8]) -> Option<u64> {
    const PREFIX: &[u8] = b"{\"schema\":\"sandtrail.event/1\",\"seq\":";
    let rest = leaf.strip_prefix(&[sandtrail_event::LEAF_VERSION])?;
    let rest = rest.strip_prefix(PREFIX)?;
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0 && rest.get(digits) == Some(&b',')).then_some(n)
}

/// The fields a sealer needs, read from a canonical leaf's fixed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafHeader<'a> {
    /// Leaf index.
    pub seq: u64,
    /// Event time, unix ns.
    pub ts_ns: u64,
    /// Session id, if the event has one.
    pub session_id: Option<&'a str>,
}

/// Read seq, time and session of a canonical leaf without decoding the rest: the canonical
/// encoding begins `{"schema":..,"seq":N,"ts":"..","ts_ns":N` and then `,"session_id":".."`
/// when there is a session. Returns `None` for anything else (including a session id with
/// JSON escapes), and the caller decodes the leaf fully.
pub fn leaf_header(leaf: &[u8]) -> Option<LeafHeader<'_>> {
    fn number(b: &[u8]) -> Option<(u64, &[u8])> {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 20 {
            return None;
        }
        let n = std::str::from_utf8(&b[..digits]).ok()?.parse().ok()?;
        Some((n, &b[digits..]))
    }
    fn string(b: &[u8]) -> Option<(&str, &[u8])> {
        let b = b.strip_prefix(b"\"")?;
        let end = b.iter().position(|&c| c == b'"' || c == b'\\')?;
        if b[end] != b'"' {
            return None;
        }
        Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
    }
    let seq = leaf_seq(leaf)?;
    let rest = &leaf[leaf.iter().position(|&c| c == b',')? + 1..]; // after "schema":..
    let rest = &rest[rest.iter().position(|&c| c == b',')? + 1..]; // after "seq":N
    let rest = rest.strip_prefix(b"\"ts\":")?;
    let (_, rest) = string(rest)?;
    let rest = rest.strip_prefix(b",\"ts_ns\":")?;
    let (ts_ns, rest) = number(rest)?;
    let session_id = match rest.strip_prefix(b",\"session_id\":") {
        Some(r) => Some(string(r)?.0),
        None => None,
    };
    Some(LeafHeader {
        seq,
        ts_ns,
        session_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_faults() {
        let leaf = b"\x01{\"schema\":\"sandtrail.event/1\",\"seq\":42,\"x\":1}";
        let mut buf = Vec::new();
        push_frame(&mut buf, &leaf_hash(leaf), leaf);
        let f = read_frame(&buf, true).unwrap();
        assert_eq!(f.leaf, leaf);
        assert_eq!(f.len, buf.len());
        assert_eq!(leaf_seq(f.leaf), Some(42));
        assert_eq!(
            read_frame(&buf[..buf.len() - 1], true).unwrap_err(),
            FrameFault::Short {
                have: buf.len() - 1,
                need: buf.len()
            }
        );
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            read_frame(&bad, true).unwrap_err(),
            FrameFault::HashMismatch
        );
        assert!(read_frame(&bad, false).is_ok());
        assert_eq!(
            read_frame(&[0; 40], true).unwrap_err(),
            FrameFault::BadLength(0)
        );
    }

    #[test]
    fn leaf_header_matches_full_decode() {
        use sandtrail_event::{encode_leaf, Event, Kind, Source};
        let mut with = Event::new(
            Kind::AuditLoss,
            Source::Kernel,
            Some("ses_a".into()),
            "h",
            1_782_727_440_123_456_789,
        );
        with.seq = 77;
        let leaf = encode_leaf(&with);
        assert_eq!(
            leaf_header(&leaf),
            Some(LeafHeader {
                seq: 77,
                ts_ns: 1_782_727_440_123_456_789,
                session_id: Some("ses_a")
            })
        );
        let mut without = with.clone();
        without.session_id = None;
        let leaf = encode_leaf(&without);
        assert_eq!(leaf_header(&leaf).unwrap().session_id, None);
        // A session id with an escape is left to the full decoder.
        let mut odd = with.clone();
        odd.session_id = Some("ses_\"quoted\"".into());
        assert_eq!(leaf_header(&encode_leaf(&odd)), None);
    }

    #[test]
    fn leaf_seq_needs_canonical_prefix() {
        assert_eq!(
            leaf_seq(b"\x01{\"schema\":\"sandtrail.event/1\",\"seq\":7,"),
            Some(7)
        );
        assert_eq!(
            leaf_seq(b"\x02{\"schema\":\"sandtrail.event/1\",\"seq\":7,"),
            None
        );
        assert_eq!(leaf_seq(b"\x01{\"seq\":7,"), None);
        assert_eq!(
            leaf_seq(b"\x01{\"schema\":\"sandtrail.event/1\",\"seq\":,"),
            None
        );
    }
}
