//! The job's init process: PID 1 of the job's pid namespace.
//!
//! It says hello, receives the [`InitSpec`](crate::InitSpec), builds the sandbox, starts
//! the command and then stays for the job's whole life: it copies the command's output into
//! the job's log, reaps every zombie (orphans included), forwards SIGTERM, SIGINT and SIGHUP
//! to the command, and when the command ends, kills whatever the job left behind, drains
//! the last output and reports the exit. If the server goes away the job keeps running and
//! its output keeps reaching the log; a restarted server reads the exit from the log.
//!
//! One idea a file:
//! - [`session`]: the conversation with the server (hello, prepare, start, the exit report);
//! - [`launch`]: the sandbox's last steps and the command's fork and exec, with typed errors;
//! - [`pid1`]: the loop that stays for the job's life.

mod launch;
mod pid1;
mod session;

/// A test's hook, read in debug builds only: milliseconds an init lingers after its exit
/// report, as a broken init would (the server kills it after a grace).
#[cfg(debug_assertions)]
pub(crate) const LINGER_ENV: &str = "SILO_TEST_INIT_LINGER_MS";

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use crate::protocol::{CONTROL_FD, LOG_FD};
use session::Init;

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

/// Closes every inherited descriptor above the log: the init holds nothing of the server.
fn close_other_fds() {
    // SAFETY: close_range on descriptors this process does not use.
    unsafe {
        libc::syscall(libc::SYS_close_range, LOG_FD + 1, u32::MAX, 0);
    }
}
