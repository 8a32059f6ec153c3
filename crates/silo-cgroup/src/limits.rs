//! The limits a job can ask for, independent of the cgroup version that enforces them.

use crate::controller::{Controller, Controllers};
use crate::error::{CgroupError, Result};

/// The CFS period silo uses: 100 ms, the kernel's default. A `cpu_percent` of 100 is a quota
/// of one full period, i.e. one core.
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// Resource limits for one job. `None` means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU bandwidth in percent of one core (100 = one core, 250 = two and a half).
    pub cpu_percent: Option<u32>,
    /// The CPUs the job may run on, in the kernel's list format: `0-3`, `1,3`, `0-1,4`.
    /// Written to `cpuset.cpus` as it is: the caller gives it in normal form (ascending
    /// ranges, as `silo_proto::values::CpuList` writes it), and the kernel refuses anything
    /// it cannot read (EINVAL).
    pub cpus: Option<String>,
    /// Hard memory limit in bytes; swap is not allowed beyond it where the host can say so.
    pub memory_bytes: Option<u64>,
    /// Read and write bandwidth on one block device.
    pub io: Option<IoLimit>,
    /// The most processes (and threads) the job may have at once.
    pub pids: Option<u32>,
}

/// A bandwidth limit on one whole-disk block device, applied to reads and writes alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimit {
    /// The device as (major, minor), e.g. from [`crate::block_device_of`].
    pub device: (u32, u32),
    /// Bytes per second, for reads and for writes.
    pub bps: u64,
}

impl Limits {
    /// Checks every limit's range (a CPU list's syntax is the kernel's to check); the first
    /// problem found is returned as [`CgroupError::InvalidLimit`].
    pub fn validate(&self) -> Result<()> {
        if let Some(percent) = self.cpu_percent
            && percent == 0
        {
            return Err(invalid("cpu", percent, "must be at least 1 percent"));
        }
        if self
            .cpus
            .as_deref()
            .is_some_and(|cpus| cpus.trim().is_empty())
        {
            return Err(invalid("cpus", "", "must name at least one CPU"));
        }
        if self.memory_bytes == Some(0) {
            return Err(invalid("memory", 0, "must be more than 0 bytes"));
        }
        if let Some(io) = &self.io {
            if io.bps == 0 {
                return Err(invalid("io", 0, "must be more than 0 bytes per second"));
            }
            if io.device.0 == 0 {
                return Err(invalid(
                    "io",
                    format!("{}:{}", io.device.0, io.device.1),
                    "major number 0 is not a block device",
                ));
            }
        }
        if self.pids == Some(0) {
            return Err(invalid("pids", 0, "must allow at least 1 process"));
        }
        Ok(())
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Controllers {
        let mut needed = Controllers::empty();
        let mut want = |set: bool, c| {
            if set {
                needed.insert(c);
            }
        };
        want(self.cpu_percent.is_some(), Controller::Cpu);
        want(self.cpus.is_some(), Controller::Cpuset);
        want(self.memory_bytes.is_some(), Controller::Memory);
        want(self.io.is_some(), Controller::Io);
        want(self.pids.is_some(), Controller::Pids);
        needed
    }

    /// The CFS quota for `cpu_percent`, in microseconds per [`CPU_PERIOD_USEC`].
    pub(crate) fn cpu_quota_usec(percent: u32) -> u64 {
        u64::from(percent) * CPU_PERIOD_USEC / 100
    }

    /// `memory.high` (v2) and the soft limit (v1): 95% of the hard limit, so the kernel
    /// reclaims and throttles before it has to OOM-kill.
    pub(crate) fn memory_soft_bytes(hard: u64) -> u64 {
        hard / 100 * 95 + hard % 100 * 95 / 100
    }
}

fn invalid(limit: &'static str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::InvalidLimit {
        limit,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_empty_limits_are_invalid() {
        let cases = [
            Limits {
                cpu_percent: Some(0),
                ..Limits::default()
            },
            Limits {
                memory_bytes: Some(0),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(String::new()),
                ..Limits::default()
            },
            Limits {
                io: Some(IoLimit {
                    device: (254, 0),
                    bps: 0,
                }),
                ..Limits::default()
            },
            Limits {
                io: Some(IoLimit {
                    device: (0, 31),
                    bps: 1,
                }),
                ..Limits::default()
            },
        ];
        for limits in cases {
            assert!(limits.validate().is_err(), "{limits:?} was accepted");
        }
        assert!(Limits::default().validate().is_ok());
    }

    #[test]
    fn each_limit_needs_its_controller() {
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            pids: Some(10),
            ..Limits::default()
        };
        assert_eq!(limits.controllers().to_string(), "memory,pids");
    }

    #[test]
    fn one_hundred_percent_is_one_full_period() {
        assert_eq!(Limits::cpu_quota_usec(100), CPU_PERIOD_USEC);
        assert_eq!(Limits::cpu_quota_usec(50), 50_000);
        assert_eq!(Limits::cpu_quota_usec(250), 250_000);
    }

    #[test]
    fn the_soft_memory_limit_is_95_percent_without_overflow() {
        assert_eq!(Limits::memory_soft_bytes(64 << 20), 63_753_420);
        assert_eq!(Limits::memory_soft_bytes(100), 95);
        assert!(Limits::memory_soft_bytes(u64::MAX) < u64::MAX);
    }
}
