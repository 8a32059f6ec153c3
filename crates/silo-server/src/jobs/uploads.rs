//! Writing a job's uploaded files into its fresh work directory.
//!
//! [`super::validate`] has checked the uploads: each lands on its own entry below the work
//! directory, and none goes through an uploaded file. Every entry is made relative to an
//! open descriptor of its parent, one name at a time, and no open follows a symbolic link
//! (the directory is new and only this code creates entries in it): nothing lands outside
//! the work directory, and how long the work directory's own host path is never matters.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{Gid, Uid, fchown};
use silo_proto::v1::Upload;

/// The mode of a directory that an upload's path goes through but no upload names.
const PARENT_MODE: u32 = 0o755;

/// Where an upload lands, relative to the work directory: its path without `.` and
/// repeated or trailing slashes.
pub fn work_path(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Writes every upload below `work_dir` and gives the work directory and everything written
/// to `owner` (uid, gid) when set; returns the paths written, as [`work_path`] gives them.
pub fn write_uploads(
    work_dir: &Path,
    uploads: &[Upload],
    owner: Option<(u32, u32)>,
) -> io::Result<Vec<String>> {
    write_uploads_at(open_work_dir(work_dir)?, uploads, owner)
}

/// The work directory `work_dir`, opened for [`write_uploads_at`] (never through a
/// symbolic link).
pub fn open_work_dir(work_dir: &Path) -> io::Result<OwnedFd> {
    open_dir(AT_FDCWD, work_dir.as_os_str())
}

/// The root directory of the filesystem whose detached mount is `mount`, opened for
/// [`write_uploads_at`].
pub fn open_root_of(mount: &OwnedFd) -> io::Result<OwnedFd> {
    open_dir(mount, std::ffi::OsStr::new("."))
}

/// [`write_uploads`] into the open directory `root`.
pub fn write_uploads_at(
    root: OwnedFd,
    uploads: &[Upload],
    owner: Option<(u32, u32)>,
) -> io::Result<Vec<String>> {
    let tree = WorkTree { root, owner };
    tree.hand_over(&tree.root)?;
    // Uploads come parents first, so the last parent is usually the next one's too.
    let mut parent_path = PathBuf::new();
    let mut parent = tree.root.try_clone()?;
    let mut written = Vec::with_capacity(uploads.len());
    for u in uploads {
        let rel = work_path(&u.path);
        let Some(name) = rel.file_name() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upload path {:?} names the work directory itself", u.path),
            ));
        };
        let dir = rel.parent().unwrap_or(Path::new(""));
        if dir != parent_path {
            parent = tree.make_dirs(dir)?;
            parent_path = dir.to_path_buf();
        }
        let mode = if u.mode == 0 {
            if u.directory { 0o755 } else { 0o644 }
        } else {
            u.mode & 0o7777 & !0o6000
        };
        if u.directory {
            tree.make_dir(&parent, name, mode)?;
        } else {
            let file = openat(
                &parent,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )?;
            tree.hand_over(&file)?;
            File::from(file).write_all(&u.content)?;
        }
        written.push(rel.to_string_lossy().into_owned());
    }
    Ok(written)
}

/// The work directory being filled, and who its entries are for.
struct WorkTree {
    root: OwnedFd,
    owner: Option<(u32, u32)>,
}

impl WorkTree {
    /// Opens the directory at `rel` below the root, making each missing one on the way.
    fn make_dirs(&self, rel: &Path) -> io::Result<OwnedFd> {
        let mut dir = self.root.try_clone()?;
        for name in rel.iter() {
            dir = self.make_dir(&dir, name, PARENT_MODE)?;
        }
        Ok(dir)
    }

    /// Opens directory `name` in `dir`, first making it with `mode` when it is missing.
    fn make_dir(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<OwnedFd> {
        let made = match mkdirat(dir, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(e.into()),
        };
        let opened = open_dir(dir, name)?;
        if made {
            self.hand_over(&opened)?;
        }
        Ok(opened)
    }

    /// Gives an entry made here to the job's owner.
    fn hand_over(&self, entry: &OwnedFd) -> io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            fchown(entry, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    }
}

/// Opens the directory `name` in `dir`, never through a symbolic link.
fn open_dir(dir: impl std::os::fd::AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn file(path: &str, content: &[u8]) -> Upload {
        Upload {
            path: path.into(),
            content: content.to_vec(),
            ..Default::default()
        }
    }

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
            file("./x/y.txt", b"y"),
            file("x//z.txt/", b"z"),
        ];
        let written = write_uploads(dir.path(), &ups, None).unwrap();
        assert_eq!(written, ["d", "d/run.sh", "x/y.txt", "x/z.txt"]);
        let meta = std::fs::metadata(dir.path().join("d/run.sh")).unwrap();
        // setuid is stripped.
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::fs::read(dir.path().join("x/y.txt")).unwrap(), b"y");
        assert_eq!(std::fs::read(dir.path().join("x/z.txt")).unwrap(), b"z");
    }

    #[test]
    fn a_directory_uploaded_after_its_contents_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ups = vec![
            file("d/e/f", b"f"),
            Upload {
                path: "d".into(),
                directory: true,
                ..Default::default()
            },
        ];
        assert_eq!(
            write_uploads(dir.path(), &ups, None).unwrap(),
            ["d/e/f", "d"]
        );
        assert_eq!(std::fs::read(dir.path().join("d/e/f")).unwrap(), b"f");
    }

    #[test]
    fn uploads_deeper_than_path_max_below_the_host_path_are_written() {
        // 16 names of 255 bytes: 4095 bytes, which with the work directory's host path
        // is longer than PATH_MAX; each name is made relative to its parent.
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(255);
        let deep = [name.as_str(); 16].join("/");
        assert!(dir.path().join(&deep).as_os_str().len() > 4096);
        let written = write_uploads(dir.path(), &[file(&deep, b"deep")], None).unwrap();
        assert_eq!(written, [deep]);
        let mut at = open_dir(AT_FDCWD, dir.path().as_os_str()).unwrap();
        for _ in 0..15 {
            at = open_dir(&at, OsStr::new(&name)).unwrap();
        }
        let leaf = openat(
            &at,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(std::io::read_to_string(File::from(leaf)).unwrap(), "deep");
    }

    #[test]
    fn the_work_dir_and_everything_written_belong_to_the_owner() {
        // Giving files away needs root; unprivileged, the owner is oneself.
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap();
        let owner = if me.uid() == 0 {
            (4242, 4343)
        } else {
            (me.uid(), me.gid())
        };
        let ups = vec![
            file("a/b/c.txt", b"c"),
            Upload {
                path: "e".into(),
                directory: true,
                ..Default::default()
            },
        ];
        write_uploads(dir.path(), &ups, Some(owner)).unwrap();
        for rel in ["", "a", "a/b", "a/b/c.txt", "e"] {
            let meta = std::fs::symlink_metadata(dir.path().join(rel)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), owner, "{rel:?}");
        }
    }

    #[test]
    fn a_symbolic_link_in_the_work_dir_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(write_uploads(dir.path(), &[file("link/x", b"x")], None).is_err());
        assert!(write_uploads(dir.path(), &[file("link", b"x")], None).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
