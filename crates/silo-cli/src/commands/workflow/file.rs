//! A workflow file on this machine: read and checked here before anything is sent, and
//! the files its jobs upload, read relative to the file's directory.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use silo_proto::v1::Upload;
use silo_workflow::spec::WorkflowSpec;

use crate::connect::describe_io;
use crate::uploads::{MAX_UPLOAD_BYTES, collect_uploads};

/// A workflow file that passed every rule of the workflow format.
#[derive(Debug)]
pub struct WorkflowFile {
    /// The file as the user named it.
    pub path: PathBuf,
    /// Its text, sent as it is.
    pub yaml: String,
    /// What it says.
    pub spec: WorkflowSpec,
}

impl WorkflowFile {
    /// Reads and checks `path`. Errors are one sentence naming the file, with the line and
    /// column of the problem when known: "pipeline.yml: line 3, column 5: job `train`
    /// requires `fetc`, which is not a job in this workflow".
    pub fn read(path: &Path) -> anyhow::Result<WorkflowFile> {
        let bytes = std::fs::read(path).map_err(|err| {
            anyhow::anyhow!("cannot read {}: {}", path.display(), describe_io(&err))
        })?;
        let yaml = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "cannot use {} as a workflow: it is not UTF-8 text (a workflow is YAML)",
                path.display()
            )
        })?;
        let spec = WorkflowSpec::parse(&yaml)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(WorkflowFile {
            path: path.to_path_buf(),
            yaml,
            spec,
        })
    }

    /// The directory its jobs' uploads are read from: the file's own.
    pub fn directory(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }

    /// Every file its jobs upload (see [`collect_files`]).
    pub fn files(&self) -> anyhow::Result<Vec<Upload>> {
        collect_files(
            self.spec
                .jobs
                .iter()
                .map(|job| (job.name.as_str(), job.uploads.as_slice())),
            self.directory(),
        )
    }

    /// How many attempts each job may have, by name.
    pub fn attempt_limits(&self) -> super::live::AttemptLimits {
        self.spec
            .jobs
            .iter()
            .map(|job| (job.name.clone(), job.retry.limit.saturating_add(1)))
            .collect()
    }
}

/// The uploads of `jobs` (each job's name and the paths it uploads), read relative to
/// `dir`: a file is one upload, a directory an upload followed by everything under it
/// (as `silo job run --upload` sends it). Each upload's path is the path as the workflow
/// writes it without a trailing `/`, and a directory's entries are under it (`data/` gives
/// `data`, `data/x`), which is how the server finds each job's files.
/// A path named by several jobs, or inside a directory another job uploads, is sent once.
///
/// Errors: a path that is absolute or leaves `dir` by `..` (a workflow sends only files
/// beside it); a path that cannot be read (named with the job); more than
/// [`MAX_UPLOAD_BYTES`] of content in all.
pub fn collect_files<'a>(
    jobs: impl IntoIterator<Item = (&'a str, &'a [String])>,
    dir: &Path,
) -> anyhow::Result<Vec<Upload>> {
    let mut files = Vec::new();
    let mut sent = BTreeSet::new();
    for (job, paths) in jobs {
        for written in paths {
            if !stays_inside(Path::new(written)) {
                anyhow::bail!(
                    "job {job}: cannot upload {written}: a workflow uploads only paths inside its file's directory (relative, without ..)"
                );
            }
            for upload in read_upload(&dir.join(written), written)
                .map_err(|err| anyhow::anyhow!("job {job}: {err}"))?
            {
                if sent.insert(upload.path.clone()) {
                    files.push(upload);
                }
            }
        }
    }
    let total: u64 = files.iter().map(|file| file.content.len() as u64).sum();
    if total > MAX_UPLOAD_BYTES {
        anyhow::bail!(
            "the workflow's uploads hold {total} bytes; at most {MAX_UPLOAD_BYTES} bytes (60 MiB) can be sent with a workflow"
        );
    }
    Ok(files)
}

/// Whether `path` is relative and never climbs above its start.
fn stays_inside(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The uploads for `path` (on disk) renamed to lie under `written` (in the workflow).
fn read_upload(path: &Path, written: &str) -> Result<Vec<Upload>, crate::uploads::UploadError> {
    let mut uploads = collect_uploads(&[path.to_path_buf()])?;
    // collect_uploads names the top entry by its base name; the workflow names it by the
    // path it wrote.
    let Some(base) = uploads.first().map(|top| top.path.clone()) else {
        return Ok(uploads);
    };
    let under = written.trim_end_matches('/');
    for upload in &mut uploads {
        if let Some(rest) = upload.path.strip_prefix(&base) {
            upload.path = format!("{under}{rest}");
        }
    }
    Ok(uploads)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn strings(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|path| path.to_string()).collect()
    }

    fn summary(uploads: &[Upload]) -> Vec<(String, bool, String)> {
        uploads
            .iter()
            .map(|u| {
                (
                    u.path.clone(),
                    u.directory,
                    String::from_utf8_lossy(&u.content).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn uploads_are_read_beside_the_file_and_named_as_the_workflow_writes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flow");
        write(&dir.join("data/train.csv"), "1,2\n");
        write(&dir.join("src/main.py"), "print(1)\n");
        write(&dir.join("src/lib/util.py"), "pass\n");
        let fetch = strings(&["data/train.csv", "src/"]);
        let train = strings(&["data/train.csv", "src/main.py"]);
        let files = collect_files(
            [("fetch", fetch.as_slice()), ("train", train.as_slice())],
            &dir,
        )
        .unwrap();
        let d = |p: &str| (p.to_owned(), true, String::new());
        let f = |p: &str, c: &str| (p.to_owned(), false, c.to_owned());
        assert_eq!(
            summary(&files),
            [
                f("data/train.csv", "1,2\n"),
                d("src"),
                d("src/lib"),
                f("src/lib/util.py", "pass\n"),
                f("src/main.py", "print(1)\n"),
            ]
        );
    }

    #[test]
    fn a_workflow_file_finds_its_uploads_in_its_own_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pipeline.yml");
        write(&tmp.path().join("input.txt"), "hello\n");
        fs::write(
            &path,
            "name: pipeline\njobs:\n  fetch:\n    command: cat\n    args: [input.txt]\n    uploads:\n      files: [input.txt]\n    retry:\n      limit: 2\n",
        )
        .unwrap();
        let file = WorkflowFile::read(&path).unwrap();
        assert_eq!(file.directory(), tmp.path());
        assert_eq!(
            summary(&file.files().unwrap()),
            [("input.txt".to_owned(), false, "hello\n".to_owned())]
        );
        assert_eq!(file.attempt_limits().get("fetch"), Some(&3));
        let bare = WorkflowFile {
            path: PathBuf::from("pipeline.yml"),
            ..file
        };
        assert_eq!(bare.directory(), Path::new("."));
    }

    #[test]
    fn a_bad_file_is_refused_with_its_name_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.yml");
        fs::write(
            &path,
            "name: bad\njobs:\n  train:\n    command: python\n    needs: [fetch]\n",
        )
        .unwrap();
        let err = WorkflowFile::read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line ", path.display())),
            "{err}"
        );
        assert!(err.contains("`fetch`"), "{err}");
        let err = WorkflowFile::read(&tmp.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("missing.yml: no such file or directory"),
            "{err}"
        );
    }

    #[test]
    fn uploads_outside_the_directory_or_missing_are_refused_naming_the_job() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../secret", "a/../../secret"] {
            let paths = strings(&[bad]);
            let err = collect_files([("fetch", paths.as_slice())], tmp.path())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("job fetch: cannot upload {bad}: ")),
                "{err}"
            );
        }
        let paths = strings(&["missing.csv"]);
        let err = collect_files([("train", paths.as_slice())], tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("job train: cannot upload "), "{err}");
        assert!(
            err.ends_with("missing.csv: no such file or directory"),
            "{err}"
        );
        write(&tmp.path().join("a/b/c"), "x");
        let inside = strings(&["a/b/../b/c", "./a/b/c"]);
        assert_eq!(
            collect_files([("ok", inside.as_slice())], tmp.path())
                .unwrap()
                .len(),
            2
        );
    }
}
