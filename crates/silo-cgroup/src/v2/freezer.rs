//! v2 freezing: `cgroup.freeze`, confirmed by `frozen 1` in `cgroup.events`.

use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::file;
use crate::v2::events;

/// Whether the cgroup can be frozen (Linux 5.2+, non-root cgroups).
pub(crate) fn supported(dir: &Path) -> bool {
    dir.join("cgroup.freeze").exists()
}

/// Freezes (`true`) or thaws (`false`) every process in the cgroup and its descendants, and
/// waits until the kernel reports the new state.
pub(crate) fn set_frozen(dir: &Path, frozen: bool, timeout: Duration) -> Result<()> {
    file::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    events::wait_for(
        dir,
        "frozen",
        u64::from(frozen),
        timeout,
        "the freezer state",
    )
}
