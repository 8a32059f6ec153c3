//! silo's server: the gRPC API over mutual TLS, the job manager, log streaming and the
//! embedded store. [`run`] is `silo server`.

mod auth;
mod calls;
mod certs;
mod client_config;
pub mod jobs;
mod listener;
mod log_codec;
mod logs;
pub mod metrics;
pub mod node;
mod retention;
pub mod runtimes;
pub mod schedules;
pub mod secrets;
mod service;
pub mod store;
mod tree;
pub mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use silo_proto::v1::job_service_server::JobServiceServer;
use silo_proto::values::parse_size;
use silo_tls::CertPaths;
use tokio::net::TcpListener;

use jobs::validate::Bounds;
use jobs::{JobManager, JobSettings};

/// `silo server` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (off unless given;
    /// bind it to a trusted interface: the endpoint has no authentication).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where the server keeps its database, job files and certificates.
    #[arg(long, default_value = "/var/lib/silo")]
    pub state_dir: PathBuf,
    /// Extra names or addresses for the server certificate (repeatable); a certificate
    /// that lacks one is issued anew at start (same CA)
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Jobs that may run at once; RunJob answers ResourceExhausted past it.
    #[arg(long, default_value_t = 512)]
    pub max_jobs: usize,
    /// Output bytes kept per job; the log ends with a truncation notice past it.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub log_cap: u64,
    /// How long ended jobs and workflows are kept: past it they are deleted with their
    /// logs and files, as `job delete` and `workflow delete` would (a workflow's jobs go
    /// with their workflow). 0 keeps them until deleted
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_keep)]
    pub keep_ended: Duration,
    /// Grace period between SIGTERM and SIGKILL when a job does not set one.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// silo's cgroup subtree under each cgroup hierarchy (jobs live in `<name>/jobs/<id>`,
    /// the server in `<name>/server`). Default: `silo`, or, when systemd started the
    /// server on cgroup v2 (with Delegate=yes), the service's own cgroup.
    #[arg(long)]
    pub cgroup_name: Option<String>,
    /// The user jobs run as unless they ask for another (`--user`), inside the job's user
    /// namespace (outside it, every job is its own host id: see --host-ids). Not 65534: a
    /// host file of an id the job does not map (root's /usr) shows as owned by 65534.
    #[arg(long, default_value_t = 1000)]
    pub job_uid: u32,
    /// The group jobs run as unless they ask for another.
    #[arg(long, default_value_t = 1000)]
    pub job_gid: u32,
    /// Size of each job's /tmp (and /dev/shm) tmpfs.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub tmp_size: u64,
    /// Files (inodes) each job's /tmp and /dev/shm may hold.
    #[arg(long, default_value_t = silo_sandbox::DEFAULT_TMP_INODES)]
    pub tmp_inodes: u64,
    /// Memory limit for jobs that set none.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub default_memory: Option<u64>,
    /// CPU limit (percent of one core) for jobs that set none.
    #[arg(long, value_name = "PERCENT")]
    pub default_cpu: Option<u32>,
    /// Process (and thread) limit for jobs that set none: a fork bomb stops there.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub default_pids: u32,
    /// Processes (and threads) of all jobs together: the parent of every job's cgroup gets
    /// this `pids.max`, so that jobs never take the host's last process ids (each job's
    /// own limit is --default-pids or its --pids). Default: three quarters of the host's
    /// limit, the smaller of kernel.pid_max and kernel.threads-max.
    #[arg(long, value_name = "N")]
    pub total_pids: Option<u32>,
    /// Size of /work for jobs that set none (`--disk`): each job's work directory is an ext4
    /// filesystem of its own of this size (a sparse image, allocated as the job writes;
    /// needs mkfs.ext4 and loop devices). 0 keeps work directories as plain directories on
    /// the state directory's filesystem, bounded by nothing.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
    pub default_disk: u64,
    /// Calls the server serves at once, streams included (a WatchJob or StreamLogs holds
    /// its place until it ends): past it a call is answered ResourceExhausted at once.
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_calls: usize,
    /// Of those, the calls one client certificate may hold at once: past it that client's
    /// next call is answered ResourceExhausted, and the others' calls go on. Default:
    /// 2048, or --max-calls when that is less
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_calls_per_client: Option<usize>,
    /// Free space the state directory's filesystem keeps: when less is left, the job whose
    /// /work disk or log grew most in the last 200 ms is stopped (FAILED, end cause
    /// DISK_FULL), one at a time; with nothing growing and the space still falling, the
    /// jobs that write to it directly (runtime builds' steps, jobs without a disk, a
    /// workflow's jobs through /shared) are, and so are they when its free inodes fall
    /// under 5% (at most a million).
    /// Jobs' disks are sparse images, which together may promise more than is free, and a
    /// full filesystem holds every job's output back. A runtime install that would take the
    /// space under it is refused. Default: 5% of the filesystem, at most 1 GiB; 0 turns the
    /// watch off.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub state_reserve: Option<u64>,
    /// The largest /work a job may ask for (default: the free space of the state
    /// directory's filesystem at start, or --default-disk if that is more).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_disk: Option<u64>,
    /// The largest memory limit a job may ask for (default: the host's memory).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// The largest CPU limit a job may ask for, percent of one core (default: all cores).
    #[arg(long, value_name = "PERCENT")]
    pub max_cpu: Option<u32>,
    /// The largest process limit a job may ask for.
    #[arg(long, value_name = "N")]
    pub max_pids: Option<u32>,
    /// The largest io bandwidth a job may ask for, bytes per second.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_io_bps: Option<u64>,
    /// Inits kept ready, their sandbox prepared, so that a job starts without waiting for
    /// one; 0 starts every job from scratch.
    #[arg(long, default_value_t = 2)]
    pub ready_inits: usize,
    /// Start every init by re-executing the binary, instead of cloning it from the
    /// server's init zygote (a fork-server started once, `silo-zygote` in `ps`).
    #[arg(long)]
    pub no_init_zygote: bool,
    /// The host uids (and gids) jobs run as, `FIRST:COUNT`: each job's user, root
    /// included, is one host id of this range, held by no other live job. Keep the range
    /// free of real users, and give each server on a host its own.
    #[arg(long, default_value = "2000000000:65536", value_parser = jobs::parse_host_ids)]
    pub host_ids: (u32, u32),
    /// Largest total size of one job's uploads.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub upload_limit: u64,
    /// The public key of another server whose runtimes this one installs (its
    /// `certs/runtime-signing.pub`); repeat for several. This server's own key is always
    /// trusted.
    #[arg(long = "trust-runtime-key", value_name = "FILE")]
    pub trust_runtime_keys: Vec<std::path::PathBuf>,
}

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificates could not be created or loaded.
    #[error(transparent)]
    Tls(#[from] silo_tls::TlsError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The job manager could not start.
    #[error(transparent)]
    Jobs(#[from] jobs::JobError),
    /// A host operation failed.
    #[error("{0}")]
    Host(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The runtimes could not be opened.
    #[error(transparent)]
    Runtimes(#[from] runtimes::RuntimeError),
    /// The workflow engine could not start.
    #[error(transparent)]
    Workflows(#[from] workflows::WorkflowError),
    /// The scheduler could not start.
    #[error(transparent)]
    Schedules(#[from] schedules::ScheduleError),
    /// silo's cgroup subtree is another server's ([`silo_cgroup::CgroupError::InUse`]).
    #[error(transparent)]
    Cgroups(silo_cgroup::CgroupError),
    /// The secrets key is unusable, or a key rotation holds the state directory.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
}

fn host(what: &str, path: &std::path::Path, e: std::io::Error) -> ServerError {
    ServerError::Host(format!("cannot {what} {}: {e}", path.display()))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<(), ServerError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ServerError::Host(
            "silo server must run as root: it creates namespaces, mounts and cgroups for its jobs"
                .into(),
        ));
    }
    // Several descriptors per live job; the jobs get the limit back (see the function).
    match silo_sandbox::spawn::raise_open_files_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!("open files limit raised from {before} to {after}");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let state = &args.state_dir;
    std::fs::create_dir_all(state).map_err(|e| host("create state directory", state, e))?;
    // Root only: below it are the jobs' files, and what a job wrote (a setuid program, its
    // environment in a file) must be out of every host user's reach.
    restrict_to_root(state).map_err(|e| host("restrict to root", state, e))?;
    // Held while the server runs: keeps a secrets key rotation away.
    let _state_claim = secrets::StateClaim::server(state)?;
    // The binary jobs run: opened once, so replacing the file later changes no job.
    let exe = std::fs::File::open("/proc/self/exe")
        .map_err(|e| host("open", std::path::Path::new("/proc/self/exe"), e))?;

    let certs = CertPaths::new(state.join("certs"));
    let report = silo_tls::ensure_server_pki(&certs.dir, &args.sans)?;
    for path in &report.created {
        tracing::info!("created {}", path.display());
    }
    // Certificates near their end are issued anew now, and later by the watch below; so is
    // a server certificate that lacks a name the server should answer to (a new --san).
    // A renewal that fails (a full disk, say) leaves the certificates in use, which stay
    // valid for up to 30 more days; the watch tries again.
    if let Err(e) = certs::renew(&certs.dir, &args.sans) {
        tracing::error!("cannot renew the server's certificates: {e}; the ones in use stay");
    }
    let tls = std::sync::Arc::new(silo_tls::ServerTls::load(certs.clone())?);
    certs::watch(tls.clone(), certs.dir.clone(), args.sans.clone());

    let cgroups = open_cgroups(args.cgroup_name.as_deref())?;
    if let Some(root) = &cgroups {
        limit_all_jobs_pids(root, args.total_pids);
    }
    log_landlock_scopes();
    protect_from_oom_killer();
    let store = store::Store::open(&state.join("silo.db")).await?;
    let workflow_store = store.clone();
    let secret_key = std::sync::Arc::new(secrets::load_key(state, &store.pool()).await?);
    let schedule_pool = store.pool();
    let settings = JobSettings {
        jobs_dir: state.join("jobs"),
        log_cap_bytes: args.log_cap,
        max_jobs: args.max_jobs,
        default_grace: args.stop_grace,
        bounds: Bounds {
            cpus: online_cpus(),
            memory_bytes: physical_memory(),
            upload_bytes: args.upload_limit,
            max: silo_proto::v1::Limits {
                cpu_percent: args.max_cpu,
                cpus: None,
                memory_bytes: args.max_memory,
                io_bps: args.max_io_bps,
                pids: args.max_pids,
                // Images are sparse: a default above the free space is the operator's call.
                disk_bytes: Some(
                    args.max_disk
                        .unwrap_or_else(|| free_space(state).max(args.default_disk)),
                ),
            },
            defaults: silo_proto::v1::Limits {
                cpu_percent: args.default_cpu,
                cpus: None,
                memory_bytes: args.default_memory,
                io_bps: None,
                pids: Some(args.default_pids),
                disk_bytes: (args.default_disk > 0).then_some(args.default_disk),
            },
        },
        cgroups,
        job_user: (args.job_uid, args.job_gid),
        tmp_size_bytes: args.tmp_size,
        tmp_inodes: args.tmp_inodes,
        ready_inits: args.ready_inits,
        init_zygote: !args.no_init_zygote,
        host_ids: args.host_ids,
        secret_key,
    };
    let disk_support = check_disk_support();
    if args.default_disk > 0 {
        disk_support
            .as_ref()
            .map_err(|e| ServerError::Host(e.to_string()))?;
    }
    if (args.host_ids.1 as usize) < args.max_jobs {
        return Err(ServerError::Host(format!(
            "--host-ids has {} ids but --max-jobs is {}: every live job needs an id of its own",
            args.host_ids.1, args.max_jobs
        )));
    }
    jobs::validate::check_limits(&settings.bounds.defaults, &settings.bounds)
        .map_err(|e| ServerError::Host(format!("the server's default limits are invalid: {e}")))?;
    let info = server_info(&args, &settings, disk_support.is_ok());
    let trusted = read_trusted_keys(&args.trust_runtime_keys)?;
    let jobs = JobManager::start(store, settings, exe.into()).await?;
    let reserve = args
        .state_reserve
        .unwrap_or_else(|| jobs::space_reserve_default(state));
    jobs.watch_state_space(reserve);
    if reserve > 0 {
        tracing::info!(
            "the job whose /work or log grows most is stopped when the state filesystem has less \
             than {} free (--state-reserve)",
            silo_proto::values::size_phrase(reserve)
        );
    }
    let catalog = runtimes::Catalog::open(
        runtimes::CatalogSettings {
            dir: state.join("runtimes"),
            key_path: certs.dir.join("runtime-signing.key"),
            trusted,
        },
        jobs.clone(),
    )
    .await?;
    let engine = workflows::Engine::start(
        &workflow_store,
        jobs.clone(),
        catalog.clone(),
        state.join("workflows"),
    )
    .await?;
    retention::sweep(jobs.clone(), engine.clone(), args.keep_ended);
    let scheduler =
        schedules::Scheduler::start(schedule_pool, jobs.clone(), catalog.clone()).await?;
    if let Some(addr) = args.metrics_listen {
        metrics::serve(addr, jobs.clone()).await?;
    }
    let public_key = certs.dir.join("runtime-signing.pub");
    std::fs::write(&public_key, catalog.public_key().to_text() + "\n")
        .map_err(|e| host("write", &public_key, e))?;

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| ServerError::Host(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Host(format!("cannot read the listening address: {e}")))?;
    tracing::info!(
        state_dir = %state.display(),
        "silo server listening on {addr} (mutual TLS 1.3; CA {})",
        certs.ca().display()
    );
    // Last: a client configuration naming the address is what tools (and the tests) wait
    // for, so everything the server says about its start is in its log by then.
    for written in client_config::write_client_configs(state, &certs, addr)? {
        tracing::info!("client configuration: {}", written.display());
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<JobServiceServer<service::JobApi>>()
        .await;
    // Both reflection protocols: grpcurl and most tools speak v1, older grpcurl and
    // Python's grpcio-reflection only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(silo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| {
        ServerError::Host(format!("cannot build reflection: {e}"))
    };
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    let max_message = usize::try_from(args.upload_limit)
        .unwrap_or(usize::MAX)
        .saturating_add(16 << 20);
    let runtime_api = silo_proto::v1::runtime_service_server::RuntimeServiceServer::new(
        runtimes::service::RuntimeApi::new(catalog.clone()),
    )
    .max_decoding_message_size(2 << 20)
    .max_encoding_message_size(2 << 20);
    let workflow_api = silo_proto::v1::workflow_service_server::WorkflowServiceServer::new(
        workflows::service::WorkflowApi::new(engine),
    )
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(64 << 20);
    // Turns true when the server begins to shut down, ending the node API's endless streams.
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let node_api =
        silo_proto::v1::node_service_server::NodeServiceServer::new(node::service::NodeApi::new(
            jobs.clone(),
            catalog.clone(),
            state.clone(),
            &info,
            stopping_rx,
        ));
    let schedule_api = silo_proto::v1::schedule_service_server::ScheduleServiceServer::new(
        schedules::service::ScheduleApi::new(scheduler.clone()),
    );
    let max_job_answer = 64 << 20;
    let api = JobServiceServer::new(
        service::JobApi::new(jobs.clone(), catalog, info).with_scheduler(scheduler),
    )
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_job_answer);
    // StreamLogs copies large records from the log file into its messages (log_codec).
    let api = log_codec::JobRoutes::new(api, jobs.clone(), max_message, max_job_answer);

    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // tonic leaves HTTP/2 streams per connection unbounded (hyper's own default is
        // 200): each is a task and buffers, and a viewer may open as many WatchJob or
        // StreamLogs as it likes. Past the bound a client's new calls wait for a stream.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // The last layer is the innermost: the call limit's refusals are counted too.
        .layer(metrics::GrpcMetricsLayer)
        .layer(calls::CallLimitLayer::new(
            args.max_calls,
            args.max_calls_per_client
                .unwrap_or(DEFAULT_CALLS_PER_CLIENT)
                .min(args.max_calls),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .add_service(runtime_api)
        .add_service(workflow_api)
        .add_service(schedule_api)
        .add_service(node_api)
        .serve_with_incoming_shutdown(listener::incoming(listener, tls.clone()), async move {
            shutdown().await;
            let _ = stopping.send(true);
        })
        .await?;
    jobs.drain_pool().await;
    tracing::info!(
        "silo server stopped; running jobs keep running and are adopted on the next start"
    );
    Ok(())
}

/// `--keep-ended`: a duration (`7d`, `12h`), or 0 for "until deleted".
fn parse_keep(value: &str) -> Result<Duration, String> {
    match value.trim() {
        "0" => Ok(Duration::ZERO),
        text => humantime::parse_duration(text)
            .map_err(|e| format!("{e} (expected e.g. 7d, 12h, or 0 to keep them until deleted)")),
    }
}

/// `--max-calls-per-client` unless given: an eighth of the default `--max-calls`.
const DEFAULT_CALLS_PER_CLIENT: usize = 2048;

/// Concurrent calls (HTTP/2 streams) on one client connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// The runtime keys named by `--trust-runtime-key`.
fn read_trusted_keys(
    files: &[std::path::PathBuf],
) -> Result<Vec<silo_runtime::manifest::PublicKey>, ServerError> {
    files
        .iter()
        .map(|file| {
            let text =
                std::fs::read_to_string(file).map_err(|e| host("read the runtime key", file, e))?;
            silo_runtime::manifest::PublicKey::from_text(text.trim()).map_err(|e| {
                ServerError::Host(format!("--trust-runtime-key {}: {e}", file.display()))
            })
        })
        .collect()
}

/// Makes `dir` reachable by root only (mode 0700), as every directory silo keeps jobs'
/// files in must be.
pub fn restrict_to_root(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Detects the cgroup layout, logs it, and opens silo's subtree with the server in its own
/// leaf. Without usable cgroups the server still runs jobs, but refuses limits. When the
/// subtree is another server's, this server must not start at all: even without cgroups it
/// would run jobs next to that server's under the same name.
fn open_cgroups(
    name: Option<&str>,
) -> Result<Option<std::sync::Arc<silo_cgroup::CgroupRoot>>, ServerError> {
    let layout = match silo_cgroup::detect() {
        Ok(layout) => layout,
        Err(e) => {
            tracing::warn!("no cgroups: resource limits are refused ({e})");
            return Ok(None);
        }
    };
    tracing::info!("cgroup layout: {layout}");
    let name = match name {
        Some(name) => name.to_owned(),
        None => delegated_cgroup(&layout).unwrap_or_else(|| "silo".to_owned()),
    };
    tracing::info!("silo's cgroups: {name}/server and {name}/jobs/<id>");
    let root = match silo_cgroup::CgroupRoot::open(layout, &name) {
        Ok(root) => root,
        Err(e @ silo_cgroup::CgroupError::InUse { .. }) => return Err(ServerError::Cgroups(e)),
        Err(e) => {
            tracing::warn!("cannot set up silo's cgroups, resource limits are refused: {e}");
            return Ok(None);
        }
    };
    if let Err(e) = root.enter_server_leaf() {
        tracing::warn!("cannot move the server into its own cgroup: {e}");
    }
    tracing::info!("job limits available here: {}", root.available());
    Ok(Some(std::sync::Arc::new(root)))
}

/// Writes `--total-pids` (or three quarters of the host's process limit) as the limit of
/// all jobs' processes together. Without it 8 jobs at the default 4096 took every process
/// id of a host whose kernel.pid_max is 32768 (the kernel's default on small machines):
/// nothing else on the host, the server included, could fork.
fn limit_all_jobs_pids(root: &silo_cgroup::CgroupRoot, configured: Option<u32>) {
    let host_limit = || {
        ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
            .min()
    };
    let Some(max) = configured
        .or_else(|| host_limit().map(|limit| u32::try_from(limit / 4 * 3).unwrap_or(u32::MAX)))
    else {
        tracing::warn!("cannot read kernel.pid_max: jobs together have no process limit");
        return;
    };
    match root.limit_all_jobs_pids(max) {
        Ok(true) => tracing::info!("jobs together: at most {max} processes and threads"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot limit all jobs' processes together: {e}"),
    }
}

/// The server's `oom_score_adj` (dockerd's default for itself): the OOM killer takes jobs'
/// processes (`silo_sandbox::isolation::oom`) and host processes before the server, its
/// zygote and its inits, which inherit it.
const SERVER_OOM_SCORE_ADJ: i32 = -500;

/// Lowers the server's `oom_score_adj` to [`SERVER_OOM_SCORE_ADJ`], unless whoever started
/// it set it lower already (a systemd unit's `OOMScoreAdjust=`).
fn protect_from_oom_killer() {
    let path = "/proc/self/oom_score_adj";
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    if current.is_some_and(|v| v <= SERVER_OOM_SCORE_ADJ) {
        return;
    }
    match std::fs::write(path, SERVER_OOM_SCORE_ADJ.to_string()) {
        Ok(()) => tracing::info!(
            "oom_score_adj {SERVER_OOM_SCORE_ADJ} for the server and its inits, {} for jobs",
            silo_sandbox::isolation::oom::JOB_OOM_SCORE_ADJ
        ),
        Err(e) => tracing::warn!(
            "cannot lower the server's oom_score_adj to {SERVER_OOM_SCORE_ADJ} ({e}; it needs \
             CAP_SYS_RESOURCE): jobs start at {} but may lower theirs to 0, the server's",
            silo_sandbox::isolation::oom::JOB_OOM_SCORE_ADJ
        ),
    }
}

/// Says whether jobs' commands are scoped to their own abstract unix sockets and signals
/// (`silo_sandbox::isolation::landlock`); without the scopes a job with the host's network
/// can connect to any abstract socket on the host.
fn log_landlock_scopes() {
    use silo_sandbox::isolation::landlock;
    match landlock::abi_version() {
        Some(v) if v >= landlock::SCOPES_ABI => tracing::info!(
            "landlock ABI {v}: jobs reach only their own abstract unix sockets and processes"
        ),
        found => tracing::warn!(
            "{}: jobs with the host's network (and runtime builds' install steps) can \
             connect to any abstract unix socket on the host; Linux 6.12 or later with \
             landlock in lsm= scopes them",
            match found {
                Some(v) => format!("landlock ABI {v} has no scopes"),
                None => "landlock is not enabled in this kernel".to_owned(),
            }
        ),
    }
}

/// The cgroup systemd gave this service, when systemd started it on cgroup v2: with
/// `Delegate=yes` the subtree is the server's to manage, and anything outside it is not.
fn delegated_cgroup(layout: &silo_cgroup::CgroupLayout) -> Option<String> {
    if !matches!(layout, silo_cgroup::CgroupLayout::Unified { .. }) {
        return None;
    }
    std::env::var_os("INVOCATION_ID")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let path = path.trim_start_matches('/');
    (!path.is_empty()).then(|| path.to_owned())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What GetServerInfo tells every caller: the version, the limits in force (maxima
/// filled in with what the host bounds them by), cgroups and features.
fn server_info(
    args: &ServerArgs,
    settings: &JobSettings,
    disk_support: bool,
) -> silo_proto::v1::ServerInfo {
    use jobs::validate::{
        MAX_IO_BPS, MAX_PIDS, MAX_STOP_GRACE_MS, MAX_TIMEOUT_MS, MIN_DISK_BYTES, MIN_MEMORY,
    };
    use silo_proto::v1::{JobNetwork, Limits};
    let bounds = &settings.bounds;
    let max = &bounds.max;
    let (layout, controllers) = match &settings.cgroups {
        Some(root) => (
            match root.layout() {
                silo_cgroup::CgroupLayout::Unified { .. } => "unified",
                silo_cgroup::CgroupLayout::Legacy { .. } => "legacy",
                silo_cgroup::CgroupLayout::Hybrid { .. } => "hybrid",
            },
            root.available().iter().map(|c| c.to_string()).collect(),
        ),
        None => ("", Vec::new()),
    };
    silo_proto::v1::ServerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        default_limits: Some(bounds.defaults.clone()),
        max_limits: Some(Limits {
            cpu_percent: Some(max.cpu_percent.unwrap_or(bounds.cpus.saturating_mul(100))),
            cpus: Some(format!("0-{}", bounds.cpus.saturating_sub(1))),
            memory_bytes: Some(max.memory_bytes.unwrap_or(bounds.memory_bytes)),
            io_bps: Some(max.io_bps.unwrap_or(MAX_IO_BPS)),
            pids: Some(max.pids.unwrap_or(MAX_PIDS)),
            disk_bytes: max.disk_bytes,
        }),
        min_limits: Some(Limits {
            cpu_percent: Some(1),
            cpus: None,
            memory_bytes: Some(MIN_MEMORY),
            io_bps: Some(1),
            pids: Some(1),
            disk_bytes: Some(MIN_DISK_BYTES),
        }),
        max_timeout_ms: MAX_TIMEOUT_MS,
        max_stop_grace_ms: MAX_STOP_GRACE_MS,
        default_stop_grace_ms: u64::try_from(args.stop_grace.as_millis()).unwrap_or(u64::MAX),
        max_upload_bytes: bounds.upload_bytes,
        max_jobs: u32::try_from(args.max_jobs).unwrap_or(u32::MAX),
        cgroup_layout: layout.into(),
        controllers,
        networks: vec![JobNetwork::None as i32, JobNetwork::Host as i32],
        features: if disk_support {
            vec![
                "disk".into(),
                "runtimes".into(),
                "workflows".into(),
                "secrets".into(),
                "schedules".into(),
            ]
        } else {
            vec![
                "runtimes".into(),
                "workflows".into(),
                "secrets".into(),
                "schedules".into(),
            ]
        },
        ..Default::default()
    }
}

/// Bytes free for root on the filesystem holding `dir`.
fn free_space(dir: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_free() * s.fragment_size())
        .unwrap_or(u64::MAX)
}

/// Whether per-job disks can be made here: mkfs.ext4 runs and loop devices exist.
fn check_disk_support() -> Result<(), ServerError> {
    let mkfs =
        silo_sandbox::spawn::with_started_open_files(&mut std::process::Command::new("mkfs.ext4"))
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    if !matches!(mkfs, Ok(s) if s.success()) {
        return Err(ServerError::Host(
            "each job's /work is a filesystem of its own (--default-disk), which needs mkfs.ext4 \
             (Debian: apt-get install e2fsprogs); or start with --default-disk 0"
                .into(),
        ));
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Err(ServerError::Host(
            "each job's /work is a filesystem of its own (--default-disk), which needs loop \
             devices (/dev/loop-control: modprobe loop); or start with --default-disk 0"
                .into(),
        ));
    }
    Ok(())
}

fn online_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn physical_memory() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ServerArgs;

    #[derive(Parser)]
    struct Server {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn size_flags_take_the_apis_sizes_and_zero() {
        let server = Server::try_parse_from(["server", "--log-cap", "64M", "--default-disk", "0"])
            .unwrap()
            .args;
        assert_eq!(server.log_cap, 64 << 20);
        // Work directories without a filesystem of their own.
        assert_eq!(server.default_disk, 0);
        assert_eq!(server.upload_limit, 256 << 20);
        let err = Server::try_parse_from(["server", "--max-memory", "10X"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown unit \"X\""), "{err}");
    }
}
