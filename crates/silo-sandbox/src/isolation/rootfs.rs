//! The job's root: one tmpfs on [`Isolation::root_dir`] that holds everything the job sees.
//!
//! The tmpfs is the only thing mounted on the host's directory tree, and only in the job's
//! mount namespace; every directory, file and mount point the job needs is created inside
//! it, so nothing is left on the host when the namespace goes.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::mounts::{bind, mkdir, mount_fs, remount, symlink, touch};
use super::{dev, errno_of, etc, fail, proc_mask};
use crate::protocol::InitError;
use crate::{Isolation, Rootfs, SandboxBase};

/// The host's system directories a [`Rootfs::HostView`] shows, read-only, when present.
const HOST_SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Top-level names the sandbox mounts itself; a runtime's own entries of these names are
/// hidden.
const SANDBOX_MOUNTS: &[&str] = &["proc", "sys", "dev", "tmp", "work"];

/// Flags of every read-only view of system files.
pub(super) const READ_ONLY: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// Builds the job-independent tree under `base.root_dir`: everything but /work and the
/// job's own files in /etc ([`add_job`]).
pub(super) fn assemble(base: &SandboxBase) -> Result<(), InitError> {
    let root = base.root_dir.as_path();
    mount_fs(
        "mount_root",
        "tmpfs",
        root,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=16m,nr_inodes=4096"),
    )?;
    match &base.rootfs {
        Rootfs::HostView => {
            show_host_system_dirs(root)?;
            etc::generate_common(root)?;
        }
        Rootfs::Runtime { path, writable } => {
            show_runtime(path, *writable, root)?;
            etc::cover_runtime_files(root)?;
        }
    }
    proc_mask::mount_proc(root)?;
    proc_mask::mount_sys(root)?;
    dev::populate(root, base.tmp_size_bytes, base.tmp_inodes)?;
    mount_tmp(root, base.tmp_size_bytes, base.tmp_inodes)?;
    if base.work_disk {
        // The mount point of the job's own filesystem, which arrives with the start.
        mkdir("work_disk", &root.join("work"), 0o755)?;
    }
    Ok(())
}

/// Adds what belongs to the job to an assembled tree: its user, group and hostname in a
/// generated /etc, its work directory at /work, and its shared directory at /shared.
pub(super) fn add_job(iso: &Isolation) -> Result<(), InitError> {
    let root = iso.root_dir.as_path();
    match &iso.rootfs {
        Rootfs::HostView => etc::generate_for_job(root, iso)?,
        Rootfs::Runtime { .. } => etc::fill_runtime_files(root, iso)?,
    }
    // A job disk of its own is attached at the start (see [`attach_work_disk`]).
    if !iso.work_disk {
        mount_work(root, &iso.work_dir)?;
    }
    if let Some(shared) = &iso.shared_dir {
        let target = root.join("shared");
        mkdir("bind_shared", &target, 0o755)?;
        bind(
            "bind_shared",
            shared,
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )?;
    }
    Ok(())
}

/// See [`super::attach_shared`].
pub(super) fn attach_shared(tree: std::os::fd::OwnedFd) -> Result<(), InitError> {
    let root = Path::new("/");
    let target = Path::new("/shared");
    let sealed = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    remount("bind_shared", root, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    let attached = mkdir("bind_shared", target, 0o755).and_then(|()| {
        move_detached(
            "bind_shared",
            tree,
            c"/shared",
            format_args!("mount the workflow's shared directory on /shared"),
        )?;
        remount(
            "bind_shared",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )
    });
    // Sealed again whatever happened.
    let sealed = remount("seal_root", root, sealed);
    attached.and(sealed)
}

/// See [`super::attach_work_disk`]. The mount point was made with the root, and a mount
/// on it needs no write to the sealed root.
pub(super) fn attach_work_disk(tree: std::os::fd::OwnedFd) -> Result<(), InitError> {
    move_detached(
        "work_disk",
        tree,
        c"/work",
        format_args!("mount the job's disk on /work"),
    )
}

/// Moves the detached mount `tree` onto `target` (`move_mount`); a failure is `step`'s,
/// "cannot {what}".
fn move_detached(
    step: &str,
    tree: std::os::fd::OwnedFd,
    target: &std::ffi::CStr,
    what: std::fmt::Arguments<'_>,
) -> Result<(), InitError> {
    use std::os::fd::AsRawFd;
    // SAFETY: move_mount with a descriptor we own, an empty C string and a NUL-terminated
    // target path; it reads nothing else of this process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(fail(step, nix::errno::Errno::last(), what));
    }
    Ok(())
}

/// `move_mount`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// Shows the host's /usr, /bin, /sbin and /lib* read-only; on a merged-/usr system the
/// top-level ones are symlinks into /usr and are recreated as the same symlinks.
fn show_host_system_dirs(root: &Path) -> Result<(), InitError> {
    for name in HOST_SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        let target = root.join(name);
        if meta.file_type().is_symlink() {
            copy_symlink("host_view", &host, &target)?;
        } else if meta.is_dir() {
            mkdir("host_view", &target, 0o755)?;
            // Not recursive: a mount the host has under /usr would come back writable, since
            // the read-only remount applies to one mount only.
            bind("host_view", &host, &target, READ_ONLY)?;
        }
    }
    Ok(())
}

/// Shows a runtime's tree as the root's contents, read-only unless `writable`: each
/// top-level entry of `path` is bound (directories and files) or recreated (symlinks) in
/// the root. Nothing of the host is shown.
fn show_runtime(path: &Path, writable: bool, root: &Path) -> Result<(), InitError> {
    let flags = if writable {
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV
    } else {
        READ_ONLY
    };
    let entries = fs::read_dir(path).map_err(|e| {
        fail(
            "runtime_rootfs",
            errno_of(&e),
            format_args!("read the runtime's root filesystem {}", path.display()),
        )
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            fail(
                "runtime_rootfs",
                errno_of(&e),
                format_args!("read the runtime's root filesystem {}", path.display()),
            )
        })?;
        let name = entry.file_name();
        if SANDBOX_MOUNTS.iter().any(|m| name == *m) {
            continue;
        }
        let source = entry.path();
        let target = root.join(&name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            copy_symlink("runtime_rootfs", &source, &target)?;
        } else if kind.is_dir() {
            mkdir("runtime_rootfs", &target, 0o755)?;
            bind("runtime_rootfs", &source, &target, flags)?;
        } else if kind.is_file() {
            touch("runtime_rootfs", &target)?;
            bind("runtime_rootfs", &source, &target, flags)?;
        }
        // Sockets, fifos and device nodes at the top of a runtime are not shown.
    }
    Ok(())
}

/// Recreates the symlink `source` at `target`, pointing where `source` points.
pub(super) fn copy_symlink(step: &str, source: &Path, target: &Path) -> Result<(), InitError> {
    let points_to: PathBuf = fs::read_link(source).map_err(|e| {
        fail(
            step,
            errno_of(&e),
            format_args!("read the symlink {}", source.display()),
        )
    })?;
    symlink(step, &points_to, target)
}

/// Mounts the job's size-limited /tmp, writable by everyone with the sticky bit.
fn mount_tmp(root: &Path, size_bytes: u64, inodes: u64) -> Result<(), InitError> {
    let target = root.join("tmp");
    mkdir("mount_tmp", &target, 0o1777)?;
    mount_fs(
        "mount_tmp",
        "tmpfs",
        &target,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&tmpfs_options(0o1777, size_bytes, inodes)),
    )
}

/// The options of a tmpfs of `size_bytes` holding at most `inodes` files (0 gives the
/// smallest tmpfs, never an unlimited one, which is what tmpfs's own `size=0` and
/// `nr_inodes=0` would mean). Without an inode bound a job could fill kernel memory with
/// empty files that take no size.
pub(super) fn tmpfs_options(mode: u32, size_bytes: u64, inodes: u64) -> String {
    format!(
        "mode={mode:o},size={},nr_inodes={}",
        size_bytes.max(1),
        inodes.max(1)
    )
}

/// Binds the job's work directory, writable, at /work.
fn mount_work(root: &Path, work_dir: &Path) -> Result<(), InitError> {
    let target = root.join("work");
    mkdir("bind_work", &target, 0o755)?;
    bind(
        "bind_work",
        work_dir,
        &target,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )
}
