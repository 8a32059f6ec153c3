//! `silo workflow validate FILE`: the checks `silo workflow run` makes before anything
//! runs, here (the format, the files to upload) and then on the server (its runtimes are
//! installed).

use silo_proto::v1::ValidateWorkflowRequest;

use super::file::WorkflowFile;
use crate::cli::{GlobalOptions, ValidateArgs};
use crate::output::print;
use crate::session::Session;

/// Prints `ok: N jobs` when both this client and the server accept the file; otherwise
/// the first refusal is the error (exit status 1).
pub async fn validate(global: &GlobalOptions, args: ValidateArgs) -> anyhow::Result<i32> {
    let file = WorkflowFile::read(&args.file)?;
    file.files()?;
    let mut session = Session::open(global).await?;
    let request = ValidateWorkflowRequest {
        yaml: file.yaml.clone(),
    };
    let response = match session.workflows.validate_workflow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    print(&accepted(response.jobs.len()))
}

/// `ok: 1 job`, `ok: 3 jobs`.
fn accepted(jobs: usize) -> String {
    match jobs {
        1 => "ok: 1 job\n".to_owned(),
        n => format!("ok: {n} jobs\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_counts_the_jobs() {
        assert_eq!(accepted(1), "ok: 1 job\n");
        assert_eq!(accepted(12), "ok: 12 jobs\n");
    }
}
