//! From the API's limits to the job's cgroup, and from the cgroup's counters back.

use std::path::Path;

use silo_cgroup::{CgroupError, IoLimit};
use silo_proto::v1::{Limits, Usage};

use super::{JobError, validate};

/// The cgroup limits for a job whose files live in `work_dir`. The io limit applies to
/// the block device holding `work_dir`, found now; the CPU list is in its normal form
/// (`0,2` for `2,0`), the one the kernel takes.
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
        cpus: match &l.cpus {
            Some(list) => Some(validate::cpu_list(list)?.to_string()),
            None => None,
        },
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
        CgroupError::InvalidLimit { .. } => JobError::Invalid(validate::Invalid(e.to_string())),
        other => JobError::Host(other.to_string()),
    }
}

/// The wire form of the cgroup's counters.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::validate::{Bounds, check_limits};

    fn cpus(list: &str) -> Limits {
        Limits {
            cpus: Some(list.into()),
            ..Limits::default()
        }
    }

    #[test]
    fn a_cpu_list_is_judged_the_same_by_validation_and_by_the_cgroup_write() {
        let bounds = Bounds {
            cpus: 4,
            memory_bytes: 1 << 30,
            upload_bytes: 0,
            max: Limits::default(),
            defaults: Limits::default(),
        };
        let work = Path::new("/");
        for (list, written) in [
            ("2,0", "0,2"),
            ("0,2", "0,2"),
            ("0,0", "0"),
            ("0-2,1", "0-2"),
            ("3,1-2", "1-3"),
        ] {
            let limits = cpus(list);
            assert_eq!(check_limits(&limits, &bounds), Ok(()), "{list}");
            let wanted = cgroup_limits(Some(&limits), work).unwrap();
            assert_eq!(wanted.cpus.as_deref(), Some(written), "{list}");
        }
        for list in ["", "a", "3-1", "1,,2"] {
            let limits = cpus(list);
            let refused = check_limits(&limits, &bounds).unwrap_err();
            match cgroup_limits(Some(&limits), work) {
                Err(JobError::Invalid(e)) => assert_eq!(e, refused, "{list}"),
                other => panic!("{list:?}: {other:?}"),
            }
        }
    }
}
