//! v1 `cpuacct`: cpu time.

use std::path::Path;

use crate::error::Result;
use crate::file::HeldFiles;
use crate::usage::Usage;

/// CPU time: `cpuacct.usage` (ns) for the total; `cpuacct.usage_user` / `usage_sys` (ns,
/// Linux 4.7+) for the split, else `cpuacct.stat` (in USER_HZ ticks).
pub(crate) fn read_times(files: &HeldFiles, dir: &Path, usage: &mut Usage) -> Result<()> {
    usage.cpu_usec = files.read_number(dir, "cpuacct.usage")?.map(|ns| ns / 1000);
    let user = files.read_number(dir, "cpuacct.usage_user")?;
    let system = files.read_number(dir, "cpuacct.usage_sys")?;
    if let (Some(user), Some(system)) = (user, system) {
        usage.cpu_user_usec = Some(user / 1000);
        usage.cpu_system_usec = Some(system / 1000);
        return Ok(());
    }
    let ticks_per_second = clock_ticks_per_second();
    let to_usec = |ticks: u64| ticks.saturating_mul(1_000_000) / ticks_per_second;
    usage.cpu_user_usec = files.read_key(dir, "cpuacct.stat", "user")?.map(to_usec);
    usage.cpu_system_usec = files.read_key(dir, "cpuacct.stat", "system")?.map(to_usec);
    Ok(())
}

/// USER_HZ, the unit of `cpuacct.stat` (100 on every common build).
fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|hz| *hz > 0)
        .unwrap_or(100)
}
