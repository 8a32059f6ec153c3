//! The unified (cgroup v2) layout, on a fake tree.

mod fake;

use std::path::PathBuf;
use std::time::Duration;

use fake::{FakeTree, read, write};
use nix::unistd::Pid;
use silo_cgroup::{CgroupError, CgroupRoot, Controller, IoLimit, Limits};

fn all_limits() -> Limits {
    Limits {
        cpu_percent: Some(50),
        cpus: Some("0-1".into()),
        memory_bytes: Some(64 << 20),
        io: Some(IoLimit {
            device: (254, 0),
            bps: 1 << 20,
        }),
        pids: Some(64),
    }
}

fn silo_dir(tree: &FakeTree, rel: &str) -> PathBuf {
    tree.unified_root().unwrap().join(rel)
}

#[test]
fn controllers_are_enabled_on_the_ancestors_only() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();

    let enable_all = "+cpu +cpuset +memory +io +pids";
    for ancestor in ["", "silo", "silo/jobs"] {
        assert_eq!(
            read(&silo_dir(&tree, ancestor), "cgroup.subtree_control"),
            enable_all,
            "in {ancestor:?}"
        );
    }
    assert_eq!(
        read(&silo_dir(&tree, "silo/server"), "cgroup.subtree_control"),
        "",
        "the server leaf must stay a leaf"
    );
    assert_eq!(
        root.available().to_string(),
        "cpu,cpuset,memory,io,pids,freezer"
    );
}

#[test]
fn controllers_already_enabled_are_not_written_again() {
    let tree = FakeTree::unified();
    let top = tree.unified_root().unwrap();
    write(&top, "cgroup.subtree_control", "cpu memory pids\n");
    tree.prepare_silo();
    write(
        &silo_dir(&tree, "silo"),
        "cgroup.subtree_control",
        "cpuset cpu io memory pids\n",
    );
    CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert_eq!(read(&top, "cgroup.subtree_control"), "+cpuset +io");
    assert_eq!(
        read(&silo_dir(&tree, "silo"), "cgroup.subtree_control"),
        "cpuset cpu io memory pids\n",
        "untouched"
    );
}

#[test]
fn only_the_controllers_the_parent_offers_are_enabled() {
    let tree = FakeTree::unified();
    let top = tree.unified_root().unwrap();
    write(&top, "cgroup.controllers", "memory pids\n");
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert_eq!(read(&top, "cgroup.subtree_control"), "+memory +pids");
    assert_eq!(root.available().to_string(), "memory,pids,freezer");
}

#[test]
fn every_limit_is_written_to_its_v2_file() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    job.apply(&all_limits()).unwrap();

    let dir = silo_dir(&tree, "silo/jobs/j1");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "cpuset.cpus"), "0-1");
    assert_eq!(read(&dir, "memory.max"), "67108864");
    assert_eq!(read(&dir, "memory.high"), "63753420");
    assert_eq!(read(&dir, "memory.swap.max"), "0");
    assert_eq!(read(&dir, "io.max"), "254:0 rbps=1048576 wbps=1048576");
    assert_eq!(read(&dir, "pids.max"), "64");
}

#[test]
fn a_limit_whose_controller_is_not_offered_is_refused_and_nothing_is_written() {
    let tree = FakeTree::unified();
    write(
        &tree.unified_root().unwrap(),
        "cgroup.controllers",
        "memory pids\n",
    );
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();

    let err = job.apply(&all_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Unsupported {
                controller: Controller::Cpu
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot limit cpu here: the cpu controller is not available on this host"
    );
    assert_eq!(
        read(&silo_dir(&tree, "silo/jobs/j1"), "memory.max"),
        "max\n",
        "no limit is written when one is refused"
    );
}

#[test]
fn a_missing_interface_file_means_the_controller_is_unsupported() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    std::fs::remove_file(silo_dir(&tree, "silo/jobs/j1").join("io.max")).unwrap();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    let limits = Limits {
        io: all_limits().io,
        ..Limits::default()
    };
    let err = job.apply(&limits).unwrap_err();
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
fn a_failed_write_names_the_file_the_cgroup_and_the_errno() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let dir = silo_dir(&tree, "silo/jobs/j1");
    std::fs::remove_file(dir.join("memory.max")).unwrap();
    std::fs::create_dir(dir.join("memory.max")).unwrap();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    let err = job
        .apply(&Limits {
            memory_bytes: Some(1 << 20),
            ..Limits::default()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write memory.max in {}: EISDIR: Is a directory",
            dir.display()
        )
    );
}

#[test]
fn invalid_limits_are_refused_before_anything_is_written() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    let limits = Limits {
        memory_bytes: Some(1 << 20),
        cpus: Some(String::new()),
        ..Limits::default()
    };
    let err = job.apply(&limits).unwrap_err();
    assert!(
        matches!(err, CgroupError::InvalidLimit { limit: "cpus", .. }),
        "{err}"
    );
    assert_eq!(
        read(&silo_dir(&tree, "silo/jobs/j1"), "memory.max"),
        "max\n"
    );
}

#[test]
fn usage_is_read_from_the_v2_files() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let dir = silo_dir(&tree, "silo/jobs/j1");
    write(
        &dir,
        "cpu.stat",
        "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 9\nnr_throttled 2\nthrottled_usec 700\n",
    );
    write(&dir, "memory.current", "4096\n");
    write(&dir, "memory.peak", "8192\n");
    write(
        &dir,
        "memory.events",
        "low 0\nhigh 3\nmax 5\noom 1\noom_kill 1\n",
    );
    write(
        &dir,
        "io.stat",
        "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
    );
    write(&dir, "pids.current", "3\n");
    write(&dir, "pids.events", "max 7\n");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    let light = job.cpu_and_memory().unwrap();
    assert_eq!(
        (
            light.cpu_usec,
            light.memory_current_bytes,
            light.memory_peak_bytes
        ),
        (Some(3000), Some(4096), None)
    );
    let usage = job.usage().unwrap();

    assert_eq!(usage.cpu_usec, Some(3000));
    assert_eq!(usage.cpu_user_usec, Some(2000));
    assert_eq!(usage.cpu_system_usec, Some(1000));
    assert_eq!(usage.cpu_throttled_usec, Some(700));
    assert_eq!(usage.memory_current_bytes, Some(4096));
    assert_eq!(usage.memory_peak_bytes, Some(8192));
    assert_eq!(usage.oom_kills, Some(1));
    assert_eq!(usage.io_read_bytes, Some(101));
    assert_eq!(usage.io_write_bytes, Some(202));
    assert_eq!(usage.pids_current, Some(3));
    assert_eq!(usage.pids_refused, Some(7));

    // Once the job has ended, nothing of it is in use now; its totals and peaks stay.
    std::fs::remove_file(dir.join("memory.current")).unwrap();
    std::fs::remove_file(dir.join("pids.current")).unwrap();
    let ended = job.final_usage().unwrap();
    assert_eq!(
        (ended.memory_current_bytes, ended.pids_current),
        (Some(0), Some(0)),
        "not read"
    );
    assert_eq!(
        silo_cgroup::Usage {
            memory_current_bytes: usage.memory_current_bytes,
            pids_current: usage.pids_current,
            ..ended
        },
        usage
    );
}

#[test]
fn a_file_the_kernel_lacks_is_reported_as_not_measured() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    std::fs::remove_file(silo_dir(&tree, "silo/jobs/j1").join("memory.peak")).unwrap();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let usage = root.create_job("j1").unwrap().usage().unwrap();
    assert_eq!(usage.memory_peak_bytes, None, "Linux before 5.19");
    assert_eq!(usage.memory_current_bytes, Some(0));
}

#[test]
fn a_process_joins_the_unified_cgroup_and_the_job_can_be_cloned_into() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    assert!(job.clone_into_fd().is_some());
    assert!(!job.needs_add_pid_after_clone());
    job.add_pid(Pid::from_raw(4242)).unwrap();
    assert_eq!(
        read(&silo_dir(&tree, "silo/jobs/j1"), "cgroup.procs"),
        "4242"
    );
}

#[test]
fn kill_all_writes_cgroup_kill_and_returns_once_empty() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    job.kill_all().unwrap();
    assert_eq!(read(&silo_dir(&tree, "silo/jobs/j1"), "cgroup.kill"), "1");
}

#[test]
fn waiting_for_a_populated_cgroup_times_out() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let dir = silo_dir(&tree, "silo/jobs/j1");
    write(&dir, "cgroup.events", "populated 1\nfrozen 0\n");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();
    assert!(job.is_populated().unwrap());
    let err = job.wait_empty(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(err, CgroupError::Timeout { .. }), "{err}");
    assert_eq!(job.events_path(), Some(dir.join("cgroup.events")));
}

#[test]
fn freezing_writes_cgroup_freeze_and_waits_for_the_frozen_event() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/j1");
    let dir = silo_dir(&tree, "silo/jobs/j1");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    let job = root.create_job("j1").unwrap();

    write(&dir, "cgroup.events", "populated 1\nfrozen 1\n");
    job.freeze().unwrap();
    assert_eq!(read(&dir, "cgroup.freeze"), "1");

    write(&dir, "cgroup.events", "populated 1\nfrozen 0\n");
    job.thaw().unwrap();
    assert_eq!(read(&dir, "cgroup.freeze"), "0");
}

#[test]
fn the_server_leaf_receives_the_calling_process() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    root.enter_server_leaf().unwrap();
    assert_eq!(
        read(&silo_dir(&tree, "silo/server"), "cgroup.procs"),
        std::process::id().to_string()
    );
}

#[test]
fn in_a_delegated_subtree_the_server_leaves_its_cgroup_before_controllers_are_enabled() {
    let tree = FakeTree::unified();
    let top = tree.unified_root().unwrap();
    write(
        &top,
        "cgroup.subtree_control",
        "cpuset cpu io memory pids\n",
    );
    let service = "system.slice/silo.service";
    for rel in [
        "system.slice",
        service,
        "system.slice/silo.service/server",
        "system.slice/silo.service/jobs",
    ] {
        tree.prepare(rel);
    }
    for rel in ["system.slice", service] {
        write(
            &top.join(rel),
            "cgroup.subtree_control",
            "cpuset cpu io memory pids\n",
        );
    }
    write(
        &top.join(service),
        "cgroup.procs",
        &format!("{}\n", std::process::id()),
    );

    let root = CgroupRoot::open(tree.layout.clone(), service).unwrap();
    assert_eq!(
        read(&top.join(service).join("server"), "cgroup.procs"),
        std::process::id().to_string()
    );
    assert_eq!(
        read(&top, "cgroup.subtree_control"),
        "cpuset cpu io memory pids\n",
        "nothing is written above the delegation point"
    );
    assert_eq!(
        read(&top.join(service).join("jobs"), "cgroup.subtree_control"),
        "+cpu +cpuset +memory +io +pids"
    );
    assert_eq!(root.dirs(), vec![top.join(service).as_path()]);
}

#[test]
fn names_that_are_not_plain_relative_paths_are_refused() {
    let tree = FakeTree::unified();
    for name in ["", "/silo", "../silo", "silo/../x"] {
        let err = CgroupRoot::open(tree.layout.clone(), name).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    for id in ["", ".", "..", "a/b"] {
        let err = root.create_job(id).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{id:?}: {err}"
        );
    }
}

#[test]
fn leftover_jobs_are_listed_and_can_be_reopened() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    tree.prepare("silo/jobs/b");
    tree.prepare("silo/jobs/a");
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    assert_eq!(root.leftover_jobs().unwrap(), vec!["a", "b"]);
    assert_eq!(root.open_job("a").unwrap().id(), "a");
    assert!(matches!(
        root.open_job("c").unwrap_err(),
        CgroupError::Open { .. }
    ));
}

#[test]
fn remove_deletes_the_job_cgroup() {
    let tree = FakeTree::unified();
    tree.prepare_silo();
    let root = CgroupRoot::open(tree.layout.clone(), "silo").unwrap();
    // Not prepared: on the fake tree an empty directory, which rmdir accepts.
    let job = root.create_job("j1").unwrap();
    let dir = silo_dir(&tree, "silo/jobs/j1");
    assert!(dir.is_dir());
    job.remove().unwrap();
    assert!(!dir.exists());
    assert!(root.leftover_jobs().unwrap().is_empty());
}
