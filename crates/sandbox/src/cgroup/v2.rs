//! cgroup v2 interface files of one cgroup directory: limits, usage, freezing, killing, and
//! enabling controllers for children. (`pids.*` files are the same in v1 and are handled here.)

use std::path::Path;
use std::time::Duration;

use super::files::{self, flat_key, join};
use super::{CgroupError, Usage};

/// Enables each of `wanted` that `dir/cgroup.controllers` offers in `dir/cgroup.subtree_control`,
/// so that `dir`'s children have it. Controllers the parent does not offer are skipped (the
/// session then uses v1 or reports the controller missing).
pub(crate) fn enable_controllers(dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let available = files::read(&join(dir, "cgroup.controllers"))?;
    let control = join(dir, "cgroup.subtree_control");
    let enabled = files::read(&control)?;
    for c in wanted {
        let offered = available.split_whitespace().any(|a| a == *c);
        let on = enabled.split_whitespace().any(|a| a == *c);
        if offered && !on {
            files::write(&control, &format!("+{c}"))?;
        }
    }
    Ok(())
}

/// `memory.max` = `bytes`, and `memory.swap.max` = 0 where it exists, so that swap does not hide
/// the limit.
pub(crate) fn set_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    files::write(&join(dir, "memory.max"), &bytes.to_string())?;
    let swap = join(dir, "memory.swap.max");
    if swap.exists() {
        files::write(&swap, "0")?;
    }
    Ok(())
}

/// `cpu.max` = `"QUOTA PERIOD"`.
pub(crate) fn set_cpu(dir: &Path, quota_us: u64, period_us: u64) -> Result<(), CgroupError> {
    files::write(&join(dir, "cpu.max"), &format!("{quota_us} {period_us}"))
}

/// `pids.max` = `max` (v1 and v2).
pub(crate) fn set_pids(dir: &Path, max: u64) -> Result<(), CgroupError> {
    files::write(&join(dir, "pids.max"), &max.to_string())
}

/// Fills the memory fields of `u` from `memory.current`, `memory.peak` (0 before 5.19),
/// `memory.max` and `memory.events`.
pub(crate) fn memory_usage(dir: &Path, u: &mut Usage) -> Result<(), CgroupError> {
    u.memory_current = files::read_u64(&join(dir, "memory.current"))?;
    let peak = join(dir, "memory.peak");
    u.memory_peak = match files::read_opt(&peak)? {
        Some(t) => files::parse_u64(&t)
            .ok_or_else(|| CgroupError::parse(&peak, "an unsigned integer", &t))?,
        None => 0,
    };
    u.memory_limit = files::read_max(&join(dir, "memory.max"))?;
    u.oom_kills = files::read_key_or_zero(&join(dir, "memory.events"), "oom_kill")?;
    Ok(())
}

/// Fills the CPU throttling fields of `u` from `cpu.stat` and `cpu.max`.
pub(crate) fn cpu_usage(dir: &Path, u: &mut Usage) -> Result<(), CgroupError> {
    let stat = files::read(&join(dir, "cpu.stat"))?;
    u.cpu_periods = flat_key(&stat, "nr_periods").unwrap_or(0);
    u.cpu_throttled_periods = flat_key(&stat, "nr_throttled").unwrap_or(0);
    u.cpu_throttled_ns = flat_key(&stat, "throttled_usec")
        .unwrap_or(0)
        .saturating_mul(1000);
    let max = join(dir, "cpu.max");
    let text = files::read(&max)?;
    u.cpu_quota = files::parse_cpu_max(&text)
        .ok_or_else(|| CgroupError::parse(&max, "\"QUOTA PERIOD\" (QUOTA may be max)", &text))?;
    Ok(())
}

/// CPU time in ns from `cpu.stat` `usage_usec` (present in every v2 cgroup, with or without the
/// cpu controller).
pub(crate) fn cpu_ns(dir: &Path) -> Result<u64, CgroupError> {
    let path = join(dir, "cpu.stat");
    let stat = files::read(&path)?;
    flat_key(&stat, "usage_usec")
        .map(|us| us.saturating_mul(1000))
        .ok_or_else(|| CgroupError::parse(&path, "a usage_usec line", &stat))
}

/// Fills the pids fields of `u` from `pids.current`, `pids.max` and `pids.events` (v1 and v2).
pub(crate) fn pids_usage(dir: &Path, u: &mut Usage) -> Result<(), CgroupError> {
    u.pids_current = files::read_u64(&join(dir, "pids.current"))?;
    u.pids_limit = files::read_max(&join(dir, "pids.max"))?;
    u.pids_max_events = files::read_key_or_zero(&join(dir, "pids.events"), "max")?;
    Ok(())
}

/// Writes `cgroup.freeze` and waits until `cgroup.events` reports the new state.
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    files::write(&join(dir, "cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let events = join(dir, "cgroup.events");
    super::session::wait_for(
        &events,
        if frozen { "frozen" } else { "thawed" },
        Duration::from_secs(5),
        "a process may be stuck in the kernel (uninterruptible sleep, state D)",
        || Ok(is_frozen(dir)? == frozen),
    )
}

/// Whether `cgroup.events` says `frozen 1`.
pub(crate) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(flat_key(&files::read(&join(dir, "cgroup.events"))?, "frozen") == Some(1))
}

/// Writes `cgroup.kill` (kernel 5.14+), which SIGKILLs every process in the cgroup, even frozen
/// ones. `Ok(false)` if the kernel has no `cgroup.kill`.
pub(crate) fn kill(dir: &Path) -> Result<bool, CgroupError> {
    let path = join(dir, "cgroup.kill");
    if !path.exists() {
        return Ok(false);
    }
    files::write(&path, "1")?;
    Ok(true)
}
