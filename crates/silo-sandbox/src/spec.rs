//! What the server asks the init process to run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The parameters of [`crate::protocol::METHOD_START`]: everything the init needs to set up
/// and start one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitSpec {
    /// The job's id, for the init's own messages (the hostname is [`Isolation::hostname`]).
    pub job_id: String,
    /// The program and its arguments; never empty.
    pub argv: Vec<String>,
    /// The command's whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory as the command sees it.
    pub cwd: PathBuf,
    /// Bytes of output kept in the log before the rest is dropped.
    pub log_cap_bytes: u64,
    /// The sandbox to build before the command starts; `None` runs the command in the
    /// init's own view of the system (namespaces only).
    pub isolation: Option<Isolation>,
}

/// The sandbox of one job: its root filesystem, identity and privileges.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Isolation {
    /// The hostname inside the job (its short id).
    pub hostname: String,
    /// An empty host directory, owned by the server, where the job's root is assembled.
    pub root_dir: PathBuf,
    /// The job's work directory on the host; it appears writable at `/work` unless the job
    /// has a [`Isolation::work_disk`].
    pub work_dir: PathBuf,
    /// Whether the job's `/work` is a filesystem of its own, which the server mounts (see
    /// [`crate::disk`]) and sends with the start (see [`crate::protocol::METHOD_START`]).
    #[serde(default)]
    pub work_disk: bool,
    /// What the job's root filesystem is made of.
    pub rootfs: Rootfs,
    /// The user the command runs as.
    pub uid: u32,
    /// The group the command runs as.
    pub gid: u32,
    /// The host uid (and gid) this job's identity maps to. When set, the command runs in a
    /// user namespace of its own in which [`Isolation::uid`] and [`Isolation::gid`] are
    /// the only ids, mapped to this host id: what is per user on the host (inotify
    /// instances, ptrace and /proc access, the process count) is then per job, and uid 0
    /// in the job is nobody on the host. `None` runs the command in the host's user
    /// namespace as `uid`.
    #[serde(default)]
    pub host_id: Option<u32>,
    /// The job's network.
    pub network: Network,
    /// Size of the job's `/tmp` tmpfs in bytes.
    pub tmp_size_bytes: u64,
    /// Files (inodes) the job's `/tmp` and `/dev/shm` may each hold.
    #[serde(default = "default_tmp_inodes")]
    pub tmp_inodes: u64,
    /// A host directory shown writable at `/shared` (a workflow's directory for passing
    /// files between its jobs); none when `None`.
    #[serde(default)]
    pub shared_dir: Option<PathBuf>,
}

/// The part of a sandbox that does not depend on the job: what an init can build while it
/// waits for one (see [`crate::protocol::METHOD_PREPARE`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxBase {
    /// See [`Isolation::root_dir`].
    pub root_dir: PathBuf,
    /// See [`Isolation::rootfs`].
    pub rootfs: Rootfs,
    /// See [`Isolation::network`].
    pub network: Network,
    /// See [`Isolation::tmp_size_bytes`].
    pub tmp_size_bytes: u64,
    /// See [`Isolation::tmp_inodes`].
    #[serde(default = "default_tmp_inodes")]
    pub tmp_inodes: u64,
    /// See [`Isolation::work_disk`]: the sandbox gets an empty `/work` to mount it on.
    #[serde(default)]
    pub work_disk: bool,
}

/// The PATH a job's command is looked up in when its environment has none, and the PATH
/// the server gives every job unless the job sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Inodes of a job's /tmp when the server does not say.
pub const DEFAULT_TMP_INODES: u64 = 65536;

fn default_tmp_inodes() -> u64 {
    DEFAULT_TMP_INODES
}

/// The parameters of [`crate::protocol::METHOD_PREPARE`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prepare {
    /// The sandbox to prepare.
    pub sandbox: SandboxBase,
    /// The cgroup v1 directories of the job this init will run. The init joins them now,
    /// writing its own thread to each `tasks` (on cgroup v2 the server cloned it straight
    /// into the job's cgroup), so the command starts inside them.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// The job this init will run, when the server knows it ahead (its id, user and host
    /// id are fixed when the init is made): the init then also builds the job's half of the
    /// sandbox, enters it, and forks the command's process, privileges dropped and system
    /// calls filtered, to wait for its command line. The start's isolation must be this one
    /// but for [`Isolation::shared_dir`], whose mount then arrives as a descriptor right
    /// after the start request (see [`crate::protocol::METHOD_START`]).
    #[serde(default)]
    pub job: Option<Isolation>,
}

impl Isolation {
    /// The job-independent part of this sandbox.
    pub fn base(&self) -> SandboxBase {
        SandboxBase {
            root_dir: self.root_dir.clone(),
            rootfs: self.rootfs.clone(),
            network: self.network,
            tmp_size_bytes: self.tmp_size_bytes,
            tmp_inodes: self.tmp_inodes,
            work_disk: self.work_disk,
        }
    }
}

/// The job's root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Rootfs {
    /// A read-only view of the host's system directories (/usr, /bin, /sbin, /lib*) and a
    /// minimal generated /etc.
    HostView,
    /// A runtime's own tree; nothing of the host. The job's passwd, group, hosts, hostname
    /// and resolv.conf are bound over the runtime's own files of those names in /etc.
    Runtime {
        /// The runtime's `rootfs/` directory on the host.
        path: PathBuf,
        /// Whether the job may write the tree (a runtime being built: its package managers
        /// install into it); an installed runtime is always read-only.
        #[serde(default)]
        writable: bool,
    },
}

/// The job's network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A private network namespace with only `lo`, up.
    None,
    /// The host's network (RunJob is for admins only, so only an admin can ask for it).
    Host,
}
