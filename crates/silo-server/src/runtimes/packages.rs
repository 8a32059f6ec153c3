//! The packages in a runtime's tree, with their versions, read from the package managers'
//! own records: dpkg's status file, pip's `*.dist-info` directories, npm's package.json.

//!
//! The tree was written by the runtime's build steps (pip and npm packages included) or
//! came in a signed archive: a record may be a symbolic link, absolute or full of `..`.
//! Every path here is resolved inside the tree, as the runtime's jobs see it
//! (`openat2(RESOLVE_IN_ROOT)`), never on the host; only regular files are read, and at
//! most [`MAX_RECORD`] bytes of each.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// The most read of one record (dpkg's status file of a full Debian system is a few MB).
const MAX_RECORD: u64 = 32 << 20;

/// `dpkg:NAME=VERSION`, `pip:NAME=VERSION`, `npm:NAME=VERSION` for each package installed
/// in `rootfs`, each group sorted. Unreadable records are left out: this describes the
/// tree, it does not check it (the manifest does).
pub fn installed(rootfs: &Path) -> Vec<String> {
    let Ok(root) = nix::fcntl::open(
        rootfs,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let root = root.as_fd();
    let mut packages = dpkg(root);
    packages.extend(pip(root));
    packages.extend(npm(root));
    packages
}

/// Opens `path` in the tree `root` with `flags`, resolving every link inside the tree.
fn open_in(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> Option<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, path, how).ok()
}

/// The text of the regular file `path` in the tree, if it is one of at most
/// [`MAX_RECORD`] bytes. Opened without blocking, so that a FIFO there cannot hold the
/// reader.
fn read_in(root: BorrowedFd<'_>, path: &Path) -> Option<String> {
    let fd = open_in(root, path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_RECORD).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The names in the directory `path` of the tree (none when it is not one).
fn list_in(root: BorrowedFd<'_>, path: &Path) -> Vec<OsString> {
    let Some(fd) = open_in(root, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return Vec::new();
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
        return Vec::new();
    };
    dir.iter()
        .flatten()
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|name| name != "." && name != "..")
        .collect()
}

fn dpkg(root: BorrowedFd<'_>) -> Vec<String> {
    let Some(status) = read_in(root, Path::new("var/lib/dpkg/status")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            };
            let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
            if !installed {
                return None;
            }
            Some(format!("dpkg:{}={}", field("Package")?, field("Version")?))
        })
        .collect();
    found.sort();
    found
}

fn pip(root: BorrowedFd<'_>) -> Vec<String> {
    let mut found = Vec::new();
    let libs = Path::new("usr/local/lib");
    for lib in list_in(root, libs) {
        if !lib.to_string_lossy().starts_with("python3") {
            continue;
        }
        for site in ["dist-packages", "site-packages"] {
            for entry in list_in(root, &libs.join(&lib).join(site)) {
                let name = entry.to_string_lossy();
                if let Some((package, version)) = name
                    .strip_suffix(".dist-info")
                    .and_then(|stem| stem.rsplit_once('-'))
                {
                    found.push(format!("pip:{package}={version}"));
                }
            }
        }
    }
    found.sort();
    found
}

fn npm(root: BorrowedFd<'_>) -> Vec<String> {
    let mut found = Vec::new();
    let modules = Path::new("usr/local/lib/node_modules");
    let mut dirs = Vec::new();
    for name in list_in(root, modules) {
        let text = name.to_string_lossy();
        if text.starts_with('@') {
            let scope = modules.join(&name);
            dirs.extend(list_in(root, &scope).into_iter().map(|e| scope.join(e)));
        } else if !text.starts_with('.') {
            dirs.push(modules.join(&name));
        }
    }
    for dir in dirs {
        let Some(text) = read_in(root, &dir.join("package.json")) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let (Some(name), Some(version)) = (json["name"].as_str(), json["version"].as_str()) {
            found.push(format!("npm:{name}={version}"));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_from_dpkg_pip_and_npm_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            root.join("var/lib/dpkg/status"),
            "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        )
        .unwrap();
        std::fs::create_dir_all(
            root.join("usr/local/lib/python3.11/dist-packages/numpy-1.26.4.dist-info"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/local/lib/node_modules/left-pad")).unwrap();
        std::fs::write(
            root.join("usr/local/lib/node_modules/left-pad/package.json"),
            r#"{"name": "left-pad", "version": "1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(
            installed(root),
            [
                "dpkg:python3=3.11.2-1",
                "pip:numpy=1.26.4",
                "npm:left-pad=1.3.0"
            ]
        );
    }

    #[test]
    fn links_in_the_tree_resolve_inside_it_and_only_regular_files_are_read() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        // A host directory with records of its own, which the tree's links point at.
        let host = dir.path().join("host");
        std::fs::create_dir_all(host.join("dist-packages/secret-1.0.dist-info")).unwrap();
        std::fs::write(
            host.join("status"),
            "Package: hostpkg\nStatus: install ok installed\nVersion: 9\n",
        )
        .unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(root.join("usr/local/lib")).unwrap();
        // dpkg's status: an absolute link to a host file.
        symlink(host.join("status"), root.join("var/lib/dpkg/status")).unwrap();
        // pip: a link to a host directory, by absolute path and by `..`.
        symlink(&host, root.join("usr/local/lib/python3.11")).unwrap();
        let up = "../".repeat(root.components().count() + 4);
        symlink(
            format!("{up}{}", host.display()),
            root.join("usr/local/lib/python3.12"),
        )
        .unwrap();
        // npm: package.json a link to /dev/zero (endless), another a FIFO (blocks a reader).
        for (name, how) in [("zero", "dev"), ("fifo", "fifo")] {
            let package = root.join("usr/local/lib/node_modules").join(name);
            std::fs::create_dir_all(&package).unwrap();
            match how {
                "dev" => symlink("/dev/zero", package.join("package.json")).unwrap(),
                _ => nix::unistd::mkfifo(
                    &package.join("package.json"),
                    nix::sys::stat::Mode::S_IRWXU,
                )
                .unwrap(),
            }
        }
        assert_eq!(installed(&root), Vec::<String>::new());

        // The same records inside the tree, reached by links that stay in it, are read.
        std::fs::remove_file(root.join("var/lib/dpkg/status")).unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::fs::write(
            root.join("opt/status"),
            "Package: mine\nStatus: install ok installed\nVersion: 1\n",
        )
        .unwrap();
        symlink("/opt/status", root.join("var/lib/dpkg/status")).unwrap();
        assert_eq!(installed(&root), ["dpkg:mine=1"]);
    }
}
