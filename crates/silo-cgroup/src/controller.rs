//! The controllers silo limits jobs with, and sets of them.

use std::fmt;

/// A resource controller silo uses. The names are the cgroup v2 names; on v1 `Io` is the
/// `blkio` hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// CPU bandwidth (`cpu.max`, v1 `cpu.cfs_quota_us`).
    Cpu,
    /// CPU pinning (`cpuset.cpus`).
    Cpuset,
    /// Memory (`memory.max`, v1 `memory.limit_in_bytes`).
    Memory,
    /// Block I/O bandwidth (`io.max`, v1 `blkio.throttle.*`).
    Io,
    /// Number of processes (`pids.max`).
    Pids,
    /// Freezing (`cgroup.freeze` on v2, the `freezer` hierarchy on v1).
    Freezer,
}

impl Controller {
    /// Every controller, in display order.
    pub const ALL: [Controller; 6] = [
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Io,
        Controller::Pids,
        Controller::Freezer,
    ];

    /// The name in cgroup v2 (`cgroup.controllers`), e.g. `io`.
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Io => "io",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
        }
    }

    /// The name of its cgroup v1 hierarchy, e.g. `blkio`.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Io => "blkio",
            other => other.v2_name(),
        }
    }

    /// The controller with this v2 name, if silo uses it. `freezer` is not a v2 controller
    /// (freezing is built into every v2 cgroup), so it is not returned.
    pub fn from_v2_name(name: &str) -> Option<Controller> {
        Controller::ALL
            .into_iter()
            .find(|c| *c != Controller::Freezer && c.v2_name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// A set of [`Controller`]s. Displays as `cpu,memory,pids` (or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Controllers(u8);

impl Controllers {
    /// The empty set.
    pub const fn empty() -> Self {
        Controllers(0)
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Controller) -> bool {
        self.0 & c.bit() != 0
    }

    /// Adds `c` to the set.
    pub fn insert(&mut self, c: Controller) {
        self.0 |= c.bit();
    }

    /// Removes `c` from the set.
    pub fn remove(&mut self, c: Controller) {
        self.0 &= !c.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Controller::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Controller> {
        Controller::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Controller> for Controllers {
    fn from_iter<I: IntoIterator<Item = Controller>>(iter: I) -> Self {
        let mut set = Controllers::empty();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Display for Controllers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Controller::v2_name).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_displays_its_members_in_a_stable_order() {
        let set: Controllers = [Controller::Pids, Controller::Cpu, Controller::Io]
            .into_iter()
            .collect();
        assert_eq!(set.to_string(), "cpu,io,pids");
        assert_eq!(Controllers::empty().to_string(), "none");
    }

    #[test]
    fn io_is_called_blkio_on_v1() {
        assert_eq!(Controller::Io.v1_name(), "blkio");
        assert_eq!(Controller::from_v2_name("io"), Some(Controller::Io));
        assert_eq!(Controller::from_v2_name("freezer"), None);
        assert_eq!(Controller::from_v2_name("hugetlb"), None);
    }
}
