//! One job's cgroup: limits, membership, usage, freezing, killing, removal.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::controller::Controller;
use crate::error::{CgroupError, Result};
use crate::file::{self, HeldFiles};
use crate::limits::Limits;
use crate::placement::{Placement, Version};
use crate::usage::Usage;
use crate::{pids, v1, v2};

/// How long freezing may take before it is reported as stuck.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`JobCgroup::kill_all`] waits for the cgroup to empty.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`JobCgroup::remove`] retries while the kernel still counts exiting processes.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The cgroup of one job, in every hierarchy silo uses. Made by
/// [`crate::CgroupRoot::create_job`]; removed only by [`JobCgroup::remove`] (dropping it
/// leaves the cgroup in place, e.g. for a job adopted after a restart).
#[derive(Debug)]
pub struct JobCgroup {
    id: String,
    place: Placement,
    /// The unified directory, opened for clone3(CLONE_INTO_CGROUP).
    unified_fd: Option<OwnedFd>,
    /// The files its usage is read from, kept open (see [`JobCgroup::hold_usage_files`]).
    usage_files: HeldFiles,
}

impl JobCgroup {
    pub(crate) fn open(id: &str, place: Placement) -> Result<JobCgroup> {
        let unified_fd = match &place.unified {
            Some(dir) => Some(open_dir(dir)?),
            None => None,
        };
        Ok(JobCgroup {
            id: id.to_owned(),
            place,
            unified_fd,
            usage_files: HeldFiles::default(),
        })
    }

    /// Opens the files [`JobCgroup::final_usage`] reads and keeps them open (five or six,
    /// a descriptor each), so that reading them later costs a `pread` per file instead of
    /// an open, a read and a close. Called where the cgroup is made or adopted, ahead of the
    /// job's end, whose client waits for that read. The files only a running job's usage
    /// reads are held from their first read; a file that cannot be read now is opened
    /// again when it is needed.
    pub(crate) fn hold_usage_files(&self) {
        let _ = self.final_usage();
    }

    /// The job id this cgroup was made for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directories of this cgroup, unified first, then one per distinct v1 hierarchy.
    pub fn dirs(&self) -> Vec<&Path> {
        self.place.dirs()
    }

    /// The v1 directories of this cgroup (none on a pure v2 host). A single-threaded process
    /// can join them itself by writing "0" to each one's `tasks` file: moving the calling
    /// thread skips the kernel's global threadgroup lock (and the RCU grace period it waits
    /// for), which makes it far cheaper than [`JobCgroup::add_pid`] from outside.
    pub fn legacy_dirs(&self) -> Vec<&Path> {
        self.place.legacy_dirs()
    }

    /// Writes every limit in `limits`. Nothing is written when a limit is invalid
    /// ([`CgroupError::InvalidLimit`]) or its controller is not available here
    /// ([`CgroupError::Unsupported`]): a limit is never silently dropped.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        limits.validate()?;
        for controller in limits.controllers().iter() {
            if self.place.controller_dir(controller).is_none() {
                return Err(CgroupError::Unsupported { controller });
            }
        }
        if let Some(cpus) = &limits.cpus {
            match self.controller_dir(Controller::Cpuset)? {
                (Version::V1, dir) => v1::cpuset::apply(dir, cpus)?,
                (Version::V2, dir) => v2::cpuset::apply(dir, cpus)?,
            }
        }
        if let Some(percent) = limits.cpu_percent {
            match self.controller_dir(Controller::Cpu)? {
                (Version::V1, dir) => v1::cpu::apply(dir, percent)?,
                (Version::V2, dir) => v2::cpu::apply(dir, percent)?,
            }
        }
        if let Some(bytes) = limits.memory_bytes {
            match self.controller_dir(Controller::Memory)? {
                (Version::V1, dir) => v1::memory::apply(dir, bytes)?,
                (Version::V2, dir) => v2::memory::apply(dir, bytes)?,
            }
        }
        if let Some(io) = &limits.io {
            match self.controller_dir(Controller::Io)? {
                (Version::V1, dir) => v1::blkio::apply(dir, io)?,
                (Version::V2, dir) => v2::io::apply(dir, io)?,
            }
        }
        if let Some(max) = limits.pids {
            let (_, dir) = self.controller_dir(Controller::Pids)?;
            pids::apply(dir, max)?;
        }
        Ok(())
    }

    /// The directory of the unified (v2) cgroup, open, for `clone3` with
    /// `CLONE_INTO_CGROUP` (Linux 5.7+): the child starts inside it, before it runs anything.
    /// `None` on the legacy layout. On v1 and hybrid hosts the child must still join the v1
    /// hierarchies with [`JobCgroup::add_pid`] (see [`JobCgroup::needs_add_pid_after_clone`]).
    pub fn clone_into_fd(&self) -> Option<BorrowedFd<'_>> {
        self.unified_fd.as_ref().map(AsFd::as_fd)
    }

    /// Whether a child started with [`JobCgroup::clone_into_fd`] must still be added with
    /// [`JobCgroup::add_pid`]: true when v1 hierarchies are in use (legacy and hybrid).
    pub fn needs_add_pid_after_clone(&self) -> bool {
        !self.place.legacy.is_empty()
    }

    /// Moves process `pid` (all its threads) into this cgroup in every hierarchy. Its future
    /// children are born inside. Adding a process that is already in is harmless.
    pub fn add_pid(&self, pid: Pid) -> Result<()> {
        if let Some(dir) = &self.place.unified {
            v2::add_pid(dir, pid.as_raw())?;
        }
        for dir in self.place.legacy_dirs() {
            v1::add_pid(dir, pid.as_raw())?;
        }
        Ok(())
    }

    /// The processes in this cgroup (from `cgroup.procs` of every hierarchy; not those of
    /// child cgroups).
    pub fn pids(&self) -> Result<Vec<Pid>> {
        let mut all = BTreeSet::new();
        for dir in self.place.dirs() {
            match file::procs(dir) {
                Ok(pids) => all.extend(pids),
                Err(e) if e.is_missing_file() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all.into_iter().map(Pid::from_raw).collect())
    }

    /// What the job has used so far; see [`Usage`] for what `None` means.
    pub fn usage(&self) -> Result<Usage> {
        self.read_usage(false)
    }

    /// What the job used, read once it has ended (nothing of it runs any more): as
    /// [`JobCgroup::usage`], but the memory and the processes in use now are 0 and not
    /// read. Its client waits for the end that this is part of.
    pub fn final_usage(&self) -> Result<Usage> {
        self.read_usage(true)
    }

    /// Each interface file is read once (the cgroup files are slow to open: a new
    /// cgroup's first open of each makes its kernfs dentry and inode).
    fn read_usage(&self, ended: bool) -> Result<Usage> {
        let mut usage = Usage::default();
        let cpu = self.place.controller_dir(Controller::Cpu);
        let files = &self.usage_files;
        let v2_times = match &self.place.unified {
            Some(dir) => {
                let throttled = matches!(cpu, Some((Version::V2, _)));
                v2::cpu::read_stat(files, dir, throttled, &mut usage)?
            }
            None => false,
        };
        if !v2_times && let Some(dir) = self.place.legacy.get("cpuacct") {
            v1::cpuacct::read_times(files, dir, &mut usage)?;
        }
        if let Some((Version::V1, dir)) = cpu {
            v1::cpu::read_throttled(files, dir, &mut usage)?;
        }
        match self.place.controller_dir(Controller::Memory) {
            Some((Version::V1, dir)) => v1::memory::read_usage(files, dir, ended, &mut usage)?,
            Some((Version::V2, dir)) => v2::memory::read_usage(files, dir, ended, &mut usage)?,
            None => {}
        }
        match self.place.controller_dir(Controller::Io) {
            Some((Version::V1, dir)) => v1::blkio::read_usage(files, dir, &mut usage)?,
            Some((Version::V2, dir)) => v2::io::read_usage(files, dir, &mut usage)?,
            None => {}
        }
        if let Some((_, dir)) = self.place.controller_dir(Controller::Pids) {
            pids::read_usage(files, dir, ended, &mut usage)?;
        }
        Ok(usage)
    }

    /// Only the CPU time used so far and the memory used now (`cpu_usec`,
    /// `memory_current_bytes`; the rest stays `None`): two files, where [`JobCgroup::usage`]
    /// reads about eight. For sampling every running job often (a metrics scrape).
    pub fn cpu_and_memory(&self) -> Result<Usage> {
        let mut usage = Usage::default();
        let files = &self.usage_files;
        let v2_stat = match &self.place.unified {
            Some(dir) => files
                .read_optional(dir, "cpu.stat")?
                .map(|text| (dir, text)),
            None => None,
        };
        match v2_stat {
            Some((dir, text)) => {
                usage.cpu_usec = file::key_in(&text, dir, "cpu.stat", "usage_usec")?
            }
            None => {
                if let Some(dir) = self.place.legacy.get("cpuacct") {
                    usage.cpu_usec = files.read_number(dir, "cpuacct.usage")?.map(|ns| ns / 1000);
                }
            }
        }
        usage.memory_current_bytes = match self.place.controller_dir(Controller::Memory) {
            Some((Version::V1, dir)) => files.read_number(dir, "memory.usage_in_bytes")?,
            Some((Version::V2, dir)) => files.read_number(dir, "memory.current")?,
            None => None,
        };
        Ok(usage)
    }

    /// Stops every process in the cgroup until [`JobCgroup::thaw`]; returns once they are
    /// all stopped. [`CgroupError::Unsupported`] (freezer) when the host cannot freeze.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Lets frozen processes run again.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.controller_dir(Controller::Freezer)? {
            (Version::V1, dir) => v1::freezer::set_frozen(dir, frozen, FREEZE_TIMEOUT),
            (Version::V2, dir) => v2::freezer::set_frozen(dir, frozen, FREEZE_TIMEOUT),
        }
    }

    /// Kills every process in the cgroup, including whatever they forked, daemonized or
    /// double-forked, and returns once the cgroup is empty (at most 5 s, else
    /// [`CgroupError::Timeout`]).
    ///
    /// Where the unified tree has `cgroup.kill` (v2 and hybrid, Linux 5.14+) one write kills
    /// them all, atomically with respect to forks. Otherwise (v1): freeze, SIGKILL every
    /// listed process, thaw (a frozen v1 task dies only once thawed), and repeat until empty.
    ///
    /// A frozen job is killed too: it is thawed after the kill, because a task frozen by the
    /// v1 freezer does not act on SIGKILL until thawed.
    pub fn kill_all(&self) -> Result<()> {
        match &self.place.unified {
            Some(dir) if v2::events::can_kill(dir) => {
                v2::events::kill(dir)?;
                match self.thaw() {
                    Ok(()) | Err(CgroupError::Unsupported { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            _ => self.kill_by_signal()?,
        }
        self.wait_empty(KILL_TIMEOUT)
    }

    fn kill_by_signal(&self) -> Result<()> {
        let frozen = match self.freeze() {
            Ok(()) => true,
            Err(CgroupError::Unsupported { .. }) => false,
            Err(timeout @ CgroupError::Timeout { .. }) => {
                tracing::warn!(job = %self.id, "{timeout}; killing anyway");
                true
            }
            Err(other) => return Err(other),
        };
        let signalled = self.signal_all();
        if frozen {
            self.thaw()?;
        }
        signalled?;
        // Without a freezer, processes may have forked while being signalled.
        let start = Instant::now();
        while self.is_populated()? && start.elapsed() < KILL_TIMEOUT {
            self.signal_all()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGKILLs every listed process (never the calling process itself).
    fn signal_all(&self) -> Result<()> {
        let me = nix::unistd::getpid();
        for pid in self.pids()? {
            if pid == me || pid.as_raw() <= 1 {
                continue;
            }
            match kill(pid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(cause) => {
                    return Err(CgroupError::Signal {
                        pid: pid.as_raw(),
                        dir: self
                            .place
                            .dirs()
                            .first()
                            .map(|d| d.to_path_buf())
                            .unwrap_or_default(),
                        cause,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether any process is still in the cgroup (or, on v2, in a child cgroup).
    pub fn is_populated(&self) -> Result<bool> {
        match &self.place.unified {
            Some(dir) if v2::events::supported(dir) => v2::events::populated(dir),
            _ => Ok(!self.pids()?.is_empty()),
        }
    }

    /// Waits until no process is left in the cgroup, or fails with [`CgroupError::Timeout`].
    /// On v2 it sleeps on `cgroup.events` notifications; on v1 it polls `cgroup.procs`.
    pub fn wait_empty(&self, timeout: Duration) -> Result<()> {
        if let Some(dir) = &self.place.unified
            && v2::events::supported(dir)
        {
            return v2::events::wait_for(
                dir,
                "populated",
                0,
                timeout,
                "the cgroup to become empty",
            );
        }
        let start = Instant::now();
        while self.is_populated()? {
            if start.elapsed() >= timeout {
                return Err(CgroupError::Timeout {
                    what: "the cgroup to become empty",
                    dir: self
                        .place
                        .dirs()
                        .first()
                        .map(|d| d.to_path_buf())
                        .unwrap_or_default(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// `cgroup.events` of the unified cgroup, where there is one: its `populated` line turns
    /// to 0 when the last process leaves, and the kernel signals each change as an inotify
    /// IN_MODIFY (and POLLPRI), so a server can await job exit without polling.
    pub fn events_path(&self) -> Option<PathBuf> {
        self.place
            .unified
            .as_ref()
            .map(|dir| dir.join("cgroup.events"))
            .filter(|path| path.exists())
    }

    /// Removes the cgroup from every hierarchy. Processes that are exiting can keep it busy
    /// for a moment, so EBUSY is retried for up to a second; a cgroup already gone is fine.
    /// Processes still running make it fail: call [`JobCgroup::kill_all`] first.
    pub fn remove(self) -> Result<()> {
        let mut first_error = None;
        for dir in self.place.dirs() {
            if let Err(e) = remove_dir(dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn controller_dir(&self, controller: Controller) -> Result<(Version, &Path)> {
        self.place
            .controller_dir(controller)
            .ok_or(CgroupError::Unsupported { controller })
    }
}

/// Removes one cgroup directory, retrying EBUSY briefly; a missing directory is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(cause) if cause.kind() == ErrorKind::NotFound => return Ok(()),
            Err(cause)
                if cause.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < REMOVE_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(cause) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    cause,
                });
            }
        }
    }
}

/// Opens a cgroup directory as a descriptor for clone3 (read-only, close-on-exec).
fn open_dir(dir: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|cause| CgroupError::Open {
            path: dir.to_owned(),
            cause,
        })
}
