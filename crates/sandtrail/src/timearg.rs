//! Parsing time arguments: RFC 3339, unix nanoseconds, or "how long ago" (`90s`, `15m`, `2h`, `7d`).

use anyhow::{bail, Result};

/// Parse `--since`/`--until` values into unix nanoseconds.
pub fn parse_time(s: &str) -> Result<u64> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<u64>() {
        return Ok(ns);
    }
    if let Some((num, unit)) = s
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, _)| s.split_at(i))
    {
        if let (Ok(n), Some(secs)) = (
            num.parse::<u64>(),
            match unit {
                "s" => Some(1u64),
                "m" => Some(60),
                "h" => Some(3600),
                "d" => Some(86400),
                _ => None,
            },
        ) {
            let ago = n.saturating_mul(secs).saturating_mul(1_000_000_000);
            return Ok(sandtrail_store::now_ns().saturating_sub(ago));
        }
    }
    match sandtrail_event::parse_ts(s) {
        Ok(ns) => Ok(ns),
        Err(_) => bail!(
            "cannot read time {s:?}: give RFC 3339 (2026-06-29T10:04:00Z), unix nanoseconds, or an age like 15m, 2h, 7d"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(
            parse_time("1782727440123456789").unwrap(),
            1782727440123456789
        );
        assert_eq!(
            parse_time("2026-06-29T10:04:00.123456789Z").unwrap(),
            1782727440123456789
        );
        let t = parse_time("2h").unwrap();
        let now = sandtrail_store::now_ns();
        assert!(now - t >= 7_200_000_000_000 && now - t < 7_260_000_000_000);
        let err = parse_time("yesterday").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read time \"yesterday\""),
            "{err:#}"
        );
    }
}
