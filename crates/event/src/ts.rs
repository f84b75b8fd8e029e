//! RFC 3339 timestamps <-> unix nanoseconds, without allocation-heavy date libraries on the hot path.

use crate::EventError;

const NS_PER_S: u64 = 1_000_000_000;

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Two ASCII digits of each number below 100, in order: `00`, `01`, ... `99`.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

thread_local! {
    /// The second last formatted on this thread and its 20 bytes `YYYY-MM-DDTHH:MM:SS.`:
    /// events come in bursts within one second, so the calendar is worked out once per second.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// Writes the canonical form of `ts_ns` (30 ASCII bytes) into `out`.
pub(crate) fn format_ts_bytes(ts_ns: u64, out: &mut [u8; 30]) {
    let secs = ts_ns / NS_PER_S;
    let nanos = (ts_ns % NS_PER_S) as u32;
    let (last, prefix) = LAST_SECOND.get();
    if last == secs {
        out[..20].copy_from_slice(&prefix);
    } else {
        format_second(secs, out);
        let mut prefix = [0; 20];
        prefix.copy_from_slice(&out[..20]);
        LAST_SECOND.set((secs, prefix));
    }
    // Nine digits of nanoseconds, two at a time from the right.
    let mut v = nanos;
    for at in [27, 25, 23, 21] {
        let pair = (v % 100) as usize * 2;
        out[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        v /= 100;
    }
    out[20] = b'0' + v as u8;
    out[29] = b'Z';
}

/// Writes `YYYY-MM-DDTHH:MM:SS.` of unix second `secs` into `out[..20]`.
fn format_second(secs: u64, out: &mut [u8; 30]) {
    let days = (secs / 86_400) as i64;
    let sod = (secs % 86_400) as u32;
    let (y, mo, d) = civil_from_days(days);
    let y = y as u32; // u64 ns ends in year 2554: always four digits
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, mo, 2);
    put(8, d, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
}

/// Canonical `ts` for unix nanoseconds: RFC 3339, UTC, exactly 9 fractional digits, `Z`
/// (e.g. `2026-06-29T10:04:00.123456789Z`).
pub fn format_ts(ts_ns: u64) -> String {
    let mut buf = [0u8; 30];
    format_ts_bytes(ts_ns, &mut buf);
    // All bytes written above are ASCII (checked at once by the ASCII fast path).
    std::str::from_utf8(&buf)
        .expect("format_ts_bytes writes ASCII")
        .to_owned()
}

/// Parses an RFC 3339 timestamp with any number of fractional digits (beyond 9 are truncated)
/// and any offset (converted to UTC) into unix nanoseconds. `T`/`t`/space separators and
/// `Z`/`z` are accepted. Times before 1970 or after 2554 are errors, as are leap seconds.
pub fn parse_ts(s: &str) -> Result<u64, EventError> {
    parse_inner(s.as_bytes()).map_err(|reason| EventError::Timestamp {
        value: s.to_string(),
        reason: reason.to_string(),
    })
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, &'static str> {
    let part = b.get(at..at + n).ok_or("too short")?;
    let mut v = 0u32;
    for &c in part {
        if !c.is_ascii_digit() {
            return Err("expected a digit");
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, what: &[u8], err: &'static str) -> Result<(), &'static str> {
    match b.get(at) {
        Some(c) if what.contains(c) => Ok(()),
        _ => Err(err),
    }
}

fn parse_inner(b: &[u8]) -> Result<u64, &'static str> {
    let y = digits(b, 0, 4).map_err(|_| "expected a four-digit year first")?;
    expect(b, 4, b"-", "expected '-' after the year")?;
    let mo = digits(b, 5, 2).map_err(|_| "expected a two-digit month")?;
    expect(b, 7, b"-", "expected '-' after the month")?;
    let d = digits(b, 8, 2).map_err(|_| "expected a two-digit day")?;
    expect(b, 10, b"Tt ", "expected 'T' between date and time")?;
    let h = digits(b, 11, 2).map_err(|_| "expected a two-digit hour")?;
    expect(b, 13, b":", "expected ':' after the hour")?;
    let mi = digits(b, 14, 2).map_err(|_| "expected two-digit minutes")?;
    expect(b, 16, b":", "expected ':' after the minutes")?;
    let sec = digits(b, 17, 2).map_err(|_| "expected two-digit seconds")?;
    let y = i64::from(y);
    if !(1..=12).contains(&mo) {
        return Err("month out of range");
    }
    if d == 0 || d > days_in_month(y, mo) {
        return Err("day out of range for the month");
    }
    if h > 23 || mi > 59 {
        return Err("hour or minute out of range");
    }
    if sec == 60 {
        return Err("leap second (:60) is not supported");
    }
    if sec > 59 {
        return Err("seconds out of range");
    }
    let mut i = 19;
    let mut frac: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                frac = frac * 10 + u64::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err("expected digits after '.'");
        }
        for _ in n..9 {
            frac *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z') | Some(b'z') => {
            i += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2).map_err(|_| "expected a two-digit offset hour")?;
            expect(b, i + 3, b":", "expected ':' in the offset")?;
            let om = digits(b, i + 4, 2).map_err(|_| "expected two-digit offset minutes")?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            i += 6;
            let o = i64::from(oh * 3600 + om * 60);
            if c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err("expected 'Z' or an offset like +02:00 after the time"),
    };
    if i != b.len() {
        return Err("unexpected characters after the offset");
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_s;
    if secs < 0 {
        return Err("before 1970-01-01T00:00:00Z");
    }
    (secs as u64)
        .checked_mul(NS_PER_S)
        .and_then(|n| n.checked_add(frac))
        .ok_or("too far in the future for u64 nanoseconds (after 2554)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn known_values() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_ts(1_782_727_440_123_456_789),
            "2026-06-29T10:04:00.123456789Z"
        );
        assert_eq!(
            parse_ts("2026-06-29T10:04:00.123456789Z").unwrap(),
            1_782_727_440_123_456_789
        );
        assert_eq!(
            parse_ts("2026-06-29T10:04:00.123Z").unwrap(),
            1_782_727_440_123_000_000
        );
        assert_eq!(
            parse_ts("2026-06-29T12:04:00.123456789123+02:00").unwrap(),
            1_782_727_440_123_456_789
        );
        assert_eq!(
            parse_ts("2026-06-29 10:04:00z").unwrap(),
            1_782_727_440_000_000_000
        );
        assert_eq!(
            parse_ts("2026-06-29T05:04:00-05:00").unwrap(),
            1_782_727_440_000_000_000
        );
        assert_eq!(format_ts(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        assert_eq!(parse_ts(&format_ts(u64::MAX)).unwrap(), u64::MAX);
    }

    /// The second's text is remembered between calls: a run of times inside one second, across
    /// a second, a day and a year, and back again, each as chrono writes it.
    #[test]
    fn remembered_second_is_used_only_for_its_own_second() {
        let new_year = 1_798_761_600 * NS_PER_S; // 2027-01-01T00:00:00Z
        let times = [
            new_year - NS_PER_S,
            new_year - NS_PER_S + 1,
            new_year - 1,
            new_year,
            new_year + 999_999_999,
            new_year + NS_PER_S,
            new_year - 1,
            1_782_727_440_000_000_007,
            1_782_727_440_100_000_000,
            86_400 * NS_PER_S - 1,
            86_400 * NS_PER_S,
        ];
        for t in times {
            let want = DateTime::<Utc>::from_timestamp_nanos(t as i64)
                .format("%Y-%m-%dT%H:%M:%S%.9fZ")
                .to_string();
            assert_eq!(format_ts(t), want, "{t}");
        }
        assert_eq!(format_ts(new_year - 1), "2026-12-31T23:59:59.999999999Z");
        assert_eq!(format_ts(new_year + 10), "2027-01-01T00:00:00.000000010Z");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "2026-06-29",
            "2026-06-29T10:04:00",
            "2026-02-30T10:04:00Z",
            "2026-13-01T10:04:00Z",
            "2026-06-29T24:00:00Z",
            "2026-06-29T10:04:60Z",
            "2026-06-29T10:04:00.Z",
            "2026-06-29T10:04:00Zjunk",
            "1969-12-31T23:59:59Z",
            "2600-01-01T00:00:00Z",
            "yesterday",
        ] {
            let e = parse_ts(bad).unwrap_err();
            assert!(e.to_string().starts_with("ts: "), "{e}");
        }
        assert!(parse_ts("2024-02-29T00:00:00Z").is_ok());
        assert!(parse_ts("2023-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn agrees_with_chrono() {
        let mut x: u64 = 0x1234_5678;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let ns = x % 16_000_000_000_000_000_000;
            let s = format_ts(ns);
            let c = DateTime::<Utc>::from_timestamp((ns / NS_PER_S) as i64, (ns % NS_PER_S) as u32)
                .unwrap();
            assert_eq!(s, c.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string());
            assert_eq!(parse_ts(&s).unwrap(), ns);
            let off =
                c.with_timezone(&chrono::FixedOffset::east_opt(-(7 * 3600 + 30 * 60)).unwrap());
            assert_eq!(parse_ts(&off.to_rfc3339()).unwrap(), ns);
        }
    }
}
