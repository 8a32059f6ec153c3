//! The legacy (cgroup v1) layout, on a fake tree.

mod fake;

use fake::{FakeTree, read, write};
use nix::unistd::Pid;
use silo_cgroup::{CgroupError, CgroupRoot, Controller, IoLimit, Limits};

const ALL: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "freezer", "memory", "pids",
];

fn all_limits() -> Limits {
    Limits {
        cpu_percent: Some(50),
        cpus: Some("1".into()),
        memory_bytes: Some(64 << 20),
        io: Some(IoLimit {
            device: (254, 0),
            bps: 1 << 20,
        }),
        pids: Some(64),
    }
}

#[test]
fn every_cpuset_level_inherits_cpus_and_mems_so_tasks_can_join() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    let cpuset = tree.v1_root("cpuset");
    write(&cpuset.join("silo"), "cpuset.cpus", "0-1\n");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();

    assert_eq!(
        read(&cpuset.join("silo"), "cpuset.cpus"),
        "0-1\n",
        "a value already set is kept"
    );
    assert_eq!(read(&cpuset.join("silo"), "cpuset.mems"), "0");
    for rel in ["silo/server", "silo/jobs"] {
        assert_eq!(read(&cpuset.join(rel), "cpuset.cpus"), "0-1", "{rel}");
        assert_eq!(read(&cpuset.join(rel), "cpuset.mems"), "0", "{rel}");
    }

    tree.prepare("silo/jobs/j1");
    root.create_job("j1").unwrap();
    let job_dir = cpuset.join("silo/jobs/j1");
    assert_eq!(read(&job_dir, "cpuset.cpus"), "0-1");
    assert_eq!(read(&job_dir, "cpuset.mems"), "0");
}

#[test]
fn every_limit_is_written_to_its_v1_file() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert_eq!(
        root.available().to_string(),
        "cpu,cpuset,memory,io,pids,freezer"
    );
    root.create_job("j1").unwrap().apply(&all_limits()).unwrap();

    let dir = |hierarchy: &str| tree.v1_root(hierarchy).join("silo/jobs/j1");
    assert_eq!(read(&dir("cpu"), "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&dir("cpu"), "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&dir("cpuset"), "cpuset.cpus"), "1");
    assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "67108864");
    assert_eq!(
        read(&dir("memory"), "memory.memsw.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(
        read(&dir("memory"), "memory.soft_limit_in_bytes"),
        "63753420"
    );
    assert_eq!(
        read(&dir("blkio"), "blkio.throttle.read_bps_device"),
        "254:0 1048576"
    );
    assert_eq!(
        read(&dir("blkio"), "blkio.throttle.write_bps_device"),
        "254:0 1048576"
    );
    assert_eq!(read(&dir("pids"), "pids.max"), "64");
}

#[test]
fn without_swap_accounting_only_the_memory_limit_is_written() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let memory = tree.v1_root("memory").join("silo/jobs/j1");
    std::fs::remove_file(memory.join("memory.memsw.limit_in_bytes")).unwrap();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let limits = Limits {
        memory_bytes: Some(1 << 20),
        ..Limits::default()
    };
    root.create_job("j1").unwrap().apply(&limits).unwrap();
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "1048576");
    assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
}

#[test]
fn a_missing_hierarchy_makes_its_limit_unsupported() {
    let tree = FakeTree::legacy(&["cpu", "cpuacct", "cpuset", "freezer", "memory"]);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert_eq!(root.available().to_string(), "cpu,cpuset,memory,freezer");
    let job = root.create_job("j1").unwrap();
    let err = job
        .apply(&Limits {
            pids: Some(10),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                controller: Controller::Pids
            }
        ),
        "{err}"
    );
    let err = job
        .apply(&Limits {
            io: all_limits().io,
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                controller: Controller::Io
            }
        ),
        "{err}"
    );
}

#[test]
fn a_hierarchy_without_its_limit_file_is_not_available() {
    // A kernel built without CFS bandwidth control has a cpu hierarchy but no quota file.
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    std::fs::remove_file(
        tree.v1_root("cpu")
            .join("silo/jobs")
            .join("cpu.cfs_quota_us"),
    )
    .unwrap();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert!(!root.available().contains(Controller::Cpu));
}

#[test]
fn a_process_joins_every_hierarchy_and_there_is_nothing_to_clone_into() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    assert!(job.clone_into_fd().is_none());
    assert!(job.needs_add_pid_after_clone());
    job.add_pid(Pid::from_raw(4242)).unwrap();
    for hierarchy in ALL {
        let dir = tree.v1_root(hierarchy).join("silo/jobs/j1");
        assert_eq!(read(&dir, "cgroup.procs"), "4242", "{hierarchy}");
    }
    assert_eq!(job.dirs().len(), 6, "cpu,cpuacct is one hierarchy");
}

#[test]
fn usage_is_read_from_the_v1_files() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let dir = |hierarchy: &str| tree.v1_root(hierarchy).join("silo/jobs/j1");
    write(&dir("cpuacct"), "cpuacct.usage", "3000000\n");
    write(&dir("cpuacct"), "cpuacct.usage_user", "2000000\n");
    write(&dir("cpuacct"), "cpuacct.usage_sys", "1000000\n");
    write(
        &dir("cpu"),
        "cpu.stat",
        "nr_periods 10\nnr_throttled 4\nthrottled_time 7000000\n",
    );
    write(&dir("memory"), "memory.usage_in_bytes", "4096\n");
    write(&dir("memory"), "memory.max_usage_in_bytes", "8192\n");
    write(
        &dir("memory"),
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    write(
        &dir("blkio"),
        "blkio.throttle.io_service_bytes_recursive",
        "254:0 Read 100\n254:0 Write 200\n254:0 Sync 300\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 300\nTotal 300\n",
    );
    write(&dir("pids"), "pids.current", "2\n");
    write(&dir("pids"), "pids.events", "max 5\n");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let usage = root.create_job("j1").unwrap().usage().unwrap();

    assert_eq!(usage.cpu_usec, Some(3000));
    assert_eq!(usage.cpu_user_usec, Some(2000));
    assert_eq!(usage.cpu_system_usec, Some(1000));
    assert_eq!(usage.cpu_throttled_usec, Some(7000));
    assert_eq!(usage.memory_current_bytes, Some(4096));
    assert_eq!(usage.memory_peak_bytes, Some(8192));
    assert_eq!(usage.oom_kills, Some(2));
    assert_eq!(usage.io_read_bytes, Some(100));
    assert_eq!(usage.io_write_bytes, Some(200));
    assert_eq!(usage.pids_current, Some(2));
    assert_eq!(usage.pids_refused, Some(5));
}

#[test]
fn cpu_time_falls_back_to_cpuacct_stat_ticks() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let cpuacct = tree.v1_root("cpuacct").join("silo/jobs/j1");
    std::fs::remove_file(cpuacct.join("cpuacct.usage_user")).unwrap();
    std::fs::remove_file(cpuacct.join("cpuacct.usage_sys")).unwrap();
    write(&cpuacct, "cpuacct.stat", "user 150\nsystem 50\n");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let usage = root.create_job("j1").unwrap().usage().unwrap();
    // USER_HZ is 100 on Linux: 150 ticks are 1.5 s.
    assert_eq!(usage.cpu_user_usec, Some(1_500_000));
    assert_eq!(usage.cpu_system_usec, Some(500_000));
}

#[test]
fn freezing_uses_the_freezer_hierarchy() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    let freezer = tree.v1_root("freezer").join("silo/jobs/j1");
    job.freeze().unwrap();
    assert_eq!(read(&freezer, "freezer.state"), "FROZEN");
    job.thaw().unwrap();
    assert_eq!(read(&freezer, "freezer.state"), "THAWED");
}

#[test]
fn without_a_freezer_freezing_is_unsupported() {
    let tree = FakeTree::legacy(&["memory"]);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let err = root.create_job("j1").unwrap().freeze().unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                controller: Controller::Freezer
            }
        ),
        "{err}"
    );
}

#[test]
fn an_empty_cgroup_is_killed_at_once() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    job.kill_all().unwrap();
    let freezer = tree.v1_root("freezer").join("silo/jobs/j1");
    assert_eq!(
        read(&freezer, "freezer.state"),
        "THAWED",
        "frozen for the kill, thawed after"
    );
}

#[test]
fn remove_deletes_the_job_in_every_hierarchy_and_enter_server_leaf_leaves_v1_alone() {
    let tree = FakeTree::legacy(ALL);
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    root.enter_server_leaf().unwrap();
    for hierarchy in ALL {
        let server = tree.v1_root(hierarchy).join("silo/server");
        assert_eq!(read(&server, "cgroup.procs"), "", "{hierarchy}");
    }
    let job = root.create_job("j1").unwrap();
    assert_eq!(root.leftover_jobs().unwrap(), vec!["j1"]);
    job.remove().unwrap();
    for hierarchy in ALL {
        assert!(
            !tree.v1_root(hierarchy).join("silo/jobs/j1").exists(),
            "{hierarchy}"
        );
    }
    assert!(root.leftover_jobs().unwrap().is_empty());
}
