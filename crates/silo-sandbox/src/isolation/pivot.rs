//! Entering the job's root: pivot_root, detach the host's root, seal the root read-only.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, umount2};
use nix::unistd::{chdir, pivot_root};

use super::fail;
use super::mounts::remount;
use crate::protocol::InitError;

/// Makes `root` the process's root directory and detaches the host's root from the mount
/// namespace; the working directory ends at `/`.
///
/// pivot_root(".", ".") stacks the old root on top of the new one at the same place, so no
/// directory inside the new root is needed to park the old root in (a read-only runtime
/// could not offer one), and the umount2(".", MNT_DETACH) that follows removes exactly that
/// old root. See pivot_root(2), "NOTES": https://man7.org/linux/man-pages/man2/pivot_root.2.html
/// Unlike chroot, nothing is left to escape to: the host's tree is no longer mounted in this
/// namespace at all.
pub(super) fn pivot_into(root: &Path) -> Result<(), InitError> {
    chdir(root).map_err(|e| {
        fail(
            "pivot_root",
            e,
            format_args!("enter the job's root {}", root.display()),
        )
    })?;
    pivot_root(".", ".").map_err(|e| {
        fail(
            "pivot_root",
            e,
            format_args!("pivot_root into {}", root.display()),
        )
    })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| {
        fail(
            "pivot_root",
            e,
            format_args!(
                "detach the host's root after pivot_root into {}",
                root.display()
            ),
        )
    })?;
    chdir("/").map_err(|e| fail("pivot_root", e, format_args!("change directory to /")))
}

/// Makes the job's root and /dev read-only; after this only /work, /tmp and /dev/shm (and
/// the device nodes themselves) take writes.
pub(super) fn seal_read_only() -> Result<(), InitError> {
    remount(
        "seal_root",
        Path::new("/"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    remount(
        "seal_root",
        Path::new("/dev"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
}
