//! `--upload PATH`: files and directory trees read from the client's disk and sent with
//! the job, placed in its work directory under their base names.
//!
//! Inside an uploaded directory, a symbolic link is followed only when it is relative and
//! its target stays inside that directory; it is then sent as the file or directory it
//! points to. A link that is absolute or leads out of the directory is refused, so an
//! upload can never carry files the user did not mean to send.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use silo_proto::v1::Upload;

/// The most bytes of file content one job may upload: the request must fit in one gRPC
/// message of 64 MiB with room for the rest of it.
pub const MAX_UPLOAD_BYTES: u64 = 60 << 20;

/// Why an upload cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A file or directory could not be read.
    #[error("cannot upload {}: {}", path.display(), crate::connect::describe_io(error))]
    Read {
        /// The path.
        path: PathBuf,
        /// Why (described in the message).
        error: io::Error,
    },
    /// The path has no final component (such as `/`).
    #[error("cannot upload {}: it has no name to give it in the work directory", path.display())]
    NoName {
        /// The path.
        path: PathBuf,
    },
    /// A name is not valid UTF-8, which the API requires.
    #[error("cannot upload {}: the name is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A symbolic link with an absolute target.
    #[error(
        "cannot upload {}: it is a symbolic link to the absolute path {}; only relative links that stay inside the uploaded directory are followed",
        link.display(),
        target.display()
    )]
    AbsoluteSymlink {
        /// The link.
        link: PathBuf,
        /// Its target as written.
        target: PathBuf,
    },
    /// A symbolic link that leads out of the uploaded directory.
    #[error(
        "cannot upload {}: it is a symbolic link to {}, outside the uploaded directory {}",
        link.display(),
        target.display(),
        root.display()
    )]
    EscapingSymlink {
        /// The link.
        link: PathBuf,
        /// Its target as written.
        target: PathBuf,
        /// The uploaded directory.
        root: PathBuf,
    },
    /// A symbolic link to a directory that contains it.
    #[error("cannot upload {}: it is a symbolic link to a directory that contains it", link.display())]
    SymlinkLoop {
        /// The link.
        link: PathBuf,
    },
    /// Not a regular file, directory or symbolic link (a socket, FIFO or device).
    #[error("cannot upload {}: only regular files and directories can be uploaded", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Two uploads would land on the same name.
    #[error(
        "two uploads are named {name:?}: each upload lands in the work directory under its base name"
    )]
    Duplicate {
        /// The shared name.
        name: String,
    },
    /// The files are too big to send with the job.
    #[error("the uploads hold {total} bytes; at most {max} bytes (60 MiB) can be sent with a job")]
    TooLarge {
        /// Total bytes of file content.
        total: u64,
        /// [`MAX_UPLOAD_BYTES`].
        max: u64,
    },
}

/// Reads every path into uploads: a file becomes one upload named after its base name; a
/// directory becomes a directory upload followed by everything under it, parents before
/// children, each directory's entries in name order, with `/`-separated relative paths.
///
/// Guarantees: no returned path is absolute or contains `..`; every link followed stayed
/// inside its uploaded directory; top-level names are unique; file content totals at most
/// [`MAX_UPLOAD_BYTES`]. Permission bits are kept (0o777 mask).
pub fn collect_uploads(paths: &[PathBuf]) -> Result<Vec<Upload>, UploadError> {
    let mut uploads = Vec::new();
    let mut names = BTreeSet::new();
    for path in paths {
        let read_err = |error| UploadError::Read {
            path: path.clone(),
            error,
        };
        let metadata = fs::metadata(path).map_err(read_err)?;
        let name = upload_name(path)?;
        if !names.insert(name.clone()) {
            return Err(UploadError::Duplicate { name });
        }
        if metadata.is_dir() {
            let root = fs::canonicalize(path).map_err(read_err)?;
            uploads.push(directory(&name, &metadata));
            let mut tree = Tree {
                root: &root,
                shown_root: path,
                ancestors: vec![root.clone()],
                uploads: &mut uploads,
            };
            tree.walk(&root, path, &name)?;
        } else if metadata.is_file() {
            uploads.push(file(path, &name, &metadata)?);
        } else {
            return Err(UploadError::NotAFile { path: path.clone() });
        }
    }
    let total: u64 = uploads
        .iter()
        .map(|upload| upload.content.len() as u64)
        .sum();
    if total > MAX_UPLOAD_BYTES {
        return Err(UploadError::TooLarge {
            total,
            max: MAX_UPLOAD_BYTES,
        });
    }
    Ok(uploads)
}

/// The name an upload gets in the work directory: the path's base name (of the resolved
/// path for `.` and `..`).
fn upload_name(path: &Path) -> Result<String, UploadError> {
    let resolved;
    let name = match path.file_name() {
        Some(name) => name,
        None => {
            resolved = fs::canonicalize(path).map_err(|error| UploadError::Read {
                path: path.to_path_buf(),
                error,
            })?;
            resolved.file_name().ok_or_else(|| UploadError::NoName {
                path: path.to_path_buf(),
            })?
        }
    };
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| UploadError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

/// One uploaded directory tree being walked.
struct Tree<'a> {
    /// The uploaded directory, canonical.
    root: &'a Path,
    /// The uploaded directory as the user named it, for messages.
    shown_root: &'a Path,
    /// Canonical directories from the root down to the one being read, to refuse loops.
    ancestors: Vec<PathBuf>,
    uploads: &'a mut Vec<Upload>,
}

impl Tree<'_> {
    /// Adds everything in `dir` (canonical; `shown` is how the user would name it), whose
    /// upload path is `relative`.
    fn walk(&mut self, dir: &Path, shown: &Path, relative: &str) -> Result<(), UploadError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| UploadError::Read { path, error }
        };
        let mut entries = fs::read_dir(dir)
            .map_err(read_err(shown))?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err(shown))?;
        entries.sort();
        for file_name in entries {
            let shown_child = shown.join(&file_name);
            let name = file_name.to_str().ok_or_else(|| UploadError::NotUtf8 {
                path: shown_child.clone(),
            })?;
            let child_relative = format!("{relative}/{name}");
            let mut child = dir.join(name);
            let mut metadata = fs::symlink_metadata(&child).map_err(read_err(&shown_child))?;
            if metadata.file_type().is_symlink() {
                child = self.follow(&child, &shown_child)?;
                metadata = fs::metadata(&child).map_err(read_err(&shown_child))?;
            }
            if metadata.is_dir() {
                if self.ancestors.contains(&child) {
                    return Err(UploadError::SymlinkLoop { link: shown_child });
                }
                self.uploads.push(directory(&child_relative, &metadata));
                self.ancestors.push(child.clone());
                self.walk(&child, &shown_child, &child_relative)?;
                self.ancestors.pop();
            } else if metadata.is_file() {
                self.uploads
                    .push(
                        file(&child, &child_relative, &metadata).map_err(|err| match err {
                            UploadError::Read { error, .. } => UploadError::Read {
                                path: shown_child.clone(),
                                error,
                            },
                            other => other,
                        })?,
                    );
            } else {
                return Err(UploadError::NotAFile { path: shown_child });
            }
        }
        Ok(())
    }

    /// The canonical target of the link `link`, if it is relative and stays inside the
    /// root.
    fn follow(&self, link: &Path, shown: &Path) -> Result<PathBuf, UploadError> {
        let read_err = |error| UploadError::Read {
            path: shown.to_path_buf(),
            error,
        };
        let target = fs::read_link(link).map_err(read_err)?;
        if target.is_absolute() {
            return Err(UploadError::AbsoluteSymlink {
                link: shown.to_path_buf(),
                target,
            });
        }
        let escaping = || UploadError::EscapingSymlink {
            link: shown.to_path_buf(),
            target: target.clone(),
            root: self.shown_root.to_path_buf(),
        };
        match fs::canonicalize(link) {
            Ok(real) if real.starts_with(self.root) => Ok(real),
            Ok(_) => Err(escaping()),
            // A dangling link: say where it leads when that is outside, else that it
            // leads nowhere.
            Err(error) => {
                if leaves_lexically(link, &target, self.root) {
                    Err(escaping())
                } else {
                    Err(read_err(error))
                }
            }
        }
    }
}

/// Whether `target`, read relative to `link`'s directory, leaves `root` by its `..`
/// components alone.
fn leaves_lexically(link: &Path, target: &Path, root: &Path) -> bool {
    use std::path::Component;
    let Some(start) = link.parent() else {
        return true;
    };
    let mut depth = start
        .strip_prefix(root)
        .map(|inside| inside.components().count() as isize)
        .unwrap_or(-1);
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn directory(relative: &str, metadata: &Metadata) -> Upload {
    Upload {
        path: relative.to_owned(),
        content: Vec::new(),
        mode: metadata.permissions().mode() & 0o777,
        directory: true,
    }
}

fn file(path: &Path, relative: &str, metadata: &Metadata) -> Result<Upload, UploadError> {
    let content = fs::read(path).map_err(|error| UploadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(Upload {
        path: relative.to_owned(),
        content,
        mode: metadata.permissions().mode() & 0o777,
        directory: false,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn write(path: &Path, content: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn summary(uploads: &[Upload]) -> Vec<(String, bool, String, u32)> {
        uploads
            .iter()
            .map(|u| {
                (
                    u.path.clone(),
                    u.directory,
                    String::from_utf8_lossy(&u.content).into_owned(),
                    u.mode,
                )
            })
            .collect()
    }

    #[test]
    fn a_directory_is_sent_recursively_with_inside_links_followed_as_files() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        write(&project.join("run.sh"), "#!/bin/sh\n", 0o755);
        write(&project.join("src/a.txt"), "a", 0o644);
        write(&project.join("src/deep/b.txt"), "b", 0o600);
        symlink("src/a.txt", project.join("link-to-a")).unwrap();
        symlink("../../src", project.join("src/deep/up")).unwrap();
        fs::set_permissions(&project, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(project.join("src"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(project.join("src/deep"), fs::Permissions::from_mode(0o700)).unwrap();

        let err = collect_uploads(std::slice::from_ref(&project)).unwrap_err();
        assert!(matches!(err, UploadError::SymlinkLoop { .. }), "{err}");
        fs::remove_file(project.join("src/deep/up")).unwrap();

        let uploads = collect_uploads(&[project]).unwrap();
        let d = |p: &str, mode| (p.to_owned(), true, String::new(), mode);
        let f = |p: &str, c: &str, mode| (p.to_owned(), false, c.to_owned(), mode);
        assert_eq!(
            summary(&uploads),
            vec![
                d("project", 0o755),
                f("project/link-to-a", "a", 0o644),
                f("project/run.sh", "#!/bin/sh\n", 0o755),
                d("project/src", 0o755),
                f("project/src/a.txt", "a", 0o644),
                d("project/src/deep", 0o700),
                f("project/src/deep/b.txt", "b", 0o600),
            ]
        );
    }

    #[test]
    fn a_single_file_is_sent_under_its_base_name() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("sub/data.csv");
        write(&data, "1,2\n", 0o640);
        let uploads = collect_uploads(&[data]).unwrap();
        assert_eq!(
            summary(&uploads),
            vec![("data.csv".to_owned(), false, "1,2\n".to_owned(), 0o640)]
        );
    }

    #[test]
    fn a_link_leading_out_of_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        write(&tmp.path().join("secret"), "s", 0o600);
        write(&dir.join("ok.txt"), "ok", 0o644);
        symlink("../secret", dir.join("escape")).unwrap();
        let err = collect_uploads(&[dir]).unwrap_err();
        assert!(matches!(err, UploadError::EscapingSymlink { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("escape") && text.contains("outside the uploaded directory"),
            "{text}"
        );
    }

    #[test]
    fn a_dangling_link_leading_out_is_refused_as_escaping() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        fs::create_dir(&dir).unwrap();
        symlink("../../nowhere", dir.join("escape")).unwrap();
        let err = collect_uploads(&[dir]).unwrap_err();
        assert!(matches!(err, UploadError::EscapingSymlink { .. }), "{err}");
    }

    #[test]
    fn an_absolute_link_is_refused_even_when_it_points_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        write(&dir.join("ok.txt"), "ok", 0o644);
        symlink(dir.join("ok.txt"), dir.join("abs")).unwrap();
        let err = collect_uploads(&[dir]).unwrap_err();
        assert!(matches!(err, UploadError::AbsoluteSymlink { .. }), "{err}");
        assert!(err.to_string().contains("absolute path"), "{err}");
    }

    #[test]
    fn missing_paths_duplicate_names_and_rootless_paths_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = collect_uploads(&[tmp.path().join("missing")]).unwrap_err();
        assert!(
            err.to_string().contains("no such file or directory"),
            "{err}"
        );

        write(&tmp.path().join("a/x"), "1", 0o644);
        write(&tmp.path().join("b/x"), "2", 0o644);
        let err = collect_uploads(&[tmp.path().join("a/x"), tmp.path().join("b/x")]).unwrap_err();
        assert!(matches!(err, UploadError::Duplicate { .. }), "{err}");

        let err = collect_uploads(&[PathBuf::from("/")]).unwrap_err();
        assert!(matches!(err, UploadError::NoName { .. }), "{err}");
    }

    #[test]
    fn returned_paths_never_escape_the_work_directory() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("d/e/f"), "x", 0o644);
        let dot_dot = tmp.path().join("d/e/..");
        let uploads = collect_uploads(&[dot_dot]).unwrap();
        for upload in &uploads {
            assert!(!upload.path.starts_with('/'), "{}", upload.path);
            assert!(
                !upload.path.split('/').any(|part| part == ".."),
                "{}",
                upload.path
            );
        }
        assert_eq!(uploads[0].path, "d");
    }
}
