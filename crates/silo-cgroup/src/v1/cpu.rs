//! v1 `cpu`: CFS bandwidth (`cpu.cfs_period_us`, `cpu.cfs_quota_us`) and throttled time.

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file::{self, HeldFiles};
use crate::limits::{CPU_PERIOD_USEC, Limits};
use crate::usage::Usage;

/// Limits the cgroup to `percent` of one core. The period is written first: the kernel
/// checks the quota against the period in place.
pub(crate) fn apply(dir: &Path, percent: u32) -> Result<()> {
    let unsupported = |e: crate::CgroupError| e.missing_means_unsupported(Controller::Cpu);
    file::write(dir, "cpu.cfs_period_us", &CPU_PERIOD_USEC.to_string()).map_err(unsupported)?;
    file::write(
        dir,
        "cpu.cfs_quota_us",
        &Limits::cpu_quota_usec(percent).to_string(),
    )
    .map_err(unsupported)
}

/// Throttled time: `throttled_time` of `cpu.stat`, in nanoseconds on v1.
pub(crate) fn read_throttled(files: &HeldFiles, dir: &Path, usage: &mut Usage) -> Result<()> {
    usage.cpu_throttled_usec = files
        .read_key(dir, "cpu.stat", "throttled_time")?
        .map(|ns| ns / 1000);
    Ok(())
}
