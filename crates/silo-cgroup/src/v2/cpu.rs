//! v2 `cpu`: bandwidth (`cpu.max`) and cpu time (`cpu.stat`).

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file;
use crate::limits::{CPU_PERIOD_USEC, Limits};
use crate::usage::Usage;

/// Limits the cgroup to `percent` of one core: `cpu.max` = "QUOTA PERIOD".
pub(crate) fn apply(dir: &Path, percent: u32) -> Result<()> {
    let value = format!("{} {CPU_PERIOD_USEC}", Limits::cpu_quota_usec(percent));
    file::write(dir, "cpu.max", &value).map_err(|e| e.missing_means_unsupported(Controller::Cpu))
}

/// Whether `dir` has the core `cpu.stat` (every non-root v2 cgroup does, with or without
/// the cpu controller).
pub(crate) fn has_times(dir: &Path) -> bool {
    dir.join("cpu.stat").exists()
}

/// CPU time from `cpu.stat`: `usage_usec`, `user_usec`, `system_usec`.
pub(crate) fn read_times(dir: &Path, usage: &mut Usage) -> Result<()> {
    usage.cpu_usec = file::read_key(dir, "cpu.stat", "usage_usec")?;
    usage.cpu_user_usec = file::read_key(dir, "cpu.stat", "user_usec")?;
    usage.cpu_system_usec = file::read_key(dir, "cpu.stat", "system_usec")?;
    Ok(())
}

/// Throttled time from `cpu.stat` (present only with the cpu controller enabled).
pub(crate) fn read_throttled(dir: &Path, usage: &mut Usage) -> Result<()> {
    usage.cpu_throttled_usec = file::read_key(dir, "cpu.stat", "throttled_usec")?;
    Ok(())
}
