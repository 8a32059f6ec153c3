//! v1 `cpuset`: pinning (`cpuset.cpus`), and the set-up every v1 cpuset cgroup needs.

use std::path::Path;

use crate::controller::Controller;
use crate::error::{CgroupError, Result};
use crate::file;

/// Pins the cgroup to `cpus`, a list in the kernel's format (see [`crate::Limits::cpus`]).
pub(crate) fn apply(dir: &Path, cpus: &str) -> Result<()> {
    file::write(dir, "cpuset.cpus", cpus)
        .map_err(|e| e.missing_means_unsupported(Controller::Cpuset))
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`, and the kernel
/// refuses tasks (ENOSPC) until both are set; so every level silo creates copies them from
/// its parent (<https://docs.kernel.org/admin-guide/cgroup-v1/cpusets.html>). Values already
/// set are kept.
pub(crate) fn inherit_from_parent(dir: &Path) -> Result<()> {
    let parent = dir.parent().ok_or_else(|| {
        CgroupError::parse(dir, "cpuset.cpus", "a cpuset cgroup must have a parent")
    })?;
    for name in ["cpuset.cpus", "cpuset.mems"] {
        match file::read_optional(dir, name)? {
            Some(own) if own.trim().is_empty() => {}
            // Already set, or not a cpuset cgroup at all.
            _ => continue,
        }
        let inherited = file::read(parent, name)?;
        let inherited = inherited.trim();
        if !inherited.is_empty() {
            file::write(dir, name, inherited)?;
        }
    }
    Ok(())
}
