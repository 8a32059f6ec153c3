//! Walks of a directory tree that a job (or a runtime's build step) wrote: removing it,
//! lending it to a step's user and taking it back, without recursion and without
//! following links ([`walk`] with a [`Visit`] for each).
//!
//! `std::fs::remove_dir_all` recurses once per level and holds a descriptor per level. A job
//! can make a tree as deep as it likes with relative `mkdir` and `chdir` calls: at about
//! 15,000 levels the recursion overflows a 2 MiB thread stack, which aborts the whole
//! server (a stack overflow is not a panic that can be caught). [`remove_dir_all`] walks the
//! tree with one descriptor open at a time and keeps, for each level below the one it is
//! in, only that directory's name, its identity and the names of its subdirectories still
//! to remove; it goes back up through `..` and checks that it came back to the directory it
//! left.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Removes `path` and everything under it, as `std::fs::remove_dir_all` does, at any
/// depth: a symbolic link (or a file) at `path` is removed itself, a link in the tree is
/// never followed, and a missing `path` is a `NotFound` error.
pub(crate) fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory to remove", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    // The parent may be reached through links (a state directory that is one).
    let parent = openat(
        nix::fcntl::AT_FDCWD,
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let top = match open_dir(parent.as_fd(), name) {
        Ok(top) => top,
        // A file or a symbolic link: removed itself.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from);
        }
        Err(e) => return Err(e),
    };
    walk(top, &mut Remove)?;
    unlinkat(&parent, name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
}

/// What a [`walk`] does to a tree.
trait Visit {
    /// A directory, opened, before its entries are read.
    fn enter(&mut self, _dir: BorrowedFd<'_>) -> io::Result<()> {
        Ok(())
    }
    /// An entry of `dir` that is not a directory (it may be one by now: a swap).
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()>;
    /// The directory `name` in `parent`, after everything under it.
    fn leave(&mut self, _parent: BorrowedFd<'_>, _name: &OsStr) -> io::Result<()> {
        Ok(())
    }
}

/// One directory on the way down: its name in its parent, its identity, and its
/// subdirectories not yet walked.
struct Level {
    name: OsString,
    id: (u64, u64),
    pending: Vec<OsString>,
}

/// Walks the tree under the directory `top` (entered, never left): every directory is
/// entered before its entries are read, its other entries are visited, its subdirectories
/// walked, and then it is left. One descriptor is open at a time besides the listing.
fn walk(top: OwnedFd, visit: &mut impl Visit) -> io::Result<()> {
    visit.enter(top.as_fd())?;
    let mut stack = vec![Level {
        name: OsString::new(),
        id: identity(top.as_fd())?,
        pending: list(top.as_fd(), visit)?,
    }];
    let mut current = top;
    while let Some(level) = stack.last_mut() {
        if let Some(sub) = level.pending.pop() {
            match open_dir(current.as_fd(), &sub) {
                Ok(below) => {
                    visit.enter(below.as_fd())?;
                    let pending = list(below.as_fd(), visit)?;
                    stack.push(Level {
                        name: sub,
                        id: identity(below.as_fd())?,
                        pending,
                    });
                    current = below;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                // No longer a directory.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                    visit.entry(current.as_fd(), &sub)?;
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        // Everything under `current` is done: back up to its parent, and leave it there.
        let Some(done) = stack.pop() else { break };
        let Some(parent) = stack.last() else {
            return Ok(());
        };
        let up = open_dir(current.as_fd(), OsStr::new(".."))?;
        if identity(up.as_fd())? != parent.id {
            return Err(io::Error::other(
                "the tree was moved while it was being walked",
            ));
        }
        visit.leave(up.as_fd(), &done.name)?;
        current = up;
    }
    Ok(())
}

/// Visits every entry of the directory `dir` that is not a directory; returns the names of
/// its subdirectories.
fn list(dir: BorrowedFd<'_>, visit: &mut impl Visit) -> io::Result<Vec<OsString>> {
    let mut entries = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut subdirs = Vec::new();
    for entry in entries.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let is_dir = match entry.file_type() {
            Some(kind) => kind == Type::Directory,
            None => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => file_type(st.st_mode) == SFlag::S_IFDIR,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            },
        };
        if is_dir {
            subdirs.push(name.to_owned());
        } else {
            visit.entry(dir, name)?;
        }
    }
    Ok(subdirs)
}

fn file_type(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

/// Removes what it walks.
struct Remove;

impl Visit for Remove {
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).or_else(ignore_missing)
    }

    fn leave(&mut self, parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        unlinkat(parent, name, UnlinkatFlags::RemoveDir).or_else(ignore_missing)
    }
}

/// Chowns the tree at `path` to `uid:gid`, at any depth and without following a link (a
/// runtime's tree lent to a build step's user; the tree is root's alone then, see
/// [`secure_tree`]).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let top = open_dir(nix::fcntl::AT_FDCWD, path.as_os_str())?;
    walk(top, &mut Chown { uid, gid })
}

/// Chowns what it walks.
struct Chown {
    uid: u32,
    gid: u32,
}

impl Visit for Chown {
    fn enter(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fchown(dir, Some(self.uid.into()), Some(self.gid.into()))?;
        Ok(())
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        chown_entry(dir, name, self.uid, self.gid)
    }
}

/// The mode bits [`secure_tree`] takes away: setuid, setgid, and write for group and
/// others.
const INSECURE_BITS: u32 = 0o6022;

/// Makes the tree at `path` root's alone, at any depth and without following a link:
/// every entry is chowned to 0:0, and every directory and regular file loses its setuid,
/// setgid, group-write and other-write bits.
///
/// For a runtime's tree after a build step, whose processes are dead but whose open
/// descriptors may live on elsewhere (sent over a unix socket to another process): a
/// directory is made root's before its entries are read, so that from then on nobody else
/// can add, remove or swap them, and the walk never resolves a path the tree could
/// redirect. Afterwards only root can change the tree, and the server's later walks of it
/// by path (clean-up, manifest, export) cannot be raced.
pub(crate) fn secure_tree(path: &Path) -> io::Result<()> {
    let top = open_dir(nix::fcntl::AT_FDCWD, path.as_os_str())?;
    walk(top, &mut Secure)
}

/// Makes what it walks root's alone.
struct Secure;

impl Secure {
    /// Chowns the opened `fd` to root and takes its insecure mode bits away.
    fn own(fd: BorrowedFd<'_>) -> io::Result<()> {
        let st = fstat(fd)?;
        nix::unistd::fchown(fd, Some(0.into()), Some(0.into()))?;
        let mode = st.st_mode & 0o7777;
        if mode & INSECURE_BITS != 0 {
            nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & !INSECURE_BITS))?;
        }
        Ok(())
    }
}

impl Visit for Secure {
    fn enter(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        Secure::own(dir)
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if file_type(st.st_mode) == SFlag::S_IFREG {
            // Opened, so that its mode is set on what was checked.
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            if let Ok(file) = openat(dir, name, flags, Mode::empty())
                && file_type(fstat(file.as_fd())?.st_mode) == SFlag::S_IFREG
            {
                return Secure::own(file.as_fd());
            }
        }
        // A link, a special file (left to the clean-up, which removes them), or something
        // swapped in since the listing: chowned, never followed, its mode left.
        chown_entry(dir, name, 0, 0)
    }
}

/// Chowns the entry `name` of `dir` (a link itself, never what it points to); one gone
/// meanwhile is left.
fn chown_entry(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(uid.into()),
        Some(gid.into()),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .or_else(ignore_missing)
}

/// Opens the directory `name` in `at` without following a symbolic link.
fn open_dir(at: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(at, name, flags, Mode::empty()).map_err(io::Error::from)
}

/// A directory's device and inode.
fn identity(dir: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = fstat(dir)?;
    Ok((st.st_dev, st.st_ino))
}

fn ignore_missing(e: nix::errno::Errno) -> Result<(), io::Error> {
    match e {
        nix::errno::Errno::ENOENT => Ok(()),
        e => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::remove_dir_all;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_a_tree_of_files_links_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("kept"), "x").unwrap();
        let tree = dir.path().join("tree");
        for sub in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(tree.join(sub)).unwrap();
        }
        std::fs::write(tree.join("a/b/c/f"), "1").unwrap();
        std::fs::write(tree.join("e/g"), "2").unwrap();
        symlink(&outside, tree.join("a/link-to-outside")).unwrap();
        symlink("/nonexistent", tree.join("dangling")).unwrap();
        nix::unistd::mkfifo(&tree.join("a/d/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        remove_dir_all(&tree).unwrap();
        assert!(!tree.exists());
        // The link was removed, not followed.
        assert!(outside.join("kept").exists());
    }

    #[test]
    fn removes_a_tree_deeper_than_a_recursive_walk_survives() {
        // 40,000 levels: std's recursive remove_dir_all overflows a 2 MiB stack at about
        // 15,000. Made with relative mkdir and chdir, as a job would.
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("deep");
        let fd = make_deep(&tree, 40_000);
        nix::fcntl::openat(
            &fd,
            "leaf",
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
            nix::sys::stat::Mode::S_IRUSR,
        )
        .unwrap();
        drop(fd);
        // On a thread with a small stack, as a blocking task's would be.
        let removing = tree.clone();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || remove_dir_all(&removing))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!tree.exists());
    }

    #[test]
    fn a_secured_tree_is_roots_alone_and_nothing_outside_it_changes() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !root_or_skip("securing a tree") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::os::unix::fs::chown(&outside, Some(1234), Some(1234)).unwrap();
        let tree = dir.path().join("rootfs");
        std::fs::create_dir_all(tree.join("var/tmp/deep")).unwrap();
        std::fs::write(tree.join("var/tmp/deep/file"), "x").unwrap();
        std::fs::write(tree.join("suid"), "x").unwrap();
        symlink(&outside, tree.join("var/tmp/link")).unwrap();
        nix::unistd::mkfifo(
            &tree.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        for (path, mode) in [
            ("var/tmp", 0o1777),
            ("var/tmp/deep", 0o777),
            ("var/tmp/deep/file", 0o666),
            ("suid", 0o4755),
        ] {
            std::fs::set_permissions(tree.join(path), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        for path in [
            "",
            "var",
            "var/tmp",
            "var/tmp/deep",
            "var/tmp/deep/file",
            "suid",
            "fifo",
        ] {
            std::os::unix::fs::lchown(tree.join(path), Some(2000000123), Some(2000000123)).unwrap();
        }
        std::os::unix::fs::lchown(
            tree.join("var/tmp/link"),
            Some(2000000123),
            Some(2000000123),
        )
        .unwrap();

        super::secure_tree(&tree).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(tree.join(p)).unwrap();
        for (path, mode) in [
            ("", 0o755),
            ("var/tmp", 0o1755),
            ("var/tmp/deep", 0o755),
            ("var/tmp/deep/file", 0o644),
            ("suid", 0o755),
        ] {
            let m = meta(path);
            assert_eq!((m.uid(), m.gid()), (0, 0), "{path}");
            assert_eq!(m.mode() & 0o7777, mode, "{path}");
        }
        assert_eq!((meta("var/tmp/link").uid(), meta("fifo").uid()), (0, 0));
        // The link was not followed.
        let host = std::fs::metadata(&outside).unwrap();
        assert_eq!((host.uid(), host.mode() & 0o7777), (1234, 0o666));
    }

    #[test]
    fn a_tree_is_lent_at_any_depth_without_following_links() {
        use std::os::unix::fs::MetadataExt;
        if !root_or_skip("lending a tree") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        let tree = dir.path().join("rootfs");
        // Deeper than a path may name.
        let deepest = make_deep(&tree, 3000);
        symlink(&outside, tree.join("link")).unwrap();
        super::chown_tree(&tree, 2000000123, 2000000124).unwrap();
        let top = std::fs::metadata(&tree).unwrap();
        assert_eq!((top.uid(), top.gid()), (2000000123, 2000000124));
        let link = std::fs::symlink_metadata(tree.join("link")).unwrap();
        assert_eq!(link.uid(), 2000000123);
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        assert_eq!(deepest.metadata().unwrap().uid(), 2000000123);
    }

    /// Makes `tree` with a chain of `depth` directories `d` in it, a level at a time with
    /// relative calls (as a job would); returns the deepest one, open.
    fn make_deep(tree: &std::path::Path, depth: usize) -> std::fs::File {
        std::fs::create_dir(tree).unwrap();
        let mut fd = std::fs::File::open(tree).unwrap();
        for _ in 0..depth {
            nix::sys::stat::mkdirat(&fd, "d", nix::sys::stat::Mode::S_IRWXU).unwrap();
            let below = nix::fcntl::openat(
                &fd,
                "d",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
            fd = std::fs::File::from(below);
        }
        fd
    }

    /// Whether the test runs as root (chown needs it); a skip says so, and fails in CI.
    fn root_or_skip(what: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{what} needs root"
        );
        eprintln!("SKIPPED: {what} needs root (chown)");
        false
    }

    #[test]
    fn a_link_or_a_file_is_removed_itself_and_a_missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("kept"), "x").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        remove_dir_all(&link).unwrap();
        assert!(!link.exists() && target.join("kept").exists());

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        remove_dir_all(&file).unwrap();
        assert!(!file.exists());

        let missing = remove_dir_all(dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
