//! What a job has used, read back from its cgroup.

/// Resource usage of one job cgroup, including everything its processes forked.
///
/// A field is `None` when this host cannot measure it (controller missing, or a kernel too
/// old for the file, e.g. `memory.peak` before Linux 5.19); it is never a made-up zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, user plus system, in microseconds (the precise total; the split below is
    /// sampled by the kernel at tick granularity).
    pub cpu_usec: Option<u64>,
    /// CPU time in user mode, in microseconds.
    pub cpu_user_usec: Option<u64>,
    /// CPU time in kernel mode, in microseconds.
    pub cpu_system_usec: Option<u64>,
    /// Time the CPU limit held the job back, in microseconds.
    pub cpu_throttled_usec: Option<u64>,
    /// Memory in use now, in bytes (page cache included, as the kernel charges it).
    pub memory_current_bytes: Option<u64>,
    /// The most memory in use at any moment, in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// Processes the kernel killed because the memory limit was reached.
    pub oom_kills: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
    /// Processes (and threads) in the cgroup now.
    pub pids_current: Option<u64>,
    /// Forks refused because `pids.max` was reached (the "max" count of `pids.events`).
    pub pids_refused: Option<u64>,
}
