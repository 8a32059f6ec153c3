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
async fn a_tree_too_deep_for_a_recursive_walk_is_deleted_with_its_job() {
    if !privileged() {
        return;
    }
    // No disk of its own: /work is a directory in the job's directory on the host, which
    // DeleteJob removes. A walk that recursed once per level (std's remove_dir_all) would
    // overflow its thread's stack at about 15,000 levels and abort the server.
    let server = TestServer::start_with(&["--default-disk", "0"]);
    let mut c = server.admin().await;
    let (end, out, err) = sh(
        &mut c,
        "python3 -c \"import os\nfor _ in range(40000):\n    os.mkdir('d'); os.chdir('d')\n\
         open('leaf', 'w').write('x'); print('deep')\" && echo made",
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(out.contains("made"), "{out} {err}");
    c.delete_job(silo_proto::v1::DeleteJobRequest { id: end.id.clone() })
        .await
        .unwrap();
    assert!(!server.state().join("jobs").join(&end.id).exists());
    // The server is still there.
    let (end, out, _) = sh(&mut c, "echo alive").await;
    assert_eq!(end.state(), JobState::Completed);
    assert!(out.contains("alive"), "{out}");
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

/// Every loop device's sysfs directory names the host's path of its backing file, and its
/// counters show when that disk is written: a job sees none of them, its own or another's.
#[tokio::test]
async fn a_job_reads_no_loop_devices_backing_file_its_own_or_another_jobs() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let other = run_spec(&mut c, spec(&["sleep", "60"])).await;
    // Not vacuous: the other job's disk (and the pool's) are loop devices backed by files
    // under the state directory.
    assert!(
        !loops_backed_under(server.state()).is_empty(),
        "no loop device backed under {}",
        server.state().display()
    );
    let (end, out, err) = sh(
        &mut c,
        "cat /sys/block/*/loop/backing_file /sys/class/block/*/loop/backing_file \
            /sys/dev/block/*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file \
            2>/dev/null; echo; echo virtual: $(ls -A /sys/devices/virtual/block); \
            echo firmware: $(ls -A /sys/firmware)",
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{out}{err}");
    let state = server.state().display().to_string();
    assert!(!out.contains(&state), "{out}");
    assert!(!out.contains(".img"), "{out}");
    assert!(!out.contains(&other.id), "{out}");
    assert!(out.contains("virtual:\n"), "{out}");
    assert!(out.contains("firmware:\n"), "{out}");
    c.stop_job(silo_proto::v1::StopJobRequest {
        id: other.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
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

/// The loop devices whose backing file lies under `dir`, as /sys names them.
fn loops_backed_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing)
            && file.starts_with(&dir)
        {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                file.trim()
            ));
        }
    }
    found
}

/// Polls `done` every 50 ms for up to 10 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// The images waiting in the server's disk pool.
fn pooled_images(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(state.join("disks"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn disks_made_ahead_go_with_a_server_that_dies_and_their_images_with_its_restart() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let state = server.state().to_path_buf();
    assert!(
        eventually(|| !pooled_images(&state).is_empty()),
        "the server made no disk ahead: {}",
        server.server_log()
    );
    // A job on a pooled disk: its own filesystem, writable, owned by its user.
    {
        let mut c = server.admin().await;
        let (end, out, err) = sh(
            &mut c,
            "stat -c %u /work && echo x > /work/x && cat /work/x",
        )
        .await;
        assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
        assert_eq!(out, "1000\nx\n", "{err}");
    }
    let before = pooled_images(&state);
    server.stop();
    // Only the dead server held the pooled disks' mounts (and its ready inits theirs):
    // every loop device over the state directory detaches itself.
    assert!(
        eventually(|| loops_backed_under(&state).is_empty()),
        "loop devices left attached: {:?}",
        loops_backed_under(&state)
    );
    server.start_again();
    let mut c = server.admin().await;
    let (end, _, err) = sh(&mut c, "true").await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    let after = pooled_images(&state);
    let kept: Vec<_> = before.iter().filter(|p| after.contains(p)).collect();
    assert!(
        kept.is_empty(),
        "images of the dead server's pool kept: {kept:?}"
    );
}

/// Unmounts a filesystem a test mounted, when dropped (after the server on it).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

/// A state directory on a tmpfs of `size` of its own (further tmpfs options may follow
/// it: `64m,nr_inodes=3000`), unmounted when the guard drops (after the server on it).
fn small_state_dir(size: &str) -> (tempfile::TempDir, Unmount) {
    let dir = tempfile::Builder::new()
        .prefix("silo-e2e-small-")
        .tempdir()
        .unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success());
    let unmount = Unmount(dir.path().to_owned());
    (dir, unmount)
}

/// A server whose state directory is on a tmpfs of `size` of its own ([`small_state_dir`]),
/// started with `args`; the server goes before the filesystem is unmounted.
fn server_on_small_state(size: &str, args: &[&str]) -> (TestServer, Unmount) {
    let (dir, unmount) = small_state_dir(size);
    (TestServer::start_in(dir, args, &[]), unmount)
}

/// Waits for job `id`'s end and checks that the state filesystem's watch stopped it, with a
/// reason that says `why`.
async fn stopped_for_disk_full(
    c: &mut silo_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    id: &str,
    why: &str,
) {
    let stopped = wait_end(c, id).await;
    assert_eq!(
        (stopped.state(), stopped.end_cause()),
        (JobState::Failed, silo_proto::v1::EndCause::DiskFull),
        "{stopped:?}"
    );
    assert!(stopped.reason.contains(why), "{stopped:?}");
}

#[tokio::test]
async fn the_job_whose_disk_fills_the_state_filesystem_is_stopped_and_the_others_keep_theirs() {
    if !privileged() {
        return;
    }
    // 64 MiB for the state, 40 MiB disks: two jobs may together promise more than there is.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "40M", "--state-reserve", "24M"]);
    let mut c = server.admin().await;
    let keeper = run(
        &mut c,
        &[
            "sh",
            "-c",
            "head -c 10M /dev/urandom > /work/b && sync && md5sum /work/b > /work/b.md5 && \
             sleep 3 && md5sum -c /work/b.md5",
        ],
    )
    .await;
    let filler = run(
        &mut c,
        &[
            "sh",
            "-c",
            "for i in $(seq 40); do head -c 1M /dev/zero >> /work/a; sync; sleep 0.05; done",
        ],
    )
    .await;
    stopped_for_disk_full(&mut c, &filler.id, "state filesystem was nearly full").await;
    let kept = wait_end(&mut c, &keeper.id).await;
    assert_eq!(
        (kept.state(), kept.exit_code),
        (JobState::Completed, Some(0)),
        "the other job's disk was harmed: {kept:?}"
    );
}

#[tokio::test]
async fn a_job_filling_the_state_filesystem_without_a_disk_is_stopped() {
    if !privileged() {
        return;
    }
    // Work directories on the state filesystem, as a runtime build's step writes its tree.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "0", "--state-reserve", "24M"]);
    let mut c = server.admin().await;
    let filler = run(
        &mut c,
        &[
            "sh",
            "-c",
            "for i in $(seq 60); do head -c 1M /dev/zero >> /work/a; sleep 0.05; done",
        ],
    )
    .await;
    stopped_for_disk_full(&mut c, &filler.id, "could write to it directly").await;
}

#[tokio::test]
async fn a_job_taking_the_state_filesystems_inodes_is_stopped() {
    if !privileged() {
        return;
    }
    // Empty files take inodes and almost no bytes: the byte reserve never sees them.
    let (server, _unmount) = server_on_small_state(
        "64m,nr_inodes=3000",
        &["--default-disk", "0", "--state-reserve", "8M"],
    );
    let mut c = server.admin().await;
    let taker = run(
        &mut c,
        &[
            "python3",
            "-c",
            "import os, time
try:
    for i in range(5000):
        open('/work/f%d' % i, 'w').close()
except OSError as e:
    print(i, e, flush=True)
time.sleep(20)",
        ],
    )
    .await;
    stopped_for_disk_full(&mut c, &taker.id, "nearly out of inodes").await;
    // Its files (a work directory without a disk is kept after the end) go with the job:
    // then a new job gets inodes again.
    c.delete_job(silo_proto::v1::DeleteJobRequest {
        id: taker.id.clone(),
    })
    .await
    .unwrap();
    let (end, out, err) = sh(&mut c, "touch /work/a /work/b && echo made").await;
    assert_eq!(end.state(), JobState::Completed, "{out}{err}");
}

#[tokio::test]
async fn a_workflow_job_filling_the_state_filesystem_through_shared_is_stopped() {
    if !privileged() {
        return;
    }
    // A workflow's /shared is a directory on the state filesystem, bounded by nothing of
    // its own: its writers are direct writers, whatever their /work.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "16M", "--state-reserve", "24M"]);
    let mut w = silo_proto::v1::workflow_service_client::WorkflowServiceClient::new(
        server.channel("admin").await,
    );
    let yaml = "name: fill\njobs:\n  fill:\n    command: sh\n    args: [-c, 'for i in $(seq 60); do head -c 1M /dev/zero >> /shared/a; sleep 0.05; done']\n";
    let run = w
        .run_workflow(silo_proto::v1::RunWorkflowRequest {
            yaml: yaml.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut c = server.admin().await;
    let job_id = loop {
        let got = w
            .get_workflow(silo_proto::v1::GetWorkflowRequest { id: run.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if let Some(id) = got.jobs.first().and_then(|j| j.job_ids.first()) {
            break id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    stopped_for_disk_full(&mut c, &job_id, "could write to it directly").await;
}

#[tokio::test]
async fn the_job_whose_output_fills_the_state_filesystem_is_stopped_and_the_others_keep_theirs() {
    if !privileged() {
        return;
    }
    // A full state filesystem holds every job's output back: one job printing without end
    // (up to its 1 GiB --log-cap) would stall all the others'.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "16M", "--state-reserve", "24M"]);
    let mut c = server.admin().await;
    let keeper = run(
        &mut c,
        &[
            "python3",
            "-c",
            "import time
for i in range(2000):
    print(i, flush=True)
    time.sleep(0.001)",
        ],
    )
    .await;
    // 45 MiB over about 4.5 s: the watch should stop it at about 30 MiB; were it late, the
    // filesystem still keeps room (the test then fails rather than hangs on the keeper).
    let flooder = run(
        &mut c,
        &[
            "sh",
            "-c",
            "for i in $(seq 45); do head -c 1M /dev/zero; sleep 0.1; done",
        ],
    )
    .await;
    stopped_for_disk_full(&mut c, &flooder.id, "this job's output (its log) grew most").await;
    let kept = wait_end(&mut c, &keeper.id).await;
    assert_eq!(
        (kept.state(), kept.exit_code),
        (JobState::Completed, Some(0)),
        "{kept:?}"
    );
    let out = String::from_utf8(stdout_of(&mut c, &keeper.id).await).unwrap();
    assert_eq!(
        out.lines()
            .map(|l| l.parse().unwrap())
            .collect::<Vec<usize>>(),
        (0..2000).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_job_that_takes_the_state_filesystem_under_its_reserve_in_one_burst_is_stopped() {
    if !privileged() {
        return;
    }
    // From far above the reserve (twice it, where the jobs are measured once a second)
    // to under it between two looks, then quiet: its growth still counts.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "16M", "--state-reserve", "20M"]);
    let mut c = server.admin().await;
    let burst = run(&mut c, &["sh", "-c", "head -c 40M /dev/zero; sleep 20"]).await;
    stopped_for_disk_full(&mut c, &burst.id, "this job's output (its log) grew most").await;
}

#[tokio::test]
async fn a_full_state_filesystem_holds_output_back_and_loses_none() {
    if !privileged() {
        return;
    }
    // The state directory on a 64 MiB filesystem of its own, work directories on it
    // (--default-disk 0): a job can fill it, as jobs' disk images or a runtime build can
    // fill a real one.
    // No watch of the free space: here the filling job must live to free it.
    let (server, _unmount) =
        server_on_small_state("64m", &["--default-disk", "0", "--state-reserve", "0"]);
    let mut c = server.admin().await;
    // Waits until its /work (on the state filesystem) is full, then writes 3,000 numbered
    // lines of 500 bytes: far more than the room its log kept ahead.
    let writer = run(
        &mut c,
        &[
            "python3",
            "-c",
            "import os, sys, time
while os.statvfs('/work').f_bavail > 0:
    time.sleep(0.01)
for i in range(3000):
    sys.stdout.write('%05d %s\\n' % (i, 'x' * 494))
sys.stdout.flush()",
        ],
    )
    .await;
    let (filled, _, err) = sh(
        &mut c,
        "head -c 100M /dev/zero > /work/fill; sleep 3; rm /work/fill",
    )
    .await;
    assert_eq!(filled.state(), JobState::Completed, "{filled:?} {err}");
    let end = wait_end(&mut c, &writer.id).await;
    assert_eq!(
        (end.state(), end.exit_code),
        (JobState::Completed, Some(0)),
        "{end:?}"
    );
    let out = String::from_utf8(stdout_of(&mut c, &writer.id).await).unwrap();
    let numbers: Vec<usize> = out
        .lines()
        .map(|l| l[..5].parse().unwrap_or(usize::MAX))
        .collect();
    assert_eq!(
        numbers,
        (0..3000).collect::<Vec<_>>(),
        "lines lost or out of order"
    );
    let notes = output_of(&mut c, &writer.id, silo_proto::v1::LogStream::System).await;
    let notes = String::from_utf8_lossy(&notes);
    assert!(
        notes.contains("output held back for"),
        "the log does not say that its output waited: {notes:?}"
    );
}

#[tokio::test]
async fn an_ended_jobs_log_keeps_no_room_allocated_ahead() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    // One that ends by itself, one stopped (its init still reports the exit; an init
    // killed first is api.rs's lingering-init test).
    let ended = run(&mut c, &["sh", "-c", "echo hello"]).await;
    let stopped = run(&mut c, &["sleep", "60"]).await;
    c.stop_job(silo_proto::v1::StopJobRequest {
        id: stopped.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
    for job in [&ended, &stopped] {
        wait_end(&mut c, &job.id).await;
        let log = server.state().join("jobs").join(&job.id).join("log");
        // The room goes back right after the end, in the background.
        let released = eventually(|| allocated_beyond_end(&log) <= 64 << 10);
        assert!(
            released,
            "{}: {} bytes allocated beyond the log's end",
            job.id,
            allocated_beyond_end(&log)
        );
    }
}
