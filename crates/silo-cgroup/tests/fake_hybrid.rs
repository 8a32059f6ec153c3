//! The hybrid layout (v1 controllers beside a controller-less cgroup2 mount), on a fake tree.

mod fake;

use fake::{FakeTree, read, write};
use nix::unistd::Pid;
use silo_cgroup::{CgroupRoot, IoLimit, Limits};

const ALL: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "freezer", "memory", "pids",
];

fn open(tree: &FakeTree) -> CgroupRoot {
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    CgroupRoot::open(tree.layout.clone(), "silo").unwrap()
}

#[test]
fn limits_go_to_v1_and_nothing_is_enabled_in_the_empty_unified_tree() {
    let tree = FakeTree::hybrid(ALL);
    let root = open(&tree);
    let unified = tree.unified_root().unwrap();
    for rel in ["", "silo", "silo/jobs"] {
        assert_eq!(
            read(&unified.join(rel), "cgroup.subtree_control"),
            "",
            "{rel:?}"
        );
    }
    assert_eq!(
        root.available().to_string(),
        "cpu,cpuset,memory,io,pids,freezer"
    );

    let job = root.create_job("j1").unwrap();
    job.apply(&Limits {
        cpu_percent: Some(150),
        cpus: Some("0,2".into()),
        memory_bytes: Some(32 << 20),
        io: Some(IoLimit {
            device: (8, 0),
            bps: 10_000_000,
        }),
        pids: Some(5),
    })
    .unwrap();
    let dir = |hierarchy: &str| tree.v1_root(hierarchy).join("silo/jobs/j1");
    assert_eq!(read(&dir("cpu"), "cpu.cfs_quota_us"), "150000");
    assert_eq!(read(&dir("cpuset"), "cpuset.cpus"), "0,2");
    assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "33554432");
    assert_eq!(
        read(&dir("blkio"), "blkio.throttle.write_bps_device"),
        "8:0 10000000"
    );
    assert_eq!(read(&dir("pids"), "pids.max"), "5");
    assert!(!unified.join("silo/jobs/j1/memory.max").exists());
}

#[test]
fn a_process_joins_the_unified_tree_and_every_v1_hierarchy() {
    let tree = FakeTree::hybrid(ALL);
    let root = open(&tree);
    let job = root.create_job("j1").unwrap();
    assert!(
        job.clone_into_fd().is_some(),
        "clone3 can target the unified cgroup"
    );
    assert!(
        job.needs_add_pid_after_clone(),
        "the v1 hierarchies must still be joined"
    );
    job.add_pid(Pid::from_raw(4242)).unwrap();
    let unified = tree.unified_root().unwrap().join("silo/jobs/j1");
    assert_eq!(read(&unified, "cgroup.procs"), "4242");
    for hierarchy in ALL {
        let dir = tree.v1_root(hierarchy).join("silo/jobs/j1");
        assert_eq!(read(&dir, "cgroup.procs"), "4242", "{hierarchy}");
    }
}

#[test]
fn kill_all_uses_the_unified_cgroup_kill() {
    let tree = FakeTree::hybrid(ALL);
    let root = open(&tree);
    root.create_job("j1").unwrap().kill_all().unwrap();
    let unified = tree.unified_root().unwrap().join("silo/jobs/j1");
    assert_eq!(read(&unified, "cgroup.kill"), "1");
    let freezer = tree.v1_root("freezer").join("silo/jobs/j1");
    assert_eq!(
        read(&freezer, "freezer.state"),
        "THAWED",
        "thawed after the kill, so tasks frozen by v1 can die"
    );
}

#[test]
fn cpu_time_comes_from_the_unified_cpu_stat_and_throttling_from_v1() {
    let tree = FakeTree::hybrid(ALL);
    let unified = tree.unified_root().unwrap().join("silo/jobs/j1");
    let root = open(&tree);
    write(
        &unified,
        "cpu.stat",
        "usage_usec 900\nuser_usec 600\nsystem_usec 300\n",
    );
    let cpu = tree.v1_root("cpu").join("silo/jobs/j1");
    write(
        &cpu,
        "cpu.stat",
        "nr_periods 3\nnr_throttled 1\nthrottled_time 5000\n",
    );
    write(&cpu, "cpuacct.usage", "77000\n");
    let job = root.create_job("j1").unwrap();
    assert_eq!(
        job.cpu_and_memory().unwrap().cpu_usec,
        Some(900),
        "the unified tree's"
    );
    let usage = job.usage().unwrap();
    assert_eq!(usage.cpu_usec, Some(900));
    assert_eq!(usage.cpu_user_usec, Some(600));
    assert_eq!(usage.cpu_system_usec, Some(300));
    assert_eq!(usage.cpu_throttled_usec, Some(5));
}

#[test]
fn the_server_leaf_is_entered_in_the_unified_tree_only() {
    let tree = FakeTree::hybrid(ALL);
    let root = open(&tree);
    root.enter_server_leaf().unwrap();
    let me = std::process::id().to_string();
    let unified = tree.unified_root().unwrap().join("silo/server");
    assert_eq!(read(&unified, "cgroup.procs"), me);
    let memory = tree.v1_root("memory").join("silo/server");
    assert_eq!(
        read(&memory, "cgroup.procs"),
        "",
        "v1 placement is left to whoever made it"
    );
}

#[test]
fn the_layout_and_the_dirs_of_the_root_are_reported() {
    let tree = FakeTree::hybrid(&["memory", "pids"]);
    let root = open(&tree);
    let unified = tree.unified_root().unwrap();
    assert_eq!(
        root.layout().to_string(),
        format!(
            "hybrid (v1 controllers: memory,pids; unified at {})",
            unified.display()
        )
    );
    assert_eq!(root.dirs().len(), 3);
    assert_eq!(root.dirs()[0], unified.join("silo"));
    assert_eq!(
        root.available().to_string(),
        "memory,pids,freezer",
        "freezing falls back to the unified cgroup.freeze"
    );
}
