//! v1 `memory`: `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`,
//! `memory.soft_limit_in_bytes`, `memory.kmem.tcp.limit_in_bytes`; usage and OOM kills.

use std::path::Path;

use crate::controller::Controller;
use crate::error::Result;
use crate::file::{self, HeldFiles};
use crate::limits::Limits;
use crate::usage::Usage;

/// Sets the hard limit, memory+swap to the same value where swap accounting exists (so no
/// swap is used beyond the limit), the soft limit slightly below it, and the same limit
/// on the buffers of the cgroup's sockets.
///
/// The kernel refuses a memory limit above the memsw limit and a memsw limit below the
/// memory limit (EINVAL), so when raising, memsw goes first; when lowering, memory goes first.
pub(crate) fn apply(dir: &Path, bytes: u64) -> Result<()> {
    let unsupported = |e: crate::CgroupError| e.missing_means_unsupported(Controller::Memory);
    let value = bytes.to_string();
    let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    let current = file::read_number(dir, "memory.limit_in_bytes").map_err(unsupported)?;
    let raising = current.is_some_and(|current| bytes > current);
    if has_memsw && raising {
        file::write(dir, "memory.memsw.limit_in_bytes", &value)?;
    }
    file::write(dir, "memory.limit_in_bytes", &value).map_err(unsupported)?;
    if has_memsw && !raising {
        file::write(dir, "memory.memsw.limit_in_bytes", &value)?;
    }
    file::write(
        dir,
        "memory.soft_limit_in_bytes",
        &Limits::memory_soft_bytes(bytes).to_string(),
    )?;
    // v1 charges sockets' buffers to a cgroup only once its TCP limit is set (the counter
    // then takes UDP's too): without it a job under a 64 MiB limit held 155 MB of TCP
    // buffers over 40 loopback connections it never read, and 1 GB of UDP buffers over
    // 450 sockets, taken from host-wide pools (net.ipv4.tcp_mem, udp_mem) that every
    // socket on the host shares; past their limits the host's own sockets fail. The
    // kernel calls the file deprecated (one line in its log) but still enforces it. v2
    // counts socket memory in memory.max.
    if dir.join(TCP_LIMIT).exists() {
        file::write(dir, TCP_LIMIT, &value)?;
    }
    Ok(())
}

/// The v1 limit of the buffers of the cgroup's sockets (TCP's and UDP's, despite its name).
const TCP_LIMIT: &str = "memory.kmem.tcp.limit_in_bytes";

/// `memory.usage_in_bytes`, `memory.max_usage_in_bytes` and the `oom_kill` count of
/// `memory.oom_control` (Linux 4.13+). With `ended`, the memory in use is 0 and not read.
pub(crate) fn read_usage(
    files: &HeldFiles,
    dir: &Path,
    ended: bool,
    usage: &mut Usage,
) -> Result<()> {
    usage.memory_current_bytes = files.read_now(dir, "memory.usage_in_bytes", ended)?;
    usage.memory_peak_bytes = files.read_number(dir, "memory.max_usage_in_bytes")?;
    usage.oom_kills = files.read_key(dir, "memory.oom_control", "oom_kill")?;
    Ok(())
}
