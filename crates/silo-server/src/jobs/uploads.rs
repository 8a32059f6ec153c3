//! Writing a job's uploaded files into its fresh work directory.
//!
//! Paths were checked by [`super::validate`]; writing never follows a symlink (the
//! directory is new and only this code creates entries in it, and every open uses
//! `O_NOFOLLOW`), so nothing lands outside the work directory.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use silo_proto::v1::Upload;

/// Writes every upload below `work_dir`; returns the paths written, normalised.
pub fn write_uploads(work_dir: &Path, uploads: &[Upload]) -> io::Result<Vec<String>> {
    let mut written = Vec::with_capacity(uploads.len());
    for u in uploads {
        let rel: PathBuf = Path::new(&u.path)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let target = work_dir.join(&rel);
        let mode = if u.mode == 0 {
            if u.directory { 0o755 } else { 0o644 }
        } else {
            u.mode & 0o7777 & !0o6000
        };
        if let Some(parent) = target.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        if u.directory {
            match DirBuilder::new().mode(mode).create(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => return Err(e),
            }
        } else {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)?;
            f.write_all(&u.content)?;
        }
        written.push(rel.to_string_lossy().into_owned());
    }
    Ok(written)
}

/// Gives `dir` and everything below it to `uid`:`gid`, never following a symlink.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_directories_land_inside_the_work_dir_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ups = vec![
            Upload {
                path: "d".into(),
                directory: true,
                ..Default::default()
            },
            Upload {
                path: "d/run.sh".into(),
                content: b"#!/bin/sh\necho hi\n".to_vec(),
                mode: 0o4755,
                directory: false,
            },
            Upload {
                path: "./x/y.txt".into(),
                content: b"y".to_vec(),
                ..Default::default()
            },
        ];
        let written = write_uploads(dir.path(), &ups).unwrap();
        assert_eq!(written, ["d", "d/run.sh", "x/y.txt"]);
        let meta = std::fs::metadata(dir.path().join("d/run.sh")).unwrap();
        // setuid is stripped.
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::fs::read(dir.path().join("x/y.txt")).unwrap(), b"y");
    }
}
