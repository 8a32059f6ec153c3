//! v2 `cpuset`: pinning (`cpuset.cpus`). Memory nodes are inherited from the parent.

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file;

/// Pins the cgroup to `cpus`, a list in the kernel's format (see [`crate::Limits::cpus`]).
pub(crate) fn apply(dir: &Path, cpus: &str) -> Result<()> {
    file::write(dir, "cpuset.cpus", cpus)
        .map_err(|e| e.missing_means_unsupported(Controller::Cpuset))
}
