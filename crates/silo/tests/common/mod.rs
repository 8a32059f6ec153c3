//! A real `silo server` on a loopback port with its own state directory, and clients for
//! it: the CLI (assert_cmd) and a tonic client over mutual TLS.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::{
    GetJobRequest, Job, JobSpec, LogStream, RunJobRequest, StreamLogsRequest, WatchJobRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// True when the tests may run: root on Linux. Otherwise says so loudly, and under
/// CI=true fails, because a skipped privileged test must not pass in CI.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    needs(unsafe { libc_geteuid() } == 0, "root (namespaces, cgroups)")
}

/// True when `available`; otherwise says loudly that the test is skipped because it needs
/// `what`, and under CI=true fails.
pub fn needs(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    let msg = format!("SKIPPED: this end-to-end test needs {what}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}, and CI=true forbids skipping");
    }
    eprintln!("\n*** {msg} ***\n");
    false
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn silo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_silo"))
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub addr: String,
    extra: Vec<String>,
    /// Environment variables the server runs with, beside this process's own.
    env: Vec<(String, String)>,
    /// This server's own cgroup subtree, so parallel tests never touch each other's jobs.
    pub cgroup_name: String,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> TestServer {
        Self::start_with_env(extra, &[])
    }

    /// A server with `extra` flags and `env` in its environment (e.g. `SILO_LOG`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("silo-e2e-")
            .tempdir()
            .unwrap();
        Self::start_in(dir, extra, env)
    }

    /// A server whose state directory is `dir` (a filesystem the test mounted there, say).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = TestServer {
            dir,
            child: None,
            addr: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cgroup_name: format!("silo-test-{}-{n}", std::process::id()),
        };
        s.launch();
        s
    }

    /// Sets (`Some`) or unsets (`None`) an environment variable of the server for its
    /// next start (after a restart).
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.env.push((name.to_string(), value.to_string()));
        }
    }

    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn admin_config(&self) -> PathBuf {
        self.state().join("client-admin.toml")
    }

    pub fn viewer_config(&self) -> PathBuf {
        self.state().join("client-viewer.toml")
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.admin_config());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state().join("server.log"))
            .unwrap();
        let child = Command::new(silo_bin())
            .arg("server")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(self.state())
            .arg("--cgroup-name")
            .arg(&self.cgroup_name)
            .args(self.own_host_ids())
            .args(&self.extra)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The server writes the admin's configuration, then the viewer's: both before
            // a test may use either.
            let viewer_ready = std::fs::read_to_string(self.viewer_config())
                .is_ok_and(|text| text.lines().any(|l| l.starts_with("address")));
            if let Ok(text) = std::fs::read_to_string(self.admin_config())
                && let Some(line) = text.lines().find(|l| l.starts_with("address"))
                && viewer_ready
            {
                self.addr = line.split('"').nth(1).unwrap().to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("silo server exited with {status}:\n{}", self.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A range of host ids no other test server of this run uses (unless the test chose
    /// one), so that per-user kernel limits one test exhausts never reach another's jobs.
    fn own_host_ids(&self) -> Vec<String> {
        if self.extra.iter().any(|a| a == "--host-ids") {
            return Vec::new();
        }
        let n: u32 = self
            .cgroup_name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let first = 2_000_000_000 + ((std::process::id() % 2048) * 32 + n % 32) * 1024;
        vec!["--host-ids".into(), format!("{first}:1024")]
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.state().join("server.log")).unwrap_or_default()
    }

    /// Kills the server abruptly (SIGKILL), leaving its jobs running, and starts it again.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.launch();
    }

    /// Kills the server (SIGKILL), leaving its jobs running, and waits until it is gone;
    /// [`TestServer::start_again`] starts it again on the same state directory.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts a stopped server again.
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Kills the server abruptly (SIGKILL), keeps it down for `down`, and starts it again.
    pub fn crash_and_restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.start_again();
    }

    /// The CLI, configured as admin.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(silo_bin());
        c.env("SILO_CONFIG", self.admin_config())
            .env_remove("CI")
            .timeout(Duration::from_secs(60));
        c
    }

    /// The CLI, configured as viewer.
    pub fn viewer_cli(&self) -> assert_cmd::Command {
        let mut c = self.cli();
        c.env("SILO_CONFIG", self.viewer_config());
        c
    }

    fn certs(&self) -> PathBuf {
        self.state().join("certs")
    }

    pub async fn client(&self, role: &str) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel(role).await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(512 << 20)
    }

    /// A mutual-TLS channel to the server with `role`'s certificate.
    pub async fn channel(&self, role: &str) -> Channel {
        let c = self.certs();
        let (cert, key) = (
            c.join(format!("{role}.pem")),
            c.join(format!("{role}-key.pem")),
        );
        let config = silo_tls::client_config(
            &std::fs::read(c.join("ca.pem")).unwrap(),
            &std::fs::read(cert).unwrap(),
            &std::fs::read(key).unwrap(),
        )
        .unwrap();
        connect(&self.addr, config).await.unwrap()
    }

    pub async fn admin(&self) -> JobServiceClient<Channel> {
        self.client("admin").await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_inits_under(self.state());
        remove_cgroup_tree(&self.cgroup_name);
    }
}

/// Every directory of this server's cgroup subtree, in each hierarchy.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path().join(name);
        if dir.is_dir() {
            roots.push(dir);
        }
    }
    let own = Path::new("/sys/fs/cgroup").join(name);
    if own.is_dir() && !roots.contains(&own) {
        roots.push(own);
    }
    roots
}

/// Job cgroups (`<name>/jobs/<id>`) that exist now, in any hierarchy.
pub fn job_cgroups(name: &str) -> Vec<PathBuf> {
    cgroup_dirs(name)
        .into_iter()
        .flat_map(|d| {
            std::fs::read_dir(d.join("jobs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// Waits (up to 5 s) until none of the jobs `ids` has a cgroup left; returns those left.
/// (Other cgroups under `jobs/` belong to the server's ready inits.)
pub fn job_cgroups_after_cleanup(name: &str, ids: &[&str]) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<PathBuf> = job_cgroups(name)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| ids.iter().any(|id| n == *id)))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes a test server's cgroup subtree, deepest directories first, retrying while
/// the last killed processes leave it (up to 5 s).
fn remove_cgroup_tree(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for root in cgroup_dirs(name) {
            for job in std::fs::read_dir(root.join("jobs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(job.path());
            }
            let _ = std::fs::remove_dir(root.join("jobs"));
            let _ = std::fs::remove_dir(root.join("server"));
            let _ = std::fs::remove_dir(&root);
        }
        if cgroup_dirs(name).is_empty() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL every direct child of `pid` (the jobs' init processes; killing an init ends
/// its whole pid namespace).
fn kill_children_of(pid: u32) {
    for (child, _) in children_of(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc_kill(child as i32, 9) };
    }
}

/// The direct children of `pid`: each one's pid and name (`comm`).
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid: u32 = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == pid {
            found.push((child, stat[open + 1..close].to_owned()));
        }
    }
    found
}

/// SIGKILL the init processes of this state dir (jobs left running by a crash, ready
/// inits): those whose log (fd 4) lies in it. Waits (up to 5 s) until they are gone, so
/// that their cgroups can be removed.
fn kill_inits_under(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut alive = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // A test that opens the store itself may hold a file of the state dir as fd 4.
            if pid == std::process::id() as i32 {
                continue;
            }
            let log = std::fs::read_link(format!("/proc/{pid}/fd/4"));
            if log.is_ok_and(|p| p.starts_with(state)) {
                alive += 1;
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc_kill(pid, 9) };
            }
        }
        if alive == 0 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// SIGKILL the process `pid`.
pub fn sigkill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc_kill(pid as i32, 9) };
}

/// A tonic channel over mutual TLS with `config`.
pub async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = addr.to_string();
    let connector = tokio_rustls::TlsConnector::from(config);
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let addr = addr.clone();
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr);
                let name = rustls_pki_types::ServerName::try_from(
                    host.trim_matches(['[', ']']).to_string(),
                )
                .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

pub fn spec(cmd: &[&str]) -> JobSpec {
    JobSpec {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub async fn run(client: &mut JobServiceClient<Channel>, cmd: &[&str]) -> Job {
    run_spec(client, spec(cmd)).await
}

pub async fn run_spec(client: &mut JobServiceClient<Channel>, spec: JobSpec) -> Job {
    client
        .run_job(RunJobRequest {
            spec: Some(spec),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits for the job's final state through WatchJob.
pub async fn wait_end(client: &mut JobServiceClient<Channel>, id: &str) -> Job {
    let mut stream = client
        .watch_job(WatchJobRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(job) = stream.message().await.unwrap() {
        last = Some(job);
    }
    let job = last.unwrap();
    assert!(job.state().is_final(), "{job:?}");
    job
}

pub async fn get(client: &mut JobServiceClient<Channel>, id: &str) -> Job {
    client
        .get_job(GetJobRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// All stdout bytes of a job, following until it ends.
pub async fn stdout_of(client: &mut JobServiceClient<Channel>, id: &str) -> Vec<u8> {
    output_of(client, id, LogStream::Stdout).await
}

/// All bytes of one of a job's streams (stdout, stderr, silo's own notes), following until
/// it ends.
pub async fn output_of(
    client: &mut JobServiceClient<Channel>,
    id: &str,
    which: LogStream,
) -> Vec<u8> {
    let mut stream = client
        .stream_logs(StreamLogsRequest {
            id: id.into(),
            from_sequence: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        for r in chunk.records {
            if r.stream() == which {
                out.extend(r.data);
            }
        }
    }
    out
}

/// Calls `call` until the server stops answering ResourceExhausted (a bound's place came
/// free), for at most 10 s; panics on any other error.
/// Checks that a call was refused with `code` and a message that names `naming`.
pub fn assert_refused(refused: &tonic::Status, code: tonic::Code, naming: &str) {
    assert_eq!(refused.code(), code, "{refused:?}");
    assert!(refused.message().contains(naming), "{refused:?}");
}

pub async fn once_there_is_room<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call().await {
            Ok(answer) => return answer,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no room came free in 10 s: {e:?}"),
        }
    }
}

/// The bytes a file has allocated beyond its end (blocks kept ahead by fallocate).
pub fn allocated_beyond_end(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.blocks() * 512).saturating_sub(meta.len())
}

/// Runs `script` with `sh -c` in a job and returns (final job, stdout, stderr).
pub async fn sh(c: &mut JobServiceClient<Channel>, script: &str) -> (Job, String, String) {
    sh_spec(c, spec(&["sh", "-c", script])).await
}

pub async fn sh_spec(c: &mut JobServiceClient<Channel>, s: JobSpec) -> (Job, String, String) {
    let job = run_spec(c, s).await;
    let end = wait_end(c, &job.id).await;
    let mut stream = c
        .stream_logs(StreamLogsRequest {
            id: job.id.clone(),
            from_sequence: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await.unwrap() {
        for r in chunk.records {
            match r.stream() {
                LogStream::Stdout => out.extend(r.data),
                _ => err.extend(r.data),
            }
        }
    }
    (
        end,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs `silo server` with a state directory and port of its own but the cgroup subtree
/// `cgroup_name`, for a server that must refuse to start: waits for it to exit (killing it,
/// its children and its inits after 30 s) and returns its exit status and its output.
pub fn run_server_until_exit(cgroup_name: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::Builder::new()
        .prefix("silo-e2e-")
        .tempdir()
        .unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(silo_bin())
        .arg("server")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--cgroup-name")
        .arg(cgroup_name)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_children_of(child.id());
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_inits_under(dir.path());
    (
        status,
        std::fs::read_to_string(log_path).unwrap_or_default(),
    )
}
