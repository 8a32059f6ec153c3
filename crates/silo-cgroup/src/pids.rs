//! `pids`: the same files on v1 and v2 (`pids.max`, `pids.current`, `pids.events`).

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file::{self, HeldFiles};
use crate::usage::Usage;

/// Caps the number of processes and threads at `max`; forks beyond it fail with EAGAIN.
pub(crate) fn apply(dir: &Path, max: u32) -> Result<()> {
    file::write(dir, "pids.max", &max.to_string())
        .map_err(|e| e.missing_means_unsupported(Controller::Pids))
}

/// `pids.current`, and the forks refused at the limit (`max` in `pids.events`). With
/// `ended`, the count of processes is 0 and not read.
pub(crate) fn read_usage(
    files: &HeldFiles,
    dir: &Path,
    ended: bool,
    usage: &mut Usage,
) -> Result<()> {
    usage.pids_current = files.read_now(dir, "pids.current", ended)?;
    usage.pids_refused = files.read_key(dir, "pids.events", "max")?;
    Ok(())
}
