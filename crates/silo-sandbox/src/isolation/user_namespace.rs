//! The command's own user namespace: one id inside, one host id outside.
//!
//! The init (root in the host's user namespace) forks the command; the command's process
//! becomes the job's host id, creates a user namespace with `unshare(CLONE_NEWUSER)` and
//! waits; the init writes the
//! namespace's maps, `UID HOST 1` and `GID HOST 1`, and lets it go on to drop every
//! privilege and exec. Only the init can write these maps: writing an id other than one's
//! own needs CAP_SETUID/CAP_SETGID in the parent namespace, which the command never has.
//! See user_namespaces(7), "User and group ID mappings".
//!
//! The job's mount, pid, network and ipc namespaces stay owned by the host's user
//! namespace, so the capabilities the command holds for a moment in its new namespace give
//! it nothing over them; it drops them all before exec anyway.

use std::fs::OpenOptions;
use std::io::Write;

use nix::errno::Errno;
use nix::unistd::{Gid, Pid, Uid, setgroups, setresgid, setresuid};

use super::{errno_of, fail};
use crate::protocol::InitError;

/// In the command's process: becomes host id `host` (uid, gid, no supplementary groups) in
/// the host's user namespace, then moves into a new user namespace, in which it holds every
/// capability until it drops them. Its ids are unmapped until [`map_ids`] runs.
///
/// The order matters: the kernel charges per-user counts (inotify instances, user
/// namespaces, ...) at every level up to the host, to the owner of each namespace on the
/// way, which is whoever created it. Created as root, every job's namespace would be
/// root's, and one job could exhaust root's inotify instances (the server's among them).
/// Created as `host`, each job's charge is its own.
pub fn unshare(host: u32) -> Result<(), Errno> {
    let (uid, gid) = (Uid::from_raw(host), Gid::from_raw(host));
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    // Keeping the capabilities across the change of user makes this a privileged creation:
    // hosts that restrict unprivileged user namespaces (Debian's
    // kernel.unprivileged_userns_clone, Ubuntu's AppArmor
    // apparmor_restrict_unprivileged_userns) still let it through. They are gone once the
    // namespace exists: capabilities count in the caller's own namespace only.
    // SAFETY: PR_SET_KEEPCAPS takes integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(Errno::last());
    }
    setresuid(uid, uid, uid)?;
    super::capabilities::raise_permitted()
        .map_err(|e| Errno::from_raw(e.errno.unwrap_or(libc::EPERM)))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
}

/// In the init: maps `uid` and `gid` of `child`'s (new) user namespace to the host id
/// `host`. Nothing else is mapped, so every other host id shows as the overflow id 65534
/// inside.
pub fn map_ids(child: Pid, uid: u32, gid: u32, host: u32) -> Result<(), InitError> {
    for (file, inside) in [("uid_map", uid), ("gid_map", gid)] {
        let path = format!("/proc/{child}/{file}");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{inside} {host} 1\n").as_bytes()))
            .map_err(|e| {
                fail(
                    "user_namespace",
                    errno_of(&e),
                    format_args!(
                        "map id {inside} of the job's user namespace to host id {host} in {path}"
                    ),
                )
            })?;
    }
    Ok(())
}
