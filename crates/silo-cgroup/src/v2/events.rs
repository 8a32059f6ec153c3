//! v2 `cgroup.events` (populated, frozen) and `cgroup.kill`.
//!
//! The kernel signals every change of `cgroup.events` as POLLPRI on an open descriptor (and
//! as an inotify IN_MODIFY), so waiting needs no busy polling.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{CgroupError, Result};
use crate::file;

/// Whether `dir` has `cgroup.events` (every non-root v2 cgroup does).
pub(crate) fn supported(dir: &Path) -> bool {
    dir.join("cgroup.events").exists()
}

/// Whether `dir` has `cgroup.kill` (Linux 5.14+, non-root cgroups).
pub(crate) fn can_kill(dir: &Path) -> bool {
    dir.join("cgroup.kill").exists()
}

/// SIGKILLs every process in the cgroup and its descendants, atomically with respect to
/// forks (<https://lwn.net/Articles/855049/>).
pub(crate) fn kill(dir: &Path) -> Result<()> {
    file::write(dir, "cgroup.kill", "1")
}

/// Whether any process is in the cgroup or its descendants.
pub(crate) fn populated(dir: &Path) -> Result<bool> {
    Ok(file::read_key(dir, "cgroup.events", "populated")? == Some(1))
}

/// Waits until `key` in `cgroup.events` has `value`.
pub(crate) fn wait_for(
    dir: &Path,
    key: &str,
    value: u64,
    timeout: Duration,
    what: &'static str,
) -> Result<()> {
    let fail = |cause| CgroupError::read(dir, "cgroup.events", cause);
    let mut events = File::open(dir.join("cgroup.events")).map_err(fail)?;
    let start = Instant::now();
    loop {
        // Read through the polled descriptor: reading is what re-arms its notification, and a
        // change between this read and the poll still wakes the poll.
        let mut text = String::new();
        events.seek(SeekFrom::Start(0)).map_err(fail)?;
        events.read_to_string(&mut text).map_err(fail)?;
        if file::parse_key(&text, key) == Some(value) {
            return Ok(());
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(CgroupError::Timeout {
                what,
                dir: dir.to_owned(),
                waited: timeout,
            });
        }
        // Cap each wait: a fake tree (or a kernel that misses a notification) still
        // converges by polling.
        let wait_ms = u16::try_from(left.as_millis().min(50)).unwrap_or(50);
        let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => {
                return Err(fail(errno.into()));
            }
        }
    }
}
