//! cgroup v2 for real, in a VM: boots a Debian cloud kernel under QEMU (TCG) with this build
//! of silo in an initramfs, runs `silo server` there on a pure cgroup v2 hierarchy, and
//! checks that job limits are written, enforced and cleaned up (tests/vm/guest-test.sh).
//!
//! Needs qemu-system-x86, busybox-static, cpio and the kernel that `tests/vm/setup.sh`
//! installs (CI runs it before `cargo test`). Without them the test says SKIPPED loudly and
//! passes, except under CI=true, where it fails: a skipped VM test must not pass in CI.

use std::path::PathBuf;
use std::process::Command;

fn vm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vm")
}

/// Says why the test cannot run; fails under CI=true.
fn skip(why: &str) {
    let msg = format!("SKIPPED: the cgroup v2 VM test cannot run here: {why}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; CI=true forbids skipping (run tests/vm/setup.sh as root first)");
    }
    eprintln!("\n*** {msg} ***\n*** install with: sudo tests/vm/setup.sh ***\n");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn job_limits_are_enforced_on_cgroup_v2_in_a_vm() {
    let dir = vm_dir();
    // What setup.sh would install, checked without installing anything.
    let check = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .arg("--check")
        .output()
        .expect("run tests/vm/setup.sh --check");
    if !check.status.success() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc_geteuid() } == 0;
        let missing = String::from_utf8_lossy(&check.stdout)
            .trim()
            .replace('\n', "; ");
        let who = if root {
            ""
        } else {
            " (and this is not root, so the test cannot install them)"
        };
        skip(&format!("{missing}{who}"));
        return;
    }

    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(dir.join("run.sh"))
        .arg(env!("CARGO_BIN_EXE_silo"))
        // The test never installs: setup.sh is CI's (or a person's) job.
        .env("SILO_VM_NO_SETUP", "1")
        .output()
        .expect("run tests/vm/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    println!("VM test took {:.1} s", started.elapsed().as_secs_f64());
    match out.status.code() {
        Some(0) => {}
        Some(3) => skip("qemu, busybox, cpio or the kernel went missing"),
        code => {
            let verdict = text
                .lines()
                .rev()
                .find(|l| l.starts_with("silo-vm host: FAIL"))
                .unwrap_or("no verdict line");
            panic!("the cgroup v2 VM test failed (run.sh exit {code:?}): {verdict}\n\n{text}");
        }
    }
}
