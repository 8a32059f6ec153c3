//! One cgroup as it exists in every hierarchy silo uses, and which hierarchy serves which
//! controller.
//!
//! A silo cgroup (the `silo` root, its `jobs` parent, one job) is the same relative path in
//! each hierarchy: in the unified tree and in each v1 hierarchy. Limits for a controller go to
//! the hierarchy that serves it:
//!
//! - unified layout: every controller is in the v2 tree;
//! - legacy layout: every controller is a v1 hierarchy;
//! - hybrid layout: the v1 hierarchies serve the controllers they hold, and the v2 tree the
//!   ones it holds (usually none), while its core files (`cgroup.kill`, `cgroup.events`,
//!   `cgroup.freeze`, `cpu.stat`) still serve killing, watching, freezing and cpu time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::controller::{Controller, Controllers};

/// The v1 hierarchies silo creates cgroups in: the limit controllers, `cpuacct` for cpu time
/// and `freezer` for freezing.
pub(crate) const V1_HIERARCHIES: [&str; 7] = [
    "blkio", "cpu", "cpuacct", "cpuset", "freezer", "memory", "pids",
];

/// Which cgroup version serves a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// One cgroup, by absolute directory in each hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// The directory in the cgroup2 tree, if the host has one.
    pub unified: Option<PathBuf>,
    /// The directory in each v1 hierarchy, by hierarchy name (co-mounted hierarchies, like
    /// `cpu,cpuacct`, map to the same directory).
    pub legacy: BTreeMap<&'static str, PathBuf>,
    /// Controllers served by v1 hierarchies.
    pub v1: Controllers,
    /// Controllers served by the v2 tree (enabled in the parent's `cgroup.subtree_control`).
    pub v2: Controllers,
}

impl Placement {
    /// The same cgroup one level down.
    pub fn child(&self, name: &str) -> Placement {
        Placement {
            unified: self.unified.as_ref().map(|dir| dir.join(name)),
            legacy: self
                .legacy
                .iter()
                .map(|(hierarchy, dir)| (*hierarchy, dir.join(name)))
                .collect(),
            v1: self.v1,
            v2: self.v2,
        }
    }

    /// Every distinct directory of this cgroup: the unified one first, then the v1 ones.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self.unified.iter().map(PathBuf::as_path).collect();
        for dir in self.legacy.values() {
            if !dirs.contains(&dir.as_path()) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Every distinct v1 directory.
    pub fn legacy_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::new();
        for dir in self.legacy.values() {
            if !dirs.contains(&dir.as_path()) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Where limits for `controller` are written, or `None` when no hierarchy serves it.
    /// v1 wins when both could (a controller is bound to one hierarchy at a time anyway).
    pub fn controller_dir(&self, controller: Controller) -> Option<(Version, &Path)> {
        if self.v1.contains(controller)
            && let Some(dir) = self.legacy.get(controller.v1_name())
        {
            return Some((Version::V1, dir));
        }
        if self.v2.contains(controller)
            && let Some(dir) = &self.unified
        {
            return Some((Version::V2, dir));
        }
        None
    }

    /// Every controller some hierarchy serves.
    pub fn controllers(&self) -> Controllers {
        Controller::ALL
            .into_iter()
            .filter(|c| self.controller_dir(*c).is_some())
            .collect()
    }
}
