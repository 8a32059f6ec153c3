//! The job's init process: PID 1 of the job's pid namespace.
//!
//! It says hello, receives the [`InitSpec`], builds the sandbox, starts the command and
//! then stays for the job's whole life: it copies the command's output into the job's
//! log, reaps every zombie (orphans included), forwards SIGTERM, SIGINT and SIGHUP to the
//! command, and when the command ends, kills whatever the job left behind, drains the
//! last output and reports the exit. If the server goes away the job keeps running and
//! its output keeps reaching the log; a restarted server reads the exit from the log.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use silo_log::{LogWriter, Stream};

use crate::isolation::{self, SyscallFilter};
use crate::protocol::{
    CONTROL_FD, EVENT_EXIT, ErrorKind, ExitStatus, Frame, InitError, LOG_FD, METHOD_PREPARE,
    METHOD_START, Message, PROTOCOL_VERSION, Started, read_frame, write_frame,
};
use crate::{InitSpec, Isolation, Prepare, SandboxBase};

/// How long the init waits for the server's start request.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes read from the command's output per read.
const READ_CHUNK: usize = 128 * 1024;
/// Capacity asked for the output pipes, so a fast writer blocks less often.
const PIPE_SIZE: i32 = 1 << 20;

/// Runs the init and exits the process. Called by the binary when `SILO_MODE=init`.
pub fn run() -> ! {
    // SAFETY: the spawner placed the control socket at CONTROL_FD and the log at LOG_FD;
    // this process owns them from here on.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    // SAFETY: as above.
    let log = unsafe { File::from_raw_fd(LOG_FD) };
    // Both were placed by dup2, which clears close-on-exec; the job's command must never
    // hold either (with them it could forge its exit or its log).
    let cloexec = || nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    let _ = nix::fcntl::fcntl(&control, cloexec());
    let _ = nix::fcntl::fcntl(&log, cloexec());
    close_other_fds();
    // The job's `ps` shows its PID 1 as silo-init, not as the server's binary name.
    let _ = nix::sys::prctl::set_name(c"silo-init");
    let code = match Init::new(control, log).and_then(Init::run) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("silo-init: {e}");
            1
        }
    };
    std::process::exit(code)
}

struct Init {
    control: Option<UnixStream>,
    log_file: Option<File>,
}

impl Init {
    fn new(control: UnixStream, log: File) -> io::Result<Init> {
        Ok(Init {
            control: Some(control),
            log_file: Some(log),
        })
    }

    fn send(&mut self, message: Message) {
        if let Some(c) = self.control.as_mut()
            && write_frame(c, &Frame::new(message)).is_err()
        {
            // The server is gone; the job goes on without it.
            self.control = None;
        }
    }

    fn run(mut self) -> io::Result<()> {
        self.send(Message::Hello {
            pid: getpid().as_raw(),
        });
        let (id, spec, prepared) = self.receive_start()?;
        let log_file = self
            .log_file
            .take()
            .ok_or_else(|| io::Error::other("log taken"))?;
        let log = LogWriter::create(log_file, Path::new("<job log>"), spec.log_cap_bytes)
            .map_err(io::Error::other)?;
        let job = match start(&spec, prepared.as_ref()) {
            Ok(job) => job,
            Err(e) => {
                self.send(Message::Response { id, result: Err(e) });
                return Ok(());
            }
        };
        self.send(Message::Response {
            id,
            result: Ok(serde_json::to_value(Started {
                pid: job.child.as_raw(),
            })
            .unwrap_or_default()),
        });
        let status = supervise(job, log, self.control.as_mut());
        self.send(Message::Event {
            name: EVENT_EXIT.into(),
            body: serde_json::to_value(status).unwrap_or_default(),
        });
        Ok(())
    }

    /// Waits for the server's start request. The first request must come within a
    /// deadline; when it is a prepare request, the init builds the job-independent part of
    /// the sandbox and then waits for the start without one (a ready init in the server's
    /// pool). Returns the start request's id, the job, and what was prepared.
    fn receive_start(&mut self) -> io::Result<(u64, InitSpec, Option<SandboxBase>)> {
        let (id, method, params) = self.receive_request(Some(START_DEADLINE))?;
        if method != METHOD_PREPARE {
            let spec = self.parse_start(id, &method, params)?;
            return Ok((id, spec, None));
        }
        let Prepare {
            sandbox: base,
            cgroup_dirs,
        } = match serde_json::from_value(params) {
            Ok(prepare) => prepare,
            Err(e) => return Err(self.refuse(id, format!("malformed sandbox: {e}"))),
        };
        if let Err(e) = join_cgroups(&cgroup_dirs).and_then(|()| isolation::prepare(&base)) {
            let message = e.message.clone();
            self.send(Message::Response { id, result: Err(e) });
            return Err(io::Error::other(message));
        }
        self.send(Message::Response {
            id,
            result: Ok(serde_json::Value::Null),
        });
        let (id, method, params) = self.receive_request(None)?;
        let spec = self.parse_start(id, &method, params)?;
        Ok((id, spec, Some(base)))
    }

    /// The next request from the server, waiting at most `deadline`.
    fn receive_request(
        &mut self,
        deadline: Option<Duration>,
    ) -> io::Result<(u64, String, serde_json::Value)> {
        let control = self
            .control
            .as_mut()
            .ok_or_else(|| io::Error::other("no control socket"))?;
        control.set_read_timeout(deadline)?;
        let frame = read_frame(control)?
            .ok_or_else(|| io::Error::other("server closed the control socket before start"))?;
        control.set_read_timeout(None)?;
        if frame.version != PROTOCOL_VERSION {
            return Err(io::Error::other(format!(
                "server speaks init protocol {} but this init speaks {PROTOCOL_VERSION}",
                frame.version
            )));
        }
        match frame.message {
            Message::Request { id, method, params } => Ok((id, method, params)),
            other => Err(io::Error::other(format!(
                "expected a request, got {other:?}"
            ))),
        }
    }

    fn parse_start(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> io::Result<InitSpec> {
        if method != METHOD_START {
            return Err(self.refuse(
                id,
                format!("expected a {METHOD_START} request, got {method}"),
            ));
        }
        serde_json::from_value::<InitSpec>(params)
            .map_err(|e| self.refuse(id, format!("malformed job spec: {e}")))
    }

    /// Answers request `id` with a protocol error and returns it for the init to exit with.
    fn refuse(&mut self, id: u64, message: String) -> io::Error {
        self.send(Message::Response {
            id,
            result: Err(InitError::protocol(message.clone())),
        });
        io::Error::other(message)
    }
}

/// The started command and the ends of its output pipes.
struct RunningCommand {
    child: Pid,
    stdout: OwnedFd,
    stderr: OwnedFd,
    signals: SignalFd,
}

/// Builds the sandbox and starts the command. Errors are typed for the server.
fn start(spec: &InitSpec, prepared: Option<&SandboxBase>) -> Result<RunningCommand, InitError> {
    if spec.argv.is_empty() {
        return Err(InitError::protocol("the job has no command"));
    }
    // Without a prepare step (an init run by hand) there are no cgroups to join, but the
    // job still gets its own cgroup namespace.
    if prepared.is_none() {
        join_cgroups(&[])?;
    }
    // The sandbox next, so that the program and the work directory are looked up in
    // the job's own root.
    let sandbox = match (&spec.isolation, prepared) {
        (Some(iso), None) => {
            isolation::enter(iso)?;
            Some((iso, isolation::compile_seccomp()?))
        }
        (Some(iso), Some(base)) if iso.base() == *base => {
            isolation::finish(iso)?;
            Some((iso, isolation::compile_seccomp()?))
        }
        (Some(_), Some(_)) => {
            return Err(InitError::protocol(
                "the job's sandbox differs from the one this init prepared",
            ));
        }
        (None, _) => None,
    };
    let program = resolve_program(&spec.argv[0], &spec.env)?;
    check_workdir(&spec.cwd)?;

    let argv = cstrings(spec.argv.iter().map(String::as_str))?;
    let envp = cstrings(
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )?;
    let program = cstring(program.as_os_str().as_encoded_bytes())?;
    let cwd = cstring(spec.cwd.as_os_str().as_encoded_bytes())?;

    let (stdout_r, stdout_w) = pipe("stdout")?;
    let (stderr_r, stderr_w) = pipe("stderr")?;
    let (status_r, status_w) = pipe("exec status")?;
    // With a user namespace of its own, the command's process says when it has made one
    // and waits for the init to map its ids.
    let host_id = sandbox.as_ref().and_then(|(iso, _)| iso.host_id);
    let handshake = match host_id {
        Some(_) => Some((pipe("user namespace")?, pipe("user namespace")?)),
        None => None,
    };

    // Signals arrive through a signalfd; they stay blocked in the init and are unblocked
    // in the child before exec.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| InitError::setup("sigprocmask", e, format!("cannot block signals: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| InitError::setup("signalfd", e, format!("cannot create a signalfd: {e}")))?;

    // SAFETY: the init is single-threaded, so the child may do anything the parent could.
    match unsafe { fork() } {
        Err(e) => Err(InitError::setup(
            "fork",
            e,
            format!("cannot fork the command: {e}"),
        )),
        Ok(ForkResult::Child) => {
            drop(stdout_r);
            drop(stderr_r);
            drop(status_r);
            let handshake = handshake.map(|((_, made_w), (go_r, _))| (made_w, go_r));
            let error = exec_command(
                &CommandLine {
                    program,
                    argv,
                    envp,
                    cwd,
                    named: &spec.argv[0],
                    cwd_named: &spec.cwd,
                },
                &mask,
                sandbox.as_ref(),
                handshake,
                stdout_w,
                stderr_w,
            );
            // The whole typed error crosses the fork: its kind, step and errno are data,
            // not something to guess back from the sentence.
            let report = serde_json::to_vec(&error).unwrap_or_default();
            let _ = File::from(status_w).write_all(&report);
            // SAFETY: leave the forked child without running the init's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(stdout_w);
            drop(stderr_w);
            drop(status_w);
            // The child's ends are dropped first, so that a child that died early reads as
            // an end of file, not as a wait for ever.
            let handshake = handshake.map(|((made_r, _), (_, go_w))| (made_r, go_w));
            if let (Some((made_r, go_w)), Some(host), Some((iso, _))) =
                (handshake, host_id, sandbox.as_ref())
            {
                // No byte means the child failed before its namespace existed; its report
                // follows on the status pipe.
                let mut made = [0u8; 1];
                if matches!(File::from(made_r).read(&mut made), Ok(1)) {
                    if let Err(e) =
                        isolation::user_namespace::map_ids(child, iso.uid, iso.gid, host)
                    {
                        let _ = kill(child, Signal::SIGKILL);
                        let _ = waitpid(child, None);
                        return Err(e);
                    }
                    let _ = File::from(go_w).write_all(&[1]);
                }
            }
            // Nothing before the exec closes it (close-on-exec): the command runs. A
            // report means it failed before.
            let mut report = Vec::new();
            let _ = File::from(status_r).read_to_end(&mut report);
            if !report.is_empty() {
                let _ = waitpid(child, None);
                return Err(serde_json::from_slice(&report).unwrap_or_else(|e| {
                    InitError::protocol(format!(
                        "the command's process failed before exec, and its report is malformed: {e}"
                    ))
                }));
            }
            Ok(RunningCommand {
                child,
                stdout: stdout_r,
                stderr: stderr_r,
                signals,
            })
        }
    }
}

/// The command to exec, prepared before the fork.
struct CommandLine<'a> {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// The program as the job named it, for messages.
    named: &'a str,
    /// The working directory as the job named it, for messages.
    cwd_named: &'a Path,
}

/// In the forked child: wire up stdio, enter its own user namespace (with `handshake`: the
/// pipe to say it is made, the pipe to wait on for the ids), enter the work dir, exec.
/// Returns only on failure, with what failed.
fn exec_command(
    cmd: &CommandLine,
    mask: &SigSet,
    sandbox: Option<&(&Isolation, SyscallFilter)>,
    handshake: Option<(OwnedFd, OwnedFd)>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> InitError {
    let CommandLine {
        program,
        argv,
        envp,
        cwd,
        named,
        cwd_named,
    } = cmd;
    let stdio = |e: Errno| {
        InitError::setup(
            "stdio",
            e,
            format!("cannot give the command its output pipes: {}", e.desc()),
        )
    };
    if let Err(e) = mask.thread_unblock() {
        return InitError::setup(
            "signals",
            e,
            format!("cannot unblock the command's signals: {}", e.desc()),
        );
    }
    // A new session: the command leads its own process group, which is what the init
    // forwards signals to.
    let _ = nix::unistd::setsid();
    // SAFETY: dup2 onto the standard descriptors of this (single-threaded) child.
    let dup =
        unsafe { libc::dup2(stdout.as_raw_fd(), 1) >= 0 && libc::dup2(stderr.as_raw_fd(), 2) >= 0 };
    if !dup {
        return stdio(Errno::last());
    }
    drop(stdout);
    drop(stderr);
    // The command holds exactly stdin, stdout and stderr: whatever else this process has
    // open (the control socket, the log, the signalfd, the exec-status pipe) closes at exec,
    // even a descriptor someone forgot to mark.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } < 0
    {
        return stdio(Errno::last());
    }
    if let (Some((made, go)), Some((iso, _))) = (handshake, sandbox)
        && let Some(host) = iso.host_id
    {
        let user_namespace = |e: Errno| {
            InitError::setup(
                "user_namespace",
                e,
                format!(
                    "cannot give the command its own user namespace: {}",
                    e.desc()
                ),
            )
        };
        if let Err(e) = isolation::user_namespace::unshare(host) {
            return user_namespace(e);
        }
        let mut byte = [0u8; 1];
        if File::from(made).write_all(&[1]).is_err()
            || !matches!(File::from(go).read(&mut byte), Ok(1))
        {
            return user_namespace(Errno::EPIPE);
        }
    }
    if let Err(e) = nix::unistd::chdir(cwd.as_c_str()) {
        return workdir_error(cwd_named, e);
    }
    // Last before exec: the command's user, no capabilities, no_new_privs, seccomp. Each
    // step's error names itself (setresuid, capset, seccomp, ...).
    if let Some((iso, filter)) = sandbox
        && let Err(e) = isolation::drop_privileges(iso, filter)
    {
        return e;
    }
    match nix::unistd::execve(program, argv, envp) {
        Err(e) => exec_error(named, e),
        Ok(never) => match never {},
    }
}

/// Why `execve` of `program` failed, as the shell would say it.
fn exec_error(program: &str, errno: Errno) -> InitError {
    let message = match errno {
        Errno::ENOENT => format!("command not found: {program}"),
        Errno::EACCES => format!("permission denied: {program} is not executable"),
        Errno::ENOEXEC => {
            format!("exec format error: {program} is not a program this system can run")
        }
        e => format!("cannot execute {program}: {}", e.desc()),
    };
    InitError {
        kind: ErrorKind::Exec,
        message,
        step: Some("exec".into()),
        errno: Some(errno as i32),
    }
}

/// Why the working directory `cwd` cannot be entered.
fn workdir_error(cwd: &Path, errno: Errno) -> InitError {
    let message = match errno {
        Errno::ENOENT => format!("working directory {} does not exist", cwd.display()),
        Errno::ENOTDIR => format!("working directory {} is not a directory", cwd.display()),
        e => format!(
            "cannot enter working directory {}: {}",
            cwd.display(),
            e.desc()
        ),
    };
    InitError {
        kind: ErrorKind::Setup,
        message,
        step: Some("chdir".into()),
        errno: Some(errno as i32),
    }
}

/// Moves the init into the job's v1 cgroups, then gives it a cgroup namespace rooted there
/// (so the job sees its own cgroup as `/`). The init is single-threaded, so moving its
/// thread (writing "0" to `tasks`) moves the process, without the global lock that a
/// write to `cgroup.procs` from outside takes.
fn join_cgroups(dirs: &[PathBuf]) -> Result<(), InitError> {
    for dir in dirs {
        let tasks = dir.join("tasks");
        std::fs::write(&tasks, b"0").map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            InitError::setup(
                "join_cgroup",
                errno,
                format!("cannot join the job's cgroup {}: {e}", dir.display()),
            )
        })?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| {
        InitError::setup(
            "unshare",
            e,
            format!("cannot create the job's cgroup namespace: {e}"),
        )
    })
}

/// Finds the program like execvp does, with the job's PATH.
fn resolve_program(name: &str, env: &[(String, String)]) -> Result<PathBuf, InitError> {
    let not_found = || InitError {
        kind: ErrorKind::Exec,
        message: format!("command not found: {name}"),
        step: Some("exec".into()),
        errno: Some(Errno::ENOENT as i32),
    };
    if name.is_empty() {
        return Err(not_found());
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(not_found())
}

fn check_workdir(cwd: &Path) -> Result<(), InitError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(workdir_error(cwd, Errno::ENOTDIR)),
        Err(e) => Err(workdir_error(cwd, errno_of(&e))),
    }
}

/// The errno behind an I/O error (EIO when it has none).
fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Copies output to the log, reaps, forwards signals, until the command has ended and its
/// output is drained. Returns the command's exit status.
fn supervise(
    job: RunningCommand,
    mut log: LogWriter,
    mut control: Option<&mut UnixStream>,
) -> ExitStatus {
    let RunningCommand {
        child,
        stdout,
        stderr,
        signals,
    } = job;
    let mut outputs: Vec<(OwnedFd, Stream)> =
        vec![(stdout, Stream::Stdout), (stderr, Stream::Stderr)];
    let mut buf = vec![0u8; READ_CHUNK];
    let mut status: Option<ExitStatus> = None;
    let mut log_failed = false;

    while status.is_none() {
        let control_fd = control.as_ref().map(|c| c.as_fd());
        let mut fds: Vec<PollFd<'_>> = outputs
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        if let Some(c) = control_fd {
            fds.push(PollFd::new(c, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let n_out = outputs.len();
        let control_ready = control.is_some() && ready[n_out + 1];
        let signal_ready = ready[n_out];
        // Output first, so what was written before an exit is logged before it.
        let mut closed = Vec::new();
        for (i, (fd, stream)) in outputs.iter().enumerate() {
            if ready[i] && !copy_once(fd.as_fd(), *stream, &mut buf, &mut log, &mut log_failed) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            outputs.remove(i);
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    status = reap(child).or(status);
                } else if let Ok(s) = Signal::try_from(sig) {
                    // To the command's process group; fall back to the command alone.
                    if kill(Pid::from_raw(-child.as_raw()), s).is_err() {
                        let _ = kill(child, s);
                    }
                }
            }
        }
        if control_ready && let Some(c) = control.as_deref_mut() {
            match read_frame(c) {
                Ok(Some(frame)) => answer_unknown(c, frame),
                // The server went away: the job goes on, its output still reaches the log.
                _ => control = None,
            }
        }
    }
    let status = status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));

    // The command has ended. As PID 1 of the job's namespace, end everything it left
    // behind, so its output pipes close and nothing outlives the job.
    if getpid().as_raw() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        while let Ok(s) = waitpid(Pid::from_raw(-1), None) {
            if matches!(s, WaitStatus::StillAlive) {
                break;
            }
        }
        for (fd, stream) in &outputs {
            while copy_once(fd.as_fd(), *stream, &mut buf, &mut log, &mut log_failed) {}
        }
    } else {
        // Not PID 1 (debugging by hand): take only what is already in the pipes.
        for (fd, stream) in &outputs {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            while copy_once(fd.as_fd(), *stream, &mut buf, &mut log, &mut log_failed) {}
        }
    }
    let _ = log.append_exit(&serde_json::to_vec(&status).unwrap_or_default());
    status
}

/// Reads once from an output pipe into the log. Returns false at end of file.
fn copy_once(
    fd: std::os::fd::BorrowedFd<'_>,
    stream: Stream,
    buf: &mut [u8],
    log: &mut LogWriter,
    failed: &mut bool,
) -> bool {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !*failed && log.append(stream, &buf[..n]).is_err() {
                    // Keep draining so the command never blocks on a full pipe.
                    *failed = true;
                }
                return true;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Reaps every exited child; returns the command's status once it has ended.
fn reap(command: Pid) -> Option<ExitStatus> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                result = Some(ExitStatus::Code(code));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                result = Some(ExitStatus::Signal(sig as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}

fn answer_unknown(control: &mut UnixStream, frame: Frame) {
    if let Message::Request { id, method, .. } = frame.message {
        let _ = write_frame(
            control,
            &Frame::new(Message::Response {
                id,
                result: Err(InitError::protocol(format!("unknown method {method}"))),
            }),
        );
    }
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), InitError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| InitError::setup("pipe", e, format!("cannot create the {what} pipe: {e}")))?;
    // A larger pipe means fewer wake-ups for a chatty command; failure only costs speed.
    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

fn cstring(bytes: &[u8]) -> Result<CString, InitError> {
    CString::new(bytes).map_err(|_| InitError::protocol("an argument contains a NUL byte"))
}

fn cstrings<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<CString>, InitError> {
    items.map(|s| cstring(s.as_bytes())).collect()
}

/// Closes every inherited descriptor above the log: the init holds nothing of the server.
fn close_other_fds() {
    // SAFETY: close_range on descriptors this process does not use.
    unsafe {
        libc::syscall(libc::SYS_close_range, LOG_FD + 1, u32::MAX, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_are_typed_and_said_as_a_shell_would() {
        let e = exec_error("nosuch", Errno::ENOENT);
        assert_eq!(
            (e.kind, e.step.as_deref(), e.errno),
            (ErrorKind::Exec, Some("exec"), Some(libc::ENOENT))
        );
        assert_eq!(e.message, "command not found: nosuch");
        let e = exec_error("./x", Errno::EACCES);
        assert_eq!(e.message, "permission denied: ./x is not executable");
        assert_eq!(exec_error("./x", Errno::ENOEXEC).errno, Some(libc::ENOEXEC));
    }

    #[test]
    fn a_missing_working_directory_says_so() {
        let e = workdir_error(Path::new("/nope"), Errno::ENOENT);
        assert_eq!(
            (e.kind, e.step.as_deref()),
            (ErrorKind::Setup, Some("chdir"))
        );
        assert_eq!(e.message, "working directory /nope does not exist");
        let e = check_workdir(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(
            e.message,
            "working directory /proc/self/status is not a directory"
        );
        assert!(check_workdir(Path::new("/")).is_ok());
    }

    #[test]
    fn programs_are_found_like_execvp_finds_them() {
        let env = |path: &str| vec![("PATH".to_owned(), path.to_owned())];
        assert_eq!(
            resolve_program("sh", &env("/nonexistent:/bin")).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            resolve_program("./x", &env("/bin")).unwrap(),
            Path::new("./x")
        );
        let e = resolve_program("surely-no-such-program", &env("/bin:/usr/bin")).unwrap_err();
        assert_eq!((e.kind, e.errno), (ErrorKind::Exec, Some(libc::ENOENT)));
        assert!(resolve_program("", &env("/bin")).is_err());
    }
}
