//! Runtimes end to end: built on a real server from the specs in `runtimes/`, used by jobs,
//! verified, tampered with, exported, installed on a second server, removed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use silo_proto::v1::runtime_difference::Kind;
use silo_proto::v1::runtime_service_client::RuntimeServiceClient;
use silo_proto::v1::{
    BuildRuntimeRequest, ExportRuntimeRequest, InstallRuntimeChunk, JobSpec, JobState,
    ListRuntimesRequest, RemoveRuntimeRequest, RunJobRequest, Runtime, StopJobRequest,
    VerifyRuntimeRequest,
};
use tonic::Code;
use tonic::transport::Channel;

fn spec_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runtimes")
        .join(format!("{name}.yml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn runtimes(server: &TestServer) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(server.channel("admin").await)
}

/// Builds `yaml` on the server; answers with the runtime, or the status it failed with,
/// and the log lines it streamed.
async fn build(
    c: &mut RuntimeServiceClient<Channel>,
    yaml: &str,
) -> (Result<Runtime, tonic::Status>, Vec<String>) {
    let mut lines = Vec::new();
    let mut stream = match c
        .build_runtime(BuildRuntimeRequest {
            spec_yaml: yaml.to_owned(),
            replace: false,
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(status) => return (Err(status), lines),
    };
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if !p.log_line.is_empty() {
                    lines.push(format!("[{}] {}", p.phase, p.log_line));
                }
                if let Some(runtime) = p.runtime {
                    return (Ok(runtime), lines);
                }
            }
            Ok(None) => panic!("the build ended without a result: {lines:#?}"),
            Err(status) => return (Err(status), lines),
        }
    }
}

/// Whether the busybox runtime can be built here: its spec copies the static busybox of
/// Debian's busybox-static package. Says so loudly when not, and fails under CI.
fn busybox_or_skip() -> bool {
    let ok = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let message = "SKIPPED: /bin/busybox is missing; the runtime tests need the \
                       busybox-static package (apt-get install busybox-static)";
        eprintln!("{message}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    }
    ok
}

async fn build_busybox(server: &TestServer) -> Runtime {
    let mut c = runtimes(server).await;
    let (built, lines) = build(&mut c, &spec_file("busybox")).await;
    built.unwrap_or_else(|e| panic!("{e:?}\n{lines:#?}\n{}", server.server_log()))
}

async fn export(c: &mut RuntimeServiceClient<Channel>, runtime: &str) -> Vec<u8> {
    let mut stream = c
        .export_runtime(ExportRuntimeRequest {
            runtime: runtime.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut archive = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        archive.extend(chunk.data);
    }
    archive
}

/// Installs `archive`, sent in 64 KiB chunks.
async fn install(
    c: &mut RuntimeServiceClient<Channel>,
    archive: Vec<u8>,
) -> Result<Runtime, tonic::Status> {
    let chunks: Vec<InstallRuntimeChunk> = archive
        .chunks(64 << 10)
        .map(|data| InstallRuntimeChunk {
            data: data.to_vec(),
            replace: false,
        })
        .collect();
    let mut stream = c
        .install_runtime(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    while let Some(p) = stream.message().await? {
        if let Some(runtime) = p.runtime {
            return Ok(runtime);
        }
    }
    panic!("the install ended without a result")
}

fn in_runtime(runtime: &str, script: &str) -> JobSpec {
    JobSpec {
        runtime: runtime.into(),
        ..spec(&["sh", "-c", script])
    }
}

/// Every path under `dir`.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            found.push(entry.path());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(tree(&entry.path()));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_busybox_runtime_job_sees_only_the_runtime_read_only() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    let runtime = build_busybox(&server).await;
    assert_eq!(
        (runtime.name.as_str(), runtime.version.as_str()),
        ("busybox", "1.0.0")
    );
    assert!(runtime.signed_here, "{runtime:?}");
    // A file every Debian host has, which the busybox tree does not.
    let host_file = "/usr/bin/dpkg";
    assert!(Path::new(host_file).exists());
    let mut jobs = server.admin().await;
    let (end, out, err) = sh_spec(
        &mut jobs,
        in_runtime(
            "busybox",
            &format!(
                "test -e {host_file} && echo SEES-HOST-FILE; \
                 touch /x 2>/dev/null && echo WROTE-ROOT; \
                 touch /bin/x 2>/dev/null && echo WROTE-BIN; \
                 echo path=$PATH; id -u; grep -c silo /etc/passwd; touch /work/ok && echo work-ok"
            ),
        ),
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(!out.contains("SEES-HOST-FILE"), "{out}");
    assert!(!out.contains("WROTE"), "the runtime is writable: {out}");
    assert!(out.contains("path=/bin\n"), "the runtime's env: {out}");
    assert!(out.contains("1000\n1\nwork-ok"), "{out}");
    // The job records the exact version it ran in.
    assert_eq!(end.spec.unwrap().runtime, "busybox@1.0.0");
    // Not even the job's root may write the tree.
    let (end, out, _) = sh_spec(
        &mut jobs,
        JobSpec {
            uid: Some(0),
            gid: Some(0),
            ..in_runtime(
                "busybox",
                "id -u; for p in /x /usr/x /bin/x /etc/passwd; do echo > $p 2>/dev/null && echo WROTE $p; done; \
                 chmod 777 /bin/busybox 2>/dev/null && echo CHMOD; true",
            )
        },
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(out, "0\n", "a root job changed the runtime");
    // The second job in it comes from the runtime's ready init.
    let (again, out, _) = sh_spec(&mut jobs, in_runtime("busybox@1.0.0", "echo again")).await;
    assert_eq!(
        (again.state(), out.as_str()),
        (JobState::Completed, "again\n")
    );
}

#[tokio::test]
async fn a_second_runtime_with_the_same_files_stores_them_once() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    build_busybox(&server).await;
    // Shared bytes as readers see them, after each change to what is stored once.
    let shared = || async {
        let listed = runtimes(&server)
            .await
            .list_runtimes(ListRuntimesRequest {})
            .await
            .unwrap()
            .into_inner();
        listed
            .runtimes
            .iter()
            .map(|r| (r.name.clone(), r.shared_bytes > 1_000_000))
            .collect::<Vec<_>>()
    };
    assert_eq!(shared().await, [("busybox".to_owned(), false)]);
    let twin = spec_file("busybox").replace("name: busybox", "name: busybox-twin");
    let (built, lines) = build(&mut runtimes(&server).await, &twin).await;
    let twin = built.unwrap_or_else(|e| panic!("{e:?} {lines:?}"));
    assert!(twin.shared_bytes > 1_000_000, "{twin:?}");
    let ino = |name: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(
            server
                .state()
                .join(format!("runtimes/{name}/1.0.0/rootfs/bin/busybox")),
        )
        .unwrap()
        .ino()
    };
    assert_eq!(ino("busybox"), ino("busybox-twin"));
    assert_eq!(
        shared().await,
        [
            ("busybox".to_owned(), true),
            ("busybox-twin".to_owned(), true)
        ]
    );
    runtimes(&server)
        .await
        .remove_runtime(RemoveRuntimeRequest {
            runtime: "busybox-twin@1.0.0".into(),
        })
        .await
        .unwrap();
    assert_eq!(shared().await, [("busybox".to_owned(), false)]);
}

#[tokio::test]
async fn an_unknown_runtime_is_refused_naming_the_installed_ones() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    let mut jobs = server.admin().await;
    let refused = jobs
        .run_job(RunJobRequest {
            spec: Some(in_runtime("python-9", "true")),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("no runtime is installed"),
        "{refused:?}"
    );
    build_busybox(&server).await;
    let refused = jobs
        .run_job(RunJobRequest {
            spec: Some(in_runtime("python-9", "true")),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("installed: busybox@1.0.0"),
        "{refused:?}"
    );
    // A spec with an unknown key is refused before anything is built, naming it.
    let mut c = runtimes(&server).await;
    let (bad, _) = build(
        &mut c,
        "name: x\nversion: 1.0.0\nbase:\n  busybox: /bin/busybox\npackges: []\n",
    )
    .await;
    let bad = bad.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(
        bad.message().contains("packges") && bad.message().contains("line 5"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn verify_names_a_tampered_file_and_a_tampered_export_is_refused() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    build_busybox(&server).await;
    let mut c = runtimes(&server).await;
    let verified = c
        .verify_runtime(VerifyRuntimeRequest {
            runtime: "busybox".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.differences.is_empty(), "{verified:?}");
    assert!(
        verified.files >= 1 && verified.bytes > 100_000,
        "{verified:?}"
    );
    let clean = export(&mut c, "busybox").await;

    // One byte of the installed busybox changes.
    let busybox = server
        .state()
        .join("runtimes/busybox/1.0.0/rootfs/bin/busybox");
    let mut bytes = std::fs::read(&busybox).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&busybox, &bytes).unwrap();
    let verified = c
        .verify_runtime(VerifyRuntimeRequest {
            runtime: "busybox@1.0.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, Kind)> = verified
        .differences
        .iter()
        .map(|d| (d.path.as_str(), d.kind()))
        .collect();
    assert_eq!(names, [("bin/busybox", Kind::Changed)], "{verified:?}");
    let tampered = export(&mut c, "busybox").await;

    let other = TestServer::start_with(&[
        "--trust-runtime-key",
        server
            .state()
            .join("certs/runtime-signing.pub")
            .to_str()
            .unwrap(),
    ]);
    let mut other_c = runtimes(&other).await;
    let refused = install(&mut other_c, tampered).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("bin/busybox"), "{refused:?}");
    let staging = other.state().join("runtimes/.staging");
    // The refused install's staging directory goes (in the background).
    for _ in 0..100 {
        if tree(&staging).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tree(&staging), Vec::<PathBuf>::new());
    assert!(!other.state().join("runtimes/busybox").exists());

    // The clean archive installs, and runs jobs there.
    let installed = install(&mut other_c, clean).await.unwrap();
    assert!(!installed.signed_here, "{installed:?}");
    let mut jobs = other.admin().await;
    let (end, out, _) = sh_spec(
        &mut jobs,
        in_runtime("busybox", "echo on the second server"),
    )
    .await;
    assert_eq!(
        (end.state(), out.as_str()),
        (JobState::Completed, "on the second server\n")
    );
}

#[tokio::test]
async fn a_server_that_does_not_trust_the_builder_refuses_its_archive() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let builder = TestServer::start();
    build_busybox(&builder).await;
    let archive = export(&mut runtimes(&builder).await, "busybox").await;
    let stranger = TestServer::start();
    let refused = install(&mut runtimes(&stranger).await, archive)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("sha256:"),
        "names the signer: {refused:?}"
    );
    assert_nothing_installed(&stranger).await;
}

/// Checks that `server` lists no runtime.
async fn assert_nothing_installed(server: &TestServer) {
    let listed = runtimes(server)
        .await
        .list_runtimes(ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runtimes.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn a_runtime_without_room_on_the_state_filesystem_is_refused_before_it_is_written() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let builder = TestServer::start();
    build_busybox(&builder).await;
    let archive = export(&mut runtimes(&builder).await, "busybox").await;
    let key = builder.state().join("certs/runtime-signing.pub");
    // A reserve above the filesystem's size: the server may write nothing of its own.
    let cramped = TestServer::start_with(&[
        "--trust-runtime-key",
        key.to_str().unwrap(),
        "--state-reserve",
        "1000T",
    ]);
    let refused = install(&mut runtimes(&cramped).await, archive)
        .await
        .unwrap_err();
    assert_refused(&refused, Code::ResourceExhausted, "there is room for 0");
    assert_nothing_installed(&cramped).await;
    assert_eq!(
        tree(&cramped.state().join("runtimes/.staging")),
        Vec::<PathBuf>::new()
    );
}

#[tokio::test]
async fn a_runtime_in_use_is_not_removed() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    build_busybox(&server).await;
    let mut jobs = server.admin().await;
    let job = run_spec(&mut jobs, in_runtime("busybox", "sleep 60")).await;
    assert_eq!(job.state(), JobState::Running, "{job:?}");
    let mut c = runtimes(&server).await;
    let refused = c
        .remove_runtime(RemoveRuntimeRequest {
            runtime: "busybox@1.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let bare = c
        .remove_runtime(RemoveRuntimeRequest {
            runtime: "busybox".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bare.code(), Code::InvalidArgument, "{bare:?}");
    jobs.stop_job(StopJobRequest {
        id: job.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
    let removed = c
        .remove_runtime(RemoveRuntimeRequest {
            runtime: "busybox@1.0.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.freed_bytes > 100_000, "{removed:?}");
    assert!(!server.state().join("runtimes/busybox").exists());
    let objects: Vec<PathBuf> = tree(&server.state().join("runtimes/.objects"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(
        objects,
        Vec::<PathBuf>::new(),
        "objects no runtime uses are kept"
    );
}

#[tokio::test]
async fn a_server_killed_during_an_install_leaves_nothing_installed() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let builder = TestServer::start();
    build_busybox(&builder).await;
    let archive = export(&mut runtimes(&builder).await, "busybox").await;
    let mut server = TestServer::start_with(&[
        "--trust-runtime-key",
        builder
            .state()
            .join("certs/runtime-signing.pub")
            .to_str()
            .unwrap(),
    ]);
    let mut c = runtimes(&server).await;
    // Half the archive, then the server dies while the install waits for the rest.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let half = archive.len() / 2;
    for data in archive[..half].chunks(64 << 10) {
        tx.send(InstallRuntimeChunk {
            data: data.to_vec(),
            replace: false,
        })
        .await
        .unwrap();
    }
    let call = tokio::spawn(async move {
        c.install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    let staging = server.state().join("runtimes/.staging");
    for _ in 0..200 {
        if tree(&staging).iter().any(|p| p.ends_with("rootfs")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        tree(&staging).iter().any(|p| p.ends_with("rootfs")),
        "the install did not start: {:?}\n{}",
        tree(&staging),
        server.server_log()
    );
    server.crash_and_restart();
    drop(tx);
    let _ = call.await;
    assert_eq!(tree(&staging), Vec::<PathBuf>::new());
    assert!(!server.state().join("runtimes/busybox").exists());
    let listed = runtimes(&server)
        .await
        .list_runtimes(ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runtimes.is_empty(), "{listed:?}");
    // And the whole archive installs afterwards.
    install(&mut runtimes(&server).await, archive)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_viewer_may_list_verify_and_export_but_not_build_install_or_remove() {
    if !privileged() || !busybox_or_skip() {
        return;
    }
    let server = TestServer::start();
    build_busybox(&server).await;
    let mut viewer = RuntimeServiceClient::new(server.channel("viewer").await);
    assert_eq!(
        viewer
            .list_runtimes(ListRuntimesRequest {})
            .await
            .unwrap()
            .into_inner()
            .runtimes
            .len(),
        1
    );
    let (built, _) = build(&mut viewer, &spec_file("busybox")).await;
    assert_eq!(built.unwrap_err().code(), Code::PermissionDenied);
    let removed = viewer
        .remove_runtime(RemoveRuntimeRequest {
            runtime: "busybox@1.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(removed.code(), Code::PermissionDenied);
    assert!(!export(&mut viewer, "busybox").await.is_empty());
}

/// CI builds python-3.11 from its spec (Debian's archive is reachable) and runs Python in
/// it. Needs mmdebstrap and the network: without them it says so, and fails under CI.
#[tokio::test]
async fn python_3_11_builds_from_its_spec_and_runs_python_3_11() {
    if !privileged() {
        return;
    }
    if !Path::new("/usr/bin/mmdebstrap").exists() {
        let message = "SKIPPED python_3_11_builds_from_its_spec: mmdebstrap is not installed \
                       (apt-get install mmdebstrap)";
        eprintln!("{message}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        return;
    }
    let server = TestServer::start();
    let mut c = runtimes(&server).await;
    let started = std::time::Instant::now();
    let (built, lines) = build(&mut c, &spec_file("python-3.11")).await;
    let runtime = built.unwrap_or_else(|e| panic!("{e:?}\n{}", lines.join("\n")));
    eprintln!(
        "python-3.11 built in {:?}: {} bytes, {} entries",
        started.elapsed(),
        runtime.size_bytes,
        runtime.entries
    );
    let mut jobs = server.admin().await;
    let job = run_spec(
        &mut jobs,
        JobSpec {
            runtime: "python-3.11".into(),
            ..spec(&[
                "python3",
                "-c",
                "import sys; assert sys.version_info[:2] == (3, 11); print(sys.version)",
            ])
        },
    )
    .await;
    let end = wait_end(&mut jobs, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(end.exit_code, Some(0), "{end:?}");
}
