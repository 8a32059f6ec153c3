//! The primitives the job's root is built from: mounts, and the directories, files and
//! symlinks they cover. Each failure names the step, the path and the errno.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::{errno_of, fail};
use crate::protocol::InitError;

/// Makes every mount in this (new) mount namespace private.
///
/// A new mount namespace starts with copies of the parent's mounts *and their propagation*:
/// where the host's `/` is shared (systemd makes it so), every mount made under it here would
/// be replayed in the host's namespace, and the host's later mounts would appear here.
/// `MS_PRIVATE` cuts both directions; `MS_SLAVE` would cut only the first and keep showing the
/// job whatever the host mounts later, which a job has no business seeing. pivot_root(2) also
/// refuses (EINVAL) when the new root's parent mount or the current root is shared.
/// See mount_namespaces(7), "Shared subtrees":
/// https://man7.org/linux/man-pages/man7/mount_namespaces.7.html
pub(super) fn make_private() -> Result<(), InitError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| {
        fail(
            "mount_propagation",
            e,
            format_args!("make the mounts under / private"),
        )
    })
}

/// Mounts a new filesystem of `fstype` (proc, sysfs, devpts, tmpfs) on `target`.
pub(super) fn mount_fs(
    step: &str,
    fstype: &str,
    target: &Path,
    flags: MsFlags,
    options: Option<&str>,
) -> Result<(), InitError> {
    mount(Some(fstype), target, Some(fstype), flags, options).map_err(|e| {
        fail(
            step,
            e,
            format_args!("mount {fstype} on {}", target.display()),
        )
    })
}

/// Bind-mounts `source` on `target` and then applies `flags` to the new mount.
///
/// The kernel ignores every flag but `MS_BIND` and `MS_REC` on the call that creates a bind
/// mount, so read-only, nosuid and the others take a second call with
/// `MS_REMOUNT | MS_BIND`. See mount(2), "Creating a bind mount".
pub(super) fn bind(
    step: &str,
    source: &Path,
    target: &Path,
    flags: MsFlags,
) -> Result<(), InitError> {
    bind_as_is(step, source, target)?;
    remount(step, target, flags)
}

/// Binds `source` on `target` keeping the source mount's flags (a bind copies them), for a
/// source whose flags are already what `target` needs.
pub(super) fn bind_as_is(step: &str, source: &Path, target: &Path) -> Result<(), InitError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        fail(
            step,
            e,
            format_args!("bind {} on {}", source.display(), target.display()),
        )
    })
}

/// Sets the per-mount flags (read-only, nosuid, nodev, noexec) of the mount at `target` to
/// `flags`; flags left out are cleared. Only this mount changes, never the filesystem under
/// it, so a read-only bind of the host's /usr leaves the host's /usr writable.
pub(super) fn remount(step: &str, target: &Path, flags: MsFlags) -> Result<(), InitError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(|e| fail(step, e, format_args!("remount {}", target.display())))
}

/// Creates the directory `path` with exactly `mode` (the umask does not apply).
pub(super) fn mkdir(step: &str, path: &Path, mode: u32) -> Result<(), InitError> {
    let io = |e: std::io::Error| {
        fail(
            step,
            errno_of(&e),
            format_args!("create the directory {}", path.display()),
        )
    };
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(io(e)),
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io)
}

/// Writes `contents` to a new file `path` with exactly `mode`.
pub(super) fn write_file(
    step: &str,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), InitError> {
    let io = |e: std::io::Error| fail(step, errno_of(&e), format_args!("write {}", path.display()));
    fs::write(path, contents).map_err(io)?;
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io)
}

/// Creates an empty file at `path`, for a file bind mount to cover.
pub(super) fn touch(step: &str, path: &Path) -> Result<(), InitError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map(drop)
        .map_err(|e| {
            fail(
                step,
                errno_of(&e),
                format_args!("create the mount point {}", path.display()),
            )
        })
}

/// Creates the symlink `link` pointing at `target`.
pub(super) fn symlink(step: &str, target: &Path, link: &Path) -> Result<(), InitError> {
    std::os::unix::fs::symlink(target, link).map_err(|e| {
        fail(
            step,
            errno_of(&e),
            format_args!(
                "create the symlink {} -> {}",
                link.display(),
                target.display()
            ),
        )
    })
}
