//! The installed runtimes: what is under `<state>/runtimes`, which jobs use what, and the
//! changes (install, replace, remove) that must not race a job's start.
//!
//! `<state>/runtimes/<name>/<version>/` is one installed version (a [`VersionDir`]);
//! `.staging/` holds builds and installs under way, `.objects/` every file once by
//! content, `.trash/` versions being removed. A version appears by one rename of a
//! complete staging directory, so a server killed at any point leaves either the whole
//! version or nothing of it: staging and trash are emptied at start, and objects no
//! version links any more are collected.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use semver::Version;
use silo_runtime::layout::VersionDir;
use silo_runtime::manifest::{Manifest, PublicKey, Signature, SigningKey};
use silo_runtime::spec::{RuntimeRef, RuntimeSpec};
use silo_runtime::store::ObjectStore;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::jobs::{JobManager, JobRoot};

/// Why a runtime operation failed; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request (a spec, an archive, a name) is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No installed runtime matches.
    #[error("runtime {wanted} is not installed; {}", installed_phrase(.installed))]
    NotFound {
        /// What was asked for.
        wanted: String,
        /// `name@version` of each installed runtime.
        installed: Vec<String>,
    },
    /// The version is installed already.
    #[error("runtime {0} is installed already; remove it first or build with --replace")]
    Exists(String),
    /// Jobs use the version.
    #[error("runtime {label} is used by {jobs} running job(s); stop them first")]
    InUse {
        /// `name@version`.
        label: String,
        /// How many.
        jobs: usize,
    },
    /// A build's step failed (a package that does not exist, a failing test).
    #[error("the build failed: {0}")]
    Failed(String),
    /// Something on the host failed.
    #[error("{0}")]
    Host(String),
}

fn installed_phrase(installed: &[String]) -> String {
    if installed.is_empty() {
        "no runtime is installed".to_owned()
    } else {
        format!("installed: {}", installed.join(", "))
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> tonic::Status {
        use tonic::Status;
        match &e {
            RuntimeError::Invalid(_) => Status::invalid_argument(e.to_string()),
            RuntimeError::NotFound { .. } => Status::not_found(e.to_string()),
            RuntimeError::Exists(_) => Status::already_exists(e.to_string()),
            RuntimeError::InUse { .. } => Status::failed_precondition(e.to_string()),
            RuntimeError::Failed(_) => Status::aborted(e.to_string()),
            RuntimeError::Host(_) => Status::internal(e.to_string()),
        }
    }
}

/// An I/O failure on `path`, as a host error.
pub(super) fn host_error(what: &str, path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Host(format!("cannot {what} {}: {e}", path.display()))
}

/// One installed runtime version.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The spec it was built from.
    pub spec: Arc<RuntimeSpec>,
    /// Its signed manifest.
    pub manifest: Arc<Manifest>,
    /// The manifest's signature.
    pub signature: Signature,
    /// Where it is.
    pub dir: PathBuf,
    /// When it was installed, in microseconds since the epoch.
    pub installed_at: i64,
}

impl Installed {
    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }

    /// Its layout on disk.
    pub fn version_dir(&self) -> VersionDir {
        VersionDir(self.dir.clone())
    }

    /// The root a job in it gets.
    pub fn job_root(&self) -> JobRoot {
        JobRoot {
            rootfs: self.version_dir().rootfs(),
            env: self.spec.env.clone(),
            writable: false,
            pooled: true,
        }
    }
}

/// Where the catalog keeps things.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// `<state>/runtimes`.
    pub dir: PathBuf,
    /// This server's signing key (created on first start).
    pub key_path: PathBuf,
    /// Keys of other builders whose runtimes this server installs.
    pub trusted: Vec<PublicKey>,
}

/// The installed runtimes. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    objects: ObjectStore,
    key: SigningKey,
    /// This server's key first, then the trusted ones.
    trusted: Vec<PublicKey>,
    index: Mutex<BTreeMap<String, BTreeMap<Version, Installed>>>,
    /// Held while files are interned into the object store or its unused objects are
    /// collected: a collection must not remove an object an intern is about to link.
    objects_busy: Mutex<()>,
    /// Held shared by a job's start from resolving its runtime until it is live, and
    /// exclusively by a change to the installed versions: a version is never removed
    /// between a job's choice of it and its mounts.
    changes: Arc<RwLock<()>>,
    jobs: JobManager,
    /// Bumped after every change to the object store's links (a commit's intern, a
    /// collection): a version's shared bytes computed before it are stale.
    links_changed: AtomicU64,
    /// Each version's shared bytes with the `links_changed` they were computed at.
    shared: Mutex<HashMap<String, (u64, u64)>>,
    /// Reads of whole trees a reader may ask for (shared bytes, package lists): one at a
    /// time, so that viewers calling ListRuntimes in a loop take one blocking thread, not
    /// the pool that jobs' preparations need.
    tree_reads: tokio::sync::Semaphore,
}

/// Trees read at once for readers ([`Inner::tree_reads`]).
const TREE_READS_AT_ONCE: usize = 1;

impl Catalog {
    /// Opens (creating) `<state>/runtimes`, with the signing key, removes what a stopped
    /// server left half done, and reads every installed version, checking its signature.
    /// A version whose files cannot be read or whose signature does not verify is logged
    /// and left out.
    pub async fn open(
        settings: CatalogSettings,
        jobs: JobManager,
    ) -> Result<Catalog, RuntimeError> {
        tokio::task::spawn_blocking(move || Catalog::open_blocking(settings, jobs))
            .await
            .map_err(|e| RuntimeError::Host(format!("cannot open the runtimes: {e}")))?
    }

    fn open_blocking(settings: CatalogSettings, jobs: JobManager) -> Result<Catalog, RuntimeError> {
        let dir = settings.dir;
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::restrict_to_root(&dir))
            .map_err(|e| host_error("create", &dir, e))?;
        for scratch in [STAGING, TRASH] {
            let path = dir.join(scratch);
            match crate::tree::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(host_error("empty", &path, e)),
            }
            std::fs::create_dir(&path).map_err(|e| host_error("create", &path, e))?;
        }
        let objects =
            ObjectStore::open(&dir.join(OBJECTS)).map_err(|e| RuntimeError::Host(e.to_string()))?;
        let key = SigningKey::load_or_create(&settings.key_path)
            .map_err(|e| RuntimeError::Host(e.to_string()))?;
        let mut trusted = vec![key.public_key()];
        trusted.extend(settings.trusted);
        let mut index: BTreeMap<String, BTreeMap<Version, Installed>> = BTreeMap::new();
        for installed in read_installed(&dir, &trusted) {
            index
                .entry(installed.manifest.name.clone())
                .or_default()
                .insert(installed.manifest.version.clone(), installed);
        }
        match objects.collect_garbage() {
            Ok(0) => {}
            Ok(freed) => tracing::info!("freed {freed} bytes of runtime files no runtime uses"),
            Err(e) => tracing::warn!("cannot collect unused runtime files: {e}"),
        }
        Ok(Catalog {
            inner: Arc::new(Inner {
                dir,
                objects,
                key,
                trusted,
                index: Mutex::new(index),
                objects_busy: Mutex::default(),
                changes: Arc::default(),
                jobs,
                links_changed: AtomicU64::new(0),
                shared: Mutex::default(),
                tree_reads: tokio::sync::Semaphore::new(TREE_READS_AT_ONCE),
            }),
        })
    }

    /// This server's public key (for `--trust-runtime-key` on other servers).
    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public_key()
    }

    /// Signs a manifest as this server.
    pub fn sign(&self, manifest: &Manifest) -> Signature {
        self.inner.key.sign(manifest)
    }

    /// The keys whose signatures this server accepts (its own first).
    pub fn trusted(&self) -> &[PublicKey] {
        &self.inner.trusted
    }

    /// The object store.
    pub fn objects(&self) -> &ObjectStore {
        &self.inner.objects
    }

    /// The job manager, for builds' steps and tests.
    pub fn jobs(&self) -> &JobManager {
        &self.inner.jobs
    }

    /// A new empty staging directory for a build or an install.
    pub fn new_staging(&self) -> Result<PathBuf, RuntimeError> {
        let path = self
            .inner
            .dir
            .join(STAGING)
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&path).map_err(|e| host_error("create", &path, e))?;
        Ok(path)
    }

    /// Every installed version, by name, newest version first.
    pub fn list(&self) -> Vec<Installed> {
        let index = self
            .inner
            .index
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default();
        index
            .into_values()
            .flat_map(|versions| versions.into_values().rev())
            .collect()
    }

    /// The installed version `reference` names (`NAME` for the highest, `NAME@VERSION`).
    pub fn get(&self, reference: &str) -> Result<Installed, RuntimeError> {
        let wanted: RuntimeRef = reference
            .parse()
            .map_err(|e| RuntimeError::Invalid(format!("runtime {reference:?}: {e}")))?;
        let index = self
            .inner
            .index
            .lock()
            .map_err(|_| RuntimeError::Host("the runtime index is poisoned".into()))?;
        let found = index
            .get(&wanted.name)
            .and_then(|versions| match &wanted.version {
                Some(v) => versions.get(v),
                None => versions.values().next_back(),
            });
        found.cloned().ok_or_else(|| RuntimeError::NotFound {
            wanted: wanted.to_string(),
            installed: index
                .values()
                .flat_map(|v| v.values().map(Installed::label))
                .collect(),
        })
    }

    /// Picks the version `reference` names for a job, and holds it installed until the
    /// returned guard is dropped (once the job is live, so it counts as a user).
    pub async fn resolve(
        &self,
        reference: &str,
    ) -> Result<(Installed, OwnedRwLockReadGuard<()>), RuntimeError> {
        let guard = self.inner.changes.clone().read_owned().await;
        Ok((self.get(reference)?, guard))
    }

    /// Live jobs in the version `label`.
    pub fn users(&self, label: &str) -> usize {
        self.inner.jobs.live_in_runtime(label)
    }

    /// Makes the complete version in `staging` installed: interns its files into the object
    /// store, then (under the exclusive lock) renames it into place. With `replace`, an
    /// installed version of the same name is moved out first, unless jobs use it.
    pub async fn commit(&self, staging: PathBuf, replace: bool) -> Result<Installed, RuntimeError> {
        let catalog = self.clone();
        let trusted = self.inner.trusted.clone();
        let staged_dir = staging.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let version = VersionDir(staged_dir);
            let (spec, manifest, signature) = version
                .read(&trusted)
                .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            let _busy = catalog.inner.objects_busy.lock();
            let interned = catalog.inner.objects.intern(&version.rootfs(), &manifest);
            catalog.inner.links_changed.fetch_add(1, Ordering::SeqCst);
            interned.map_err(|e| RuntimeError::Host(e.to_string()))?;
            Ok::<_, RuntimeError>((spec, manifest, signature))
        })
        .await
        .map_err(|e| RuntimeError::Host(e.to_string()))??;
        let (spec, manifest, signature) = staged;
        let label = format!("{}@{}", manifest.name, manifest.version);
        let _exclusive = self.inner.changes.clone().write_owned().await;
        let name_dir = self.inner.dir.join(&manifest.name);
        let target = name_dir.join(manifest.version.to_string());
        let old = self.get(&label).ok();
        if let Some(old) = &old {
            if !replace {
                return Err(RuntimeError::Exists(label));
            }
            self.move_out(old).await?;
        }
        let installed = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&name_dir).map_err(|e| host_error("create", &name_dir, e))?;
            std::fs::rename(&staging, &target).map_err(|e| host_error("install", &target, e))?;
            sync_dir(&name_dir);
            Ok::<_, RuntimeError>(Installed {
                spec: Arc::new(spec),
                manifest: Arc::new(manifest),
                signature,
                installed_at: crate::jobs::now_micros(),
                dir: target,
            })
        })
        .await
        .map_err(|e| RuntimeError::Host(e.to_string()))??;
        if let Ok(mut index) = self.inner.index.lock() {
            index
                .entry(installed.manifest.name.clone())
                .or_default()
                .insert(installed.manifest.version.clone(), installed.clone());
        }
        if old.is_some() {
            self.empty_trash().await;
        }
        Ok(installed)
    }

    /// The bytes of `installed`'s files that another version also uses (what removing it
    /// would not free): computed once after each change to the object store, one tree at
    /// a time, and 0 when its files cannot be read.
    pub async fn shared_bytes(&self, installed: &Installed) -> u64 {
        let label = installed.label();
        let cached = |inner: &Inner| {
            let current = inner.links_changed.load(Ordering::SeqCst);
            let shared = inner.shared.lock().ok()?;
            shared
                .get(&label)
                .and_then(|&(at, bytes)| (at == current).then_some(bytes))
        };
        if let Some(bytes) = cached(&self.inner) {
            return bytes;
        }
        let Ok(_permit) = self.inner.tree_reads.acquire().await else {
            return 0;
        };
        // Another call may have computed it while this one waited.
        if let Some(bytes) = cached(&self.inner) {
            return bytes;
        }
        let (catalog, installed) = (self.clone(), installed.clone());
        tokio::task::spawn_blocking(move || {
            // Read before the tree: a change that lands during the walk bumps it after,
            // so what this walk stores is then already stale.
            let at = catalog.inner.links_changed.load(Ordering::SeqCst);
            let bytes = catalog
                .inner
                .objects
                .shared_bytes(&installed.version_dir().rootfs(), &installed.manifest)
                .unwrap_or(0);
            if let Ok(mut shared) = catalog.inner.shared.lock() {
                shared.retain(|_, (then, _)| *then == at);
                shared.insert(installed.label(), (at, bytes));
            }
            bytes
        })
        .await
        .unwrap_or(0)
    }

    /// Runs `read` (a walk of a runtime's tree for a reader) on a blocking thread, one such
    /// read at a time.
    pub async fn read_tree<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.inner.tree_reads.acquire().await.ok()?;
        tokio::task::spawn_blocking(read).await.ok()
    }

    /// Removes the installed version `reference` (`NAME@VERSION`), unless a job uses it;
    /// answers with it and the bytes freed in the object store.
    pub async fn remove(&self, reference: &str) -> Result<(Installed, u64), RuntimeError> {
        let wanted: RuntimeRef = reference
            .parse()
            .map_err(|e| RuntimeError::Invalid(format!("runtime {reference:?}: {e}")))?;
        if wanted.version.is_none() {
            return Err(RuntimeError::Invalid(format!(
                "name the version to remove: {}@VERSION",
                wanted.name
            )));
        }
        let _exclusive = self.inner.changes.clone().write_owned().await;
        let installed = self.get(reference)?;
        self.move_out(&installed).await?;
        let freed = self.empty_trash().await;
        Ok((installed, freed))
    }

    /// Takes `installed` out of the index and moves its directory to the trash, unless a job
    /// uses it. Called with the exclusive lock held.
    async fn move_out(&self, installed: &Installed) -> Result<(), RuntimeError> {
        let label = installed.label();
        let jobs = self.users(&label);
        if jobs > 0 {
            return Err(RuntimeError::InUse { label, jobs });
        }
        self.inner
            .jobs
            .discard_ready_in(&installed.version_dir().rootfs())
            .await;
        let trash = self
            .inner
            .dir
            .join(TRASH)
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::rename(&installed.dir, &trash)
            .map_err(|e| host_error("remove", &installed.dir, e))?;
        if let Some(parent) = installed.dir.parent() {
            // The name's directory goes with its last version.
            let _ = std::fs::remove_dir(parent);
        }
        if let Ok(mut index) = self.inner.index.lock()
            && let Some(versions) = index.get_mut(&installed.manifest.name)
        {
            versions.remove(&installed.manifest.version);
            if versions.is_empty() {
                index.remove(&installed.manifest.name);
            }
        }
        Ok(())
    }

    /// Deletes what is in the trash and the objects no version links any more; answers
    /// with the bytes freed in the object store.
    async fn empty_trash(&self) -> u64 {
        let catalog = self.clone();
        tokio::task::spawn_blocking(move || {
            let trash = catalog.inner.dir.join(TRASH);
            if let Ok(entries) = std::fs::read_dir(&trash) {
                for entry in entries.flatten() {
                    if let Err(e) = crate::tree::remove_dir_all(entry.path()) {
                        tracing::warn!("cannot remove {}: {e}", entry.path().display());
                    }
                }
            }
            let _busy = catalog.inner.objects_busy.lock();
            let freed = catalog.inner.objects.collect_garbage().unwrap_or_else(|e| {
                tracing::warn!("cannot collect unused runtime files: {e}");
                0
            });
            catalog.inner.links_changed.fetch_add(1, Ordering::SeqCst);
            freed
        })
        .await
        .unwrap_or(0)
    }
}

/// The scratch directories under `<state>/runtimes`; runtime names cannot start with a dot.
const STAGING: &str = ".staging";
const TRASH: &str = ".trash";
const OBJECTS: &str = ".objects";

/// Every installed version under `dir` whose signature one of `trusted` made.
fn read_installed(dir: &Path, trusted: &[PublicKey]) -> Vec<Installed> {
    let mut found = Vec::new();
    let Ok(names) = std::fs::read_dir(dir) else {
        return found;
    };
    for name in names.flatten() {
        if name.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(versions) = std::fs::read_dir(name.path()) else {
            continue;
        };
        for version in versions.flatten() {
            let path = version.path();
            match VersionDir(path.clone()).read(trusted) {
                Ok((spec, manifest, signature)) => {
                    let installed_at = std::fs::metadata(VersionDir(path.clone()).manifest())
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_micros() as i64)
                        .unwrap_or(0);
                    found.push(Installed {
                        spec: Arc::new(spec),
                        manifest: Arc::new(manifest),
                        signature,
                        dir: path,
                        installed_at,
                    });
                }
                Err(e) => tracing::warn!("leaving out the runtime in {}: {e}", path.display()),
            }
        }
    }
    found
}

/// Makes a rename in `dir` durable; a failure only costs durability, so it is logged.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!("cannot sync {}: {e}", dir.display());
    }
}
