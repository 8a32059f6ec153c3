//! `silo workflow …`: run workflows (DAGs of jobs written in YAML) and look at them.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::GlobalOptions;

/// `silo workflow [--config FILE] [--server NAME] …`.
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The workflow command.
    #[command(subcommand)]
    pub command: WorkflowCommand,
}

/// `silo workflow …`.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Run a workflow file and follow it to its end; exit 0 when it completed
    #[command(after_long_help = WORKFLOW_RUN_AFTER_HELP)]
    Run(WorkflowRunArgs),
    /// List workflows, newest first
    #[command(alias = "ls")]
    List(WorkflowListArgs),
    /// Show one workflow and its jobs; --watch redraws it until it ends
    Status(WorkflowStatusArgs),
    /// Print the output of a workflow's jobs, each line prefixed with the job's name
    Logs(WorkflowLogsArgs),
    /// Draw a workflow's jobs and what each waits for, from a file or from the server
    Graph(GraphArgs),
    /// Check a workflow file here, then on the server (its runtimes exist), without running it
    Validate(ValidateArgs),
    /// Stop a workflow's running jobs and skip the rest
    Cancel(WorkflowIdArgs),
    /// Run again the failed, stopped and skipped jobs of a finished workflow
    Retry(WorkflowIdArgs),
    /// Delete a finished workflow, its /shared directory and its jobs
    #[command(alias = "rm")]
    Delete(WorkflowIdArgs),
}

const WORKFLOW_RUN_AFTER_HELP: &str = "\
Files: every path a job names under `uploads` is read relative to the workflow file's
directory and sent with the workflow (a directory with everything in it).

Output: on a terminal, one line per job redrawn in place, with how many jobs are done;
otherwise one line on stderr per change of a job's state (`[train] RUNNING (attempt 1,
job 3f2a1b2c)`). Ctrl-C stops following; the workflow keeps running.

Exit status: 0 when the workflow completed; 1 otherwise, after its reason, the failed
job's reason and the last lines of that job's output; 130 after Ctrl-C.

Examples:
  silo workflow run pipeline.yml
  silo workflow run -d --name nightly pipeline.yml";

/// `silo workflow run`.
#[derive(Debug, Args)]
pub struct WorkflowRunArgs {
    /// The workflow, a YAML file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// A name for the workflow, instead of the one in the file
    #[arg(long, value_name = "NAME", value_parser = no_blank_name)]
    pub name: Option<String>,

    /// Print only the workflow's full id and return at once; it keeps running
    #[arg(short, long)]
    pub detach: bool,
}

/// `silo workflow list`.
#[derive(Debug, Args)]
pub struct WorkflowListArgs {
    /// At most this many workflows, the newest (default: 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: Option<u32>,

    /// Print a JSON array of workflows instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `silo workflow status`.
#[derive(Debug, Args)]
pub struct WorkflowStatusArgs {
    /// The workflow's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = workflow_id)]
    pub id: String,

    /// Show it again on every change until it has ended
    #[arg(short, long)]
    pub watch: bool,

    /// Print the workflow as JSON (with --watch, one object per line per change)
    #[arg(long)]
    pub json: bool,
}

/// `silo workflow logs`.
#[derive(Debug, Args)]
pub struct WorkflowLogsArgs {
    /// The workflow's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = workflow_id)]
    pub id: String,

    /// Only this job's output (every attempt of it)
    #[arg(value_name = "JOB")]
    pub job: Option<String>,

    /// Keep printing new output, of new attempts and jobs too, until the workflow has ended
    #[arg(short, long)]
    pub follow: bool,
}

/// A picture of the job graph for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Indented text, one job a line
    Text,
    /// A Mermaid flowchart
    Mermaid,
    /// Graphviz DOT
    Dot,
}

impl GraphFormat {
    /// The name the API and the command line give it: `text`, `mermaid`, `dot`.
    pub fn name(self) -> &'static str {
        match self {
            GraphFormat::Text => "text",
            GraphFormat::Mermaid => "mermaid",
            GraphFormat::Dot => "dot",
        }
    }
}

/// `silo workflow graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// A workflow file (drawn here, without a server), or a workflow's id or unique
    /// prefix (drawn by the server, with each job's state)
    #[arg(value_name = "ID|FILE")]
    pub target: String,

    /// The picture's format
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

/// `silo workflow validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The workflow, a YAML file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `silo workflow cancel`, `retry` and `delete`.
#[derive(Debug, Args)]
pub struct WorkflowIdArgs {
    /// The workflow's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = workflow_id)]
    pub id: String,
}

fn workflow_id(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("a workflow id (or a prefix of one) is required".to_owned());
    }
    if value.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("a workflow id contains no blanks or control characters".to_owned());
    }
    Ok(value.to_owned())
}

fn no_blank_name(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("a workflow name must not be empty".to_owned());
    }
    if value.contains(|c: char| c.is_control()) {
        return Err("a workflow name contains no control characters".to_owned());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::ClientCommand;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<WorkflowArgs, clap::Error> {
        let cli = TestCli::try_parse_from(["silo", "workflow"].iter().chain(args.iter()).copied())?;
        match cli.command {
            ClientCommand::Workflow(workflow) => Ok(workflow),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn workflow_help_lists_every_subcommand() {
        use clap::CommandFactory;
        let mut cli = TestCli::command();
        let help = cli
            .find_subcommand_mut("workflow")
            .expect("a workflow command")
            .render_long_help()
            .to_string();
        for command in [
            "run", "list", "status", "logs", "graph", "validate", "cancel", "retry", "delete",
        ] {
            assert!(
                help.contains(&format!("\n  {command} ")),
                "{command}:\n{help}"
            );
        }
    }

    #[test]
    fn workflow_commands_take_their_arguments_flags_and_aliases() {
        let run = parse(&[
            "run", "-d", "--name", "nightly", "flow.yml", "--server", "b",
        ])
        .unwrap();
        assert_eq!(run.global.server.as_deref(), Some("b"));
        let WorkflowCommand::Run(run) = run.command else {
            panic!("not run")
        };
        assert_eq!(
            (run.file, run.name.as_deref(), run.detach),
            (PathBuf::from("flow.yml"), Some("nightly"), true)
        );

        let WorkflowCommand::List(list) = parse(&["ls", "--limit", "5", "--json"]).unwrap().command
        else {
            panic!("not list")
        };
        assert_eq!((list.limit, list.json), (Some(5), true));

        let WorkflowCommand::Status(status) =
            parse(&["status", "0123", "--watch"]).unwrap().command
        else {
            panic!("not status")
        };
        assert_eq!(
            (status.id.as_str(), status.watch, status.json),
            ("0123", true, false)
        );

        let WorkflowCommand::Logs(logs) = parse(&["logs", "0123", "train", "-f"]).unwrap().command
        else {
            panic!("not logs")
        };
        assert_eq!((logs.job.as_deref(), logs.follow), (Some("train"), true));

        let WorkflowCommand::Graph(graph) = parse(&["graph", "flow.yml"]).unwrap().command else {
            panic!("not graph")
        };
        assert_eq!(graph.format, GraphFormat::Text);
        let WorkflowCommand::Graph(graph) = parse(&["graph", "0123", "--format", "dot"])
            .unwrap()
            .command
        else {
            panic!("not graph")
        };
        assert_eq!(
            (graph.target.as_str(), graph.format.name()),
            ("0123", "dot")
        );

        assert!(matches!(
            parse(&["rm", "0123"]).unwrap().command,
            WorkflowCommand::Delete(WorkflowIdArgs { .. })
        ));
        assert!(matches!(
            parse(&["cancel", "0123"]).unwrap().command,
            WorkflowCommand::Cancel(_)
        ));
        assert!(matches!(
            parse(&["retry", "0123"]).unwrap().command,
            WorkflowCommand::Retry(_)
        ));
        assert!(matches!(
            parse(&["validate", "flow.yml"]).unwrap().command,
            WorkflowCommand::Validate(_)
        ));
    }

    #[test]
    fn bad_workflow_arguments_are_refused_while_parsing_with_the_reason() {
        for (args, reason) in [
            (&["run"][..], "FILE"),
            (&["run", "--name", " ", "f.yml"], "must not be empty"),
            (&["status", ""], "a workflow id"),
            (&["cancel", "a b"], "no blanks"),
            (&["list", "--limit", "0"], "0"),
            (&["graph", "f.yml", "--format", "png"], "invalid value"),
            (&["frobnicate"], "unrecognized subcommand"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }
}
