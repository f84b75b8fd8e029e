//! Reading and writing cgroup interface files, and parsing their formats.
//!
//! The parsers are pure functions on file contents so they can be tested without root:
//! flat-keyed files (`cpu.stat`, `memory.events`, `pids.events`, `memory.oom_control`: one
//! `key value` pair a line), single values that may be `max` (`memory.max`, `pids.max`), and
//! `cpu.max` (`QUOTA PERIOD`, quota `max` when unlimited).

use std::io;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Reads a whole interface file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// Reads a file if it exists: `Ok(None)` when it does not (an older kernel or a controller that
/// is not in use), an error for anything else.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("read", path, e)),
    }
}

/// Reads a file holding one unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    parse_u64(&text).ok_or_else(|| CgroupError::parse(path, "an unsigned integer", &text))
}

/// Reads a file holding one integer or `max` (`None`).
pub(crate) fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    parse_max(&text).ok_or_else(|| CgroupError::parse(path, "an unsigned integer or `max`", &text))
}

/// Reads one key of a flat-keyed file; `Ok(0)` if the file or the key is absent.
pub(crate) fn read_key_or_zero(path: &Path, key: &str) -> Result<u64, CgroupError> {
    Ok(read_opt(path)?.and_then(|t| flat_key(&t, key)).unwrap_or(0))
}

/// Writes `value` to an interface file (one `write(2)`, as the kernel expects).
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| CgroupError::io("write", path, e))
}

/// Creates a directory; `Ok(false)` if it already existed.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::io("create directory", path, e)),
    }
}

/// Reads a `cgroup.procs` file: the pids in it, sorted.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = read(path)?;
    let mut pids =
        parse_procs(&text).ok_or_else(|| CgroupError::parse(path, "one pid a line", &text))?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// `path/file`.
pub(crate) fn join(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

/// Parses one unsigned integer (surrounding whitespace allowed).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parses a value that may be `max`: `Some(None)` for `max`, `Some(Some(n))` for a number.
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        t => t.parse().ok().map(Some),
    }
}

/// Parses `cpu.max` (`"QUOTA PERIOD"`, QUOTA `max` when unlimited): `Some(None)` when unlimited,
/// `Some(Some((quota_us, period_us)))` otherwise.
pub fn parse_cpu_max(text: &str) -> Option<Option<(u64, u64)>> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    match quota {
        "max" => Some(None),
        q => Some(Some((q.parse().ok()?, period))),
    }
}

/// Looks up `key` in a flat-keyed file (`key value` lines, as `cpu.stat`, `memory.events`,
/// `pids.events`, v1 `memory.oom_control`). `None` if the key is absent or its value is not an
/// unsigned integer.
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Parses a `cgroup.procs` file (one pid a line).
pub fn parse_procs(text: &str) -> Option<Vec<i32>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().ok())
        .collect()
}

/// v1 memory limits print "unlimited" as the largest page-aligned `i64` (9223372036854771712);
/// anything at or above 2^62 is treated as no limit.
pub fn v1_limit(value: u64) -> Option<u64> {
    (value < 1 << 62).then_some(value)
}

/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` to `(quota_us, period_us)`; quota -1: none.
pub fn v1_cpu_quota(quota: &str, period: &str) -> Option<Option<(u64, u64)>> {
    let period: u64 = period.trim().parse().ok()?;
    let quota: i64 = quota.trim().parse().ok()?;
    Some((quota >= 0).then_some((quota as u64, period)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real file contents, copied from a 6.18 kernel (v1 and v2) and a 5.15 kernel (v2).
    const V2_CPU_STAT: &str = "usage_usec 1523411\nuser_usec 1402133\nsystem_usec 121278\n\
        core_sched.force_idle_usec 0\nnr_periods 21\nnr_throttled 19\nthrottled_usec 3612880\n\
        nr_bursts 0\nburst_usec 0\n";
    const V1_CPU_STAT: &str =
        "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n";
    const V1_CPU_STAT_THROTTLED: &str =
        "nr_periods 20\nnr_throttled 18\nthrottled_time 1457316390\nnr_bursts 0\nburst_time 0\n";
    const V2_MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 112\noom 1\noom_kill 1\noom_group_kill 0\n";
    const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
    const V1_OOM_CONTROL_OLD: &str = "oom_kill_disable 0\nunder_oom 0\n";
    const PIDS_EVENTS: &str = "max 7\n";

    #[test]
    fn cpu_stat() {
        assert_eq!(flat_key(V2_CPU_STAT, "usage_usec"), Some(1523411));
        assert_eq!(flat_key(V2_CPU_STAT, "nr_periods"), Some(21));
        assert_eq!(flat_key(V2_CPU_STAT, "nr_throttled"), Some(19));
        assert_eq!(flat_key(V2_CPU_STAT, "throttled_usec"), Some(3612880));
        // A key must match whole, not as a prefix of another key.
        assert_eq!(flat_key(V2_CPU_STAT, "usage"), None);
        assert_eq!(flat_key(V1_CPU_STAT, "throttled_time"), Some(0));
        assert_eq!(flat_key(V1_CPU_STAT_THROTTLED, "nr_throttled"), Some(18));
        assert_eq!(
            flat_key(V1_CPU_STAT_THROTTLED, "throttled_time"),
            Some(1457316390)
        );
    }

    #[test]
    fn memory_events_and_oom_control() {
        assert_eq!(flat_key(V2_MEMORY_EVENTS, "oom_kill"), Some(1));
        assert_eq!(flat_key(V2_MEMORY_EVENTS, "max"), Some(112));
        assert_eq!(flat_key(V1_OOM_CONTROL, "oom_kill"), Some(2));
        assert_eq!(flat_key(V1_OOM_CONTROL, "under_oom"), Some(0));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(flat_key(V1_OOM_CONTROL_OLD, "oom_kill"), None);
    }

    #[test]
    fn pids_events() {
        assert_eq!(flat_key(PIDS_EVENTS, "max"), Some(7));
        assert_eq!(flat_key("", "max"), None);
    }

    #[test]
    fn single_values() {
        assert_eq!(parse_u64("33554432\n"), Some(33554432));
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(parse_max("max\n"), Some(None));
        assert_eq!(parse_max("8\n"), Some(Some(8)));
        assert_eq!(parse_max("-1\n"), None);
        assert_eq!(v1_limit(9223372036854771712), None);
        assert_eq!(v1_limit(33554432), Some(33554432));
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("20000 100000\n"), Some(Some((20000, 100000))));
        assert_eq!(parse_cpu_max("20000\n"), None);
        assert_eq!(v1_cpu_quota("-1\n", "100000\n"), Some(None));
        assert_eq!(
            v1_cpu_quota("20000\n", "100000\n"),
            Some(Some((20000, 100000)))
        );
    }

    #[test]
    fn procs() {
        assert_eq!(parse_procs("12\n7\n"), Some(vec![12, 7]));
        assert_eq!(parse_procs(""), Some(vec![]));
        assert_eq!(parse_procs("x\n"), None);
    }
}
