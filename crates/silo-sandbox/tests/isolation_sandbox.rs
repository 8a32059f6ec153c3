//! `isolation::enter` on a real kernel: what a job can see and write once its sandbox is
//! built. Each test builds a sandbox in a forked child that is PID 1 of new namespaces, checks
//! from inside, and then checks that the host kept nothing of it. Needs root.

#[path = "isolation_harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use harness::{
    Check, HOSTNAME, HostDirs, JOB_UID, ensure, expect_absent, expect_errno, in_namespaces,
    root_or_skip,
};
use nix::errno::Errno;
use silo_sandbox::Rootfs;
use silo_sandbox::isolation::enter;

fn entered(iso: &silo_sandbox::Isolation) -> Check {
    enter(iso).map_err(|e| format!("enter failed: {e} (step {:?})", e.step))
}

fn names_in(dir: &str) -> Result<BTreeSet<String>, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("listing {dir}: {e}"))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| format!("listing {dir}: {e}"))
        })
        .collect()
}

#[test]
fn the_host_view_shows_the_system_directories_read_only_and_nothing_else() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        for present in ["/usr/bin", "/bin/sh", "/etc/passwd"] {
            ensure(Path::new(present).exists(), format!("{present} is missing"))?;
        }
        for absent in [
            "/root",
            "/home",
            "/var",
            "/run",
            "/srv",
            "/opt",
            "/mnt",
            "/boot",
            "/var/lib/silo",
        ] {
            expect_absent(absent)?;
        }
        // The host's /tmp, where this test keeps the sandbox's own directories, is not there.
        expect_absent(dirs.path())?;
        expect_errno(
            fs::write("/usr/silo-escape", b"x"),
            Errno::EROFS,
            "writing /usr",
        )?;
        expect_errno(fs::write("/silo-escape", b"x"), Errno::EROFS, "writing /")?;
        expect_errno(
            OpenOptions::new().append(true).open("/etc/passwd"),
            Errno::EROFS,
            "writing /etc/passwd",
        )?;
        expect_errno(
            fs::create_dir("/etc/silo-escape"),
            Errno::EROFS,
            "creating a directory in /etc",
        )
    });
    dirs.finish(outcome);
}

#[test]
fn the_generated_etc_names_the_job_user_and_resolves_the_hostname() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let host_has_ld_cache = Path::new("/etc/ld.so.cache").exists();
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        let read = |p: &str| fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
        let passwd = read("/etc/passwd")?;
        ensure(
            passwd.contains(&format!("silo:x:{JOB_UID}:{JOB_UID}:")),
            format!("/etc/passwd lacks the job user: {passwd}"),
        )?;
        ensure(passwd.starts_with("root:x:0:0:"), "/etc/passwd lacks root")?;
        ensure(
            read("/etc/group")?.contains(&format!("silo:x:{JOB_UID}:")),
            "/etc/group lacks the job group",
        )?;
        ensure(
            read("/etc/hosts")?.contains(HOSTNAME),
            "/etc/hosts does not resolve the hostname",
        )?;
        ensure(
            read("/etc/nsswitch.conf")?.contains("passwd: files"),
            "nsswitch.conf",
        )?;
        ensure(
            !host_has_ld_cache || Path::new("/etc/ld.so.cache").exists(),
            "ld.so.cache was not copied",
        )?;
        expect_absent("/etc/shadow")
    });
    dirs.finish(outcome);
}

#[test]
fn only_work_tmp_and_dev_shm_take_writes_and_work_is_the_hosts_work_directory() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        fs::write("/work/from-job", b"hello").map_err(|e| format!("writing /work: {e}"))?;
        fs::write("/tmp/scratch", b"x").map_err(|e| format!("writing /tmp: {e}"))?;
        fs::write("/dev/shm/scratch", b"x").map_err(|e| format!("writing /dev/shm: {e}"))?;
        expect_errno(fs::write("/dev/silo", b"x"), Errno::EROFS, "writing /dev")?;

        let tmp = nix::sys::statvfs::statvfs("/tmp").map_err(|e| e.to_string())?;
        let size = tmp.blocks() as u64 * tmp.fragment_size() as u64;
        ensure(
            size == iso.tmp_size_bytes,
            format!("/tmp holds {size} bytes, not {}", iso.tmp_size_bytes),
        )?;
        let mode = fs::metadata("/tmp").map_err(|e| e.to_string())?.mode() & 0o7777;
        ensure(mode == 0o1777, format!("/tmp has mode {mode:o}"))?;

        // Every mount but these is read-only.
        let writable: BTreeSet<&str> = ["/work", "/tmp", "/dev/shm", "/dev/pts", "/proc"].into();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (point, options) = (fields[4], fields[5]);
            let read_only = options.split(',').any(|o| o == "ro");
            ensure(
                read_only || writable.contains(point),
                format!("{point} is mounted writable: {line}"),
            )?;
        }
        Ok(())
    });
    let written = fs::read(dirs.work.join("from-job"));
    dirs.finish(outcome);
    assert_eq!(written.expect("/work/from-job on the host"), b"hello");
}

#[test]
fn proc_shows_only_the_jobs_processes_and_hides_the_kernels_secrets() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        let me = fs::read_link("/proc/self").map_err(|e| e.to_string())?;
        ensure(me == Path::new("1"), format!("/proc/self is {me:?}, not 1"))?;
        let pids: Vec<String> = names_in("/proc")?
            .into_iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        ensure(pids == ["1"], format!("/proc shows processes {pids:?}"))?;

        for secret in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
            if let Ok(mut f) = fs::File::open(secret) {
                let mut buf = Vec::new();
                let _ = f.read_to_end(&mut buf);
                ensure(buf.is_empty(), format!("{secret} is readable"))?;
            }
        }
        // Opened for writing only, never written: were the test wrong, nothing happens.
        if Path::new("/proc/sysrq-trigger").exists() {
            expect_errno(
                OpenOptions::new().write(true).open("/proc/sysrq-trigger"),
                Errno::EROFS,
                "opening /proc/sysrq-trigger for writing",
            )?;
        }
        expect_errno(
            fs::write("/proc/sys/kernel/hostname", b"escaped"),
            Errno::EROFS,
            "writing /proc/sys",
        )
    });
    dirs.finish(outcome);
}

#[test]
fn dev_holds_only_the_standard_devices_and_sys_is_read_only() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        let expected: BTreeSet<String> = [
            "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
            "stdin", "stdout", "stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let found = names_in("/dev")?;
        ensure(found == expected, format!("/dev holds {found:?}"))?;

        fs::write("/dev/null", b"discarded").map_err(|e| format!("writing /dev/null: {e}"))?;
        let mut zeros = [1u8; 16];
        fs::File::open("/dev/zero")
            .and_then(|mut f| f.read_exact(&mut zeros))
            .map_err(|e| format!("reading /dev/zero: {e}"))?;
        ensure(zeros == [0u8; 16], "/dev/zero is not zeros")?;
        // The device nodes are the host's own inodes: the job cannot change them.
        expect_errno(
            fs::set_permissions("/dev/null", fs::Permissions::from_mode(0o600)),
            Errno::EROFS,
            "chmod /dev/null",
        )?;
        let pty = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
            .map_err(|e| format!("opening /dev/ptmx: {e}"))?;
        // SAFETY: ptsname is not thread-safe; this forked child has one thread.
        let name = unsafe { nix::pty::ptsname(&pty) }.map_err(|e| e.to_string())?;
        ensure(name.starts_with("/dev/pts/"), format!("pty is {name}"))?;

        if Path::new("/sys").exists() {
            // Creating in sysfs fails with EROFS or, where the kernel looks the name up
            // first, ENOENT; either way nothing is created.
            let created = fs::create_dir("/sys/fs/cgroup/silo-escape");
            ensure(
                matches!(
                    created.as_ref().map_err(|e| e.raw_os_error()),
                    Err(Some(libc::EROFS | libc::ENOENT))
                ),
                format!("creating in /sys/fs/cgroup: {created:?}"),
            )?;
            // Opened for writing only, never written.
            for knob in [
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "/sys/power/state",
            ] {
                if Path::new(knob).exists() {
                    expect_errno(
                        OpenOptions::new().write(true).open(knob),
                        Errno::EROFS,
                        &format!("opening {knob} for writing"),
                    )?;
                }
            }
            let nics = names_in("/sys/class/net")?;
            ensure(
                nics.iter().eq(["lo"].iter()),
                format!("/sys/class/net shows {nics:?}"),
            )?;
        }
        Ok(())
    });
    dirs.finish(outcome);
}

#[test]
fn the_job_has_its_own_hostname_and_only_a_working_loopback() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::HostView);
    let host_name = nix::unistd::gethostname().unwrap();
    let host_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        let name = nix::unistd::gethostname().map_err(|e| e.to_string())?;
        ensure(name == HOSTNAME, format!("hostname is {name:?}"))?;

        let dev = fs::read_to_string("/proc/net/dev").map_err(|e| e.to_string())?;
        let nics: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        ensure(nics == ["lo"], format!("interfaces: {nics:?}"))?;

        // The host's 127.0.0.1 is not the job's.
        expect_errno(
            TcpStream::connect(("127.0.0.1", host_port)),
            Errno::ECONNREFUSED,
            "connecting to the host's loopback",
        )?;
        // The job's own loopback is up.
        let own = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let port = own.local_addr().map_err(|e| e.to_string())?.port();
        TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| format!("connecting over the job's loopback: {e}"))
    });
    drop(host_listener);
    dirs.finish(outcome);
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_name,
        "the host's hostname changed"
    );
}

#[test]
fn a_runtime_root_shows_the_runtime_read_only_and_nothing_of_the_host() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let runtime = dirs.path().join("runtime");
    fs::create_dir_all(runtime.join("usr/lib")).unwrap();
    fs::create_dir_all(runtime.join("etc")).unwrap();
    fs::create_dir_all(runtime.join("proc")).unwrap();
    fs::write(runtime.join("etc/os-release"), "ID=silo-test\n").unwrap();
    fs::write(runtime.join("etc/passwd"), "runtime:x:7:7::/:/bin/sh\n").unwrap();
    fs::write(runtime.join("hello.txt"), "from the runtime\n").unwrap();
    std::os::unix::fs::symlink("usr/lib", runtime.join("lib")).unwrap();
    let iso = dirs.isolation(Rootfs::Runtime {
        path: runtime.clone(),
        writable: false,
    });
    let outcome = in_namespaces(|| {
        entered(&iso)?;
        let hello = fs::read_to_string("/hello.txt").map_err(|e| e.to_string())?;
        ensure(
            hello == "from the runtime\n",
            format!("/hello.txt: {hello:?}"),
        )?;
        let os = fs::read_to_string("/etc/os-release").map_err(|e| e.to_string())?;
        ensure(os.contains("silo-test"), "/etc is not the runtime's")?;
        let lib = fs::read_link("/lib").map_err(|e| e.to_string())?;
        ensure(lib == Path::new("usr/lib"), format!("/lib -> {lib:?}"))?;
        // Nothing of the host: no host /bin. The runtime's passwd is covered by the job's;
        // files the runtime lacks (group, hosts) are not made up.
        expect_absent("/bin")?;
        let passwd = fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        ensure(
            passwd.starts_with("root:x:0:0:") && !passwd.contains("runtime:"),
            format!("/etc/passwd: {passwd:?}"),
        )?;
        expect_absent("/etc/group")?;
        expect_absent("/.silo-etc-passwd")?;
        expect_errno(
            fs::write("/etc/passwd", b"x"),
            Errno::EROFS,
            "writing the job's passwd",
        )?;
        expect_errno(
            fs::write("/hello.txt", b"x"),
            Errno::EROFS,
            "writing the runtime",
        )?;
        expect_errno(
            fs::write("/usr/lib/x", b"x"),
            Errno::EROFS,
            "writing the runtime's /usr",
        )?;
        // The sandbox's own mounts, not the runtime's directories of the same name.
        ensure(Path::new("/proc/self").exists(), "/proc is not procfs")?;
        ensure(Path::new("/dev/null").exists(), "/dev/null is missing")?;
        fs::write("/work/x", b"x").map_err(|e| format!("writing /work: {e}"))
    });
    let untouched = fs::read_dir(&runtime).unwrap().count();
    let runtime_passwd = fs::read_to_string(runtime.join("etc/passwd")).unwrap();
    dirs.finish(outcome);
    assert_eq!(untouched, 5, "the runtime directory changed on the host");
    assert_eq!(runtime_passwd, "runtime:x:7:7::/:/bin/sh\n");
}

#[test]
fn a_missing_work_directory_fails_with_its_step_path_and_errno() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let mut iso = dirs.isolation(Rootfs::HostView);
    iso.work_dir = dirs.path().join("no-such-work-dir");
    let outcome = in_namespaces(|| {
        let Err(e) = enter(&iso) else {
            return Err("enter succeeded without a work directory".into());
        };
        ensure(
            e.step.as_deref() == Some("bind_work"),
            format!("step {:?}", e.step),
        )?;
        ensure(
            e.errno == Some(libc::ENOENT),
            format!("errno {:?}", e.errno),
        )?;
        ensure(
            e.message.contains("no-such-work-dir") && e.message.contains("No such file"),
            format!("message: {}", e.message),
        )
    });
    dirs.finish(outcome);
}

#[test]
fn a_missing_runtime_fails_with_its_step_path_and_errno() {
    if !root_or_skip() {
        return;
    }
    let dirs = HostDirs::create();
    let iso = dirs.isolation(Rootfs::Runtime {
        path: dirs.path().join("no-such-runtime"),
        writable: false,
    });
    let outcome = in_namespaces(|| {
        let Err(e) = enter(&iso) else {
            return Err("enter succeeded without the runtime".into());
        };
        ensure(
            e.step.as_deref() == Some("runtime_rootfs"),
            format!("step {:?}", e.step),
        )?;
        ensure(
            e.errno == Some(libc::ENOENT),
            format!("errno {:?}", e.errno),
        )?;
        ensure(
            e.message.contains("no-such-runtime"),
            format!("message: {}", e.message),
        )
    });
    dirs.finish(outcome);
}
