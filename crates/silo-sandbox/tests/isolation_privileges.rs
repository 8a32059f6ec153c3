//! `isolation::drop_privileges` and the seccomp filter on a real kernel: what a job's command
//! is allowed to do. Each check runs in a forked "command" inside new namespaces, the way the
//! init forks the job's command. Needs root.

#[path = "isolation_harness.rs"]
mod harness;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use harness::{Check, HostDirs, JOB_UID, ensure, in_child, in_namespaces, root_or_skip};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe2};
use silo_sandbox::isolation::{SyscallFilter, compile_seccomp, drop_privileges, enter};
use silo_sandbox::{Isolation, Network, Rootfs};

/// The securebits a command ends with: NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE,
/// each locked, and KEEP_CAPS locked off.
const LOCKED_SECUREBITS: libc::c_int = 0xef;

/// A sandbox that only says who the command runs as.
fn identity(uid: u32, gid: u32) -> Isolation {
    Isolation {
        hostname: harness::HOSTNAME.into(),
        root_dir: PathBuf::from("/nonexistent"),
        work_dir: PathBuf::from("/nonexistent"),
        work_disk: false,
        rootfs: Rootfs::HostView,
        uid,
        gid,
        host_id: None,
        network: Network::None,
        tmp_size_bytes: 0,
        tmp_inodes: 16,
        shared_dir: None,
    }
}

fn compiled() -> Result<SyscallFilter, String> {
    compile_seccomp().map_err(|e| e.to_string())
}

/// Fails unless every capability set in a /proc/<pid>/status text is empty.
fn expect_no_capabilities(status: &str) -> Check {
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{set}:")))
            .ok_or(format!("{set} missing from status"))?;
        ensure(
            line.ends_with("0000000000000000"),
            format!("capabilities left: {line}"),
        )?;
    }
    Ok(())
}

/// Fails unless /proc/self/status has `field` equal to `value`.
fn expect_status_field(status: &str, field: &str, value: &str) -> Check {
    let found = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim);
    ensure(
        found == Some(value),
        format!("{field} is {found:?}, expected {value}"),
    )
}

/// Forks a command that drops its privileges and execs `argv`; returns its exit code and
/// what it wrote to stdout.
fn run_program(
    iso: &Isolation,
    filter: &SyscallFilter,
    argv: &[&str],
) -> Result<(i32, String), String> {
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    // SAFETY: the caller is a single-threaded forked test process.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            // SAFETY: dup2 onto stdout in this single-threaded child; the new descriptor is
            // not close-on-exec.
            unsafe { libc::dup2(out_w.as_raw_fd(), 1) };
            let _ = nix::unistd::chdir("/work");
            if let Err(e) = drop_privileges(iso, filter) {
                eprintln!("drop_privileges: {e}");
                // SAFETY: leaves the forked child at once.
                unsafe { libc::_exit(126) }
            }
            let _ = nix::unistd::execv(&argv[0], &argv);
            // SAFETY: leaves the forked child at once.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(out_w);
            let mut out = String::new();
            fs::File::from(out_r)
                .read_to_string(&mut out)
                .map_err(|e| e.to_string())?;
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => Ok((code, out)),
                other => Err(format!("{argv:?} ended with {other:?}")),
            }
        }
    }
}

#[test]
fn a_dropped_command_runs_as_the_requested_user_with_no_capabilities() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        in_child(|| {
            drop_privileges(&identity(JOB_UID, JOB_UID + 1), &filter).map_err(|e| e.to_string())?;
            let uids = nix::unistd::getresuid().map_err(|e| e.to_string())?;
            ensure(
                [uids.real, uids.effective, uids.saved]
                    .iter()
                    .all(|u| u.as_raw() == JOB_UID),
                format!("uids {uids:?}"),
            )?;
            let gids = nix::unistd::getresgid().map_err(|e| e.to_string())?;
            ensure(
                [gids.real, gids.effective, gids.saved]
                    .iter()
                    .all(|g| g.as_raw() == JOB_UID + 1),
                format!("gids {gids:?}"),
            )?;
            let groups = nix::unistd::getgroups().map_err(|e| e.to_string())?;
            ensure(
                groups.iter().map(|g| g.as_raw()).eq([JOB_UID + 1]),
                format!("groups {groups:?}"),
            )?;

            let status = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            expect_no_capabilities(&status)?;
            expect_status_field(&status, "NoNewPrivs", "1")?;
            expect_status_field(&status, "Seccomp", "2")?;
            // SAFETY: PR_GET_SECUREBITS takes no pointers.
            let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
            ensure(
                bits == LOCKED_SECUREBITS,
                format!("securebits {bits:#x}, expected {LOCKED_SECUREBITS:#x}"),
            )?;

            ensure(
                nix::unistd::setuid(nix::unistd::Uid::from_raw(0)) == Err(Errno::EPERM),
                "setuid(0) did not fail with EPERM",
            )?;
            ensure(
                unshare(CloneFlags::CLONE_NEWUSER) == Err(Errno::EPERM),
                "unshare(CLONE_NEWUSER) did not fail with EPERM",
            )?;
            ensure(
                nix::mount::mount(
                    Some("none"),
                    "/tmp",
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                ) == Err(Errno::EPERM),
                "mount did not fail with EPERM",
            )
        })
    });
    outcome.unwrap();
}

#[test]
fn uid_0_gets_no_capability_back_by_exec() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        let (code, status) =
            run_program(&identity(0, 0), &filter, &["/bin/cat", "/proc/self/status"])?;
        ensure(code == 0, format!("cat exited {code}"))?;
        expect_status_field(&status, "Uid", "0\t0\t0\t0")?;
        expect_no_capabilities(&status)?;
        expect_status_field(&status, "NoNewPrivs", "1")?;
        expect_status_field(&status, "Seccomp", "2")
    });
    outcome.unwrap();
}

/// One raw system call; returns its errno, or None if it succeeded.
fn raw(nr: libc::c_long, args: [usize; 6]) -> Option<Errno> {
    // SAFETY: every call below gets integers, NUL-terminated strings, null pointers, or
    // pointers to zeroed buffers large enough for what the kernel could write there.
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    (rc == -1).then(Errno::last)
}

#[test]
fn the_filter_refuses_each_listed_call_with_eperm_even_for_root() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        // A command that keeps root's capabilities: only the filter can refuse.
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let s = |text: &'static std::ffi::CStr| text.as_ptr() as usize;
            let buf = vec![0u8; 4096];
            let zeroed = buf.as_ptr() as usize;
            let nowhere = s(c"/nonexistent-silo");
            let bad_fd = usize::MAX; // -1
            let mut calls: Vec<(&str, libc::c_long, [usize; 6])> = vec![
                (
                    "mount",
                    libc::SYS_mount,
                    [s(c"none"), s(c"/tmp"), s(c"tmpfs"), 0, 0, 0],
                ),
                ("umount2", libc::SYS_umount2, [nowhere, 0, 0, 0, 0, 0]),
                (
                    "pivot_root",
                    libc::SYS_pivot_root,
                    [nowhere, nowhere, 0, 0, 0, 0],
                ),
                ("swapon", libc::SYS_swapon, [nowhere, 0, 0, 0, 0, 0]),
                ("swapoff", libc::SYS_swapoff, [nowhere, 0, 0, 0, 0, 0]),
                // Wrong magic numbers: even without the filter this reboots nothing.
                ("reboot", libc::SYS_reboot, [0, 0, 0, 0, 0, 0]),
                ("kexec_load", libc::SYS_kexec_load, [0, 1000, 0, 0, 0, 0]),
                (
                    "kexec_file_load",
                    libc::SYS_kexec_file_load,
                    [bad_fd, bad_fd, 0, 0, 0, 0],
                ),
                (
                    "init_module",
                    libc::SYS_init_module,
                    [0, 0, s(c""), 0, 0, 0],
                ),
                (
                    "finit_module",
                    libc::SYS_finit_module,
                    [bad_fd, s(c""), 0, 0, 0, 0],
                ),
                (
                    "delete_module",
                    libc::SYS_delete_module,
                    [
                        s(c"silo_no_such_module"),
                        libc::O_NONBLOCK as usize,
                        0,
                        0,
                        0,
                        0,
                    ],
                ),
                ("acct", libc::SYS_acct, [nowhere, 0, 0, 0, 0, 0]),
                ("quotactl", libc::SYS_quotactl, [0, 0, 0, 0, 0, 0]),
                (
                    "quotactl_fd",
                    libc::SYS_quotactl_fd,
                    [bad_fd, 0, 0, 0, 0, 0],
                ),
                ("syslog", libc::SYS_syslog, [10, 0, 0, 0, 0, 0]),
                (
                    "lookup_dcookie",
                    libc::SYS_lookup_dcookie,
                    [0, 0, 0, 0, 0, 0],
                ),
                ("bpf", libc::SYS_bpf, [0xffff, 0, 0, 0, 0, 0]),
                (
                    "perf_event_open",
                    libc::SYS_perf_event_open,
                    [0, 0, bad_fd, bad_fd, 0, 0],
                ),
                (
                    "userfaultfd",
                    libc::SYS_userfaultfd,
                    [libc::O_CLOEXEC as usize, 0, 0, 0, 0, 0],
                ),
                (
                    "io_uring_setup",
                    libc::SYS_io_uring_setup,
                    [0, 0, 0, 0, 0, 0],
                ),
                (
                    "io_uring_enter",
                    libc::SYS_io_uring_enter,
                    [bad_fd, 0, 0, 0, 0, 0],
                ),
                (
                    "io_uring_register",
                    libc::SYS_io_uring_register,
                    [bad_fd, 0, 0, 0, 0, 0],
                ),
                (
                    "keyctl",
                    libc::SYS_keyctl,
                    [0, (-2isize) as usize, 0, 0, 0, 0],
                ),
                ("add_key", libc::SYS_add_key, [0, 0, 0, 0, 0, 0]),
                ("request_key", libc::SYS_request_key, [0, 0, 0, 0, 0, 0]),
                ("setns", libc::SYS_setns, [bad_fd, 0, 0, 0, 0, 0]),
                (
                    "open_by_handle_at",
                    libc::SYS_open_by_handle_at,
                    [bad_fd, 0, 0, 0, 0, 0],
                ),
                (
                    "name_to_handle_at",
                    libc::SYS_name_to_handle_at,
                    [libc::AT_FDCWD as usize, s(c"/"), 0, 0, 0, 0],
                ),
                ("settimeofday", libc::SYS_settimeofday, [0, 0, 0, 0, 0, 0]),
                // CLOCK_MONOTONIC cannot be set: without the filter this fails with EINVAL.
                (
                    "clock_settime",
                    libc::SYS_clock_settime,
                    [libc::CLOCK_MONOTONIC as usize, zeroed, 0, 0, 0, 0],
                ),
                // modes = 0: a read, even without the filter.
                (
                    "clock_adjtime",
                    libc::SYS_clock_adjtime,
                    [libc::CLOCK_REALTIME as usize, zeroed, 0, 0, 0, 0],
                ),
                ("adjtimex", libc::SYS_adjtimex, [zeroed, 0, 0, 0, 0, 0]),
                (
                    "fsopen",
                    libc::SYS_fsopen,
                    [s(c"silo-no-such-fs"), 0, 0, 0, 0, 0],
                ),
                ("fsconfig", libc::SYS_fsconfig, [bad_fd, 0, 0, 0, 0, 0]),
                ("fsmount", libc::SYS_fsmount, [bad_fd, 0, 0, 0, 0, 0]),
                ("fspick", libc::SYS_fspick, [bad_fd, s(c""), 0, 0, 0, 0]),
                (
                    "move_mount",
                    libc::SYS_move_mount,
                    [bad_fd, s(c""), bad_fd, s(c""), 0, 0],
                ),
                (
                    "open_tree",
                    libc::SYS_open_tree,
                    [bad_fd, s(c""), 0, 0, 0, 0],
                ),
                (
                    "mount_setattr",
                    libc::SYS_mount_setattr,
                    [bad_fd, s(c""), 0, 0, 0, 0],
                ),
                (
                    "unshare(CLONE_NEWUSER)",
                    libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as usize, 0, 0, 0, 0, 0],
                ),
                // PID 1 here is the test's own stand-in for the init.
                (
                    "ptrace(PTRACE_ATTACH, 1)",
                    libc::SYS_ptrace,
                    [libc::PTRACE_ATTACH as usize, 1, 0, 0, 0, 0],
                ),
                (
                    "process_vm_readv(1)",
                    libc::SYS_process_vm_readv,
                    [1, 0, 0, 0, 0, 0],
                ),
                (
                    "process_vm_writev(1)",
                    libc::SYS_process_vm_writev,
                    [1, 0, 0, 0, 0, 0],
                ),
                // Of the caller itself (pid 0), with nothing to move: succeeds unfiltered.
                ("migrate_pages", libc::SYS_migrate_pages, [0, 0, 0, 0, 0, 0]),
                ("move_pages", libc::SYS_move_pages, [0, 0, 0, 0, 0, 0]),
                (
                    "personality(READ_IMPLIES_EXEC)",
                    libc::SYS_personality,
                    [libc::READ_IMPLIES_EXEC as usize, 0, 0, 0, 0, 0],
                ),
            ];
            #[cfg(target_arch = "x86_64")]
            calls.extend([
                ("iopl", libc::SYS_iopl, [0, 0, 0, 0, 0, 0]),
                ("ioperm", libc::SYS_ioperm, [0, 0, 0, 0, 0, 0]),
            ]);
            let wrong: Vec<String> = calls
                .iter()
                .filter_map(|(name, nr, args)| match raw(*nr, *args) {
                    Some(Errno::EPERM) => None,
                    other => Some(format!("{name}: {other:?}")),
                })
                .collect();
            ensure(
                wrong.is_empty(),
                format!("not refused with EPERM: {wrong:?}"),
            )?;

            // clone with CLONE_NEWUSER: had it succeeded, the child would return here too.
            // SAFETY: a fork-like clone (no new stack); a child leaves at once.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as usize,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if rc == 0 {
                // SAFETY: leaves the unexpected child at once.
                unsafe { libc::_exit(0) }
            }
            ensure(
                rc == -1 && Errno::last() == Errno::EPERM,
                format!("clone(CLONE_NEWUSER) returned {rc}"),
            )?;
            ensure(
                raw(libc::SYS_clone3, [0; 6]) == Some(Errno::ENOSYS),
                "clone3 did not fail with ENOSYS",
            )?;
            // The buffer the calls pointed at lives until here.
            drop(buf);
            Ok(())
        })
    });
    outcome.unwrap();
}

#[test]
fn the_filter_still_allows_what_ordinary_programs_do() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            unshare(CloneFlags::CLONE_FILES).map_err(|e| format!("unshare(CLONE_FILES): {e}"))?;
            // fork (clone without CLONE_NEWUSER) works, and the job may trace its own
            // processes.
            // SAFETY: the child only pauses until it is killed.
            match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
                ForkResult::Child => loop {
                    // SAFETY: pause takes no arguments.
                    unsafe { libc::pause() };
                },
                ForkResult::Parent { child } => {
                    let traced = raw(
                        libc::SYS_ptrace,
                        [
                            libc::PTRACE_ATTACH as usize,
                            child.as_raw() as usize,
                            0,
                            0,
                            0,
                            0,
                        ],
                    );
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    ensure(
                        traced.is_none(),
                        format!("ptrace of the job's own child: {traced:?}"),
                    )?;
                }
            }
            fs::read_to_string("/proc/self/status")
                .map(drop)
                .map_err(|e| e.to_string())
        })
    });
    outcome.unwrap();
}

/// Opens a socket (or, with `pair`, a socket pair) of `family` through the raw system call,
/// so that the high half of the family argument reaches the kernel as given; closes what it
/// opened and returns the errno, or None if it succeeded.
fn open_socket(pair: bool, family: u64, kind: libc::c_int) -> Option<Errno> {
    let mut fds = [-1 as libc::c_int; 2];
    let kind = (kind | libc::SOCK_CLOEXEC) as usize;
    let failed = if pair {
        raw(
            libc::SYS_socketpair,
            [family as usize, kind, 0, fds.as_mut_ptr() as usize, 0, 0],
        )
    } else {
        // SAFETY: socket takes integers only.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family as usize, kind, 0usize) };
        fds[0] = fd as libc::c_int;
        (fd == -1).then(Errno::last)
    };
    for fd in fds.into_iter().filter(|&fd| fd >= 0) {
        // SAFETY: `fd` was just opened here and is not used after.
        unsafe { libc::close(fd) };
    }
    failed
}

#[test]
fn sockets_of_other_families_are_refused_with_eafnosupport_even_for_root() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        // Root keeps CAP_NET_RAW here: without the filter AF_PACKET would open.
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let high = 1u64 << 32;
            let refused = [
                (
                    "socket(AF_VSOCK)",
                    false,
                    libc::AF_VSOCK as u64,
                    libc::SOCK_STREAM,
                ),
                (
                    "socket(AF_PACKET)",
                    false,
                    libc::AF_PACKET as u64,
                    libc::SOCK_RAW,
                ),
                (
                    "socket(AF_ALG)",
                    false,
                    libc::AF_ALG as u64,
                    libc::SOCK_SEQPACKET,
                ),
                ("socket(AF_KEY)", false, libc::AF_KEY as u64, libc::SOCK_RAW),
                (
                    "socket(AF_PACKET with high bits set)",
                    false,
                    high | libc::AF_PACKET as u64,
                    libc::SOCK_RAW,
                ),
                (
                    "socketpair(AF_PACKET)",
                    true,
                    libc::AF_PACKET as u64,
                    libc::SOCK_RAW,
                ),
            ];
            let wrong: Vec<String> = refused
                .iter()
                .filter_map(
                    |&(name, pair, family, kind)| match open_socket(pair, family, kind) {
                        Some(Errno::EAFNOSUPPORT) => None,
                        other => Some(format!("{name}: {other:?}")),
                    },
                )
                .collect();
            ensure(
                wrong.is_empty(),
                format!("not refused with EAFNOSUPPORT: {wrong:?}"),
            )
        })
    });
    outcome.unwrap();
}

#[test]
fn unix_inet_inet6_and_netlink_sockets_still_open() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let high = 1u64 << 32;
            let allowed = [
                (
                    "socket(AF_UNIX)",
                    false,
                    libc::AF_UNIX as u64,
                    libc::SOCK_STREAM,
                ),
                (
                    "socket(AF_INET)",
                    false,
                    libc::AF_INET as u64,
                    libc::SOCK_STREAM,
                ),
                (
                    "socket(AF_INET, UDP)",
                    false,
                    libc::AF_INET as u64,
                    libc::SOCK_DGRAM,
                ),
                (
                    "socket(AF_INET6)",
                    false,
                    libc::AF_INET6 as u64,
                    libc::SOCK_STREAM,
                ),
                (
                    "socket(AF_NETLINK)",
                    false,
                    libc::AF_NETLINK as u64,
                    libc::SOCK_RAW,
                ),
                // The kernel reads an int: this is AF_INET.
                (
                    "socket(AF_INET with high bits set)",
                    false,
                    high | libc::AF_INET as u64,
                    libc::SOCK_STREAM,
                ),
                (
                    "socketpair(AF_UNIX)",
                    true,
                    libc::AF_UNIX as u64,
                    libc::SOCK_STREAM,
                ),
            ];
            let wrong: Vec<String> = allowed
                .iter()
                .filter_map(|&(name, pair, family, kind)| {
                    open_socket(pair, family, kind).map(|e| format!("{name}: {e}"))
                })
                .collect();
            ensure(wrong.is_empty(), format!("refused: {wrong:?}"))
        })
    });
    outcome.unwrap();
}

#[test]
fn kernel_aio_is_answered_enosys() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let mut context: libc::c_ulong = 0;
            let setup = raw(
                libc::SYS_io_setup,
                [1, &raw mut context as usize, 0, 0, 0, 0],
            );
            ensure(
                setup == Some(Errno::ENOSYS),
                format!("io_setup: {setup:?}, context {context:#x}"),
            )?;
            let bad_context = usize::MAX;
            let submit = raw(libc::SYS_io_submit, [bad_context, 0, 0, 0, 0, 0]);
            ensure(
                submit == Some(Errno::ENOSYS),
                format!("io_submit: {submit:?}"),
            )
        })
    });
    outcome.unwrap();
}

#[test]
fn only_dockers_personas_can_be_set() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let personality = |persona: usize| {
                // SAFETY: personality takes an integer only.
                let rc = unsafe { libc::syscall(libc::SYS_personality, persona) };
                if rc == -1 { Err(Errno::last()) } else { Ok(rc) }
            };
            let refused = personality(libc::READ_IMPLIES_EXEC as usize);
            ensure(
                refused == Err(Errno::EPERM),
                format!("personality(READ_IMPLIES_EXEC): {refused:?}"),
            )?;
            let current = personality(0xffff_ffff);
            ensure(
                current == Ok(0),
                format!("personality(0xffffffff): {current:?}"),
            )?;
            let set = personality(0);
            ensure(set == Ok(0), format!("personality(PER_LINUX): {set:?}"))
        })
    });
    outcome.unwrap();
}

#[cfg(target_arch = "x86_64")]
#[test]
fn thirty_two_bit_system_calls_are_refused() {
    if !root_or_skip() {
        return;
    }
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        let verdict = in_child(|| {
            filter.install().map_err(|e| e.to_string())?;
            let mut ret: u64 = 20; // getpid in the i386 table
            // SAFETY: `int 0x80` with eax = 20 is the 32-bit getpid: no arguments, no memory
            // touched; the registers the compat entry may change are declared clobbered.
            unsafe {
                std::arch::asm!(
                    "int 0x80",
                    inlateout("rax") ret,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    options(nostack),
                );
            }
            ensure(
                ret as i32 == -libc::ENOSYS,
                format!("a 32-bit getpid returned {}", ret as i32),
            )
        });
        // A kernel without 32-bit support answers int 0x80 with SIGSEGV: refused as well.
        match verdict {
            Err(e) if e.contains("SIGSEGV") => Ok(()),
            other => other,
        }
    });
    outcome.unwrap();
}

#[test]
fn a_real_program_runs_unprivileged_in_the_host_view() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let outcome = in_namespaces(|| {
        enter(&iso).map_err(|e| e.to_string())?;
        let filter = compiled()?;
        let (code, id) = run_program(&iso, &filter, &["/usr/bin/id"])?;
        ensure(code == 0, format!("id exited {code}"))?;
        ensure(
            id == format!("uid={JOB_UID}(silo) gid={JOB_UID}(silo) groups={JOB_UID}(silo)\n"),
            format!("id printed {id:?}"),
        )?;
        let (code, _) = run_program(
            &iso,
            &filter,
            &[
                "/bin/sh",
                "-c",
                "echo hello > /work/from-job && ! touch /usr/silo-escape 2>/dev/null",
            ],
        )?;
        ensure(code == 0, format!("the shell exited {code}"))
    });
    let written = fs::metadata(dirs.work.join("from-job")).map(|m| {
        (
            m.uid(),
            fs::read(dirs.work.join("from-job")).unwrap_or_default(),
        )
    });
    dirs.finish(outcome);
    assert_eq!(
        written.expect("/work/from-job on the host"),
        (JOB_UID, b"hello\n".to_vec())
    );
}

/// The errno of a failed socket call, or "ok".
fn outcome_of<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(errno) => format!("{:?}", Errno::from_raw(errno)),
            None => e.to_string(),
        },
    }
}

#[test]
fn a_command_reaches_only_its_own_abstract_sockets_and_processes() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
    if !root_or_skip()
        || !harness::skip_unless(
            silo_sandbox::isolation::landlock::scopes_available(),
            "Landlock scopes (Linux 6.12+, landlock in lsm=)",
        )
    {
        return;
    }
    let name = |n: &str| SocketAddr::from_abstract_name(n.as_bytes()).map_err(|e| e.to_string());
    let outcome = in_namespaces(|| {
        let filter = compiled()?;
        // Bound outside the command, by its parent, as a host service would be.
        let _stream = UnixListener::bind_addr(&name("silo-outside-stream")?)
            .map_err(|e| format!("bind: {e}"))?;
        let _datagram = UnixDatagram::bind_addr(&name("silo-outside-datagram")?)
            .map_err(|e| format!("bind: {e}"))?;
        let parent = nix::unistd::getpid();
        in_child(|| {
            // uid 0: the kernel's own check lets root signal root, so what refuses the
            // signal below is the scope alone.
            drop_privileges(&identity(0, 0), &filter).map_err(|e| e.to_string())?;
            let stream = outcome_of(UnixStream::connect_addr(&name("silo-outside-stream")?));
            ensure(
                stream == "EPERM",
                format!("connect to an outside abstract socket: {stream}"),
            )?;
            let to = name("silo-outside-datagram")?;
            let sent = outcome_of(UnixDatagram::unbound().and_then(|s| s.send_to_addr(b"x", &to)));
            ensure(
                sent == "EPERM",
                format!("datagram to an outside abstract socket: {sent}"),
            )?;
            // SAFETY: kill with signal 0 only checks that it may signal.
            let signalled = unsafe { libc::kill(parent.as_raw(), 0) };
            ensure(
                signalled < 0 && Errno::last() == Errno::EPERM,
                format!("kill(parent, 0) gave {signalled} ({})", Errno::last()),
            )?;
            // The command's own sockets and processes are its own.
            let own = UnixListener::bind_addr(&name("silo-inside")?).map_err(|e| e.to_string())?;
            let inside = outcome_of(UnixStream::connect_addr(&name("silo-inside")?));
            ensure(
                inside == "ok",
                format!("connect to its own socket: {inside}"),
            )?;
            drop(own);
            // SAFETY: the child only pauses until it is killed.
            match unsafe { fork() }.map_err(|e| e.to_string())? {
                ForkResult::Child => loop {
                    nix::unistd::pause();
                },
                ForkResult::Parent { child } => {
                    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL)
                        .map_err(|e| format!("kill its own child: {e}"))?;
                    waitpid(child, None).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })
    });
    outcome.unwrap();
}
