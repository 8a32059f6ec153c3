//! The measurements. Each returns the JSON fields of its result line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::{
    DeleteJobRequest, JobSpec, JobState, Limits, LogStream, RunJobRequest, StreamLogsRequest,
    WatchJobRequest,
};
use tonic::transport::Channel;

use crate::client;

type Client = JobServiceClient<Channel>;

/// The `q` quantile (0 < q <= 1) of `sorted`, which is ascending and not empty, by nearest
/// rank: a value that was measured, never an interpolation.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// p50, p95 (nearest rank) and mean of `samples`, in milliseconds.
pub fn latency(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rank = |q: f64| ms(nearest_rank(&samples, q));
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    json!({
        "runs": samples.len(),
        "p50_ms": round(rank(0.50)),
        "p95_ms": round(rank(0.95)),
        "mean_ms": round(mean),
    })
}

/// The CPU time the whole host has spent busy (user, nice, system, irq and softirq of every
/// CPU, from the first line of /proc/stat; not idle, iowait or steal), in ms; `None` where
/// /proc/stat cannot be read.
pub fn host_busy_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| busy as f64 * 1000.0 / ticks as f64)
}

/// Adds `host_cpu_ms_per_run` to `fields`: the host's busy CPU time from `before` (taken
/// before the first timed run) to now, divided by `runs`. Everything the runs made the host
/// do (client, server, init, command, kernel threads, and work left behind by one run that
/// the next overlaps) counts; so does anything else running, so the host should be quiet.
fn add_host_cpu(fields: &mut Value, before: Option<f64>, runs: usize) {
    if let (Some(before), Some(after)) = (before, host_busy_ms()) {
        fields["host_cpu_ms_per_run"] = json!(round((after - before) / runs as f64));
    }
}

/// `x` to three decimals.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn spec(command: &[&str], limits: Option<Limits>) -> JobSpec {
    JobSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        limits,
        ..Default::default()
    }
}

/// Starts the job and follows it to its end on one call (RunJobAttached, as `silo job
/// run` does); fails unless it COMPLETED. Returns when the start was answered (the
/// stream's first event).
async fn run_to_end(client: &mut Client, spec: JobSpec) -> Result<Instant> {
    use silo_proto::v1::run_job_event::Event;
    let mut stream = client
        .run_job_attached(RunJobRequest {
            spec: Some(spec),
            uploads: vec![],
            start_at: None,
        })
        .await?
        .into_inner();
    let mut answered = None;
    let mut last = None;
    while let Some(event) = stream.message().await? {
        if let Some(Event::Job(job)) = event.event {
            if answered.is_none() {
                answered = Some(Instant::now());
                if job.state() == JobState::Failed {
                    bail!("job failed to start: {}", job.reason);
                }
            }
            last = Some(job);
        }
    }
    let (Some(answered), Some(last)) = (answered, last) else {
        bail!("the server ended the run without answering");
    };
    ensure!(
        last.state() == JobState::Completed,
        "job {} ended {:?} ({})",
        last.id,
        last.state(),
        last.reason
    );
    Ok(answered)
}

/// What a launch measurement runs: its command, its limits, and the runtime whose tree is
/// its root (`None`: the host's view).
pub struct Launch {
    pub command: Vec<String>,
    pub limits: Limits,
    pub runtime: Option<String>,
    /// A pause before each launch (an idle server), not timed.
    pub gap: Duration,
}

/// The command a launch runs unless told otherwise.
pub const LAUNCH_COMMAND: &str = "/bin/true";

impl Launch {
    /// The name of its result line, by which the report finds it: `launch` (`launch+limits`
    /// with any limit), then the command unless it is /bin/true, then `in RUNTIME`; e.g.
    /// `launch python3 -c pass in python-3.11`.
    pub fn name(&self) -> String {
        let limits = &self.limits;
        let limited =
            limits.memory_bytes.is_some() || limits.cpu_percent.is_some() || limits.pids.is_some();
        let mut name = String::from(if limited { "launch+limits" } else { "launch" });
        if self.command != [LAUNCH_COMMAND] {
            name = format!("{name} {}", self.command.join(" "));
        }
        if let Some(runtime) = &self.runtime {
            name = format!("{name} in {runtime}");
        }
        if !self.gap.is_zero() {
            name = format!("{name} idle");
        }
        name
    }
}

/// Launch latency: RunJob → job ended, `warmup` untimed runs then `runs` timed ones, all
/// on one connection. Also the latency of RunJob's answer alone, for diagnosis.
pub async fn launch(config: &Path, runs: usize, warmup: usize, launch: Launch) -> Result<Value> {
    ensure!(runs > 0, "--runs must be positive");
    let mut client = client::connect(config).await?;
    let command: Vec<&str> = launch.command.iter().map(String::as_str).collect();
    let spec = JobSpec {
        runtime: launch.runtime.unwrap_or_default(),
        ..spec(&command, Some(launch.limits))
    };
    let (mut samples, mut answers) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut cpu_before = None;
    for i in 0..warmup + runs {
        if !launch.gap.is_zero() {
            tokio::time::sleep(launch.gap).await;
        }
        if i == warmup {
            cpu_before = host_busy_ms();
        }
        let start = Instant::now();
        let answered = run_to_end(&mut client, spec.clone()).await?;
        if i >= warmup {
            samples.push(start.elapsed());
            answers.push(answered - start);
        }
    }
    let mut fields = latency(samples);
    add_host_cpu(&mut fields, cpu_before, runs);
    // Where the time goes: RunJob's answer (the command runs) vs. the end observed.
    fields["run_job_answer"] = latency(answers);
    Ok(fields)
}

/// Log throughput: `head -c BYTES /dev/zero` as a job, streamed with follow from RunJob to
/// the stream's end; the median of `repeat` runs. Each job is deleted afterwards.
pub async fn logs(config: &Path, bytes: u64, repeat: usize) -> Result<Value> {
    let mut client = client::connect(config).await?;
    let count = bytes.to_string();
    let mut rates = Vec::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let job = client
            .run_job(RunJobRequest {
                spec: Some(spec(&["head", "-c", &count, "/dev/zero"], None)),
                uploads: vec![],
                start_at: None,
            })
            .await?
            .into_inner();
        ensure!(
            job.state() != JobState::Failed,
            "job failed to start: {}",
            job.reason
        );
        let mut stream = client
            .stream_logs(StreamLogsRequest {
                id: job.id.clone(),
                from_sequence: 0,
                follow: true,
            })
            .await?
            .into_inner();
        let mut got = 0u64;
        while let Some(chunk) = stream.message().await? {
            for record in chunk.records {
                if record.stream() == LogStream::Stdout {
                    got += record.data.len() as u64;
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        ensure!(got == bytes, "streamed {got} bytes of {bytes}");
        rates.push(bytes as f64 / 1e6 / secs);
        // The 512 MiB log has done its job; give the disk back (a still-running job
        // cannot be deleted, so wait for its end first).
        let mut watch = client
            .watch_job(WatchJobRequest { id: job.id.clone() })
            .await?
            .into_inner();
        while watch.message().await?.is_some() {}
        client.delete_job(DeleteJobRequest { id: job.id }).await?;
    }
    Ok(rate_fields(bytes, rates))
}

fn rate_fields(bytes: u64, mut rates: Vec<f64>) -> Value {
    rates.sort_by(f64::total_cmp);
    json!({
        "bytes": bytes,
        "mb_s": round(rates[rates.len() / 2]),
        "all_mb_s": rates.iter().map(|r| round(*r)).collect::<Vec<_>>(),
    })
}

/// The pipe peer of `logs`: `dd if=/dev/zero bs=64K count=N | cat >/dev/null`, timed as a
/// whole (both ends have finished); the median of `repeat` runs.
pub fn pipe(bytes: u64, repeat: usize) -> Result<Value> {
    let script = format!(
        "dd if=/dev/zero bs=64K count={} status=none | cat >/dev/null",
        bytes / 65536
    );
    let mut rates = Vec::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .context("running sh")?;
        ensure!(status.success(), "`{script}` failed: {status}");
        rates.push((bytes / 65536 * 65536) as f64 / 1e6 / start.elapsed().as_secs_f64());
    }
    Ok(rate_fields(bytes, rates))
}

/// Spawn + wait of `command` (stdio to /dev/null), `warmup` untimed then `runs` timed. A
/// command that fails once fails the measurement, with its stderr as the reason.
/// `jobs` launches of /bin/true at once, each on its own task over one connection, each
/// run to its end; the wall time from the first RunJob sent to the last end seen, the
/// median of `repeat` rounds.
pub async fn concurrent(config: &Path, jobs: usize, repeat: usize) -> Result<Value> {
    ensure!(
        jobs > 0 && repeat > 0,
        "--jobs and --repeat must be positive"
    );
    let client = client::connect(config).await?;
    let mut walls = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..jobs {
            let mut client = client.clone();
            tasks
                .spawn(async move { run_to_end(&mut client, spec(&[LAUNCH_COMMAND], None)).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a launch task panicked")??;
        }
        walls.push(start.elapsed());
    }
    walls.sort();
    Ok(json!({
        "jobs": jobs,
        "runs": repeat,
        "wall_ms": round(walls[walls.len() / 2].as_secs_f64() * 1e3),
    }))
}

/// `n` copies of `command` spawned at once and all waited for; the wall time, the median
/// of `repeat` rounds (the peer of [`concurrent`]).
pub fn exec_concurrent(command: &[String], n: usize, repeat: usize) -> Result<Value> {
    ensure!(n > 0 && repeat > 0, "--n and --repeat must be positive");
    let (program, args) = command.split_first().context("no command")?;
    let mut walls = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|_| {
                Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot run {program}"))?;
        for mut child in children {
            let status = child.wait()?;
            ensure!(status.success(), "{program} failed: {status}");
        }
        walls.push(start.elapsed());
    }
    walls.sort();
    Ok(json!({
        "jobs": n,
        "runs": repeat,
        "wall_ms": round(walls[walls.len() / 2].as_secs_f64() * 1e3),
    }))
}

pub fn exec(command: &[String], runs: usize, warmup: usize, gap: Duration) -> Result<Value> {
    ensure!(runs > 0, "--runs must be positive");
    let (program, args) = command.split_first().context("no command")?;
    let check = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !check.status.success() {
        let stderr = String::from_utf8_lossy(&check.stderr);
        bail!(
            "{program} failed ({}): {}",
            check.status,
            stderr.trim().replace('\n', "; ")
        );
    }
    let mut samples = Vec::with_capacity(runs);
    let mut cpu_before = None;
    for i in 0..warmup + runs {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        if i == warmup {
            cpu_before = host_busy_ms();
        }
        let start = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let took = start.elapsed();
        ensure!(status.success(), "{program} failed on run {i}: {status}");
        if i >= warmup {
            samples.push(took);
        }
    }
    let mut fields = latency(samples);
    add_host_cpu(&mut fields, cpu_before, runs);
    Ok(fields)
}

/// The server's resident memory, from /proc/PID/status, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// The store's size as SQLite sees it: the page count after the last commit, whether that
/// commit is already in silo.db or still only in its write-ahead log, times the page size.
/// (The files' sizes mislead: the WAL grows to about 4 MB, is checkpointed, then reused.)
fn db_bytes(state_dir: &Path) -> Result<u64> {
    let path = state_dir.join("silo.db");
    let mut head = [0u8; 100];
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    file.read_exact(&mut head)?;
    ensure!(
        head.starts_with(b"SQLite format 3\0"),
        "{} is not a SQLite database",
        path.display()
    );
    let page = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let mut pages = file.metadata()?.len() / page;
    // WAL: a 32-byte header (salts at 16..24), then frames of a 24-byte header (page number,
    // database size in pages for a commit frame else 0, the salts, checksums) and a page.
    // Frames whose salts differ are left from before the WAL was last reset.
    let wal = std::fs::read(state_dir.join("silo.db-wal")).unwrap_or_default();
    let be32 = |at: usize| {
        u64::from(u32::from_be_bytes([
            wal[at],
            wal[at + 1],
            wal[at + 2],
            wal[at + 3],
        ]))
    };
    let frame = 24 + page as usize;
    let mut at = 32;
    while at + frame <= wal.len() && wal[at + 8..at + 16] == wal[16..24] {
        if be32(at + 4) != 0 {
            pages = be32(at + 4);
        }
        at += frame;
    }
    Ok(pages * page)
}

/// Idle RSS (before this command sent anything), then the growth of RSS and of the store
/// over `jobs` finished /bin/true jobs (after 10 warm-up jobs), scaled to 1,000 jobs.
pub async fn memory(config: &Path, pid: u32, jobs: usize, state_dir: &Path) -> Result<Value> {
    ensure!(jobs > 0, "--jobs must be positive");
    ensure!(
        state_dir.join("silo.db").exists(),
        "no silo.db in {}",
        state_dir.display()
    );
    let idle = rss_kib(pid)?;
    let mut client = client::connect(config).await?;
    for _ in 0..10 {
        run_to_end(&mut client, spec(&["/bin/true"], None)).await?;
    }
    // Let the server settle (its writes of the last job's end) before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss0, db0) = (rss_kib(pid)?, db_bytes(state_dir)?);
    for _ in 0..jobs {
        run_to_end(&mut client, spec(&["/bin/true"], None)).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss1, db1) = (rss_kib(pid)?, db_bytes(state_dir)?);
    let per_1000 =
        |before: u64, after: u64| round((after as f64 - before as f64) * 1000.0 / jobs as f64);
    Ok(json!({
        "jobs": jobs,
        "idle_rss_kib": idle,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "rss_growth_per_1000_kib": per_1000(rss0, rss1),
        "db_before_bytes": db0,
        "db_after_bytes": db1,
        "db_growth_per_1000_bytes": per_1000(db0, db1),
    }))
}
