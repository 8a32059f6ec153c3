//! v2 `memory`: `memory.max`, `memory.high`, `memory.swap.max`; usage and OOM kills.

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file::{self, HeldFiles};
use crate::limits::Limits;
use crate::usage::Usage;

/// Sets the hard limit, the throttling threshold slightly below it (so the kernel reclaims
/// before it must OOM-kill) and, where swap accounting exists, forbids swap so the limit is
/// the job's whole footprint.
pub(crate) fn apply(dir: &Path, bytes: u64) -> Result<()> {
    let unsupported = |e: crate::CgroupError| e.missing_means_unsupported(Controller::Memory);
    file::write(dir, "memory.max", &bytes.to_string()).map_err(unsupported)?;
    file::write(
        dir,
        "memory.high",
        &Limits::memory_soft_bytes(bytes).to_string(),
    )
    .map_err(unsupported)?;
    if dir.join("memory.swap.max").exists() {
        file::write(dir, "memory.swap.max", "0")?;
    }
    Ok(())
}

/// `memory.current`, `memory.peak` (Linux 5.19+) and the `oom_kill` count of `memory.events`
/// (which, unlike `memory.events.local`, includes descendant cgroups). With `ended`, the
/// memory in use is 0 and not read.
pub(crate) fn read_usage(
    files: &HeldFiles,
    dir: &Path,
    ended: bool,
    usage: &mut Usage,
) -> Result<()> {
    usage.memory_current_bytes = files.read_now(dir, "memory.current", ended)?;
    usage.memory_peak_bytes = files.read_number(dir, "memory.peak")?;
    usage.oom_kills = files.read_key(dir, "memory.events", "oom_kill")?;
    Ok(())
}
