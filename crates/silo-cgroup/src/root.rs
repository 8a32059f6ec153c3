//! The server's own cgroup tree: `<root>/<name>/server` for the server, and
//! `<root>/<name>/jobs/<id>` for each job, in every hierarchy silo uses.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::controller::{Controller, Controllers};
use crate::error::{CgroupError, Result};
use crate::file;
use crate::job::JobCgroup;
use crate::layout::CgroupLayout;
use crate::placement::{Placement, V1_HIERARCHIES};
use crate::{v1, v2};

/// The cgroups silo owns on this host. Created once at start-up; cheap to share.
///
/// While a `CgroupRoot` lives, no other one (in this process or another) can open the same
/// subtree, one nested in it, or one it is nested in: see [`CgroupRoot::open`].
#[derive(Debug)]
pub struct CgroupRoot {
    layout: CgroupLayout,
    base: Placement,
    server: Placement,
    jobs: Placement,
    /// The claims on `<name>` and the levels above it, held until the root is dropped (or
    /// the process dies, when the kernel drops them: a crashed server blocks no one).
    _claims: Vec<Flock<File>>,
}

impl CgroupRoot {
    /// Creates (or reuses) `<name>`, `<name>/server` and `<name>/jobs` under the root of every
    /// hierarchy silo uses, and on cgroup v2 enables the available controllers for the jobs.
    ///
    /// `name` is a relative path: normally `silo`; under systemd with `Delegate=yes`, the
    /// service's own cgroup (e.g. `system.slice/silo.service`).
    ///
    /// Guarantees:
    /// - on v2, controllers are enabled in `cgroup.subtree_control` of the ancestors only (the
    ///   hierarchy root, each level of `name`, and `jobs`), only those the parent offers, and
    ///   only where not enabled already; never in `server` or a job;
    /// - the server process sitting in the root cgroup does not matter (the root is exempt
    ///   from the no-internal-processes rule). If the calling process sits in a v2 cgroup of
    ///   `name` itself (a delegated subtree), it is first moved into the `server` leaf, as
    ///   [`CgroupRoot::enter_server_leaf`] would, since that cgroup could not enable
    ///   controllers otherwise;
    /// - on v1, every `cpuset` level gets its parent's CPUs and memory nodes so tasks can join;
    /// - the subtree is this root's alone: each level of `name` is claimed as it is reached,
    ///   before anything below it is created or written, and if another open root holds
    ///   `<name>` or any level of it, or `<name>` is a level of another's name, this fails
    ///   with [`CgroupError::InUse`] and has written nothing but empty directories of the
    ///   name (mkdir of what exists changes nothing). Two servers sharing a subtree would
    ///   kill each other's jobs as leftovers.
    pub fn open(layout: CgroupLayout, name: &str) -> Result<CgroupRoot> {
        let components = relative_components(name)?;
        let mut top = Placement {
            unified: layout.unified_root().map(Path::to_owned),
            legacy: Default::default(),
            v1: Controllers::empty(),
            v2: Controllers::empty(),
        };
        if let Some(mounts) = layout.legacy_controllers() {
            for hierarchy in V1_HIERARCHIES {
                if let Some(mount) = mounts.get(hierarchy) {
                    top.legacy.insert(hierarchy, mount.clone());
                }
            }
        }

        let mut ancestors = vec![top.clone()];
        let mut claims = Vec::new();
        let mut base = top;
        for (level, component) in components.iter().enumerate() {
            base = base.child(component);
            create(&base)?;
            let own = level + 1 == components.len();
            if let Some(dir) = base.dirs().first() {
                claims.push(claim(dir, own)?);
            }
            ancestors.push(base.clone());
        }
        let server = base.child("server");
        let jobs = base.child("jobs");
        create(&server)?;
        create(&jobs)?;
        ancestors.push(jobs.clone());

        let v1 = usable_v1(&jobs);
        let v2 = prepare_unified(&ancestors, components.len(), &server, v1)?;

        let with_controllers = |mut p: Placement| {
            p.v1 = v1;
            p.v2 = v2;
            p
        };
        let root = CgroupRoot {
            layout,
            base: with_controllers(base),
            server: with_controllers(server),
            jobs: with_controllers(jobs),
            _claims: claims,
        };
        tracing::debug!(
            layout = %root.layout,
            controllers = %root.available(),
            dirs = ?root.base.dirs(),
            "cgroup root ready"
        );
        Ok(root)
    }

    /// The layout this root was opened on.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The controllers that can limit or freeze jobs here (out of cpu, cpuset, memory, io,
    /// pids, freezer). A limit whose controller is missing is refused by
    /// [`JobCgroup::apply`] with [`CgroupError::Unsupported`].
    pub fn available(&self) -> Controllers {
        self.jobs.controllers()
    }

    /// Caps the processes and threads of all jobs together (the `pids.max` of `jobs`, the
    /// parent of every job's cgroup), so that jobs cannot take the host's last process
    /// ids however many of them run. Returns false where no hierarchy has the pids
    /// controller.
    pub fn limit_all_jobs_pids(&self, max: u32) -> Result<bool> {
        match self.jobs.controller_dir(crate::Controller::Pids) {
            Some((_, dir)) => crate::pids::apply(dir, max).map(|()| true),
            None => Ok(false),
        }
    }

    /// The directories of `<name>` in each hierarchy (unified first).
    pub fn dirs(&self) -> Vec<&Path> {
        self.base.dirs()
    }

    /// Moves the calling process into the `server` leaf of the unified tree, so that `jobs`
    /// can be its sibling under the no-internal-processes rule of cgroup v2.
    ///
    /// v1 hierarchies have no such rule, so there the process stays where it was put (for
    /// instance under a service manager's memory limit). Without a unified tree this does
    /// nothing.
    pub fn enter_server_leaf(&self) -> Result<()> {
        if let Some(dir) = &self.server.unified {
            v2::add_pid(dir, nix::unistd::getpid().as_raw())?;
        }
        Ok(())
    }

    /// Creates the cgroup of job `id` (a single path component) in every hierarchy, ready for
    /// limits and processes. A cgroup left over with the same id is reused.
    pub fn create_job(&self, id: &str) -> Result<JobCgroup> {
        let place = self.jobs.child(job_component(id)?);
        create(&place)?;
        let job = JobCgroup::open(id, place)?;
        job.hold_usage_files();
        Ok(job)
    }

    /// Opens the existing cgroup of job `id`, e.g. to adopt a job that kept running while the
    /// server restarted. Fails when the cgroup does not exist.
    pub fn open_job(&self, id: &str) -> Result<JobCgroup> {
        let place = self.jobs.child(job_component(id)?);
        if let Some(dir) = place.dirs().into_iter().find(|dir| !dir.is_dir()) {
            return Err(CgroupError::Open {
                path: dir.to_owned(),
                cause: ErrorKind::NotFound.into(),
            });
        }
        let job = JobCgroup::open(id, place)?;
        job.hold_usage_files();
        Ok(job)
    }

    /// The ids of the job cgroups present in any hierarchy, sorted: after a restart, each is
    /// either adopted ([`CgroupRoot::open_job`]) or killed and removed.
    pub fn leftover_jobs(&self) -> Result<Vec<String>> {
        let mut ids = BTreeSet::new();
        for dir in self.jobs.dirs() {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(cause) if cause.kind() == ErrorKind::NotFound => continue,
                Err(cause) => {
                    return Err(CgroupError::Open {
                        path: dir.to_owned(),
                        cause,
                    });
                }
            };
            for entry in entries {
                let entry = entry.map_err(|cause| CgroupError::Open {
                    path: dir.to_owned(),
                    cause,
                })?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    ids.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Kills and removes every job cgroup, then removes `jobs`, `server` and `<name>` itself
    /// (not the parents of a nested name). For tests and uninstalling; it fails while a
    /// process (such as a running server) is in the `server` leaf.
    pub fn destroy(self) -> Result<()> {
        for id in self.leftover_jobs()? {
            let job = JobCgroup::open(&id, self.jobs.child(&id))?;
            job.kill_all()?;
            job.remove()?;
        }
        for place in [&self.server, &self.jobs, &self.base] {
            for dir in place.dirs() {
                crate::job::remove_dir(dir)?;
            }
        }
        Ok(())
    }
}

/// The controllers whose v1 hierarchy can limit jobs: mounted, and offering its limit file.
fn usable_v1(jobs: &Placement) -> Controllers {
    Controller::ALL
        .into_iter()
        .filter(|c| {
            jobs.legacy
                .get(c.v1_name())
                .is_some_and(|dir| dir.join(v1::key_file(*c)).exists())
        })
        .collect()
}

/// Readies the unified tree for jobs and returns the controllers it serves them: the ones
/// the hierarchy root offers that no v1 hierarchy serves, enabled down `ancestors` (the
/// hierarchy root, the `name_levels` levels of the name, then `jobs`), plus the freezer
/// when `cgroup.freeze` exists and v1 has none.
fn prepare_unified(
    ancestors: &[Placement],
    name_levels: usize,
    server: &Placement,
    v1: Controllers,
) -> Result<Controllers> {
    let hierarchy_root = ancestors.first().and_then(|top| top.unified.as_deref());
    let (Some(root), Some(server_dir)) = (hierarchy_root, server.unified.as_deref()) else {
        return Ok(Controllers::empty());
    };
    // The levels of the name must hold no processes of their own (the hierarchy root is
    // exempt, and `jobs` only ever holds job cgroups).
    let levels = ancestors.iter().skip(1).take(name_levels);
    for dir in levels.filter_map(|level| level.unified.as_deref()) {
        move_self_out_of(dir, server_dir)?;
    }
    let mut wanted = v2::offered(root)?;
    for c in v1.iter() {
        wanted.remove(c);
    }
    let chain: Vec<PathBuf> = ancestors.iter().filter_map(|p| p.unified.clone()).collect();
    let mut served = v2::enable_down(&chain, wanted)?;
    let jobs_dir = ancestors.last().and_then(|jobs| jobs.unified.as_deref());
    if !v1.contains(Controller::Freezer) && jobs_dir.is_some_and(v2::freezer::supported) {
        served.insert(Controller::Freezer);
    }
    Ok(served)
}

/// Claims one level of silo's subtree for this root with a non-blocking `flock` on its
/// directory: exclusive for `<name>` itself (`own`), shared for the levels above it, so that
/// servers under one parent (`system.slice/a`, `system.slice/b`) coexist, while a server
/// whose subtree is, contains or lies inside another's is refused.
///
/// One hierarchy is enough (the first of the placement: every server on a host detects the
/// same layout, so all of them lock there). cgroupfs is kernfs, which has no `flock` of its
/// own, so the generic file lock applies to its directories
/// (<https://man7.org/linux/man-pages/man2/flock.2.html>). The descriptor is close-on-exec,
/// so the jobs the server starts never inherit the claim.
fn claim(dir: &Path, own: bool) -> Result<Flock<File>> {
    let file = File::open(dir).map_err(|cause| CgroupError::Open {
        path: dir.to_owned(),
        cause,
    })?;
    let how = if own {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    // A server restarted right after a crash can find the claim held for a moment more:
    // a child the dead server had just cloned holds the descriptor until its exec (which
    // closes it). A claim that stays held for CLAIM_PATIENCE is another server's.
    let deadline = std::time::Instant::now() + CLAIM_PATIENCE;
    let mut file = file;
    loop {
        match Flock::lock(file, how) {
            Ok(claim) => return Ok(claim),
            Err((back, Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(CgroupError::InUse {
                    path: dir.to_owned(),
                    holder: flock_holder(dir),
                });
            }
            Err((_, errno)) => {
                return Err(CgroupError::Open {
                    path: dir.to_owned(),
                    cause: errno.into(),
                });
            }
        }
    }
}

/// How long a claim may stay held before it counts as another server's.
#[cfg(not(test))]
const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
#[cfg(test)]
const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// The pid of a process holding a `flock` on `dir`: the process with a descriptor open on
/// it whose `/proc/<pid>/fdinfo/<fd>` lists a `lock:` line (the kernel prints there the
/// locks that descriptor holds). `None` when it cannot be told, e.g. the holder has just
/// exited or lives in a pid namespace this one cannot see.
///
/// Not `/proc/locks`: it is read in page-sized pieces between which locks come and go, so a
/// line can be skipped, and on some filesystems (btrfs subvolumes, overlayfs) the device it
/// prints is not the one `stat` reports. The scan runs only on this error path.
fn flock_holder(dir: &Path) -> Option<i32> {
    let meta = std::fs::metadata(dir).ok()?;
    let wanted = (meta.dev(), meta.ino());
    let holds_lock = |pid: &str, fd: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).is_ok_and(|info| {
            info.lines()
                .any(|line| line.starts_with("lock:") && line.contains("FLOCK"))
        })
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|process| {
            let name = process.file_name();
            let name = name.to_str()?;
            let pid: i32 = name.parse().ok()?;
            let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == wanted)
                        && fd
                            .file_name()
                            .to_str()
                            .is_some_and(|fd| holds_lock(name, fd))
                })
                .then_some(pid)
        })
}

/// Creates the cgroup in every hierarchy (an existing one is kept), and prepares v1 cpuset.
fn create(place: &Placement) -> Result<()> {
    for dir in place.dirs() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(cause) if cause.kind() == ErrorKind::AlreadyExists => {}
            Err(cause) => {
                return Err(CgroupError::Create {
                    path: dir.to_owned(),
                    cause,
                });
            }
        }
    }
    for (hierarchy, dir) in &place.legacy {
        v1::prepare_new(hierarchy, dir)?;
    }
    Ok(())
}

/// If this process sits in the v2 cgroup `dir`, moves it to `leaf`.
fn move_self_out_of(dir: &Path, leaf: &Path) -> Result<()> {
    let me = nix::unistd::getpid().as_raw();
    let Some(procs) = file::read_optional(dir, "cgroup.procs")? else {
        return Ok(());
    };
    if procs.split_whitespace().any(|pid| pid.parse() == Ok(me)) {
        tracing::info!(from = %dir.display(), to = %leaf.display(), "moving the server into its leaf cgroup");
        v2::add_pid(leaf, me)?;
    }
    Ok(())
}

/// Splits a cgroup name into plain components: relative, no `.` or `..`.
fn relative_components(name: &str) -> Result<Vec<String>> {
    let invalid = |reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    Path::new(name)
        .components()
        .map(|c| match c {
            Component::Normal(part) => part
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid("it is not UTF-8")),
            Component::RootDir => Err(invalid("it must be relative to the hierarchy root")),
            _ => Err(invalid("it must not contain . or ..")),
        })
        .collect()
}

/// Checks that a job id is one plain path component.
fn job_component(id: &str) -> Result<&str> {
    let invalid = |reason| CgroupError::InvalidName {
        name: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("a job id must not be empty"));
    }
    if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(invalid("a job id must be a single path component"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_directory_is_refused_to_a_second_claim_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), true).unwrap();

        let err = claim(dir.path(), true).unwrap_err();
        let me = nix::unistd::getpid().as_raw();
        assert!(
            matches!(&err, CgroupError::InUse { path, holder: Some(pid) }
                if path == dir.path() && *pid == me),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the cgroup subtree {} is in use by another silo server (pid {me}) \
                 — use a different --cgroup-name",
                dir.path().display()
            )
        );
        assert!(matches!(
            claim(dir.path(), false),
            Err(CgroupError::InUse { .. })
        ));

        drop(first);
        claim(dir.path(), true).unwrap();
    }

    #[test]
    fn shared_claims_coexist_and_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let _a = claim(dir.path(), false).unwrap();
        let _b = claim(dir.path(), false).unwrap();
        assert!(matches!(
            claim(dir.path(), true),
            Err(CgroupError::InUse {
                holder: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_holder_is_just_another_silo_server() {
        let err = CgroupError::InUse {
            path: "/sys/fs/cgroup/unified/silo".into(),
            holder: None,
        };
        assert_eq!(
            err.to_string(),
            "the cgroup subtree /sys/fs/cgroup/unified/silo is in use by another silo server \
             — use a different --cgroup-name"
        );
    }
}
