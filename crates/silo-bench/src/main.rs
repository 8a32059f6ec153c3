//! `silo-bench`: measurements of a running silo server and of its peers, each subcommand
//! printing one JSON line; `report` turns those lines into the table of bench/run.sh.

mod cgroup;
mod client;
mod disk;
mod measure;
mod ops;
mod report;
mod runtime;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use silo_proto::values::parse_size;

#[derive(Parser)]
#[command(about = "silo benchmarks; every measurement prints one JSON line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Copy)]
struct Runs {
    /// Timed runs.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
}

#[derive(Args)]
struct Server {
    /// The client configuration `silo server` wrote (`<state-dir>/client-admin.toml`).
    #[arg(long)]
    config: PathBuf,
}

impl Server {
    /// The server's state directory, taken to be the one holding its client configuration.
    fn state_dir(&self) -> PathBuf {
        self.config.parent().unwrap_or(".".as_ref()).to_path_buf()
    }
}

#[derive(Subcommand)]
enum Command {
    /// RunJob of a command (/bin/true), then WatchJob until it ended, on one warm connection.
    Launch {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        runs: Runs,
        /// Memory limit (64M = 64 MiB).
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// CPU limit, percent of one core.
        #[arg(long)]
        cpu: Option<u32>,
        /// Process limit.
        #[arg(long)]
        pids: Option<u32>,
        /// Run the job in this runtime (NAME or NAME@VERSION) instead of the host's view.
        #[arg(long)]
        runtime: Option<String>,
        /// The job's command, to the end of the line (default: /bin/true).
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "COMMAND")]
        command: Vec<String>,
        /// Pause this long before each launch (an idle server; the line's name gets
        /// ` idle`), e.g. 20ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        gap: Option<std::time::Duration>,
    },
    /// JOBS launches of /bin/true at once over one connection, each to its end: wall time.
    Concurrent {
        #[command(flatten)]
        server: Server,
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// Rounds; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// N copies of a command spawned at once and waited for (the peer of `concurrent`),
    /// named NAME in the output.
    ExecConcurrent {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 100)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// A job writes BYTES zeros to stdout; StreamLogs(follow) reads them and drops them.
    Logs {
        #[command(flatten)]
        server: Server,
        #[arg(long, default_value = "512MiB", value_parser = parse_size)]
        bytes: u64,
        /// Measure this many times and report the median.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// A job's cgroup: create, write limits (64 MiB, 50% cpu, 64 pids), remove (root).
    Cgroup {
        #[command(flatten)]
        runs: Runs,
    },
    /// The peer of `logs`: `dd if=/dev/zero bs=64K | cat >/dev/null` of the same size.
    Pipe {
        #[arg(long, default_value = "512MiB", value_parser = parse_size)]
        bytes: u64,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Plain fork/exec + wait of /bin/true from Rust (std::process::Command).
    ForkExec {
        #[command(flatten)]
        runs: Runs,
    },
    /// Spawn + wait of any command, named NAME in the output (for the isolated-launch peers).
    Exec {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        runs: Runs,
        /// Pause this long before each run, e.g. 20ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        gap: Option<std::time::Duration>,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// The server's RSS (VmRSS) idle, and its growth over JOBS finished jobs, with silo.db's.
    Memory {
        #[command(flatten)]
        server: Server,
        /// The server's process id.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Where silo.db lies; default: the directory of --config.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// A runtime built from SPEC (replacing an installed one), then exported, removed,
    /// installed from the export and verified, each step timed. The line is named
    /// `runtime NAME`, NAME being the spec file's name without `.yml`.
    Runtime {
        #[command(flatten)]
        server: Server,
        /// The runtime spec (YAML), e.g. runtimes/python-3.11.yml.
        #[arg(long)]
        spec: PathBuf,
        /// Only build it.
        #[arg(long)]
        build_only: bool,
    },
    /// The disk that the installed runtimes NAME... take together (each inode once) beside
    /// the sum of their trees' sizes.
    RuntimeDisk {
        #[command(flatten)]
        server: Server,
        /// Runtime names (their highest installed versions).
        #[arg(required = true)]
        names: Vec<String>,
        /// Where `runtimes/` lies; default: the directory of --config.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Workflows: the latency of each edge of a chain (a job's start after its parent's
    /// end, server timestamps), a fan-out under max_parallel run to its end with every job
    /// run once, and the server's RSS growth per workflow node across the fan-out.
    Workflow {
        #[command(flatten)]
        server: Server,
        /// The server's process id.
        #[arg(long)]
        pid: u32,
        /// Jobs in the chain, each needing the one before.
        #[arg(long, default_value_t = 100)]
        chain: usize,
        /// Then a second chain as long whose jobs each run `sleep` this many ms, so that
        /// each edge meets a host that has done the previous job's work; 0: none.
        #[arg(long, default_value_t = 30)]
        spaced_chain_ms: u64,
        /// Jobs that need the fan-out's one root.
        #[arg(long, default_value_t = 500)]
        fan_out: usize,
        /// The fan-out's max_parallel.
        #[arg(long, default_value_t = 50)]
        max_parallel: u32,
        /// host:port of the server's --metrics-listen: each chain's launches that found no
        /// ready init are counted (silo_ready_pool_misses_total before and after it).
        #[arg(long)]
        metrics: Option<String>,
    },
    /// WorkflowSpec::parse, in this process, of a pipeline of STAGES stages, each a hub and
    /// WIDTH - 1 workers that need it, each hub needing the workers before it.
    WorkflowValidate {
        #[arg(long, default_value_t = 100)]
        stages: usize,
        /// Jobs per stage, the hub included.
        #[arg(long, default_value_t = 100)]
        width: usize,
        /// Parse this many times and report the median.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// A cron schedule firing every second (`* * * * * *`, /bin/true): how late each
    /// firing's command started after its instant (the server's started_at - scheduled_at).
    ScheduleLateness {
        #[command(flatten)]
        server: Server,
        /// Firings measured.
        #[arg(long, default_value_t = 200)]
        firings: usize,
    },
    /// JOBS sleeping jobs running, then SCRAPES timed GETs of /metrics (a new connection
    /// each, as Prometheus scrapes); the jobs are stopped after.
    MetricsScrape {
        #[command(flatten)]
        server: Server,
        /// host:port of the server's --metrics-listen.
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 500)]
        jobs: usize,
        #[arg(long, default_value_t = 20)]
        scrapes: usize,
    },
    /// Reads the JSON lines of the other subcommands and prints one table.
    Report {
        /// The JSON-lines file.
        results: PathBuf,
        /// A line printed above the table (e.g. the machine).
        #[arg(long)]
        title: Option<String>,
    },
}

fn main() -> ExitCode {
    // As the CLI does: the measuring client's allocator behaves like `silo`'s.
    silo_cli::keep_freed_memory();
    let cli = Cli::parse();
    if let Command::Report { results, title } = &cli.command {
        return match report::print(results, title.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("silo-bench report: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (mut line, outcome) = run(cli.command);
    let code = match outcome {
        Ok(fields) => {
            merge(&mut line, fields);
            ExitCode::SUCCESS
        }
        Err(err) => {
            line["error"] = json!(format!("{err:#}"));
            ExitCode::FAILURE
        }
    };
    println!("{line}");
    code
}

/// The line's identity (which measurement) and the measurement itself; a failure is
/// printed as the identity with an `error`, so the report can say why a row is missing.
fn run(command: Command) -> (Value, Result<Value>) {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting tokio")
    };
    match command {
        Command::Launch {
            server,
            runs,
            memory,
            cpu,
            pids,
            runtime,
            command,
            gap,
        } => {
            let launch = measure::Launch {
                gap: gap.unwrap_or_default(),
                command: if command.is_empty() {
                    vec![measure::LAUNCH_COMMAND.to_string()]
                } else {
                    command
                },
                limits: silo_proto::v1::Limits {
                    memory_bytes: memory,
                    cpu_percent: cpu,
                    pids,
                    ..Default::default()
                },
                runtime,
            };
            let id = json!({
                "name": launch.name(),
                "command": launch.command.join(" "),
                "runtime": launch.runtime,
                "memory_bytes": memory,
                "cpu_percent": cpu,
                "pids": pids,
            });
            // One launch at a time, each awaited: a current-thread runtime, like the CLI's
            // (`silo job run`), so that the client's side is not a hand-off between
            // threads per message.
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting tokio")
                .and_then(|rt| {
                    rt.block_on(measure::launch(
                        &server.config,
                        runs.runs,
                        runs.warmup,
                        launch,
                    ))
                });
            (id, out)
        }
        Command::Logs {
            server,
            bytes,
            repeat,
        } => (
            json!({"name": "logs"}),
            // One task reads the stream, as in `silo job logs`: a current-thread runtime,
            // like the CLI's, spares a hand-off between threads per message.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting tokio")
                .and_then(|rt| rt.block_on(measure::logs(&server.config, bytes, repeat))),
        ),
        Command::Pipe { bytes, repeat } => (json!({"name": "pipe"}), measure::pipe(bytes, repeat)),
        Command::Cgroup { runs } => (
            json!({"name": "cgroup"}),
            cgroup::cost(runs.runs, runs.warmup),
        ),
        Command::ForkExec { runs } => (
            json!({"name": "fork/exec"}),
            measure::exec(
                &["/bin/true".to_string()],
                runs.runs,
                runs.warmup,
                Default::default(),
            ),
        ),
        Command::Exec {
            name,
            runs,
            gap,
            command,
        } => {
            let id = json!({"name": name, "command": command.join(" ")});
            (
                id,
                measure::exec(&command, runs.runs, runs.warmup, gap.unwrap_or_default()),
            )
        }
        Command::Concurrent {
            server,
            jobs,
            repeat,
        } => (
            json!({"name": "concurrent"}),
            rt().and_then(|rt| rt.block_on(measure::concurrent(&server.config, jobs, repeat))),
        ),
        Command::ExecConcurrent {
            name,
            n,
            repeat,
            command,
        } => (
            json!({"name": name, "command": command.join(" ")}),
            measure::exec_concurrent(&command, n, repeat),
        ),
        Command::Memory {
            server,
            pid,
            jobs,
            state_dir,
        } => {
            let dir = state_dir.unwrap_or_else(|| server.state_dir());
            (
                json!({"name": "memory"}),
                rt().and_then(|rt| rt.block_on(measure::memory(&server.config, pid, jobs, &dir))),
            )
        }
        Command::Runtime {
            server,
            spec,
            build_only,
        } => {
            let stem = spec.file_stem().unwrap_or_default().to_string_lossy();
            let mut line = json!({"name": format!("runtime {stem}"), "spec": spec});
            let steps = if build_only {
                runtime::Steps::Build
            } else {
                runtime::Steps::All
            };
            // What was measured before a failure stays in the line beside the error.
            let mut fields = serde_json::Map::new();
            let out = rt().and_then(|rt| {
                rt.block_on(runtime::lifecycle(
                    &server.config,
                    &spec,
                    steps,
                    &mut fields,
                ))
            });
            merge(&mut line, Value::Object(fields));
            (line, out.map(|()| json!({})))
        }
        Command::RuntimeDisk {
            server,
            names,
            state_dir,
        } => {
            let dir = state_dir.unwrap_or_else(|| server.state_dir());
            (
                json!({"name": "runtime disk", "names": names}),
                rt().and_then(|rt| rt.block_on(runtime::disk(&server.config, &dir, &names))),
            )
        }
        Command::Workflow {
            server,
            pid,
            chain,
            spaced_chain_ms,
            fan_out,
            max_parallel,
            metrics,
        } => {
            let shape = workflow::Shape {
                chain,
                spaced_ms: spaced_chain_ms,
                fan_out,
                max_parallel,
                metrics,
            };
            // What was measured before a failure stays in the line beside the error.
            let mut fields = serde_json::Map::new();
            let out = rt().and_then(|rt| {
                rt.block_on(workflow::on_server(
                    &server.config,
                    pid,
                    &shape,
                    &mut fields,
                ))
            });
            let mut line = json!({
                "name": "workflow",
                "chain_jobs": chain,
                "spaced_chain_ms": spaced_chain_ms,
                "fan_out_jobs": fan_out + 1,
                "max_parallel": max_parallel,
            });
            merge(&mut line, Value::Object(fields));
            (line, out.map(|()| json!({})))
        }
        Command::WorkflowValidate {
            stages,
            width,
            repeat,
        } => (
            json!({"name": "workflow validate", "stages": stages, "width": width}),
            workflow::validate::validate(stages, width, repeat),
        ),
        Command::ScheduleLateness { server, firings } => (
            json!({"name": "schedule lateness"}),
            rt().and_then(|rt| rt.block_on(ops::schedule_lateness(&server.config, firings))),
        ),
        Command::MetricsScrape {
            server,
            addr,
            jobs,
            scrapes,
        } => (
            json!({"name": "metrics scrape"}),
            rt().and_then(|rt| {
                rt.block_on(ops::metrics_scrape(&server.config, &addr, jobs, scrapes))
            }),
        ),
        Command::Report { .. } => unreachable!("handled in main"),
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
