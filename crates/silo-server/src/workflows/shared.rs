//! A workflow's directory on the host: `<state>/workflows/<id>/` with `shared/` (the jobs'
//! `/shared`) and `files.pb` (the files its jobs upload).
//!
//! Each job runs as a host id of its own, so a file one job writes in /shared must be
//! writable by the next: the directory carries a default POSIX ACL granting everyone
//! read, write and search, which new files and directories inherit in place of the
//! creator's umask. Only the workflow's own jobs see the directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The extended attribute of a directory's default ACL (acl(5)).
const DEFAULT_ACL: &str = "system.posix_acl_default";

/// A default ACL `user::rwx group::rwx other::rwx` in the kernel's xattr format
/// (posix_acl_xattr.h: a u32 version 2, then (u16 tag, u16 perm, u32 id) entries).
fn open_default_acl() -> Vec<u8> {
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const OTHER: u16 = 0x20;
    const RWX: u16 = 7;
    const UNDEFINED_ID: u32 = u32::MAX;
    let mut acl = VERSION.to_le_bytes().to_vec();
    for tag in [USER_OBJ, GROUP_OBJ, OTHER] {
        acl.extend(tag.to_le_bytes());
        acl.extend(RWX.to_le_bytes());
        acl.extend(UNDEFINED_ID.to_le_bytes());
    }
    acl
}

/// Creates `dir` (mode 0777) for a workflow's jobs to share, with the default ACL above;
/// where the filesystem has no ACLs, the directory is sticky (1777) instead, and a job can
/// then add files but not change another job's.
pub fn create_shared_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let set = set_xattr(dir, DEFAULT_ACL, &open_default_acl());
    let mode = if set.is_ok() { 0o777 } else { 0o1777 };
    if let Err(e) = set {
        tracing::warn!(
            "cannot set a default ACL on {}: {e}; jobs of the workflow cannot change each other's files there",
            dir.display()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// setxattr(2) of `name` on `path` (following symlinks; `path` is ours).
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let name = std::ffi::CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value points to
    // value.len() readable bytes.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_made_in_the_shared_dir_are_writable_by_everyone_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        create_shared_dir(&shared).unwrap();
        let file = shared.join("names");
        std::fs::write(&file, "a\n").unwrap();
        let mode = std::fs::metadata(&file).unwrap().mode() & 0o777;
        // tmpfs and ext4 both have ACLs on Debian; without, the test says what it saw.
        assert_eq!(mode, 0o666, "the default ACL did not apply (mode {mode:o})");
    }
}
