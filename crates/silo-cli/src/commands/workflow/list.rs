//! `silo workflow list`: workflows, newest first, as a borderless table (like `silo job
//! list`) or a JSON array.

use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use silo_proto::v1::{ListWorkflowsRequest, Workflow, WorkflowListView};

use super::json::WorkflowView;
use super::text::{short_workflow_id, workflow_state, workflow_state_name};
use crate::cli::{GlobalOptions, WorkflowListArgs};
use crate::format::{format_age, single_line, system_time, truncate};
use crate::output::{print, print_json};
use crate::session::Session;

/// How many characters of a name the table shows.
const NAME_WIDTH: usize = 32;

/// Lists the newest workflows (at most `--limit`; the server's default is 100).
pub async fn list(global: &GlobalOptions, args: WorkflowListArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    // The table needs no job of a workflow; the JSON has them all.
    let request = ListWorkflowsRequest {
        limit: args.limit.unwrap_or(0),
        view: match args.json {
            true => WorkflowListView::Full,
            false => WorkflowListView::Summary,
        } as i32,
    };
    let workflows = match session.workflows.list_workflows(request).await {
        Ok(response) => response.into_inner().workflows,
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    if args.json {
        let views: Vec<WorkflowView> = workflows.iter().map(WorkflowView::from).collect();
        return print_json(&views);
    }
    print(&render_table(&workflows, SystemTime::now()))
}

/// The table: ID (12 characters), NAME, STATE, DONE (jobs ended of all: `7/12`), CREATED
/// (age), OWNER. Columns are separated by at least three blanks, lines carry no trailing
/// blanks, and the text ends with a newline. An empty list prints the header alone.
pub fn render_table(workflows: &[Workflow], now: SystemTime) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["ID", "NAME", "STATE", "DONE", "CREATED", "OWNER"]);
    for workflow in workflows {
        table.add_row([
            short_workflow_id(&workflow.id).to_owned(),
            dash_if_empty(truncate(&single_line(&workflow.name), NAME_WIDTH)),
            workflow_state_name(workflow_state(workflow)).to_owned(),
            format!("{}/{}", workflow.done, workflow.total),
            system_time(workflow.created_at.as_ref())
                .map_or_else(|| "-".to_owned(), |at| format_age(at, now)),
            dash_if_empty(single_line(&workflow.owner)),
        ]);
    }
    crate::format::table_text(table)
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use silo_proto::v1::WorkflowState;

    use super::*;

    #[test]
    fn the_table_shows_one_aligned_line_per_workflow() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let nightly = Workflow {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "nightly".into(),
            state: WorkflowState::Running as i32,
            done: 7,
            total: 12,
            owner: "admin".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 - 150,
                nanos: 0,
            }),
            ..Workflow::default()
        };
        let unnamed = Workflow {
            id: "fedcba9876543210fedcba9876543210".into(),
            state: WorkflowState::Completed as i32,
            done: 3,
            total: 3,
            ..Workflow::default()
        };
        let expected = "\
ID             NAME      STATE       DONE   CREATED   OWNER
0123456789ab   nightly   running     7/12   2m ago    admin
fedcba987654   -         completed   3/3    -         -
";
        assert_eq!(render_table(&[nightly, unnamed], now), expected);
    }

    #[test]
    fn an_empty_list_prints_the_header_alone() {
        let table = render_table(&[], SystemTime::UNIX_EPOCH);
        assert_eq!(table, "ID   NAME   STATE   DONE   CREATED   OWNER\n");
    }
}
