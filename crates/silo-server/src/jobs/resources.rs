//! From the API's limits to the job's cgroup, and from the cgroup's counters back.

use std::path::Path;

use silo_cgroup::{CgroupError, IoLimit};
use silo_proto::v1::{Limits, Usage};

use super::JobError;

/// The cgroup limits for a job whose files live in `work_dir`. The io limit applies to
/// the block device holding `work_dir`, found now.
pub fn cgroup_limits(
    limits: Option<&Limits>,
    work_dir: &Path,
) -> Result<silo_cgroup::Limits, JobError> {
    let Some(l) = limits else {
        return Ok(silo_cgroup::Limits::default());
    };
    let io = match l.io_bps {
        Some(bps) => Some(IoLimit {
            device: silo_cgroup::block_device_of(work_dir)
                .map_err(|e| JobError::Unsupported(e.to_string()))?,
            bps,
        }),
        None => None,
    };
    Ok(silo_cgroup::Limits {
        cpu_percent: l.cpu_percent,
        cpus: l.cpus.clone(),
        memory_bytes: l.memory_bytes,
        io,
        pids: l.pids,
    })
}

/// Whether any limit is set.
pub fn any_limit(limits: Option<&Limits>) -> bool {
    limits.is_some_and(|l| {
        l.cpu_percent.is_some()
            || l.cpus.is_some()
            || l.memory_bytes.is_some()
            || l.io_bps.is_some()
            || l.pids.is_some()
    })
}

/// A cgroup failure as the user should see it: an impossible limit is the request's fault,
/// a missing controller is the host's (FailedPrecondition), anything else is internal.
pub fn cgroup_error(e: CgroupError) -> JobError {
    match e {
        CgroupError::Unsupported { .. } | CgroupError::NoBlockDevice { .. } => {
            JobError::Unsupported(e.to_string())
        }
        CgroupError::InvalidLimit { .. } => {
            JobError::Invalid(super::validate::Invalid(e.to_string()))
        }
        other => JobError::Host(other.to_string()),
    }
}

/// The wire form of the cgroup's counters.
/// The usage of a job that has ended: its totals and peaks as they were, and nothing
/// current (no process, no memory), whatever the cgroup still showed while it was torn down.
pub fn ended_usage(u: Usage) -> Usage {
    Usage {
        memory_current_bytes: u.memory_current_bytes.map(|_| 0),
        pids_current: u.pids_current.map(|_| 0),
        ..u
    }
}

pub fn usage_to_proto(u: silo_cgroup::Usage) -> Usage {
    Usage {
        cpu_usec: u.cpu_usec,
        cpu_user_usec: u.cpu_user_usec,
        cpu_system_usec: u.cpu_system_usec,
        cpu_throttled_usec: u.cpu_throttled_usec,
        memory_current_bytes: u.memory_current_bytes,
        memory_peak_bytes: u.memory_peak_bytes,
        oom_kills: u.oom_kills,
        io_read_bytes: u.io_read_bytes,
        io_write_bytes: u.io_write_bytes,
        pids_current: u.pids_current,
        pids_refused: u.pids_refused,
    }
}

/// "64 MiB" for 67108864.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100), "100 bytes");
    }
}
