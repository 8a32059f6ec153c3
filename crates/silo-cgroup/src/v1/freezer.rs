//! v1 `freezer`: `freezer.state` (THAWED, FREEZING, FROZEN).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Result};
use crate::file;

/// Freezes (`true`) or thaws (`false`) the cgroup and waits until the kernel reports the new
/// state: freezing passes through FREEZING until every task has stopped.
pub(crate) fn set_frozen(dir: &Path, frozen: bool, timeout: Duration) -> Result<()> {
    let wanted = if frozen { "FROZEN" } else { "THAWED" };
    let start = Instant::now();
    loop {
        file::write(dir, "freezer.state", wanted)?;
        if file::read(dir, "freezer.state")?.trim() == wanted {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(CgroupError::Timeout {
                what: "the freezer state",
                dir: dir.to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
