//! The one error type of this crate.
//!
//! Every error that touched the file system says which file, in which cgroup directory, and
//! the kernel's errno, e.g. "cannot write memory.max in /sys/fs/cgroup/silo/jobs/3f2a: EBUSY:
//! Device or resource busy". Where the errno has a well-known cgroup meaning, a hint follows.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::controller::Controller;

/// Result with [`CgroupError`].
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// What went wrong while detecting, creating, limiting, measuring or removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup file system (v1 or v2) is mounted.
    #[error("no cgroup file system is mounted (looked in {mountinfo})")]
    NotMounted {
        /// The mount table that was searched.
        mountinfo: String,
    },

    /// The mount table could not be read.
    #[error("cannot read {}: {}", .path.display(), Errno(.cause))]
    Mountinfo {
        /// Usually `/proc/self/mountinfo`.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cgroup interface file could not be read.
    #[error("cannot read {file} in {}: {}", .dir.display(), Errno(.cause))]
    Read {
        /// The interface file, e.g. `memory.peak`.
        file: String,
        /// The cgroup directory holding it.
        dir: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cgroup interface file could not be written.
    #[error("cannot write {file} in {}: {}{}", .dir.display(), Errno(.cause), hint(.file, .cause))]
    Write {
        /// The interface file, e.g. `memory.max`.
        file: String,
        /// The cgroup directory holding it.
        dir: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cgroup interface file held something this crate does not understand.
    #[error("cannot parse {file} in {}: {reason}", .dir.display())]
    Parse {
        /// The interface file.
        file: String,
        /// The cgroup directory holding it.
        dir: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {}: {}", .path.display(), Errno(.cause))]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cgroup directory could not be removed (or listed).
    #[error("cannot remove cgroup {}: {}{}", .path.display(), Errno(.cause), busy_hint(.cause))]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cgroup directory could not be listed or opened.
    #[error("cannot open cgroup {}: {}", .path.display(), Errno(.cause))]
    Open {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A limit was asked for whose controller this host does not offer. Limits are never
    /// silently ignored: the caller decides (the server maps this to FailedPrecondition).
    #[error("cannot {} here: the {controller} controller is not available on this host", action(*.controller))]
    Unsupported {
        /// The missing controller.
        controller: Controller,
    },

    /// A limit is malformed or out of range (the server maps this to InvalidArgument).
    #[error("invalid {limit} limit {value:?}: {reason}")]
    InvalidLimit {
        /// Which limit: `cpu`, `cpus`, `memory`, `io`, `pids`.
        limit: &'static str,
        /// The offending value, as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// A cgroup or job name is not a plain relative path.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Waiting for the kernel (freezing, emptying) took longer than allowed.
    #[error("timed out after {} ms waiting for {what} in {}", .waited.as_millis(), .dir.display())]
    Timeout {
        /// What was awaited, e.g. "the cgroup to become empty".
        what: &'static str,
        /// The cgroup directory.
        dir: PathBuf,
        /// How long was waited.
        waited: Duration,
    },

    /// A process could not be signalled.
    #[error("cannot send SIGKILL to pid {pid} in {}: {}", .dir.display(), .cause)]
    Signal {
        /// The process.
        pid: i32,
        /// The cgroup it was listed in.
        dir: PathBuf,
        /// The errno.
        cause: nix::errno::Errno,
    },

    /// Another open [`crate::CgroupRoot`], normally another silo server's, holds this cgroup
    /// subtree (or one it is nested in, or one nested in it). Two servers sharing a subtree
    /// would kill each other's jobs, so the second one must not use it at all.
    #[error(
        "the cgroup subtree {} is in use by {} — use a different --cgroup-name",
        .path.display(),
        Holder(*.holder)
    )]
    InUse {
        /// The contested directory.
        path: PathBuf,
        /// The pid holding it, when it could be found.
        holder: Option<i32>,
    },

    /// No whole-disk block device holds the given path, so no io limit can apply to it.
    #[error("no block device to throttle for {}: {reason}", .path.display())]
    NoBlockDevice {
        /// The path whose device was looked up.
        path: PathBuf,
        /// Why there is none.
        reason: String,
    },
}

impl CgroupError {
    /// A read or write error whose file is missing becomes [`CgroupError::Unsupported`]: a
    /// missing interface file means the kernel does not offer that controller here.
    pub(crate) fn missing_means_unsupported(self, controller: Controller) -> Self {
        match &self {
            CgroupError::Read { cause, .. } | CgroupError::Write { cause, .. }
                if cause.kind() == io::ErrorKind::NotFound =>
            {
                CgroupError::Unsupported { controller }
            }
            _ => self,
        }
    }

    /// Whether this is a read or write of a file that does not exist.
    pub(crate) fn is_missing_file(&self) -> bool {
        matches!(self,
            CgroupError::Read { cause, .. } | CgroupError::Write { cause, .. }
                if cause.kind() == io::ErrorKind::NotFound)
    }

    pub(crate) fn read(dir: &Path, file: &str, cause: io::Error) -> Self {
        CgroupError::Read {
            file: file.to_owned(),
            dir: dir.to_owned(),
            cause,
        }
    }

    pub(crate) fn parse(dir: &Path, file: &str, reason: impl Into<String>) -> Self {
        CgroupError::Parse {
            file: file.to_owned(),
            dir: dir.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Shows an I/O error as "EBUSY: Device or resource busy" when it carries an errno.
struct Errno<'a>(&'a io::Error);

impl fmt::Display for Errno<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(code) => write!(f, "{}", nix::errno::Errno::from_raw(code)),
            None => write!(f, "{}", self.0),
        }
    }
}

/// "another silo server (pid 4242)", or without a pid "another silo server".
struct Holder(Option<i32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "another silo server (pid {pid})"),
            None => write!(f, "another silo server"),
        }
    }
}

/// What a controller is needed for, for [`CgroupError::Unsupported`].
fn action(controller: Controller) -> String {
    match controller {
        Controller::Freezer => "freeze jobs".to_owned(),
        Controller::Cpuset => "pin jobs to cpus".to_owned(),
        other => format!("limit {other}"),
    }
}

/// What an errno usually means when writing a given cgroup file.
fn hint(file: &str, cause: &io::Error) -> &'static str {
    let Some(code) = cause.raw_os_error() else {
        return "";
    };
    match (file, code) {
        ("cgroup.subtree_control", libc::EBUSY) => {
            " (the cgroup holds processes of its own: no-internal-processes rule)"
        }
        ("cgroup.subtree_control", libc::ENOENT) => {
            " (controller not enabled in the parent's cgroup.subtree_control)"
        }
        ("cgroup.procs", libc::ENOSPC) => " (cpuset.cpus or cpuset.mems of the cgroup is empty)",
        ("cgroup.procs", libc::EBUSY) => {
            " (the cgroup has controllers enabled for children: no-internal-processes rule)"
        }
        ("cgroup.procs", libc::ESRCH) => " (the process has exited)",
        (_, libc::EBUSY) if file.starts_with("memory.") => {
            " (the cgroup already uses more memory than the new limit)"
        }
        (_, libc::ENODEV) => " (not a whole-disk block device)",
        (_, libc::EINVAL) if file.starts_with("cpuset.") => {
            " (CPUs or memory nodes outside the parent's set)"
        }
        (_, libc::EACCES) | (_, libc::EPERM) => {
            " (not permitted: run as root or in a delegated subtree)"
        }
        _ => "",
    }
}

fn busy_hint(cause: &io::Error) -> &'static str {
    if cause.raw_os_error() == Some(libc::EBUSY) {
        " (processes or child cgroups are still in it)"
    } else {
        ""
    }
}
