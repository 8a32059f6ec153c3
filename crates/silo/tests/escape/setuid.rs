//! Setuid and setgid programs: nothing a job writes can give a host user another identity.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use silo_proto::v1::JobState;

use crate::common::*;

/// Every file under `dir` with the setuid or setgid bit.
fn setid_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            found.extend(setid_files(&entry.path()));
        } else if meta.mode() & 0o6000 != 0 {
            found.push(entry.path());
        }
    }
    found
}

#[tokio::test]
async fn a_setuid_program_planted_by_a_root_job_runs_for_no_host_user() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&[
        "sh",
        "-c",
        "cp /usr/bin/id /work/id && chmod 6755 /work/id && ls -ln /work/id && /work/id -u",
    ]);
    s.uid = Some(0);
    let (end, out, err) = sh_spec(&mut c, s).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {out} {err}");

    // The whole state directory is root's alone.
    for dir in [server.state().to_path_buf(), server.state().join("jobs")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
    // Whatever setuid file the job left on the host is no host root's, and no
    // unprivileged host user can run it.
    for file in setid_files(server.state()) {
        let meta = std::fs::metadata(&file).unwrap();
        assert_ne!(
            meta.uid(),
            0,
            "{} is setuid root on the host",
            file.display()
        );
        // setpriv keeps its capabilities until its own exec, so the path is looked up by
        // a shell that already runs as the host user.
        let ran = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["sh", "-c", "exec \"$0\" -u"])
            .arg(&file)
            .output()
            .expect("setpriv (util-linux) is needed for this test");
        assert!(
            !ran.status.success(),
            "a host user ran {}: {}",
            file.display(),
            String::from_utf8_lossy(&ran.stdout)
        );
    }
}
