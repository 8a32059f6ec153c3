//! `silo workflow graph ID|FILE`: the jobs and what each waits for, as text, Mermaid or
//! Graphviz DOT. A file is drawn here without a server; a workflow on the server is drawn
//! by it, with each job's state.

use std::path::Path;

use silo_proto::v1::GraphWorkflowRequest;
use silo_workflow::graph::{self, Format};

use super::file::WorkflowFile;
use crate::cli::{GlobalOptions, GraphArgs, GraphFormat};
use crate::output::print;
use crate::session::Session;

/// Prints the graph of the file `target` names when it exists, else of the workflow with
/// that id (or unique prefix) on the server.
pub async fn graph(global: &GlobalOptions, args: GraphArgs) -> anyhow::Result<i32> {
    let path = Path::new(&args.target);
    let picture = if path.is_file() {
        let file = WorkflowFile::read(path)?;
        graph::render(&file.spec, None, local_format(args.format))
    } else {
        let mut session = Session::open(global).await?;
        let request = GraphWorkflowRequest {
            id: args.target.clone(),
            format: args.format.name().to_owned(),
        };
        match session.workflows.graph_workflow(request).await {
            Ok(response) => response.into_inner().graph,
            Err(status) => return Err(session.workflow_error(&status).into()),
        }
    };
    print(&with_final_newline(picture))
}

fn local_format(format: GraphFormat) -> Format {
    match format {
        GraphFormat::Text => Format::Text,
        GraphFormat::Mermaid => Format::Mermaid,
        GraphFormat::Dot => Format::Dot,
    }
}

fn with_final_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
