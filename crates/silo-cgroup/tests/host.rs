//! Root tests on this host's real cgroup tree (hybrid on the development machines; the tests
//! follow whatever layout is detected).
//!
//! Each test makes its own root `silo-test-<pid>-<test>` and removes everything it created,
//! also when it fails. Without root or a writable cgroup tree the tests skip loudly, except
//! under `CI=true`, where a skip is a failure.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use silo_cgroup::{
    CgroupError, CgroupLayout, CgroupRoot, Controller, IoLimit, JobCgroup, Limits, block_device_of,
    detect,
};

/// The v1 hierarchies the crate uses (and this cleanup covers).
const V1_HIERARCHIES: [&str; 7] = [
    "blkio", "cpu", "cpuacct", "cpuset", "freezer", "memory", "pids",
];

/// A test's own cgroup root on the host, removed with everything below it on drop.
struct HostRoot {
    name: String,
    layout: CgroupLayout,
    root: Option<CgroupRoot>,
}

impl HostRoot {
    /// Opens `silo-test-<pid>-<tag>`, or `None` (after saying why) when the host cannot run
    /// root tests.
    fn open(tag: &str) -> Option<HostRoot> {
        let layout = match host_layout() {
            Ok(layout) => layout,
            Err(reason) => {
                skip(tag, &reason);
                return None;
            }
        };
        let name = format!("silo-test-{}-{tag}", std::process::id());
        let mut host = HostRoot {
            name,
            layout: layout.clone(),
            root: None,
        };
        host.root = Some(CgroupRoot::open(layout, &host.name).expect("open the test root"));
        Some(host)
    }

    fn root(&self) -> &CgroupRoot {
        self.root.as_ref().expect("root is open")
    }

    /// The directories `<mount>/<name>` this test may have created.
    fn top_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .layout
            .unified_root()
            .map(|root| root.join(&self.name))
            .into_iter()
            .collect();
        if let Some(mounts) = self.layout.legacy_controllers() {
            for hierarchy in V1_HIERARCHIES {
                if let Some(mount) = mounts.get(hierarchy) {
                    let dir = mount.join(&self.name);
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        dirs
    }

    /// Where the file of a limit lives for job `id`: the v1 hierarchy when the host has it,
    /// else the unified tree.
    fn limit_file(&self, id: &str, v1: (&str, &str), v2: &str) -> PathBuf {
        let rel = Path::new(&self.name).join("jobs").join(id);
        match self
            .layout
            .legacy_controllers()
            .and_then(|mounts| mounts.get(v1.0))
        {
            Some(mount) => mount.join(rel).join(v1.1),
            None => self.layout.unified_root().unwrap().join(rel).join(v2),
        }
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        self.root = None;
        for dir in self.top_dirs() {
            remove_tree(&dir);
        }
        let left: Vec<PathBuf> = self.top_dirs().into_iter().filter(|d| d.exists()).collect();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("cgroups left behind: {left:?}");
        }
    }
}

/// Thaws, kills and removes a test cgroup tree bottom-up, without the crate under test.
fn remove_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    let me = std::process::id().to_string();
    for _ in 0..200 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace().filter(|pid| *pid != me) {
            if let Ok(pid) = pid.parse() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    eprintln!("!!! could not remove {}", dir.display());
}

fn host_layout() -> Result<CgroupLayout, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    let layout = detect().map_err(|e| e.to_string())?;
    let writable = layout
        .unified_root()
        .map(Path::to_owned)
        .or_else(|| {
            layout
                .legacy_controllers()
                .and_then(|c| c.values().next().cloned())
        })
        .is_some_and(|dir| nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok());
    if !writable {
        return Err(format!("the cgroup tree is not writable ({layout})"));
    }
    Ok(layout)
}

fn skip(test: &str, reason: &str) {
    let message = format!("!!! SKIPPED silo-cgroup host test {test}: {reason}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message} (CI=true: skipping is a failure)");
    }
    // Straight to the descriptor: libtest captures eprintln! of passing tests, and a skip
    // must be seen.
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// A child that waits for a line on stdin, then runs `script`: it can be put into a cgroup
/// before it does anything.
fn spawn_gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").expect("release the child");
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

/// The cgroup paths of a process, by hierarchy ("" for the unified one).
fn cgroups_of(pid: Pid) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn kill_and_remove(job: JobCgroup) {
    job.kill_all().expect("kill_all");
    let dirs: Vec<PathBuf> = job.dirs().iter().map(|d| d.to_path_buf()).collect();
    job.remove().expect("remove");
    for dir in dirs {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn limits_reach_the_kernel_and_a_killed_job_leaves_nothing_behind() {
    let Some(host) = HostRoot::open("limits") else {
        return;
    };
    let root = host.root();
    eprintln!("layout: {}; available: {}", root.layout(), root.available());
    let job = root.create_job("j1").unwrap();

    let disk = block_device_of(Path::new(env!("CARGO_MANIFEST_DIR")));
    if let Err(e) = &disk {
        eprintln!("!!! no io limit in this test: {e}");
    }
    let limits = Limits {
        cpu_percent: Some(50),
        cpus: Some("0".into()),
        memory_bytes: Some(64 << 20),
        io: disk.as_ref().ok().map(|&device| IoLimit {
            device,
            bps: 10 << 20,
        }),
        pids: Some(16),
    };
    job.apply(&limits).unwrap();

    let file = |v1, v2| read_trimmed(&host.limit_file("j1", v1, v2));
    assert_eq!(
        file(("memory", "memory.limit_in_bytes"), "memory.max"),
        "67108864"
    );
    assert_eq!(file(("cpuset", "cpuset.cpus"), "cpuset.cpus"), "0");
    assert_eq!(file(("pids", "pids.max"), "pids.max"), "16");
    assert!(
        file(("cpu", "cpu.cfs_quota_us"), "cpu.max").starts_with("50000"),
        "cpu quota"
    );
    if let Ok((major, minor)) = disk {
        let io = file(("blkio", "blkio.throttle.write_bps_device"), "io.max");
        assert!(io.contains(&format!("{major}:{minor}")), "{io}");
        assert!(io.contains("10485760"), "{io}");
    }

    let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
    let pid = pid_of(&sleeper);
    job.add_pid(pid).unwrap();
    let expected = format!("/{}/jobs/j1", host.name);
    for (hierarchies, path) in cgroups_of(pid) {
        let ours = hierarchies.is_empty() && root.layout().unified_root().is_some()
            || hierarchies.split(',').any(|h| {
                V1_HIERARCHIES.contains(&h)
                    && root
                        .layout()
                        .legacy_controllers()
                        .is_some_and(|c| c.contains_key(h))
            });
        if ours {
            assert_eq!(path, expected, "hierarchy {hierarchies:?}");
        }
    }
    assert_eq!(job.pids().unwrap(), vec![pid]);
    assert!(job.is_populated().unwrap());

    let usage = job.usage().unwrap();
    eprintln!("usage of a sleeper: {usage:?}");
    assert_eq!(usage.pids_current, Some(1));
    assert!(usage.cpu_usec.is_some());
    assert!(usage.memory_current_bytes.is_some());
    assert_eq!(usage.oom_kills, Some(0));

    let start = Instant::now();
    job.kill_all().unwrap();
    eprintln!("kill_all took {:?}", start.elapsed());
    let status = sleeper.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(!job.is_populated().unwrap());
    kill_and_remove(job);
    assert!(root.leftover_jobs().unwrap().is_empty());
}

#[test]
fn a_child_allocating_past_the_memory_limit_is_oom_killed_and_counted() {
    let Some(host) = HostRoot::open("oom") else {
        return;
    };
    let root = host.root();
    if !root.available().contains(Controller::Memory) {
        skip("oom", "no memory controller");
        return;
    }
    let job = root.create_job("hog").unwrap();
    job.apply(&Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    })
    .unwrap();
    // dd's 64 MiB buffer is filled from /dev/zero: 64 MiB of touched pages.
    let mut hog = spawn_gated("exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    job.add_pid(pid_of(&hog)).unwrap();
    release(&mut hog);
    let status = hog.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    let usage = job.usage().unwrap();
    eprintln!("usage of the hog: {usage:?}");
    assert!(usage.oom_kills.unwrap() >= 1, "{usage:?}");
    assert!(usage.memory_peak_bytes.unwrap() <= 33 << 20, "{usage:?}");
    // Read through the files held open since the cgroup was made (the counts were 0 then),
    // as the server reads a job's usage at its end.
    let ended = job.final_usage().unwrap();
    assert_eq!(
        (
            ended.oom_kills,
            ended.memory_peak_bytes,
            ended.memory_current_bytes
        ),
        (usage.oom_kills, usage.memory_peak_bytes, Some(0))
    );
    kill_and_remove(job);
}

#[test]
fn a_fork_bomb_stops_at_pids_max_shows_in_usage_and_can_still_be_killed() {
    let Some(host) = HostRoot::open("forks") else {
        return;
    };
    let root = host.root();
    let job = root.create_job("bomb").unwrap();
    job.apply(&Limits {
        pids: Some(8),
        ..Limits::default()
    })
    .unwrap();
    let mut bomb = spawn_gated("while :; do sleep 30 & done");
    job.add_pid(pid_of(&bomb)).unwrap();
    release(&mut bomb);

    let deadline = Instant::now() + Duration::from_secs(5);
    let usage = loop {
        let usage = job.usage().unwrap();
        if usage.pids_refused.unwrap_or(0) >= 1 || Instant::now() > deadline {
            break usage;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("usage of the fork bomb: {usage:?}");
    assert!(usage.pids_refused.unwrap() >= 1, "{usage:?}");
    assert!(usage.pids_current.unwrap() <= 8, "{usage:?}");

    job.kill_all().unwrap();
    let _ = bomb.wait();
    kill_and_remove(job);
}

#[test]
fn a_frozen_job_stays_put_and_kill_all_still_kills_it() {
    let Some(host) = HostRoot::open("freeze") else {
        return;
    };
    let root = host.root();
    let job = root.create_job("ice").unwrap();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    job.add_pid(pid_of(&sleeper)).unwrap();
    job.freeze().unwrap();
    job.thaw().unwrap();
    job.freeze().unwrap();
    let start = Instant::now();
    job.kill_all().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    kill_and_remove(job);
}

#[test]
fn a_child_cloned_into_the_unified_cgroup_starts_inside_it() {
    let Some(host) = HostRoot::open("clone3") else {
        return;
    };
    let root = host.root();
    let job = root.create_job("born").unwrap();
    let Some(fd) = job.clone_into_fd() else {
        skip("clone3", "no unified cgroup tree");
        return;
    };
    let pid = clone3_into(fd, "/bin/sleep", &["sleep", "30"]);
    let unified = cgroups_of(pid)
        .into_iter()
        .find(|(hierarchies, _)| hierarchies.is_empty())
        .map(|(_, path)| path);
    assert_eq!(unified, Some(format!("/{}/jobs/born", host.name)));
    if job.needs_add_pid_after_clone() {
        job.add_pid(pid).unwrap();
    }
    job.kill_all().unwrap();
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Signaled(pid, Signal::SIGKILL, false)
    );
    kill_and_remove(job);
}

/// Starts `path` with `argv` in the cgroup `cgroup` using clone3(CLONE_INTO_CGROUP).
fn clone3_into(cgroup: std::os::fd::BorrowedFd<'_>, path: &str, argv: &[&str]) -> Pid {
    use std::os::fd::AsRawFd;

    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    // Everything the child touches is prepared before the clone: after it, the child of a
    // multi-threaded process may only call async-signal-safe functions.
    let path = CString::new(path).unwrap();
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: u64::try_from(cgroup.as_raw_fd()).unwrap(),
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; without CLONE_VM the child
    // gets its own copy of memory, like fork.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // SAFETY: in the child; `path` and `argv_ptrs` are valid NUL-terminated strings and a
        // NULL-terminated array prepared before the clone; execv and _exit are
        // async-signal-safe.
        unsafe {
            libc::execv(path.as_ptr(), argv_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    assert!(ret > 0, "clone3: {}", std::io::Error::last_os_error());
    Pid::from_raw(i32::try_from(ret).unwrap())
}

#[test]
fn leftover_jobs_are_found_and_destroy_removes_the_whole_tree() {
    let Some(mut host) = HostRoot::open("leftovers") else {
        return;
    };
    let root = host.root();
    for id in ["a", "b", "c"] {
        drop(root.create_job(id).unwrap());
    }
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    root.open_job("b")
        .unwrap()
        .add_pid(pid_of(&sleeper))
        .unwrap();
    assert_eq!(root.leftover_jobs().unwrap(), vec!["a", "b", "c"]);

    host.root.take().unwrap().destroy().unwrap();
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    for dir in host.top_dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

/// Asserts that opening `name` is refused as in use by this very process (the first root).
fn assert_in_use(layout: &CgroupLayout, name: &str) {
    let me = i32::try_from(std::process::id()).unwrap();
    match CgroupRoot::open(layout.clone(), name) {
        Err(err @ CgroupError::InUse { holder, .. }) => {
            assert_eq!(holder, Some(me), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("is in use by another silo server (pid {me})"))
                    && text.ends_with("use a different --cgroup-name"),
                "{text}"
            );
        }
        other => panic!("opening {name} while another root holds it: {other:?}"),
    }
}

#[test]
fn a_subtree_held_by_one_root_is_refused_to_another_until_the_first_is_dropped() {
    let Some(mut host) = HostRoot::open("owner") else {
        return;
    };
    let layout = host.layout.clone();
    let name = host.name.clone();
    drop(host.root().create_job("mine").unwrap());

    assert_in_use(&layout, &name);
    // A name inside the held subtree would put its own `server` and `jobs` where the first
    // root sees leftover jobs.
    assert_in_use(&layout, &format!("{name}/jobs"));
    assert!(
        host.root().open_job("mine").is_ok(),
        "the refused opens left the first root's job alone"
    );
    assert_eq!(host.root().leftover_jobs().unwrap(), vec!["mine"]);

    drop(host.root.take());
    let inner = CgroupRoot::open(layout.clone(), &format!("{name}/inner"))
        .expect("a nested name opens once the outer root is gone");
    assert_in_use(&layout, &name);
    inner.destroy().unwrap();

    let again = CgroupRoot::open(layout, &name).expect("reopen after the holder is dropped");
    assert_eq!(again.leftover_jobs().unwrap(), vec!["mine"]);
    again.destroy().unwrap();
    for dir in host.top_dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn io_is_throttled_on_the_disk_holding_the_files_and_counted() {
    let Some(host) = HostRoot::open("io") else {
        return;
    };
    let root = host.root();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let device = match block_device_of(work.path()) {
        Ok(device) => device,
        Err(e) => {
            skip("io", &e.to_string());
            return;
        }
    };
    let job = root.create_job("disk").unwrap();
    job.apply(&Limits {
        io: Some(IoLimit {
            device,
            bps: 8 << 20,
        }),
        ..Limits::default()
    })
    .unwrap();
    let out = work.path().join("out");
    let mut writer = spawn_gated(&format!(
        "exec dd if=/dev/zero of={} bs=1M count=4 oflag=direct",
        out.display()
    ));
    job.add_pid(pid_of(&writer)).unwrap();
    let start = Instant::now();
    release(&mut writer);
    assert!(writer.wait().unwrap().success());
    let elapsed = start.elapsed();
    let usage = job.usage().unwrap();
    eprintln!("4 MiB at 8 MiB/s took {elapsed:?}; usage {usage:?}");
    assert!(usage.io_write_bytes.unwrap() >= 4 << 20, "{usage:?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    kill_and_remove(job);
}

#[test]
fn the_disk_of_the_source_tree_is_a_whole_disk() {
    if let Ok(device) = block_device_of(Path::new(env!("CARGO_MANIFEST_DIR"))) {
        let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", device.0, device.1));
        assert!(sys.exists(), "{}", sys.display());
        assert!(!sys.join("partition").exists(), "{device:?} is a partition");
    }
}
