//! The cgroup v1 backend: one hierarchy per controller (or group of co-mounted
//! controllers), each with its own tree of silo cgroups.
//!
//! See <https://docs.kernel.org/admin-guide/cgroup-v1/index.html>.

pub(crate) mod blkio;
pub(crate) mod cpu;
pub(crate) mod cpuacct;
pub(crate) mod cpuset;
pub(crate) mod freezer;
pub(crate) mod memory;

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file;

/// The file whose presence in a v1 cgroup shows that `controller` can limit there.
pub(crate) fn key_file(controller: Controller) -> &'static str {
    match controller {
        Controller::Cpu => "cpu.cfs_quota_us",
        Controller::Cpuset => "cpuset.cpus",
        Controller::Memory => "memory.limit_in_bytes",
        Controller::Io => "blkio.throttle.read_bps_device",
        Controller::Pids => "pids.max",
        Controller::Freezer => "freezer.state",
    }
}

/// Moves a process into a v1 cgroup.
pub(crate) fn add_pid(dir: &Path, pid: i32) -> Result<()> {
    file::write(dir, "cgroup.procs", &pid.to_string())
}

/// Prepares a freshly made cgroup of hierarchy `hierarchy` so that tasks can join it.
pub(crate) fn prepare_new(hierarchy: &str, dir: &Path) -> Result<()> {
    if hierarchy == "cpuset" {
        cpuset::inherit_from_parent(dir)?;
    }
    Ok(())
}
