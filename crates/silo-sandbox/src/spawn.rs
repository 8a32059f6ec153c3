//! Starting a job's init process from the (multi-threaded) server.
//!
//! The child of `clone3` shares nothing with the server's other threads, so between the
//! clone and the exec it may only call async-signal-safe functions: it moves four
//! descriptors into place and re-executes the server's binary from a descriptor. Every
//! other setup step happens later, in the single-threaded init.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use crate::protocol::{CONTROL_FD, LOG_FD};

/// The open-files limit this process had before [`raise_open_files_limit`]: what the
/// processes [`clone_exec`] starts (the zygote, inits, and so every job) get back.
static OPEN_FILES_STARTED_WITH: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises this process's soft limit on open files to its hard limit, and has every init
/// and zygote started from here on run with the limit this process had before. The
/// server holds several descriptors for each live job (its pidfd, control socket, cgroup
/// directory and usage files), which systemd's default soft limit of 1024 does not cover
/// for a few hundred jobs; the jobs themselves keep the usual soft limit, because
/// select(2) cannot watch a descriptor above 1023. Returns the soft limit before and after.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = *OPEN_FILES_STARTED_WITH.get_or_init(|| limit);
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((before.rlim_cur, limit.rlim_cur))
}

/// In a child about to exec: the open-files limit this process had before
/// [`raise_open_files_limit`] (nothing when it never raised it). Async-signal-safe (an
/// atomic load and one system call); lowering the soft limit cannot fail.
fn reset_open_files_limit() {
    if let Some(limit) = OPEN_FILES_STARTED_WITH.get() {
        // SAFETY: setrlimit reads a limit that lives as long as the process.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    }
}

/// Has `command`'s process run with the open-files limit this process started with, as
/// every init does: a program the server runs (mkfs, mmdebstrap and the apt and dpkg under
/// it) must not see the raised limit, since some close every descriptor up to it before
/// each exec they make.
pub fn with_started_open_files(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // `reset_open_files_limit`, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            reset_open_files_limit();
            Ok(())
        })
    }
}

/// The environment variable that selects init mode, and its value.
pub const MODE_ENV: (&str, &str) = ("SILO_MODE", "init");

/// Which namespaces the init gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    /// A network namespace with only loopback; false shares the host's network.
    pub network: bool,
}

/// What to start the init with.
pub struct SpawnRequest<'a> {
    /// The silo binary, opened once at server start-up.
    pub exe: BorrowedFd<'a>,
    /// The job's log file, opened for appending; the init writes the job's output to it.
    pub log: BorrowedFd<'a>,
    /// A cgroup v2 directory to start the init in (`CLONE_INTO_CGROUP`), when there is one.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Namespaces to create.
    pub namespaces: Namespaces,
    /// Whether the init runs under `SCHED_IDLE` until it starts a job (the server then
    /// returns it to the normal policy): a ready init prepared in the background gets the
    /// CPU only when nothing else wants it, so it never competes with a launch or a job.
    pub idle: bool,
}

/// A running init process, as the server sees it.
#[derive(Debug)]
pub struct InitProcess {
    /// Its pid in the server's pid namespace.
    pub pid: i32,
    /// A pidfd for signalling and waiting without pid-reuse races.
    pub pidfd: OwnedFd,
    /// The server's end of the control socket.
    pub control: UnixStream,
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
    pub(crate) cgroup: u64,
}

/// Starts the init: a re-execution of `req.exe` with `SILO_MODE=init` in new pid, mount,
/// uts and ipc (and network) namespaces (the init makes its own cgroup namespace once it
/// is in the job's cgroups), holding the control socket as fd 3 and the
/// log as fd 4. [`crate::zygote::Zygote`] starts the same init without the re-execution.
pub fn spawn_init(req: &SpawnRequest<'_>) -> io::Result<InitProcess> {
    let (server_end, child_end) = UnixStream::pair()?;
    let flags = init_clone_flags(req.namespaces);
    let (pid, pidfd) = clone_exec(&CloneExec {
        exe: req.exe,
        flags,
        cgroup: req.cgroup,
        idle: req.idle,
        control: child_end.as_fd(),
        log: Some(req.log),
        mode: MODE_ENV.1,
    })?;
    Ok(InitProcess {
        pid,
        pidfd,
        control: server_end,
    })
}

/// The `clone3` flags of an init: a pidfd, and the namespaces it starts in.
pub(crate) fn init_clone_flags(namespaces: Namespaces) -> u64 {
    let mut flags = libc::CLONE_PIDFD
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    if namespaces.network {
        flags |= libc::CLONE_NEWNET;
    }
    flags as u64
}

/// `CLONE_INTO_CGROUP` (not in every libc yet).
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x200000000;

/// A re-execution of the silo binary in a mode: what [`clone_exec`] starts.
pub(crate) struct CloneExec<'a> {
    pub(crate) exe: BorrowedFd<'a>,
    /// `clone3` flags; `CLONE_PIDFD` must be among them.
    pub(crate) flags: u64,
    pub(crate) cgroup: Option<BorrowedFd<'a>>,
    pub(crate) idle: bool,
    /// Becomes fd 3 of the child.
    pub(crate) control: BorrowedFd<'a>,
    /// Becomes fd 4 of the child.
    pub(crate) log: Option<BorrowedFd<'a>>,
    /// The value of `SILO_MODE` for the new process.
    pub(crate) mode: &'a str,
}

/// Clones a child of this (possibly multi-threaded) process and re-executes `exe` in it
/// with stdin and stdout on /dev/null, `control` as fd 3 and `log` as fd 4. Returns its
/// pid and pidfd.
pub(crate) fn clone_exec(req: &CloneExec<'_>) -> io::Result<(i32, OwnedFd)> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // Move every descriptor the child will dup2 above the target numbers, so that no
    // dup2 in the child overwrites a source it still needs.
    let control = dup_above(req.control.as_raw_fd(), 10)?;
    let log = req
        .log
        .map(|log| dup_above(log.as_raw_fd(), 10))
        .transpose()?;
    let devnull = dup_above(devnull.as_raw_fd(), 10)?;

    let argv0 = c"silo-init";
    let argv: [*const libc::c_char; 2] = [argv0.as_ptr(), std::ptr::null()];
    let mode = CString::new(format!("{}={}", MODE_ENV.0, req.mode))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let rust_backtrace = c"RUST_BACKTRACE=1";
    // A test's hook, in debug builds only: how long an init lingers after its exit report.
    #[cfg(debug_assertions)]
    let linger = std::env::var(crate::init::LINGER_ENV)
        .ok()
        .and_then(|ms| CString::new(format!("{}={ms}", crate::init::LINGER_ENV)).ok());
    #[cfg(not(debug_assertions))]
    let linger: Option<CString> = None;
    let envp: [*const libc::c_char; 4] = [
        mode.as_ptr(),
        rust_backtrace.as_ptr(),
        linger.as_ref().map_or(std::ptr::null(), |l| l.as_ptr()),
        std::ptr::null(),
    ];

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: req.flags,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = req.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    let exe = req.exe.as_raw_fd();
    let idle = req.idle;
    let (control_fd, log_fd, null_fd) = (
        control.as_raw_fd(),
        log.as_ref().map_or(-1, |l| l.as_raw_fd()),
        devnull.as_raw_fd(),
    );

    // SAFETY: clone3 with a correctly sized, initialised clone_args and no CLONE_VM: the
    // child gets a copy of the address space.
    let ret = unsafe { clone3(&mut args) };
    if ret == 0 {
        // SAFETY: this is the child of a multi-threaded process: only async-signal-safe
        // system calls run (setsid, setrlimit, sched_setscheduler, dup2, execveat, _exit)
        // on values prepared above, so no lock held by another thread at the time of the
        // clone is touched before it either execs or exits.
        unsafe {
            // Its own session: nothing in the job shares the server's session (and so its
            // autogroup, which uid 0 could renice through /proc/1/autogroup).
            libc::setsid();
            // The open-files limit the server started with, not the one it raised for
            // itself (see raise_open_files_limit).
            reset_open_files_limit();
            if idle {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
            if libc::dup2(null_fd, 0) < 0
                || libc::dup2(null_fd, 1) < 0
                || libc::dup2(control_fd, CONTROL_FD) < 0
                || (log_fd >= 0 && libc::dup2(log_fd, LOG_FD) < 0)
            {
                libc::_exit(126);
            }
            libc::syscall(
                libc::SYS_execveat,
                exe,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: clone3 succeeded with CLONE_PIDFD, so the kernel stored a new descriptor
    // that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as i32, pidfd))
}

/// The raw `clone3` system call: 0 in the child, the child's pid in the parent, -1 with
/// errno set on failure.
///
/// # Safety
///
/// `args` must be valid for the flags it holds (the pidfd pointer writable, the cgroup a
/// descriptor), and the child must respect what the caller's process allows after a fork
/// (async-signal-safe calls only when the caller has other threads).
pub(crate) unsafe fn clone3(args: &mut CloneArgs) -> libc::c_long {
    // SAFETY: the caller upholds the contract above; the size is that of the struct.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// A close-on-exec duplicate of `fd` numbered at least `min`.
fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we borrow returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sends `signal` to the process behind `pidfd` (no pid-reuse race).
pub fn signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Reaps the exited process behind `pidfd` without blocking. `Ok(None)` while it runs;
/// otherwise its wait status as `(code, signal)`.
pub fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<(Option<i32>, Option<i32>)>> {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(P_PIDFD) on our pidfd, writing into `info`.
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (or left it zeroed, which reads as pid 0: still running).
    let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match code {
        libc::CLD_EXITED => (Some(status), None),
        _ => (None, Some(status)),
    }))
}

/// Opens a pidfd for a process the server did not start itself (adoption after restart).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached mount of the directory `path` (`open_tree(OPEN_TREE_CLONE)`), for an init
/// that has entered its job's root already to mount (see
/// [`crate::protocol::METHOD_START`]); the directory's own mount only, not those below it.
pub fn detached_mount(path: &std::path::Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open_tree with a NUL-terminated path we own; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_started_with_the_started_limit_gets_the_limit_from_before_the_raise() {
        let soft_now = || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we own.
            let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
            assert_eq!(rc, 0);
            limit
        };
        let before = soft_now();
        let (was, is) = raise_open_files_limit().unwrap();
        assert_eq!(was, before.rlim_cur);
        assert_eq!(is, before.rlim_max, "raised to the hard limit");
        let out = with_started_open_files(&mut std::process::Command::new("sh"))
            .args(["-c", "ulimit -Sn"])
            .output()
            .unwrap();
        let child: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(child, before.rlim_cur, "the child's soft limit");
    }
}
