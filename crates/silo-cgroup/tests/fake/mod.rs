//! A fake cgroup file system in a temp dir: directories with the interface files the kernel
//! would show, so tests can check what the crate writes where.
//!
//! Unlike the kernel, the fake does not create files on mkdir: a test prepares each cgroup it
//! expects (`prepare`) before the crate creates it. Writes replace a file's content, so a
//! test sees the last value written.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use silo_cgroup::CgroupLayout;

/// Every controller a fake v2 tree offers.
pub const V2_CONTROLLERS: &str = "cpuset cpu io memory pids hugetlb";

pub struct FakeTree {
    pub dir: tempfile::TempDir,
    pub layout: CgroupLayout,
}

impl FakeTree {
    /// A cgroup2 mount at `<tmp>/unified` offering every controller, with nothing enabled.
    pub fn unified() -> FakeTree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("unified");
        fs::create_dir(&root).unwrap();
        write(&root, "cgroup.controllers", V2_CONTROLLERS);
        write(&root, "cgroup.subtree_control", "");
        write(&root, "cgroup.procs", "1\n");
        FakeTree {
            dir,
            layout: CgroupLayout::Unified { root },
        }
    }

    /// v1 hierarchies at `<tmp>/<name>` (cpu and cpuacct co-mounted at `<tmp>/cpu,cpuacct`),
    /// with the host's cpuset holding CPUs 0-3 and memory node 0.
    pub fn legacy(hierarchies: &[&str]) -> FakeTree {
        let dir = tempfile::tempdir().unwrap();
        let controllers = v1_mounts(dir.path(), hierarchies);
        FakeTree {
            dir,
            layout: CgroupLayout::Legacy { controllers },
        }
    }

    /// v1 hierarchies plus a cgroup2 mount at `<tmp>/unified` with no controllers.
    pub fn hybrid(hierarchies: &[&str]) -> FakeTree {
        let dir = tempfile::tempdir().unwrap();
        let controllers = v1_mounts(dir.path(), hierarchies);
        let unified = dir.path().join("unified");
        fs::create_dir(&unified).unwrap();
        write(&unified, "cgroup.controllers", "");
        write(&unified, "cgroup.subtree_control", "");
        write(&unified, "cgroup.procs", "1\n");
        FakeTree {
            dir,
            layout: CgroupLayout::Hybrid {
                controllers,
                unified,
            },
        }
    }

    pub fn unified_root(&self) -> Option<PathBuf> {
        self.layout.unified_root().map(Path::to_owned)
    }

    /// The mount of v1 hierarchy `name`.
    pub fn v1_root(&self, name: &str) -> PathBuf {
        self.layout.legacy_controllers().unwrap()[name].clone()
    }

    /// Makes cgroup `rel` (e.g. "silo/jobs/j1") exist in every hierarchy with the files the
    /// kernel would show there.
    pub fn prepare(&self, rel: &str) {
        if let Some(root) = self.unified_root() {
            let dir = root.join(rel);
            fs::create_dir_all(&dir).unwrap();
            let offered = if matches!(self.layout, CgroupLayout::Unified { .. }) {
                V2_CONTROLLERS
            } else {
                ""
            };
            v2_files(&dir, offered);
        }
        if let Some(mounts) = self.layout.legacy_controllers() {
            for (hierarchy, mount) in mounts {
                let dir = mount.join(rel);
                fs::create_dir_all(&dir).unwrap();
                v1_files(hierarchy, &dir);
            }
        }
    }

    /// Prepares the tree `CgroupRoot::open(layout, "silo")` creates.
    pub fn prepare_silo(&self) {
        for rel in ["silo", "silo/server", "silo/jobs"] {
            self.prepare(rel);
        }
    }
}

pub fn write(dir: &Path, name: &str, content: &str) {
    fs::write(dir.join(name), content).unwrap();
}

pub fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("cannot read {name} in {}: {e}", dir.display()))
}

fn v1_mounts(base: &Path, hierarchies: &[&str]) -> BTreeMap<String, PathBuf> {
    let mut controllers = BTreeMap::new();
    for hierarchy in hierarchies {
        let mount = if matches!(*hierarchy, "cpu" | "cpuacct") {
            base.join("cpu,cpuacct")
        } else {
            base.join(hierarchy)
        };
        fs::create_dir_all(&mount).unwrap();
        controllers.insert((*hierarchy).to_owned(), mount.clone());
        v1_root_files(hierarchy, &mount);
    }
    controllers
}

fn v1_root_files(hierarchy: &str, mount: &Path) {
    write(mount, "cgroup.procs", "1\n");
    if hierarchy == "cpuset" {
        write(mount, "cpuset.cpus", "0-3\n");
        write(mount, "cpuset.mems", "0\n");
    }
}

fn v1_files(hierarchy: &str, dir: &Path) {
    write(dir, "cgroup.procs", "");
    let files: &[(&str, &str)] = match hierarchy {
        "cpu" => &[
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            (
                "cpu.stat",
                "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
            ),
        ],
        "cpuacct" => &[
            ("cpuacct.usage", "0\n"),
            ("cpuacct.usage_user", "0\n"),
            ("cpuacct.usage_sys", "0\n"),
        ],
        "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
        "memory" => &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
            ("memory.usage_in_bytes", "0\n"),
            ("memory.max_usage_in_bytes", "0\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
        ],
        "blkio" => &[
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.io_service_bytes_recursive", "Total 0\n"),
        ],
        "pids" => &[
            ("pids.max", "max\n"),
            ("pids.current", "0\n"),
            ("pids.events", "max 0\n"),
        ],
        "freezer" => &[("freezer.state", "THAWED\n")],
        _ => &[],
    };
    for (name, content) in files {
        write(dir, name, content);
    }
}

fn v2_files(dir: &Path, offered: &str) {
    for (name, content) in [
        ("cgroup.controllers", offered),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cgroup.freeze", "0\n"),
        ("cgroup.kill", ""),
        ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
    ] {
        write(dir, name, content);
    }
    if offered.is_empty() {
        return;
    }
    for (name, content) in [
        ("cpu.max", "max 100000\n"),
        ("cpuset.cpus", "\n"),
        ("memory.max", "max\n"),
        ("memory.high", "max\n"),
        ("memory.swap.max", "max\n"),
        ("memory.current", "0\n"),
        ("memory.peak", "0\n"),
        ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
        ("io.max", ""),
        ("io.stat", ""),
        ("pids.max", "max\n"),
        ("pids.current", "0\n"),
        ("pids.events", "max 0\n"),
    ] {
        write(dir, name, content);
    }
}
