//! Building a runtime from its spec, on the server: base tree, packages, clean-up,
//! manifest, tests, signature, install.
//!
//! Everything happens in a staging directory of the catalog; only the last step, a rename,
//! makes the runtime visible. Package managers that run code from the network (pip, npm)
//! and the spec's tests run as ordinary silo jobs in the tree being built (pip and npm in
//! a writable tree with the host's network, tests read-only without network), so they get
//! every isolation and limit a job gets, and their output is a job log like any other.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use silo_proto::v1::{EnvVar, JobNetwork, JobSpec, JobState};
use silo_runtime::layout::VersionDir;
use silo_runtime::manifest::Manifest;
use silo_runtime::spec::{Base, RuntimeSpec};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::catalog::{Catalog, Installed, RuntimeError, host_error};
use super::progress::Progress;
use crate::jobs::JobRoot;

/// How long one package-manager step or test may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// What is left out of every tree: documentation, manual pages, locales, and the package
/// manager's caches and logs.
const LEFT_OUT: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
];

/// Directories whose contents belong to the running system, never to the runtime: the
/// sandbox mounts its own /dev, /proc, /sys, /tmp and /run is empty at every start.
const EMPTIED: &[&str] = &["dev", "proc", "sys", "tmp", "run"];

/// Files of /etc that a job's sandbox covers with its own (they must exist as regular files
/// for a bind mount to cover them).
const JOB_ETC_FILES: &[&str] = &["passwd", "group", "hosts", "hostname", "resolv.conf"];

/// Builds the runtime `spec` (whose YAML text is `yaml`) and installs it; reports on
/// `progress`. Whatever fails, nothing of the build stays behind but the jobs of its steps.
pub async fn build(
    catalog: &Catalog,
    spec: RuntimeSpec,
    replace: bool,
    owner: &str,
    progress: &Progress,
) -> Result<Installed, RuntimeError> {
    let label = format!("{}@{}", spec.name, spec.version);
    if !replace && catalog.get(&label).is_ok() {
        return Err(RuntimeError::Exists(label));
    }
    let staging = super::Staging::new(catalog.new_staging()?);
    let version = VersionDir(staging.path().to_path_buf());
    let rootfs = version.rootfs();
    let build = Build {
        catalog,
        spec: &spec,
        label: &label,
        owner,
        progress,
        rootfs: &rootfs,
    };
    build.base().await?;
    build.packages().await?;
    progress.phase("clean").await;
    blocking({
        let rootfs = rootfs.clone();
        move || clean(&rootfs)
    })
    .await?;
    progress.phase("manifest").await;
    let manifest = blocking({
        let (rootfs, name, version) = (rootfs.clone(), spec.name.clone(), spec.version.clone());
        move || {
            Manifest::scan(&rootfs, &name, &version).map_err(|e| RuntimeError::Host(e.to_string()))
        }
    })
    .await?;
    progress
        .line(
            "manifest",
            &format!(
                "{} entries, {} bytes, {}",
                manifest.entries.len(),
                manifest.total_size(),
                manifest.digest()
            ),
        )
        .await;
    build.tests().await?;
    progress.phase("sign").await;
    let signature = catalog.sign(&manifest);
    blocking({
        let (version, yaml) = (VersionDir(version.0.clone()), spec.to_yaml());
        move || {
            let write = |path: PathBuf, bytes: &[u8]| {
                std::fs::write(&path, bytes).map_err(|e| host_error("write", &path, e))
            };
            write(version.spec(), yaml.as_bytes())?;
            write(version.manifest(), &manifest.to_bytes())?;
            write(version.signature(), signature.to_text().as_bytes())
        }
    })
    .await?;
    progress.phase("install").await;
    let installed = catalog.commit(staging.keep(), replace).await?;
    Ok(installed)
}

/// One build's context.
struct Build<'a> {
    catalog: &'a Catalog,
    spec: &'a RuntimeSpec,
    label: &'a str,
    owner: &'a str,
    progress: &'a Progress,
    rootfs: &'a Path,
}

impl Build<'_> {
    /// The base tree: a Debian suite by mmdebstrap (apt checks the archive's signatures),
    /// or a static busybox with a link per applet.
    async fn base(&self) -> Result<(), RuntimeError> {
        self.progress.phase("base").await;
        match &self.spec.base {
            Base::Debian {
                suite,
                packages,
                mirror,
            } => {
                let mut command = tokio::process::Command::new("mmdebstrap");
                command
                    .args(["--mode=root", "--variant=essential", "--format=directory"])
                    // Merged /usr without the usrmerge package (and the perl it needs).
                    .arg("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
                    .args(
                        LEFT_OUT[..5]
                            .iter()
                            .map(|dir| format!("--dpkgopt=path-exclude=/{dir}/*")),
                    );
                if !packages.is_empty() {
                    command.arg(format!("--include={}", packages.join(",")));
                }
                command.arg(suite).arg(self.rootfs);
                if let Some(mirror) = mirror {
                    command.arg(mirror);
                }
                self.host_command("base", command).await
            }
            Base::Busybox { path } => {
                let (path, rootfs) = (path.clone(), self.rootfs.to_path_buf());
                let applets = busybox_applets(&path).await?;
                self.progress
                    .line("base", &format!("busybox with {} applets", applets.len()))
                    .await;
                blocking(move || busybox_tree(&path, &applets, &rootfs)).await
            }
        }
    }

    /// pip and npm packages, installed by the runtime's own pip and npm.
    async fn packages(&self) -> Result<(), RuntimeError> {
        blocking({
            let rootfs = self.rootfs.to_path_buf();
            move || ensure_job_etc_files(&rootfs)
        })
        .await?;
        if !self.spec.pip.is_empty() {
            let mut argv: Vec<String> = [
                "python3",
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--root-user-action=ignore",
                "--break-system-packages",
                "--no-warn-script-location",
                "--disable-pip-version-check",
            ]
            .map(String::from)
            .to_vec();
            argv.extend(self.spec.pip.iter().cloned());
            self.step("pip", argv, true).await?;
        }
        if !self.spec.npm.is_empty() {
            let mut argv: Vec<String> = [
                "npm",
                "install",
                "--global",
                "--no-fund",
                "--no-audit",
                "--no-update-notifier",
            ]
            .map(String::from)
            .to_vec();
            argv.extend(self.spec.npm.iter().cloned());
            self.step("npm", argv, true).await?;
        }
        Ok(())
    }

    /// The spec's tests, each a job in the finished (read-only) tree.
    async fn tests(&self) -> Result<(), RuntimeError> {
        if self.spec.test.is_empty() {
            return Ok(());
        }
        self.progress.phase("test").await;
        for test in &self.spec.test {
            self.progress.line("test", &format!("$ {test}")).await;
            let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), test.clone()];
            self.step("test", argv, false).await?;
        }
        Ok(())
    }

    /// Runs `argv` as a job in the tree: with `install`, writable, as root, with the host's
    /// network (a package manager); else read-only, as the default user, without network
    /// (a test). Streams its output as `phase` lines.
    async fn step(
        &self,
        phase: &str,
        argv: Vec<String>,
        install: bool,
    ) -> Result<(), RuntimeError> {
        let jobs = self.catalog.jobs();
        let mut env: Vec<EnvVar> = self
            .spec
            .env
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        let mut uploads = Vec::new();
        if install {
            let (file, vars) = host_trust_for_package_managers();
            uploads.extend(file);
            env.extend(vars);
        }
        let spec = JobSpec {
            command: argv.clone(),
            name: format!("runtime build {}: {phase}", self.label),
            runtime: format!("{} (build)", self.label),
            timeout_ms: STEP_TIMEOUT.as_millis() as u64,
            uid: install.then_some(0),
            gid: install.then_some(0),
            network: if install {
                JobNetwork::Host
            } else {
                JobNetwork::None
            } as i32,
            env,
            ..JobSpec::default()
        };
        let root = JobRoot {
            rootfs: self.rootfs.to_path_buf(),
            env: Vec::new(),
            writable: install,
            pooled: false,
        };
        let started = jobs
            .run_in(
                spec,
                uploads,
                self.owner.to_owned(),
                crate::jobs::JobOptions {
                    root: Some(root),
                    ..Default::default()
                },
            )
            .await;
        // A writable tree was lent to the step's user: it is root's alone again whatever
        // happened, before anything else reads it (see `tree::secure_tree`: a descriptor
        // the step opened may outlive it).
        let give_back = || async {
            if install {
                let rootfs = self.rootfs.to_path_buf();
                blocking(move || {
                    crate::tree::secure_tree(&rootfs).map_err(|e| host_error("secure", &rootfs, e))
                })
                .await
            } else {
                Ok(())
            }
        };
        let row = match started {
            Ok(row) => row,
            Err(e) => {
                give_back().await?;
                return Err(RuntimeError::Failed(format!(
                    "the {phase} step could not start: {e}"
                )));
            }
        };
        let tail = self.follow(phase, &row.id).await;
        let ended = match jobs.live(&row.id) {
            Some(live) => live.ended().await,
            None => jobs
                .get(&row.id)
                .await
                .map_err(|e| RuntimeError::Host(e.to_string()))?,
        };
        give_back().await?;
        if ended.state == JobState::Completed && ended.exit_code == Some(0) {
            return Ok(());
        }
        let how = match (ended.exit_code, ended.reason.as_str()) {
            (Some(code), "") => format!("exited with {code}"),
            (_, reason) => reason.to_owned(),
        };
        let last = tail
            .last()
            .map(|l| format!("; its last line: {l}"))
            .unwrap_or_default();
        Err(RuntimeError::Failed(format!(
            "the {phase} step `{}` failed: {how}{last} (all its output: silo job logs {})",
            argv.join(" "),
            row.id
        )))
    }

    /// Streams a step job's output as `phase` lines until the job has ended; answers with
    /// its last few lines.
    async fn follow(&self, phase: &str, id: &str) -> Vec<String> {
        let jobs = self.catalog.jobs();
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(crate::logs::stream_log(
            jobs.log_path(id),
            0,
            true,
            jobs.live(id),
            tx,
        ));
        let mut lines = LineSplitter::default();
        let mut tail = Vec::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            for record in chunk.records {
                for line in lines.push(&record.data) {
                    self.progress.line(phase, &line).await;
                    keep_last(&mut tail, line);
                }
            }
        }
        if let Some(line) = lines.finish() {
            self.progress.line(phase, &line).await;
            keep_last(&mut tail, line);
        }
        tail
    }

    /// Runs a host command (mmdebstrap), streaming its output as `phase` lines.
    async fn host_command(
        &self,
        phase: &str,
        mut command: tokio::process::Command,
    ) -> Result<(), RuntimeError> {
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        silo_sandbox::spawn::with_started_open_files(command.as_std_mut());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Failed(format!("cannot run {program}: {e}")))?;
        let (lines_tx, mut lines_rx) = mpsc::channel::<String>(64);
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = tx.send(line).await;
                }
            });
        }
        drop(lines_tx);
        let mut tail = Vec::new();
        while let Some(line) = lines_rx.recv().await {
            self.progress.line(phase, &line).await;
            keep_last(&mut tail, line);
        }
        let status = child
            .wait()
            .await
            .map_err(|e| RuntimeError::Failed(format!("{program}: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let last = tail.last().map(|l| format!(": {l}")).unwrap_or_default();
        Err(RuntimeError::Failed(format!(
            "{program} failed ({status}){last}"
        )))
    }
}

/// The host's CA bundle, whose name the package managers of a build step (pip, npm) are
/// given to trust, and the host's proxy settings.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where a build step finds the host's CA bundle (in its /work).
const STEP_CA_BUNDLE: &str = ".silo-host-ca.crt";

/// What lets a package manager in a build step reach its registry the way the host does:
/// the host's CA bundle as an upload (a registry behind a TLS-inspecting proxy that the host
/// trusts is then trusted too; the runtime's own trust store is not changed) with the
/// variables that point pip, requests, npm and node at it, and the host's proxy variables.
fn host_trust_for_package_managers() -> (Option<silo_proto::v1::Upload>, Vec<EnvVar>) {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value,
    };
    let mut env: Vec<EnvVar> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ]
    .iter()
    .filter_map(|name| Some(var(name, std::env::var(name).ok()?)))
    .collect();
    let Ok(bundle) = std::fs::read(HOST_CA_BUNDLE) else {
        return (None, env);
    };
    let path = format!("/work/{STEP_CA_BUNDLE}");
    for name in [
        "PIP_CERT",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "NPM_CONFIG_CAFILE",
    ] {
        env.push(var(name, path.clone()));
    }
    let upload = silo_proto::v1::Upload {
        path: STEP_CA_BUNDLE.to_owned(),
        content: bundle,
        mode: 0o644,
        directory: false,
    };
    (Some(upload), env)
}

/// Keeps the last 20 lines.
fn keep_last(tail: &mut Vec<String>, line: String) {
    if tail.len() == 20 {
        tail.remove(0);
    }
    tail.push(line);
}

/// Splits a byte stream into lines (lossy UTF-8, at most 4 KiB each).
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    const MAX_LINE: usize = 4096;

    fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in data {
            if byte == b'\n' || byte == b'\r' {
                if !self.pending.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.pending).into_owned());
                    self.pending.clear();
                }
            } else if self.pending.len() < Self::MAX_LINE {
                self.pending.push(byte);
            }
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

/// Runs blocking work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RuntimeError::Host(format!("a build step panicked: {e}")))?
}

/// The applets a static busybox has (`busybox --list`).
async fn busybox_applets(path: &Path) -> Result<Vec<String>, RuntimeError> {
    let mut busybox = tokio::process::Command::new(path);
    silo_sandbox::spawn::with_started_open_files(busybox.as_std_mut());
    let out = busybox
        .arg("--list")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Failed(format!("cannot run {} --list: {e}", path.display())))?;
    if !out.status.success() {
        return Err(RuntimeError::Failed(format!(
            "{} --list failed ({}): is it busybox?",
            path.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/') && !a.starts_with('.'))
        .map(str::to_owned)
        .collect())
}

/// A tree of a copied static busybox: /bin/busybox, a link to it per applet in /bin, and
/// the usual top-level directories.
fn busybox_tree(busybox: &Path, applets: &[String], rootfs: &Path) -> Result<(), RuntimeError> {
    let io = |what: &str, path: &Path, e: std::io::Error| host_error(what, path, e);
    for dir in ["bin", "etc", "usr", "usr/bin", "tmp", "work"] {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| io("create", &path, e))?;
    }
    let target = rootfs.join("bin/busybox");
    std::fs::copy(busybox, &target).map_err(|e| io("copy busybox to", &target, e))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &target, e))?;
    for applet in applets {
        let link = rootfs.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(|e| io("link", &link, e))?;
    }
    Ok(())
}

/// Makes /etc/passwd, group, hosts, hostname and resolv.conf regular files (a job's sandbox
/// covers them with its own; Debian's resolv.conf may be a symlink or absent).
///
/// The tree may have been written by a package manager's code: /etc must be a directory of
/// the tree, not a symlink out of it.
fn ensure_job_etc_files(rootfs: &Path) -> Result<(), RuntimeError> {
    let etc = rootfs.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(RuntimeError::Failed(
                "the runtime's /etc is not a directory (a symlink?)".into(),
            ));
        }
        Err(_) => std::fs::create_dir(&etc).map_err(|e| host_error("create", &etc, e))?,
    }
    for name in JOB_ETC_FILES {
        let path = etc.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => continue,
            Ok(meta) if meta.is_dir() => {
                return Err(RuntimeError::Failed(format!(
                    "/etc/{name} in the runtime is a directory"
                )));
            }
            Ok(_) => std::fs::remove_file(&path).map_err(|e| host_error("remove", &path, e))?,
            Err(_) => {}
        }
        let default = match *name {
            "passwd" => "root:x:0:0:root:/root:/bin/sh\n",
            "group" => "root:x:0:\n",
            _ => "",
        };
        std::fs::write(&path, default).map_err(|e| host_error("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| host_error("chmod", &path, e))?;
    }
    Ok(())
}

/// Leaves out documentation, caches, logs and the contents of the running system's
/// directories; removes device nodes, fifos and sockets; drops setuid and setgid bits;
/// makes everything root's; refuses a tree whose files add up to more than the filesystem
/// that holds it.
fn clean(rootfs: &Path) -> Result<(), RuntimeError> {
    for dir in LEFT_OUT.iter().chain(EMPTIED) {
        empty_dir(rootfs, dir)?;
    }
    ensure_job_etc_files(rootfs)?;
    let mut left = filesystem_size(rootfs)?;
    normalize(rootfs, rootfs, &mut left)
}

/// The size of the filesystem that holds `path`: what a tree's regular files may add up to.
/// Beyond it they can only be holes (sparse files, which a package's code makes of any size
/// in an instant with one `truncate`), and the manifest hashes every byte of a file, an
/// export sends every byte and an install writes every byte.
fn filesystem_size(path: &Path) -> Result<u64, RuntimeError> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|e| host_error("measure the filesystem of", path, e))?;
    Ok(stat.blocks().saturating_mul(stat.fragment_size()))
}

/// Removes everything inside `rootfs/relative` (not the directory itself); nothing when it
/// does not exist, or when it or a directory on the way is a symlink: a package manager's
/// code may have left `usr/share/doc -> /etc` in the tree, and nothing outside the tree
/// may ever be touched.
fn empty_dir(rootfs: &Path, relative: &str) -> Result<(), RuntimeError> {
    let mut dir = rootfs.to_path_buf();
    for part in relative.split('/') {
        dir.push(part);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
    }
    let dir = dir.as_path();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            crate::tree::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| host_error("remove", &path, e))?;
    }
    Ok(())
}

/// Walks the tree under `root` from `path`: removes what is not a directory, regular file
/// or symlink, drops setuid and setgid bits, and chowns everything to root. The regular
/// files' sizes are taken from `left`; a file that finds too little left fails the build.
fn normalize(root: &Path, path: &Path, left: &mut u64) -> Result<(), RuntimeError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| host_error("read", path, e))?;
    let kind = meta.file_type();
    if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
        return std::fs::remove_file(path).map_err(|e| host_error("remove", path, e));
    }
    if kind.is_file() {
        *left = left.checked_sub(meta.size()).ok_or_else(|| {
            RuntimeError::Failed(format!(
                "the runtime's files add up to more than the {}-byte filesystem that holds \
                 them, past it at /{} ({} bytes, {} allocated): sparse files, which a \
                 package's code can make of any size; a runtime's files must fit its export",
                filesystem_size(root).unwrap_or(0),
                path.strip_prefix(root).unwrap_or(path).display(),
                meta.size(),
                meta.blocks().saturating_mul(512)
            ))
        })?;
    }
    if meta.uid() != 0 || meta.gid() != 0 {
        std::os::unix::fs::lchown(path, Some(0), Some(0))
            .map_err(|e| host_error("chown", path, e))?;
    }
    if !kind.is_symlink() && meta.mode() & 0o6000 != 0 {
        let mode = meta.mode() & 0o1777;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| host_error("chmod", path, e))?;
    }
    if kind.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| host_error("read", path, e))? {
            let entry = entry.map_err(|e| host_error("read", path, e))?;
            normalize(root, &entry.path(), left)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_records_and_the_last_one_is_kept() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"Collecting num"), Vec::<String>::new());
        assert_eq!(
            s.push(b"py\nDownloading\r\n"),
            vec!["Collecting numpy", "Downloading"]
        );
        assert_eq!(s.push(b"done"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("done"));
    }

    #[test]
    fn a_tree_whose_sparse_files_outgrow_its_filesystem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        let sparse = std::fs::File::create(root.join("usr/lib/huge")).unwrap();
        sparse.set_len(filesystem_size(root).unwrap() + 1).unwrap();
        let err = clean(root).unwrap_err().to_string();
        assert!(err.contains("past it at /usr/lib/huge ("), "{err}");
        assert!(err.contains("sparse"), "{err}");
    }

    #[test]
    fn cleaning_drops_special_files_setuid_bits_docs_and_foreign_owners() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/share/doc/x")).unwrap();
        std::fs::write(root.join("usr/share/doc/x/README"), "docs").unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/su"), "binary").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/su"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::lchown(root.join("usr/bin/su"), Some(1234), Some(1234)).unwrap();
        nix::unistd::mkfifo(&root.join("usr/bin/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        clean(root).unwrap();
        assert!(root.join("usr/share/doc").is_dir());
        assert!(!root.join("usr/share/doc/x").exists());
        let su = std::fs::metadata(root.join("usr/bin/su")).unwrap();
        assert_eq!((su.mode() & 0o7777, su.uid(), su.gid()), (0o755, 0, 0));
        assert!(!root.join("usr/bin/fifo").exists());
        assert!(root.join("etc/resolv.conf").is_file());
        assert!(
            std::fs::read_to_string(root.join("etc/passwd"))
                .unwrap()
                .starts_with("root:")
        );
    }
}
