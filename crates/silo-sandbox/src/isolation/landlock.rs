//! Landlock scopes for the job's command: no connection to an abstract unix socket and no
//! signal beyond the job's own processes.
//!
//! Abstract unix sockets have no file and so no permissions: any process in a network
//! namespace may connect to any abstract socket bound in it, whoever bound it. A job with
//! its own network namespace has only its own; a job with the host's network (an admin's
//! choice, and every pip or npm step of a runtime build) would otherwise reach every
//! service on the host that listens on one (container shims have been taken over that way,
//! CVE-2020-15257), and a host process could not tell it from a local user's. Landlock's
//! scopes (Linux 6.12, ABI 6) refuse the command and everything it starts a connection to,
//! or a datagram sent to, an abstract socket bound outside the job, and a signal to a
//! process outside the job (the init, for one), with EPERM. Sockets and signals between the
//! job's own processes are untouched, and so is everything outside the job connecting in.
//!
//! Two system calls, no allocation: the command's process is a forked child of the init and
//! calls this right before its exec. The `landlock` crate builds rulesets for filesystem
//! rules with allocations and best-effort compatibility levels; silo needs neither, so the
//! calls are made here directly.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::protocol::InitError;

/// `LANDLOCK_CREATE_RULESET_VERSION`: landlock_create_ruleset returns the ABI version.
const CREATE_RULESET_VERSION: u32 = 1;
/// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET` (ABI 6).
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
/// `LANDLOCK_SCOPE_SIGNAL` (ABI 6).
const SCOPE_SIGNAL: u64 = 1 << 1;
/// The first ABI with both scopes.
pub const SCOPES_ABI: i64 = 6;

/// `struct landlock_ruleset_attr` as of ABI 6.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// The kernel's Landlock ABI version; `None` without Landlock (not built in, or not enabled
/// at boot: `lsm=` must name it).
pub fn abi_version() -> Option<i64> {
    // SAFETY: with the VERSION flag the kernel reads no attribute (NULL, size 0) and only
    // returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version)
}

/// Whether [`confine`] scopes anything on this kernel.
pub fn scopes_available() -> bool {
    abi_version().is_some_and(|v| v >= SCOPES_ABI)
}

/// Scopes the calling thread, and everything it execs or forks from now on, to itself:
/// abstract unix sockets and signals. Needs no_new_privs (or CAP_SYS_ADMIN). On a kernel
/// without Landlock or without scopes (before 6.12) it does nothing and returns false: the
/// server says so once when it starts. Allocates nothing unless it fails.
pub fn confine() -> Result<bool, InitError> {
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL,
    };
    // SAFETY: `attr` is a valid landlock_ruleset_attr of the size given, read by the kernel
    // during the call only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return match Errno::last() {
            // ENOSYS: no Landlock in this kernel; EOPNOTSUPP: not enabled at boot; E2BIG:
            // a kernel older than the `scoped` field; EINVAL: one that has the field but
            // not these scopes.
            Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::E2BIG | Errno::EINVAL => Ok(false),
            e => Err(fail(e, "create the job's Landlock ruleset")),
        };
    }
    // SAFETY: the kernel just returned this descriptor, owned by nothing else; it closes
    // when `ruleset` drops.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: restrict_self takes a ruleset descriptor and flags; it touches no memory.
    let done = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            std::os::fd::AsRawFd::as_raw_fd(&ruleset),
            0u32,
        )
    };
    if done < 0 {
        return Err(fail(Errno::last(), "enforce the job's Landlock scopes"));
    }
    Ok(true)
}

fn fail(errno: Errno, what: &str) -> InitError {
    InitError::setup(
        "landlock",
        errno,
        format!("cannot {what}: {}", errno.desc()),
    )
}
