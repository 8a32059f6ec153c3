//! The job's minimal /dev: a small tmpfs holding the host's harmless device nodes, a private
//! devpts instance for terminals, /dev/shm, and the usual /dev/fd links.
//!
//! No other device of the host exists in the job. The /dev tmpfs itself becomes read-only
//! when the root is sealed; /dev/shm stays writable.

use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{bind, mkdir, mount_fs, symlink, touch};
use super::rootfs::tmpfs_options;
use crate::protocol::InitError;

/// The host device nodes a job gets, bound one by one.
pub(super) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The links every program expects in /dev.
const LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Terminals one job may hold at once.
pub const PTYS_PER_JOB: u32 = 64;

/// Flags of every mount under /dev that holds no device.
const NO_DEVICES: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Builds /dev under `root`; /dev/shm gets `shm_size_bytes`.
pub(super) fn populate(root: &Path, shm_size_bytes: u64, shm_inodes: u64) -> Result<(), InitError> {
    let dev = root.join("dev");
    mkdir("mount_dev", &dev, 0o755)?;
    // nodev is safe here: each device below is its own bind mount, which carries the flags
    // of the host's /dev mount, not those of this tmpfs.
    mount_fs(
        "mount_dev",
        "tmpfs",
        &dev,
        NO_DEVICES,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        touch("mount_dev", &target)?;
        // Read-only: writing to a device node ignores a read-only mount, but chmod, chown and
        // utimes on it do not, and the inode is the host's own /dev/null.
        bind(
            "mount_dev",
            &Path::new("/dev").join(name),
            &target,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        )?;
    }
    let pts = dev.join("pts");
    mkdir("mount_dev", &pts, 0o755)?;
    // A new devpts instance: the job's terminals are its own, and the host's are not there.
    // Its `max` bounds what the job takes of the host-wide pty pool (kernel.pty.max), so
    // one job cannot leave the others without terminals.
    mount_fs(
        "mount_dev",
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!(
            "newinstance,ptmxmode=0666,mode=0620,max={PTYS_PER_JOB}"
        )),
    )?;
    let shm = dev.join("shm");
    mkdir("mount_dev", &shm, 0o1777)?;
    mount_fs(
        "mount_dev",
        "tmpfs",
        &shm,
        NO_DEVICES,
        Some(&tmpfs_options(0o1777, shm_size_bytes, shm_inodes)),
    )?;
    for (name, target) in LINKS {
        symlink("mount_dev", Path::new(target), &dev.join(name))?;
    }
    Ok(())
}
