//! A fork-server for inits: one process that re-executed the silo binary once and clones
//! every init from itself, so that an init pays neither for its own `execve` (the loader's
//! relocations and start-up of a large binary) nor for the server's address space being
//! copied by `clone3`.
//!
//! The server starts the zygote ([`Zygote::start`]) with `SILO_MODE=zygote` and a
//! `SOCK_SEQPACKET` socket as fd 3. Each request is one message: a flags byte and, as
//! `SCM_RIGHTS`, the init's end of its control socket, its log and (when it has one) its
//! cgroup v2 directory. The zygote clones the init with `CLONE_PARENT`, so that it is the
//! server's child exactly as if the server had cloned it (the server waits on its pidfd,
//! reaps it and adopts it after a restart as before), into the same namespaces and cgroup,
//! and answers with the pid (or the clone's errno) and the pidfd. The clone then runs
//! [`crate::init::run`] directly, with its control socket as fd 3 and its log as fd 4,
//! as a re-executed init would.
//!
//! The zygote holds nothing of the server's: it was started by `execve` (no keys, no
//! store, none of the server's descriptors but its socket), and every init closes the
//! zygote's socket before it reads its first request. What inits do share is the zygote's
//! memory layout: every init has the same addresses and stack-protector value. A job's
//! command is started by `execve` and so gets its own; the init reads only the server's
//! requests and copies the command's output as bytes.
//!
//! The zygote exits when its socket closes (the server ended).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;

use crate::protocol::{CONTROL_FD, LOG_FD};
use crate::spawn::{
    CLONE_INTO_CGROUP, CloneArgs, CloneExec, InitProcess, Namespaces, SpawnRequest, clone_exec,
    clone3, init_clone_flags,
};

/// The value of `SILO_MODE` that makes the binary a zygote.
pub const MODE: &str = "zygote";

const FLAG_NETWORK: u8 = 1;
const FLAG_IDLE: u8 = 2;
const FLAG_CGROUP: u8 = 4;

/// How long the server waits for the zygote's answer before it deems it broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's handle on a running zygote.
#[derive(Debug)]
pub struct Zygote {
    socket: OwnedFd,
    pid: i32,
    pidfd: OwnedFd,
}

/// Why the zygote did not start an init.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    /// The zygote could not be reached, did not answer in time or answered nonsense: it is
    /// of no further use, and the init may be started another way.
    #[error("the init zygote is unusable: {0}")]
    Broken(io::Error),
    /// Starting the init failed as it would have failed without a zygote (the clone's
    /// error, or a socket of the server's own).
    #[error(transparent)]
    Spawn(io::Error),
}

impl Zygote {
    /// Starts a zygote: a re-execution of `exe` with `SILO_MODE=zygote`, as a child of this
    /// process, in its namespaces.
    pub fn start(exe: BorrowedFd<'_>) -> io::Result<Self> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &timeout)?;
        setsockopt(&ours, sockopt::SendTimeout, &timeout)?;
        let (pid, pidfd) = clone_exec(&CloneExec {
            exe,
            flags: libc::CLONE_PIDFD as u64,
            cgroup: None,
            idle: false,
            control: theirs.as_fd(),
            log: None,
            mode: MODE,
        })?;
        Ok(Zygote {
            socket: ours,
            pid,
            pidfd,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Starts an init as [`crate::spawn::spawn_init`] would (`req.exe` is not used): a
    /// child of this process in new namespaces, in `req.cgroup`, with the log and a new
    /// control socket. Blocks until the zygote answers (a clone: well under a millisecond
    /// to a few).
    pub fn spawn(&self, req: &SpawnRequest<'_>) -> Result<InitProcess, ZygoteError> {
        let (server_end, child_end) = UnixStream::pair().map_err(ZygoteError::Spawn)?;
        let mut flags = 0;
        if req.namespaces.network {
            flags |= FLAG_NETWORK;
        }
        if req.idle {
            flags |= FLAG_IDLE;
        }
        let mut fds = vec![child_end.as_raw_fd(), req.log.as_raw_fd()];
        if let Some(cg) = req.cgroup {
            flags |= FLAG_CGROUP;
            fds.push(cg.as_raw_fd());
        }
        let broken = |e: Errno| ZygoteError::Broken(io::Error::from(e));
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&[flags])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(broken)?;
        drop(child_end);

        let mut answer = [0u8; 4];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut answer)];
        let msg = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(broken)?;
        let bytes = msg.bytes;
        let mut received = Vec::new();
        for c in msg.cmsgs().map_err(broken)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: descriptors the kernel just installed for this process.
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let nonsense = |what: &str| {
            ZygoteError::Broken(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the zygote answered {what}"),
            ))
        };
        if bytes == 0 {
            return Err(nonsense("nothing (it exited)"));
        }
        if bytes != answer.len() {
            return Err(nonsense(&format!("{bytes} bytes")));
        }
        let pid = i32::from_ne_bytes(answer);
        if pid <= 0 {
            return match -pid {
                0 => Err(nonsense("pid 0")),
                errno => Err(ZygoteError::Spawn(io::Error::from_raw_os_error(errno))),
            };
        }
        let mut received = received.into_iter();
        match (received.next(), received.next()) {
            (Some(pidfd), None) => Ok(InitProcess {
                pid,
                pidfd,
                control: server_end,
            }),
            _ => Err(nonsense("a pid without exactly one pidfd")),
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // It exits on its own when its socket closes; a broken one may not.
        let _ = crate::spawn::signal(self.pidfd.as_fd(), libc::SIGKILL);
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(P_PIDFD) on our own pidfd of our own child, writing into `info`;
        // it has been sent SIGKILL, so the wait is short.
        unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            );
        }
    }
}

/// The zygote's life: answers requests until its socket closes, then exits. Called by the
/// binary when `SILO_MODE=zygote`.
pub fn run() -> ! {
    let _ = nix::sys::prctl::set_name(c"silo-zygote");
    // It holds its socket (fd 3) and stdio; nothing else of its parent. Received
    // descriptors therefore land above fd 3, so that placing them at 3 and 4 in a clone
    // overwrites no source still needed.
    // SAFETY: close_range on descriptors this process does not use.
    unsafe {
        libc::syscall(libc::SYS_close_range, CONTROL_FD + 1, u32::MAX, 0);
    }
    loop {
        let mut flags = [0u8; 1];
        let mut cmsg = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [IoSliceMut::new(&mut flags)];
        let msg = match recvmsg::<()>(
            CONTROL_FD,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        if msg.bytes == 0 {
            std::process::exit(0);
        }
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(received) = c {
                    // SAFETY: descriptors the kernel just installed for this process.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC) || msg.bytes != 1;
        let flags = flags[0];
        let expected = if flags & FLAG_CGROUP != 0 { 3 } else { 2 };
        let result = if truncated || fds.len() != expected {
            Err(Errno::EINVAL)
        } else {
            clone_init(flags, &fds[0], &fds[1], fds.get(2))
        };
        let (answer, pidfd) = match result {
            Ok((pid, pidfd)) => (pid, Some(pidfd)),
            Err(e) => (-(e as i32), None),
        };
        let answer = answer.to_ne_bytes();
        let rights: Vec<RawFd> = pidfd.iter().map(|fd| fd.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if rights.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&rights)]
        };
        if sendmsg::<()>(
            CONTROL_FD,
            &[IoSlice::new(&answer)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .is_err()
        {
            std::process::exit(1);
        }
    }
}

/// Clones an init as a sibling (`CLONE_PARENT`): in the zygote, returns its pid and
/// pidfd; in the clone, never returns.
fn clone_init(
    flags: u8,
    control: &OwnedFd,
    log: &OwnedFd,
    cgroup: Option<&OwnedFd>,
) -> Result<(i32, OwnedFd), Errno> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: init_clone_flags(Namespaces {
            network: flags & FLAG_NETWORK != 0,
        }) | libc::CLONE_PARENT as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        // With CLONE_PARENT the clone's exit signal is the zygote's own (SIGCHLD).
        exit_signal: 0,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 with a valid clone_args (pidfd points at a live local) and no
    // CLONE_VM; the zygote is single-threaded, so the clone may run any code. (A raw clone
    // leaves glibc's cached thread id at the zygote's; nothing the init calls reads it:
    // glibc's fork sets its child's anew, and raise asks the kernel since 2.34.)
    let ret = unsafe { clone3(&mut args) };
    if ret < 0 {
        return Err(Errno::last());
    }
    if ret > 0 {
        // SAFETY: clone3 succeeded with CLONE_PIDFD: a new descriptor nothing else owns.
        return Ok((ret as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }));
    }
    // The clone: its own session, its priority, its descriptors, then the init.
    // SAFETY: plain system calls on descriptors this process holds.
    unsafe {
        libc::setsid();
        if flags & FLAG_IDLE != 0 {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
        // Both sources are above fd 3 (see `run`), so neither dup2 overwrites the other.
        if libc::dup2(control.as_raw_fd(), CONTROL_FD) < 0
            || libc::dup2(log.as_raw_fd(), LOG_FD) < 0
        {
            libc::_exit(126);
        }
    }
    crate::init::run()
}
