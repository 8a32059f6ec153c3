//! `silo`: one binary with three faces. `silo server` is the daemon; `silo job …`,
//! `silo runtime …`, `silo workflow …` and `silo certs …` are the client (dispatched by `silo_cli::run`);
//! with `SILO_MODE=init` in its environment (never a visible subcommand) it is a job's
//! init process, started by the server, and with `SILO_MODE=zygote` the server's
//! fork-server for inits.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "silo",
    version,
    about = "Run commands on Linux hosts, isolated and limited, over mutual-TLS gRPC",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The command line. A client command is parsed by its own branch alone (`silo job …` by
/// the job commands): clap builds every argument of the tree it is given before it
/// parses, and the whole tree (the server's flags, every client branch) cost each client
/// command 0.13-0.4 ms more on the benchmark VM (`silo job list`, 3 interleaved rounds).
/// Whatever the branch does not take as it is (help, version, a mistake), and any other
/// command, is parsed again by the whole command line, so that every message, usage line
/// and suggestion is the one the whole CLI gives.
fn parse() -> Command {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(command) = silo_cli::parse_branch(&args) {
        return Command::Client(command);
    }
    Cli::parse_from(args).command
}

#[derive(Subcommand)]
enum Command {
    /// Run the silo server (creates its certificates and store on first start), or ask a
    /// running one about itself (`silo server info`).
    Server(Box<ServerCommand>),
    #[command(flatten)]
    Client(silo_cli::ClientCommand),
}

/// `silo server [FLAGS]` runs the server; `silo server info` is a client of one;
/// `silo server rotate-secrets-key` works on a stopped server's state directory.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ServerCommand {
    #[command(subcommand)]
    client: Option<ServerSubcommand>,
    #[command(flatten)]
    args: silo_server::ServerArgs,
}

#[derive(Subcommand)]
enum ServerSubcommand {
    #[command(flatten)]
    Client(silo_cli::ServerCommand),
    /// Re-encrypt the stored secrets with a new key (on a stopped server)
    ///
    /// Replaces the key that encrypts stored secrets (`silo job run --secret-env`,
    /// workflows' `secret_environment`) with a new one and re-encrypts every stored secret
    /// with it, in one transaction. Run it as root on a stopped server: it refuses while a
    /// server holds the state directory, and a server does not start while it runs.
    /// Interrupted at any point, it loses nothing: the next start (or rotation) keeps
    /// whichever key the store is encrypted with.
    RotateSecretsKey(silo_server::secrets::RotateArgs),
}

fn main() {
    if let Some(mode) = std::env::var_os(silo_sandbox::spawn::MODE_ENV.0) {
        if mode == silo_sandbox::spawn::MODE_ENV.1 {
            silo_sandbox::init::run();
        }
        if mode == silo_sandbox::zygote::MODE {
            silo_sandbox::zygote::run();
        }
    }
    let command = parse();
    // Before any thread: the server and the client alike.
    silo_cli::keep_freed_memory();
    let code = match command {
        Command::Server(server) => match *server {
            ServerCommand {
                client: Some(ServerSubcommand::RotateSecretsKey(args)),
                ..
            } => rotate_secrets_key(&args),
            ServerCommand {
                client: Some(ServerSubcommand::Client(command)),
                ..
            } => match silo_cli::run_server_command(command) {
                Ok(code) => code,
                Err(e) => {
                    silo_cli::report_error(&e);
                    1
                }
            },
            ServerCommand { args, .. } => run_server(args),
        },
        Command::Client(command) => match silo_cli::run(command) {
            Ok(code) => code,
            Err(e) => {
                silo_cli::report_error(&e);
                1
            }
        },
    };
    std::process::exit(code);
}

fn run_server(args: silo_server::ServerArgs) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SILO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("silo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(silo_server::run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("silo: {e}");
            1
        }
    }
}

fn rotate_secrets_key(args: &silo_server::secrets::RotateArgs) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SILO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("silo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(silo_server::secrets::rotate(args)) {
        Ok(count) => {
            println!(
                "rotated the secrets key of {}: {count} stored secrets re-encrypted",
                args.state_dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!("silo: {e}");
            1
        }
    }
}
