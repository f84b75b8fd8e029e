//! Runs: one session's events within one index transaction, packed as
//! `varint(seq delta) ‖ kind byte ‖ zigzag varint(time delta)` per event. The first event's
//! deltas are from the run's first seq and from time 0.

/// Events of one session being gathered for one run.
#[derive(Debug, Default, Clone)]
pub struct RunBuilder {
    first_seq: u64,
    last_seq: u64,
    last_ts: u64,
    min_ts: u64,
    max_ts: u64,
    n: u64,
    packed: Vec<u8>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

impl RunBuilder {
    /// Add an event (seqs must increase).
    pub fn push(&mut self, seq: u64, kind: u8, ts: u64) {
        if self.n == 0 {
            self.first_seq = seq;
            self.last_seq = seq;
            self.last_ts = 0;
            self.min_ts = ts;
            self.max_ts = ts;
        }
        put_varint(&mut self.packed, seq - self.last_seq);
        self.packed.push(kind);
        let d = ts.wrapping_sub(self.last_ts) as i64;
        put_varint(&mut self.packed, ((d << 1) ^ (d >> 63)) as u64);
        self.last_seq = seq;
        self.last_ts = ts;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.n += 1;
    }

    /// Number of events.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// (first seq, last seq, min time, max time, packed bytes).
    pub fn parts(&self) -> (u64, u64, u64, u64, &[u8]) {
        (
            self.first_seq,
            self.last_seq,
            self.min_ts,
            self.max_ts,
            &self.packed,
        )
    }
}

/// Unpack a run into (seq, kind, time); `None` if the bytes are damaged.
pub fn unpack(first_seq: u64, n: u64, packed: &[u8]) -> Option<Vec<(u64, u8, u64)>> {
    let mut out = Vec::with_capacity(n as usize);
    let (mut seq, mut ts, mut pos) = (first_seq, 0u64, 0usize);
    for _ in 0..n {
        let dseq = get_varint(packed, &mut pos)?;
        let kind = *packed.get(pos)?;
        pos += 1;
        let z = get_varint(packed, &mut pos)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        seq = seq.checked_add(dseq)?;
        ts = ts.wrapping_add(d as u64);
        out.push((seq, kind, ts));
    }
    (pos == packed.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_unordered_times() {
        let mut r = RunBuilder::default();
        let events: [(u64, u8, u64); 4] = [
            (10, 3, 1_782_727_440_000_000_000),
            (12, 8, 1_782_727_439_000_000_000),
            (13, 8, 1_782_727_445_000_000_000),
            (400, 1, 1_782_727_445_000_000_001),
        ];
        for &(s, k, t) in &events {
            r.push(s, k, t);
        }
        let (first, last, min, max, packed) = r.parts();
        assert_eq!(
            (first, last, min, max),
            (
                10,
                400,
                1_782_727_439_000_000_000,
                1_782_727_445_000_000_001
            )
        );
        let back = unpack(first, r.len(), packed).unwrap();
        assert_eq!(back, events.to_vec());
        assert!(unpack(first, r.len() + 1, packed).is_none());
        assert!(unpack(first, r.len(), &packed[..packed.len() - 1]).is_none());
    }
}
