//! The job's place in line for the kernel's OOM killer.
//!
//! When the host runs out of memory (a job without `--memory`, or many jobs together), the
//! kernel kills the process with the highest badness: its memory plus `oom_score_adj`
//! thousandths of the host's. A job can spread its memory over thousands of small
//! processes so that none of them is the largest, and the victim would then be the server,
//! an init or a host service. So the server lowers its own score (and its zygote and inits
//! inherit it), and every job's command starts at [`JOB_OOM_SCORE_ADJ`]: any process of a
//! job goes before a host process of the same size. The value is written while the command's
//! process still has CAP_SYS_RESOURCE, which makes it the floor: the job may raise it, never
//! lower it.

use nix::errno::Errno;

use crate::protocol::InitError;

/// The `oom_score_adj` of every job's processes: half the host's memory added to their
/// badness.
pub const JOB_OOM_SCORE_ADJ: i32 = 500;

/// Sets the calling process's `oom_score_adj` to [`JOB_OOM_SCORE_ADJ`], as its floor. Called
/// in the command's forked child before it leaves the host's user namespace (the floor is
/// only set by a writer with CAP_SYS_RESOURCE there). Allocates nothing.
pub fn put_job_first_in_line() -> Result<(), InitError> {
    const PATH: &std::ffi::CStr = c"/proc/self/oom_score_adj";
    const VALUE: &[u8] = b"500";
    const _: () = assert!(JOB_OOM_SCORE_ADJ == 500, "VALUE spells JOB_OOM_SCORE_ADJ");
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(PATH.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: writes VALUE's bytes from a live buffer to the descriptor just opened.
    let written = unsafe { libc::write(fd, VALUE.as_ptr().cast(), VALUE.len()) };
    let errno = Errno::last();
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    if written != VALUE.len() as isize {
        return Err(fail(errno));
    }
    Ok(())
}

fn fail(errno: Errno) -> InitError {
    InitError::setup(
        "oom_score_adj",
        errno,
        format!(
            "cannot set the command's oom_score_adj to {JOB_OOM_SCORE_ADJ}: {}",
            errno.desc()
        ),
    )
}
