//! Starting the command: the job's part of the sandbox, then fork, the command's own user
//! namespace, stdio, privileges and exec. Every failure is a typed [`InitError`] for the
//! server, including those of the forked child, whose whole error crosses back through a
//! pipe.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use serde::{Deserialize, Serialize};

use crate::isolation::{self, SyscallFilter};
use crate::protocol::{ErrorKind, InitError};
use crate::{InitSpec, Isolation, SandboxBase};

/// Capacity asked for the output pipes, so a fast writer blocks less often.
pub(super) const PIPE_SIZE: i32 = 1 << 20;

/// The started command and the ends of its output pipes.
pub(super) struct RunningCommand {
    pub(super) child: Pid,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) signals: SignalFd,
}

/// The job's sandbox, entered, with its compiled system-call filter; `None` when the job
/// asked for none (an init run by hand).
type Sandbox<'a> = Option<(&'a Isolation, SyscallFilter)>;

/// The pipes of a user-namespace handshake: the child says on the first that it has made
/// its namespace, and waits on the second for the init to have mapped its ids.
type Handshake = ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd));

/// Builds the sandbox and starts the command. Errors are typed for the server.
/// `disk` is the job's own filesystem for /work, when it has one.
pub(super) fn start(
    spec: &InitSpec,
    prepared: Option<&SandboxBase>,
    disk: Option<OwnedFd>,
) -> Result<RunningCommand, InitError> {
    if spec.argv.is_empty() {
        return Err(InitError::protocol("the job has no command"));
    }
    let sandbox = enter_sandbox(spec, prepared)?;
    if let Some((iso, _)) = &sandbox {
        attach_disk(iso, disk)?;
    }
    let command = command_line(spec)?;
    command.to_c()?;
    let (stdout_r, stdout_w) = pipe("stdout")?;
    let (stderr_r, stderr_w) = pipe("stderr")?;
    let (status_r, status_w) = pipe("exec status")?;
    let handshake = match sandbox.as_ref().and_then(|(iso, _)| iso.host_id) {
        Some(_) => Some((pipe("user namespace")?, pipe("user namespace")?)),
        None => None,
    };
    let (mask, signals) = signals_to_a_signalfd()?;

    // SAFETY: the init is single-threaded, so the child may do anything the parent could.
    match unsafe { fork() } {
        Err(e) => Err(InitError::setup(
            "fork",
            e,
            format!("cannot fork the command: {e}"),
        )),
        Ok(ForkResult::Child) => {
            drop((stdout_r, stderr_r, status_r));
            let handshake = handshake.map(|((_, made_w), (go_r, _))| (made_w, go_r));
            let error = exec_command(
                Source::Given(&command),
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
            drop((stdout_w, stderr_w, status_w));
            if let (Some(handshake), Some((iso, _))) = (handshake, sandbox.as_ref()) {
                map_user_namespace(child, iso, handshake)?;
            }
            exec_report(child, status_r)?;
            Ok(RunningCommand {
                child,
                stdout: stdout_r,
                stderr: stderr_r,
                signals,
            })
        }
    }
}

/// Joins the job's cgroup namespace when nothing prepared it, and enters the job's sandbox
/// (all of it, or the job's half of a prepared one), so that the program and the working
/// directory are then looked up in the job's own root.
fn enter_sandbox<'a>(
    spec: &'a InitSpec,
    prepared: Option<&SandboxBase>,
) -> Result<Sandbox<'a>, InitError> {
    // Without a prepare step (an init run by hand) there are no cgroups to join, but the
    // job still gets its own cgroup namespace.
    if prepared.is_none() {
        join_cgroups(&[])?;
    }
    match (&spec.isolation, prepared) {
        (Some(iso), None) => {
            isolation::enter(iso)?;
            Ok(Some((iso, isolation::compile_seccomp()?)))
        }
        (Some(iso), Some(base)) if iso.base() == *base => {
            isolation::finish(iso)?;
            Ok(Some((iso, isolation::compile_seccomp()?)))
        }
        (Some(_), Some(_)) => Err(InitError::protocol(
            "the job's sandbox differs from the one this init prepared",
        )),
        (None, _) => Ok(None),
    }
}

/// The command's program (found in its PATH in the job's root, which the caller has
/// entered), argv, environment and working directory.
fn command_line(spec: &InitSpec) -> Result<CommandLine, InitError> {
    let program = resolve_program(&spec.argv[0], &spec.env)?;
    check_workdir(&spec.cwd)?;
    Ok(CommandLine {
        program: program.to_string_lossy().into_owned(),
        argv: spec.argv.clone(),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: spec.cwd.clone(),
    })
}

/// Blocks the signals the init handles and opens a signalfd for them: they stay blocked in
/// the init and are unblocked in the command's child before exec.
fn signals_to_a_signalfd() -> Result<(SigSet, SignalFd), InitError> {
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
    Ok((mask, signals))
}

/// The init's half of the user-namespace handshake: waits for `child` to have made its
/// namespace, maps its ids to the job's host id, and lets it go on. A child that failed
/// before its namespace existed says nothing; its report follows on the status pipe.
fn map_user_namespace(child: Pid, iso: &Isolation, handshake: Handshake) -> Result<(), InitError> {
    let Some(host) = iso.host_id else {
        return Ok(());
    };
    // The child's ends go first, so that a child that died early reads as an end of file,
    // not as a wait for ever.
    let ((made_r, made_w), (go_r, go_w)) = handshake;
    drop((made_w, go_r));
    let mut made = [0u8; 1];
    if matches!(File::from(made_r).read(&mut made), Ok(1)) {
        if let Err(e) = isolation::user_namespace::map_ids(child, iso.uid, iso.gid, host) {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(e);
        }
        let _ = File::from(go_w).write_all(&[1]);
    }
    Ok(())
}

/// Waits for `child` to exec: the status pipe closes at exec (close-on-exec) with nothing
/// written; a report means it failed before, and is its typed error.
fn exec_report(child: Pid, status: OwnedFd) -> Result<(), InitError> {
    let mut report = Vec::new();
    let _ = File::from(status).read_to_end(&mut report);
    if report.is_empty() {
        return Ok(());
    }
    let _ = waitpid(child, None);
    Err(serde_json::from_slice(&report).unwrap_or_else(|e| {
        InitError::protocol(format!(
            "the command's process failed before exec, and its report is malformed: {e}"
        ))
    }))
}

/// The command to exec: what a command's process forked ahead of its job receives
/// through its command-line pipe, as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CommandLine {
    /// The program's path, found in the job's PATH.
    program: String,
    /// argv, the program as the job named it first.
    argv: Vec<String>,
    /// `NAME=VALUE` entries.
    env: Vec<String>,
    /// The working directory.
    cwd: PathBuf,
}

/// A [`CommandLine`] as execve takes it.
struct CCommandLine {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

impl CommandLine {
    /// The C strings execve needs; an error for an embedded NUL byte.
    fn to_c(&self) -> Result<CCommandLine, InitError> {
        Ok(CCommandLine {
            program: cstring(self.program.as_bytes())?,
            argv: cstrings(self.argv.iter().map(String::as_str))?,
            envp: cstrings(self.env.iter().map(String::as_str))?,
            cwd: cstring(self.cwd.as_os_str().as_encoded_bytes())?,
        })
    }
}

/// Where the forked child's command line comes from.
pub(super) enum Source<'a> {
    /// Known before the fork.
    Given(&'a CommandLine),
    /// Read, once its job is known, from this pipe (to its end) of a process forked ahead.
    Pipe(OwnedFd),
}

/// A command's process forked while its init waits for the job: its stdio wired, in its own
/// user namespace, without privileges and with its system calls filtered, it waits for its
/// command line on `request`.
pub(super) struct Preforked {
    child: Pid,
    stdout: OwnedFd,
    stderr: OwnedFd,
    signals: SignalFd,
    /// The write end of its command-line pipe.
    request: OwnedFd,
    /// The read end of its exec-status pipe.
    status: OwnedFd,
    /// The sandbox it was made in, entered already.
    iso: Isolation,
}

/// Forks the command's process of the job whose sandbox `iso` the init has entered
/// ([`isolation::finish`]), up to the exec: see [`Preforked`].
pub(super) fn prefork(iso: &Isolation) -> Result<Preforked, InitError> {
    let filter = isolation::compile_seccomp()?;
    let (stdout_r, stdout_w) = pipe("stdout")?;
    let (stderr_r, stderr_w) = pipe("stderr")?;
    let (status_r, status_w) = pipe("exec status")?;
    let (request_r, request_w) = pipe("command line")?;
    let handshake = match iso.host_id {
        Some(_) => Some((pipe("user namespace")?, pipe("user namespace")?)),
        None => None,
    };
    let (mask, signals) = signals_to_a_signalfd()?;
    // SAFETY: the init is single-threaded, so the child may do anything the parent could.
    match unsafe { fork() } {
        Err(e) => Err(InitError::setup(
            "fork",
            e,
            format!("cannot fork the command: {e}"),
        )),
        Ok(ForkResult::Child) => {
            drop((stdout_r, stderr_r, status_r, request_w));
            // A ready init may be prepared under SCHED_IDLE, which a fork inherits; the
            // command runs under the normal policy at nice 0. Set here, while this process
            // still has the init's privileges: without CAP_SYS_NICE it could not leave
            // SCHED_IDLE, and everything the command forks inherits the policy.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain system calls on this process; `param` outlives the call.
            unsafe {
                libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
                libc::setpriority(libc::PRIO_PROCESS, 0, 0);
            }
            let handshake = handshake.map(|((_, made_w), (go_r, _))| (made_w, go_r));
            let error = exec_command(
                Source::Pipe(request_r),
                &mask,
                Some(&(iso, filter)),
                handshake,
                stdout_w,
                stderr_w,
            );
            let report = serde_json::to_vec(&error).unwrap_or_default();
            let _ = File::from(status_w).write_all(&report);
            // SAFETY: leave the forked child without running the init's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop((stdout_w, stderr_w, status_w, request_r));
            if let Some(handshake) = handshake {
                map_user_namespace(child, iso, handshake)?;
            }
            Ok(Preforked {
                child,
                stdout: stdout_r,
                stderr: stderr_r,
                signals,
                request: request_w,
                status: status_r,
                iso: iso.clone(),
            })
        }
    }
}

/// Mounts the job's own filesystem (`disk`, a detached mount from the server) at /work
/// when its sandbox has one.
fn attach_disk(iso: &Isolation, disk: Option<OwnedFd>) -> Result<(), InitError> {
    if !iso.work_disk {
        return Ok(());
    }
    let tree = disk.ok_or_else(|| {
        InitError::protocol("the job has a disk of its own, but its mount did not arrive")
    })?;
    isolation::attach_work_disk(tree)
}

/// Starts the job `spec` in the process [`prefork`] made: mounts its disk and its shared
/// directory (`disk` and `shared`, detached mounts from the server) when it has them, then
/// sends the command line and waits for the exec.
pub(super) fn start_preforked(
    spec: &InitSpec,
    pre: Preforked,
    disk: Option<OwnedFd>,
    shared: Option<OwnedFd>,
) -> Result<RunningCommand, InitError> {
    let child = pre.child;
    let started = (|| {
        if spec.argv.is_empty() {
            return Err(InitError::protocol("the job has no command"));
        }
        let Some(iso) = &spec.isolation else {
            return Err(InitError::protocol(
                "the job has no sandbox, but this init prepared one",
            ));
        };
        let mut expected = pre.iso.clone();
        expected.shared_dir.clone_from(&iso.shared_dir);
        if *iso != expected {
            return Err(InitError::protocol(
                "the job's sandbox differs from the one this init prepared",
            ));
        }
        attach_disk(iso, disk)?;
        if iso.shared_dir.is_some() {
            let tree = shared.ok_or_else(|| {
                InitError::protocol("the job has a shared directory, but its mount did not arrive")
            })?;
            isolation::attach_shared(tree)?;
        }
        let command = command_line(spec)?;
        command.to_c()?;
        let request = serde_json::to_vec(&command)
            .map_err(|e| InitError::protocol(format!("cannot encode the command line: {e}")))?;
        // A child that failed before it read has reported why on the status pipe.
        let _ = File::from(pre.request).write_all(&request);
        Ok(())
    })();
    if let Err(e) = started {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    exec_report(child, pre.status)?;
    Ok(RunningCommand {
        child,
        stdout: pre.stdout,
        stderr: pre.stderr,
        signals: pre.signals,
    })
}

/// In the forked child: wire up stdio, enter its own user namespace (with `handshake`: the
/// pipe to say it is made, the pipe to wait on for the ids), drop every privilege, take the
/// command line from `source` (waiting for it, for a process forked ahead), enter the work
/// dir, exec. Returns only on failure, with what failed.
pub(super) fn exec_command(
    source: Source<'_>,
    mask: &SigSet,
    sandbox: Option<&(&Isolation, SyscallFilter)>,
    handshake: Option<(OwnedFd, OwnedFd)>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> InitError {
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
    reset_ignored_signals();
    // A new session: the command leads its own process group, which is what the init
    // forwards signals to.
    let _ = nix::unistd::setsid();
    // First in line for the OOM killer, before the user namespace below takes the
    // privilege that makes it a floor.
    if let Err(e) = isolation::oom::put_job_first_in_line() {
        return e;
    }
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
    // The command's user, no capabilities, no_new_privs, seccomp. Each step's error names
    // itself (setresuid, capset, seccomp, ...).
    if let Some((iso, filter)) = sandbox
        && let Err(e) = isolation::drop_privileges(iso, filter)
    {
        return e;
    }
    let read;
    let cmd = match source {
        Source::Given(cmd) => cmd,
        Source::Pipe(request) => {
            // Room for a usual command line in one read (an empty Vec is read into 32
            // bytes at a time at first); a longer one grows it.
            let mut bytes = Vec::with_capacity(16 * 1024);
            if let Err(e) = File::from(request).read_to_end(&mut bytes) {
                return InitError::setup(
                    "command_line",
                    errno_of(&e),
                    format!("cannot read the command line: {e}"),
                );
            }
            read = match serde_json::from_slice::<CommandLine>(&bytes) {
                Ok(cmd) => cmd,
                Err(e) => {
                    return InitError::protocol(format!("malformed command line: {e}"));
                }
            };
            &read
        }
    };
    let c = match cmd.to_c() {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = nix::unistd::chdir(c.cwd.as_c_str()) {
        return workdir_error(&cmd.cwd, e);
    }
    let named = cmd.argv.first().map_or("", String::as_str);
    match nix::unistd::execve(&c.program, &c.argv, &c.envp) {
        Err(e) => exec_error(named, e),
        Ok(never) => match never {},
    }
}

/// Sets every signal back to its default action. An ignored signal stays ignored across
/// execve: Rust's runtime ignores SIGPIPE in silo's processes, and a server started in the
/// background of a shell ignores SIGINT and SIGQUIT. Without this a job's `yes | head`
/// printed "Broken pipe" instead of ending quietly, and its processes could not be
/// interrupted. The command starts as it would from a shell. The system call itself, not
/// glibc's wrapper, which refuses the signals glibc keeps for its threads (32 and 33).
fn reset_ignored_signals() {
    // The kernel's struct sigaction, zeroed: SIG_DFL, no flags, an empty mask (room for
    // the largest layout; the handler comes first in all of them).
    let default = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid, zeroed kernel sigaction (the default action)
        // and the kernel's sigset size; this single-threaded child installs no handler.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// Why `execve` of `program` failed, as the shell would say it.
pub(super) fn exec_error(program: &str, errno: Errno) -> InitError {
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
pub(super) fn workdir_error(cwd: &Path, errno: Errno) -> InitError {
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
pub(super) fn join_cgroups(dirs: &[PathBuf]) -> Result<(), InitError> {
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
pub(super) fn resolve_program(name: &str, env: &[(String, String)]) -> Result<PathBuf, InitError> {
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

pub(super) fn check_workdir(cwd: &Path) -> Result<(), InitError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(workdir_error(cwd, Errno::ENOTDIR)),
        Err(e) => Err(workdir_error(cwd, errno_of(&e))),
    }
}

/// The errno behind an I/O error (EIO when it has none).
pub(super) fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

pub(super) fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), InitError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| InitError::setup("pipe", e, format!("cannot create the {what} pipe: {e}")))?;
    // A larger pipe means fewer wake-ups for a chatty command; failure only costs speed.
    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

pub(super) fn cstring(bytes: &[u8]) -> Result<CString, InitError> {
    CString::new(bytes).map_err(|_| InitError::protocol("an argument contains a NUL byte"))
}

pub(super) fn cstrings<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<CString>, InitError> {
    items.map(|s| cstring(s.as_bytes())).collect()
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
