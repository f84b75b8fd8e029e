//! cgroup v1 interface files of one controller directory: memory, cpu and cpuacct limits and
//! usage, and the freezer. (`pids.*` is identical to v2: see `v2`.)

use std::path::Path;
use std::time::Duration;

use super::files::{self, flat_key, join};
use super::{CgroupError, Usage};

/// `memory.limit_in_bytes` = `bytes`; `memory.memsw.limit_in_bytes` = `bytes` where it exists
/// (swap accounting on), so that swap does not hide the limit; `memory.swappiness` = 0 where
/// writable (best effort: some kernels refuse it).
pub(crate) fn set_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    files::write(&join(dir, "memory.limit_in_bytes"), &bytes.to_string())?;
    let memsw = join(dir, "memory.memsw.limit_in_bytes");
    if memsw.exists() {
        files::write(&memsw, &bytes.to_string())?;
    }
    let _ = std::fs::write(join(dir, "memory.swappiness"), "0");
    Ok(())
}

/// `cpu.cfs_period_us` = `period_us`, then `cpu.cfs_quota_us` = `quota_us`.
pub(crate) fn set_cpu(dir: &Path, quota_us: u64, period_us: u64) -> Result<(), CgroupError> {
    files::write(&join(dir, "cpu.cfs_period_us"), &period_us.to_string())?;
    files::write(&join(dir, "cpu.cfs_quota_us"), &quota_us.to_string())
}

/// Fills the memory fields of `u` from `memory.usage_in_bytes`, `memory.max_usage_in_bytes`,
/// `memory.limit_in_bytes` and `memory.oom_control` (`oom_kill`, kernel 4.13+).
pub(crate) fn memory_usage(dir: &Path, u: &mut Usage) -> Result<(), CgroupError> {
    u.memory_current = files::read_u64(&join(dir, "memory.usage_in_bytes"))?;
    u.memory_peak = files::read_u64(&join(dir, "memory.max_usage_in_bytes"))?;
    u.memory_limit = files::v1_limit(files::read_u64(&join(dir, "memory.limit_in_bytes"))?);
    u.oom_kills = files::read_key_or_zero(&join(dir, "memory.oom_control"), "oom_kill")?;
    Ok(())
}

/// Fills the CPU throttling fields of `u` from `cpu.stat` and `cpu.cfs_quota_us`/`cfs_period_us`.
pub(crate) fn cpu_usage(dir: &Path, u: &mut Usage) -> Result<(), CgroupError> {
    let stat = files::read(&join(dir, "cpu.stat"))?;
    u.cpu_periods = flat_key(&stat, "nr_periods").unwrap_or(0);
    u.cpu_throttled_periods = flat_key(&stat, "nr_throttled").unwrap_or(0);
    u.cpu_throttled_ns = flat_key(&stat, "throttled_time").unwrap_or(0);
    let quota_path = join(dir, "cpu.cfs_quota_us");
    let quota = files::read(&quota_path)?;
    let period = files::read(&join(dir, "cpu.cfs_period_us"))?;
    u.cpu_quota = files::v1_cpu_quota(&quota, &period)
        .ok_or_else(|| CgroupError::parse(&quota_path, "an integer quota and period", &quota))?;
    Ok(())
}

/// CPU time in ns from `cpuacct.usage`.
pub(crate) fn cpuacct_ns(dir: &Path) -> Result<u64, CgroupError> {
    files::read_u64(&join(dir, "cpuacct.usage"))
}

/// Writes `freezer.state` (`FROZEN` or `THAWED`) and waits until it reads back as such
/// (freezing goes through `FREEZING`).
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let path = join(dir, "freezer.state");
    files::write(&path, if frozen { "FROZEN" } else { "THAWED" })?;
    super::session::wait_for(
        &path,
        if frozen { "frozen" } else { "thawed" },
        Duration::from_secs(5),
        "a process may be stuck in the kernel (uninterruptible sleep, state D); the state stays FREEZING",
        || Ok(is_frozen(dir)? == frozen),
    )
}

/// Whether `freezer.state` reads `FROZEN`.
pub(crate) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(files::read(&join(dir, "freezer.state"))?.trim() == "FROZEN")
}
