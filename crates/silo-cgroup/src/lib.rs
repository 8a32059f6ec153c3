//! Resource control for silo jobs: cgroup v2, v1 and hybrid hosts behind one API.
//!
//! At start-up the server detects the [`CgroupLayout`] once ([`detect`]), logs it, and opens
//! its [`CgroupRoot`] (`<root>/silo/server` for itself, `<root>/silo/jobs/<id>` per job).
//! For each job it creates a [`JobCgroup`], writes [`Limits`], puts the job's first process
//! inside (clone3 into [`JobCgroup::clone_into_fd`], or [`JobCgroup::add_pid`]), reads
//! [`Usage`], and at the end kills everything left ([`JobCgroup::kill_all`]) and removes it.
//!
//! | limit | v2 | v1 |
//! |---|---|---|
//! | `cpu_percent` | `cpu.max` = "QUOTA 100000" | `cpu.cfs_period_us` = 100000, `cpu.cfs_quota_us` |
//! | `cpus` | `cpuset.cpus` | `cpuset.cpus` (`cpuset.mems` copied from the parent) |
//! | `memory_bytes` | `memory.max`, `memory.high` = 95%, `memory.swap.max` = 0 | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `memory.soft_limit_in_bytes` = 95%, `memory.kmem.tcp.limit_in_bytes` |
//! | `io` | `io.max` = "MAJ:MIN rbps=N wbps=N" | `blkio.throttle.read_bps_device`, `write_bps_device` |
//! | `pids` | `pids.max` | `pids.max` |
//!
//! On a hybrid host the v1 hierarchies enforce the limits, and the (controller-less) unified
//! tree provides `cgroup.kill`, `cgroup.events`, `cgroup.freeze` and `cpu.stat`.

#![deny(missing_docs)]

mod block_device;
mod controller;
mod error;
mod file;
mod job;
mod layout;
mod limits;
mod pids;
mod placement;
mod root;
mod usage;
mod v1;
mod v2;

pub use block_device::block_device_of;
pub use controller::{Controller, Controllers};
pub use error::{CgroupError, Result};
pub use job::JobCgroup;
pub use layout::{CgroupLayout, detect, detect_from};
pub use limits::{CPU_PERIOD_USEC, IoLimit, Limits};
pub use root::CgroupRoot;
pub use usage::Usage;

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_can_share_roots_and_jobs_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::CgroupRoot>();
        shareable::<crate::JobCgroup>();
        shareable::<crate::CgroupError>();
    }

    #[test]
    fn an_unsupported_controller_says_what_cannot_be_done() {
        let err = |controller| crate::CgroupError::Unsupported { controller }.to_string();
        assert_eq!(
            err(crate::Controller::Memory),
            "cannot limit memory here: the memory controller is not available on this host"
        );
        assert_eq!(
            err(crate::Controller::Freezer),
            "cannot freeze jobs here: the freezer controller is not available on this host"
        );
    }
}
