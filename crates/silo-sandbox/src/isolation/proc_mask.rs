//! The job's /proc and /sys.
//!
//! /proc is a new mount of procfs, so it shows the job's pid namespace: PID 1 is the init and
//! the host's processes do not exist. What procfs still shows of the kernel is masked (files
//! covered by /dev/null on a read-only nodev mount, so opening them fails with EACCES;
//! directories by an empty read-only tmpfs) or made read-only, following the paths container runtimes mask (runc's `maskedPaths` and
//! `readonlyPaths`). /sys is a new read-only sysfs, or absent where the kernel refuses one.

use std::fs;
use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{bind, bind_as_is, mkdir, mount_fs};
use crate::protocol::InitError;

/// Files under /proc that leak kernel memory, keys or timing details: covered by /dev/null
/// on a read-only, nodev mount, which cannot be opened at all.
const MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
];

/// Directories under /proc about hardware: replaced by an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi"];

/// Paths under /proc whose writes change the whole machine: read-only.
/// `sysrq-trigger` is here rather than masked: a write to a /dev/null mask would succeed
/// (device nodes ignore read-only mounts), while a read-only procfs file refuses with EROFS.
const READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

const PROC_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts a private /proc under `root` and hides what the job must not see of the kernel.
pub(super) fn mount_proc(root: &Path) -> Result<(), InitError> {
    let proc = root.join("proc");
    mkdir("mount_proc", &proc, 0o555)?;
    // Mounted from inside the job's pid namespace, procfs shows that namespace.
    mount_fs("mount_proc", "proc", &proc, PROC_FLAGS, None)?;
    // The first mask is a bind of /dev/null made read-only, nosuid, nodev and noexec; the
    // others are binds of that mask, which copy its flags, so they need no remount each.
    let mut mask: Option<std::path::PathBuf> = None;
    for name in MASKED_FILES {
        let path = proc.join(name);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        match &mask {
            None => {
                bind(
                    "mask_proc",
                    Path::new("/dev/null"),
                    &path,
                    MsFlags::MS_RDONLY | PROC_FLAGS,
                )?;
                mask = Some(path);
            }
            Some(source) => bind_as_is("mask_proc", source, &path)?,
        }
    }
    for name in MASKED_DIRS {
        let path = proc.join(name);
        if path.is_dir() {
            mount_fs(
                "mask_proc",
                "tmpfs",
                &path,
                MsFlags::MS_RDONLY | PROC_FLAGS,
                Some("mode=0555,size=4k"),
            )?;
        }
    }
    for name in READ_ONLY {
        let path = proc.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            bind("mask_proc", &path, &path, MsFlags::MS_RDONLY | PROC_FLAGS)?;
        }
    }
    Ok(())
}

/// Directories under /sys replaced by an empty read-only tmpfs: the firmware's tables, and
/// the virtual block devices, among them every job's loop device, whose
/// `loop/backing_file` names the host's path of that job's disk image (the state directory
/// and the job's id) and whose counters show when another job writes. The host's real disks
/// stay listed, as in other container runtimes.
const SYS_MASKED_DIRS: &[&str] = &["firmware", "devices/virtual/block"];

/// Mounts a read-only sysfs at /sys under `root`, with [`SYS_MASKED_DIRS`] masked; when the
/// kernel refuses the mount, /sys is left out altogether.
///
/// In the job's own network namespace, sysfs shows only that namespace's interfaces.
pub(super) fn mount_sys(root: &Path) -> Result<(), InitError> {
    let sys = root.join("sys");
    mkdir("mount_sys", &sys, 0o555)?;
    if mount_fs(
        "mount_sys",
        "sysfs",
        &sys,
        MsFlags::MS_RDONLY | PROC_FLAGS,
        None,
    )
    .is_err()
    {
        // An absent /sys is an allowed outcome; the empty mount point goes with it.
        let _ = fs::remove_dir(&sys);
        return Ok(());
    }
    // One tmpfs for the first mask; the others are binds of it, which copy its flags.
    let mut mask: Option<std::path::PathBuf> = None;
    for name in SYS_MASKED_DIRS {
        let path = sys.join(name);
        if !path.is_dir() {
            continue;
        }
        match &mask {
            None => {
                mount_fs(
                    "mount_sys",
                    "tmpfs",
                    &path,
                    MsFlags::MS_RDONLY | PROC_FLAGS,
                    Some("mode=0555,size=4k"),
                )?;
                mask = Some(path);
            }
            Some(source) => bind_as_is("mount_sys", source, &path)?,
        }
    }
    Ok(())
}
