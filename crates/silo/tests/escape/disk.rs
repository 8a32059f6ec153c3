//! The work directory: a filesystem of its own per job, so filling it hurts only the job,
//! and no path of the host's state directory shows inside the job.

use silo_proto::v1::JobState;

use crate::common::*;

#[tokio::test]
async fn a_job_that_fills_its_disk_gets_enospc_and_nothing_else_does() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/work/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'; \
         i=0; while touch /work/f$i 2>/dev/null; do i=$((i+1)); done; echo files-until-full=$i; \
         echo still > /tmp/ok && cat /tmp/ok",
    ]);
    s.limits = Some(silo_proto::v1::Limits {
        disk_bytes: Some(32 << 20),
        ..Default::default()
    });
    let (end, out, err) = sh_spec(&mut c, s).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(out.contains("No space left on device"), "{out} {err}");
    assert!(out.contains("still"), "/tmp was hurt too: {out}");
    // On the host the job took at most its 32 MiB: the blocks its image holds.
    let image = server.state().join("jobs").join(&end.id).join("disk.img");
    let held = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image).unwrap()) * 512;
    assert!(held <= 32 << 20, "{} holds {held} bytes", image.display());
    // Another job on the same server still writes its own /work.
    let (end, out, _) = sh(&mut c, "echo fine > /work/x && cat /work/x").await;
    assert_eq!(end.state(), JobState::Completed);
    assert!(out.contains("fine"), "{out}");
}

#[tokio::test]
async fn the_jobs_mountinfo_names_no_host_path_of_the_state_directory() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let (end, out, _) = sh(&mut c, "cat /proc/self/mountinfo").await;
    assert_eq!(end.state(), JobState::Completed);
    let state = server.state().display().to_string();
    assert!(!out.contains(&state), "{out}");
    assert!(!out.contains("/jobs/"), "{out}");
}

#[tokio::test]
async fn a_disk_smaller_than_16_mib_or_above_the_maximum_is_refused() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--default-disk", "64MiB", "--max-disk", "1GiB"]);
    let mut c = server.admin().await;
    for (bytes, needle) in [(1u64 << 20, "too small"), (2 << 30, "maximum")] {
        let mut s = spec(&["true"]);
        s.limits = Some(silo_proto::v1::Limits {
            disk_bytes: Some(bytes),
            ..Default::default()
        });
        let err = c
            .run_job(silo_proto::v1::RunJobRequest {
                spec: Some(s),
                uploads: vec![],
                start_at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
}
