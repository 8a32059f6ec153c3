//! The job's sandbox: its own root filesystem, hostname and network, then a command stripped
//! of every privilege.
//!
//! The init calls [`enter`] once, as root, in the job's new namespaces, before it forks the
//! command. It compiles the job's [`SyscallFilter`] once with [`compile_seccomp`], forks, and
//! the command's child calls [`drop_privileges`] right before `execve`.
//!
//! Everything [`enter`] builds lives in the init's mount namespace: the job's root is a tmpfs
//! mounted on [`Isolation::root_dir`], and every other mount sits inside it. When the
//! namespace dies with the job, all of it goes; nothing is created on the host except inside
//! that tmpfs.
//!
//! Every failure is an [`InitError`] of kind `setup` naming the step, the path and the errno:
//! "cannot mount proc on /var/lib/silo/jobs/3f2a/root/proc: Operation not permitted".

mod capabilities;
mod credentials;
mod dev;
mod etc;
pub mod landlock;
mod mounts;
mod network;
pub mod oom;
mod pivot;
mod proc_mask;
mod rootfs;
mod seccomp;
pub mod user_namespace;

use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::protocol::InitError;
use crate::{Isolation, Network, SandboxBase};

pub use seccomp::SyscallFilter;

/// Builds the job's view of the system and moves the calling process into it.
///
/// Called by the init (root, single-threaded, PID 1 of the job's new pid namespace, in new
/// mount, uts, ipc and — unless [`Network::Host`] — net namespaces). On success:
/// - mount propagation is private: nothing mounted here reaches the host, and nothing the
///   host mounts later appears here;
/// - the process's root is a read-only tmpfs holding the job's root filesystem (a read-only
///   view of the host's system directories and a generated /etc, or a runtime's tree),
///   a private /proc with the kernel's sensitive files masked or read-only, /sys read-only
///   or absent, a minimal read-only /dev, a size-limited /tmp, /dev/shm, and the job's work
///   directory writable at /work; the host's root is detached and unreachable;
/// - the working directory is `/`;
/// - the hostname is [`Isolation::hostname`];
/// - with [`Network::None`], the loopback interface `lo` is up.
///
/// On failure the process is left part-way; the init must report the error and exit, which
/// tears the mount namespace and everything in it down.
pub fn enter(iso: &Isolation) -> Result<(), InitError> {
    prepare(&iso.base())?;
    finish(iso)
}

/// The job-independent half of [`enter`]: private mount propagation, `lo` up, and the
/// job's root assembled under [`SandboxBase::root_dir`] except for what belongs to the job
/// (its /work, its user in /etc, its hostname). The root is still writable and not yet
/// entered. An init can do this before its job is known.
pub fn prepare(base: &SandboxBase) -> Result<(), InitError> {
    mounts::make_private()?;
    if base.network == Network::None {
        network::bring_up_loopback()?;
    }
    rootfs::assemble(base)
}

/// The job's half of [`enter`], after [`prepare`] with `iso.base()`: the hostname, the
/// job's files in /etc, /work, then pivot_root into the root and seal it read-only.
pub fn finish(iso: &Isolation) -> Result<(), InitError> {
    set_hostname(&iso.hostname)?;
    rootfs::add_job(iso)?;
    pivot::pivot_into(&iso.root_dir)?;
    pivot::seal_read_only()
}

/// Shows the detached mount `tree` (a clone of the job's shared directory made by the
/// server with `open_tree(OPEN_TREE_CLONE)`) writable at `/shared`, in a sandbox that
/// [`finish`] has entered and sealed already: the root is writable for as long as it takes
/// to make the mount point.
pub fn attach_shared(tree: std::os::fd::OwnedFd) -> Result<(), InitError> {
    rootfs::attach_shared(tree)
}

/// Mounts the job's own filesystem (a detached mount the server made with
/// [`crate::disk::mount_detached`]) at `/work`, in a sandbox that [`finish`] has entered
/// and sealed already. The command's process, forked ahead, shares the init's mount
/// namespace and sees it before its exec.
pub fn attach_work_disk(tree: std::os::fd::OwnedFd) -> Result<(), InitError> {
    rootfs::attach_work_disk(tree)
}

/// Compiles the job's default system-call filter. Done once in the init, before the fork,
/// so that the command's child only has to install it.
pub fn compile_seccomp() -> Result<SyscallFilter, InitError> {
    SyscallFilter::compile()
}

/// Turns the calling process into the job's unprivileged command: runs as
/// [`Isolation::uid`]/[`Isolation::gid`] with that gid as its only supplementary group,
/// with no capability in any set (bounding, permitted, effective, inheritable, ambient),
/// no real-time or raised scheduling (RLIMIT_RTPRIO and RLIMIT_NICE 0), and no way to
/// regain one — not through execve of a setuid or file-capability binary
/// (no_new_privs), and not as uid 0 (securebits `NOROOT`, locked) — scoped by Landlock to
/// its own abstract unix sockets and its own processes' signals where the kernel has
/// scopes ([`landlock::confine`]), and with `filter` installed last.
///
/// Called in the forked child right before `execve`. A uid of 0 is allowed and still ends
/// without capabilities. Allocates nothing unless it fails; on failure the child should
/// report the error and exit, never exec.
pub fn drop_privileges(iso: &Isolation, filter: &SyscallFilter) -> Result<(), InitError> {
    // Dropping the bounding set and setting securebits need CAP_SETPCAP, so they go first,
    // while the process still has every capability.
    capabilities::drop_bounding_set()?;
    capabilities::lock_securebits()?;
    capabilities::drop_scheduling_limits()?;
    credentials::become_user(iso.uid, iso.gid)?;
    capabilities::clear_all()?;
    capabilities::set_no_new_privs()?;
    landlock::confine()?;
    filter.install()
}

/// Sets the hostname of the job's (new) uts namespace.
fn set_hostname(name: &str) -> Result<(), InitError> {
    nix::unistd::sethostname(name).map_err(|e| {
        fail(
            "sethostname",
            e,
            format_args!("set the hostname to {name:?}"),
        )
    })
}

/// A setup error whose message reads "cannot {what}: {errno text}".
fn fail(step: &str, errno: Errno, what: fmt::Arguments<'_>) -> InitError {
    InitError::setup(step, errno, format!("cannot {what}: {}", errno.desc()))
}

/// The errno behind an I/O error (EIO when it has none).
fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
