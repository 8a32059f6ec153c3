//! What the isolation tests share: forking checks into children and new namespaces, reading
//! their verdicts back, and making sure nothing of a sandbox is left on the host.
//!
//! The test files include this file with `#[path]`; built on its own it has no tests.
#![allow(dead_code)]

use std::any::Any;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use silo_sandbox::{Isolation, Network, Rootfs};

/// A check's verdict: `Err` says what was wrong.
pub type Check = Result<(), String>;

/// How long one forked check may take before it is killed and fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// The hostname the tests give their jobs.
pub const HOSTNAME: &str = "job-3f2a";

/// The uid and gid the tests' commands run as.
pub const JOB_UID: u32 = 1000;

/// True when the tests can run (as root). Otherwise says loudly that they are skipped —
/// unless CI=true, where a skip is a failure.
pub fn root_or_skip() -> bool {
    skip_unless(
        nix::unistd::geteuid().is_root(),
        "root (the isolation tests build real namespaces and mounts)",
    )
}

/// True when `available`; otherwise says loudly that the test is skipped because it needs
/// `what` — unless CI=true, where a skip is a failure.
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs {what}, and CI=true does not allow skipping it");
    }
    // Straight to the process's stderr: eprintln! would be captured and hidden by the test
    // harness when the test passes.
    let _ = writeln!(std::io::stderr(), "SKIPPED: needs {what}");
    false
}

/// Runs `check` in a forked child and returns its verdict; a panic, a crash, or running past
/// the deadline is a failure. The child dies with its parent.
pub fn in_child(check: impl FnOnce() -> Check) -> Check {
    let (verdict_r, verdict_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only runs `check` and exits with _exit; glibc's allocator is safe to
    // use after fork, and the child never touches the test harness's locks.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(verdict_r);
            // SAFETY: PR_SET_PDEATHSIG takes integers only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let (code, message) = match std::panic::catch_unwind(AssertUnwindSafe(check)) {
                Ok(Ok(())) => (0, String::new()),
                Ok(Err(message)) => (1, message),
                Err(panic) => (2, format!("panicked: {}", panic_text(&panic))),
            };
            let _ = File::from(verdict_w).write_all(message.as_bytes());
            // SAFETY: leaves the forked child without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(verdict_w);
            let message = read_until_eof(verdict_r, child);
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) if message.is_empty() => Ok(()),
                Ok(WaitStatus::Exited(_, code)) => Err(format!("{message} (exit {code})")),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    Err(format!("{message} (killed by {signal})"))
                }
                other => Err(format!("{message} (wait: {other:?})")),
            }
        }
    }
}

/// Runs `check` as PID 1 of new pid, mount, uts, ipc and net namespaces — where the init
/// runs — with mount propagation already private, so a check that goes wrong cannot mount
/// anything on the host.
pub fn in_namespaces(check: impl FnOnce() -> Check) -> Check {
    in_child(|| {
        unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWPID,
        )
        .map_err(|e| format!("unshare: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        // The first child forked after unsharing the pid namespace is its PID 1.
        in_child(check)
    })
}

/// Reads everything from `pipe`, killing `child` if it is still writing at the deadline.
fn read_until_eof(pipe: OwnedFd, child: Pid) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    let mut file = File::from(pipe);
    loop {
        if Instant::now() >= deadline {
            let _ = kill(child, Signal::SIGKILL);
            out.extend_from_slice(b"timed out");
            break;
        }
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 1000u16) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                out.extend_from_slice(format!("poll: {e}").as_bytes());
                break;
            }
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.extend_from_slice(format!("read: {e}").as_bytes());
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Fails unless `result` is the error `errno`.
pub fn expect_errno<T>(result: std::io::Result<T>, errno: Errno, what: &str) -> Check {
    match result {
        Err(e) if e.raw_os_error() == Some(errno as i32) => Ok(()),
        Err(e) => Err(format!("{what}: expected {errno}, got {e}")),
        Ok(_) => Err(format!("{what}: expected {errno}, but it succeeded")),
    }
}

/// Fails unless `path` does not exist (as seen without following a last symlink).
pub fn expect_absent(path: impl AsRef<Path>) -> Check {
    let path = path.as_ref();
    expect_errno(
        fs::symlink_metadata(path),
        Errno::ENOENT,
        &format!("{} should be absent", path.display()),
    )
}

/// Fails with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl Into<String>) -> Check {
    if condition {
        Ok(())
    } else {
        Err(message.into())
    }
}

/// The host directories one sandbox uses: an empty root directory and a work directory,
/// in a temporary directory of their own.
pub struct HostDirs {
    dir: tempfile::TempDir,
    /// The empty directory the job's root is assembled on.
    pub root: PathBuf,
    /// The job's work directory.
    pub work: PathBuf,
}

impl HostDirs {
    /// Fresh, empty directories.
    pub fn create() -> HostDirs {
        let dir = tempfile::Builder::new()
            .prefix("silo-isolation-")
            .tempdir()
            .expect("creating the test's temporary directory");
        let (root, work) = (dir.path().join("root"), dir.path().join("work"));
        fs::create_dir(&root).unwrap();
        fs::create_dir(&work).unwrap();
        std::os::unix::fs::chown(&work, Some(JOB_UID), Some(JOB_UID)).unwrap();
        HostDirs { dir, root, work }
    }

    /// The temporary directory holding everything this sandbox uses on the host.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A sandbox in these directories, as the server would ask for it.
    pub fn isolation(&self, rootfs: Rootfs) -> Isolation {
        Isolation {
            hostname: HOSTNAME.into(),
            root_dir: self.root.clone(),
            work_dir: self.work.clone(),
            work_disk: false,
            rootfs,
            uid: JOB_UID,
            gid: JOB_UID,
            host_id: None,
            network: Network::None,
            tmp_size_bytes: 8 << 20,
            tmp_inodes: 1024,
            shared_dir: None,
        }
    }

    /// Checks that the sandbox left nothing on the host (no mount under these directories,
    /// the root directory still empty), removes the directories, then fails if `outcome` did.
    pub fn finish(self, outcome: Check) {
        let path = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&path)).collect();
        let root_entries = fs::read_dir(&self.root).map(|d| d.count()).unwrap_or(0);
        let removed = self.dir.close();
        if let Err(e) = outcome {
            panic!("{e}");
        }
        assert!(leaked.is_empty(), "mounts left on the host: {leaked:?}");
        assert_eq!(
            root_entries, 0,
            "the root directory is not empty on the host"
        );
        removed.expect("removing the test's directories from the host");
    }
}
