//! v2 `cpu`: bandwidth (`cpu.max`) and cpu time (`cpu.stat`).

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file::{self, HeldFiles};
use crate::limits::{CPU_PERIOD_USEC, Limits};
use crate::usage::Usage;

/// Limits the cgroup to `percent` of one core: `cpu.max` = "QUOTA PERIOD".
pub(crate) fn apply(dir: &Path, percent: u32) -> Result<()> {
    let value = format!("{} {CPU_PERIOD_USEC}", Limits::cpu_quota_usec(percent));
    file::write(dir, "cpu.max", &value).map_err(|e| e.missing_means_unsupported(Controller::Cpu))
}

/// CPU time from the core `cpu.stat`, which every non-root v2 cgroup has, with or without
/// the cpu controller: `usage_usec`, `user_usec`, `system_usec`, and with `throttled` the
/// controller's `throttled_usec`, all from one read of the file. `false` when `dir` has no
/// `cpu.stat` (then v1's cpuacct tells the times, if anything does).
pub(crate) fn read_stat(
    files: &HeldFiles,
    dir: &Path,
    throttled: bool,
    usage: &mut Usage,
) -> Result<bool> {
    let Some(text) = files.read_optional(dir, "cpu.stat")? else {
        return Ok(false);
    };
    let key = |key| file::key_in(&text, dir, "cpu.stat", key);
    usage.cpu_usec = key("usage_usec")?;
    usage.cpu_user_usec = key("user_usec")?;
    usage.cpu_system_usec = key("system_usec")?;
    if throttled {
        usage.cpu_throttled_usec = key("throttled_usec")?;
    }
    Ok(true)
}
