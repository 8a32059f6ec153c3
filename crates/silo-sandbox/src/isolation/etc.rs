//! The minimal /etc of a [`crate::Rootfs::HostView`]: generated identity files, plus the few
//! host files programs need to resolve names and load libraries.
//!
//! Everything is a copy inside the job's root tmpfs (read-only once the root is sealed), so
//! the job sees no other host file under /etc and nothing it reads here can change under it.

use std::fs;
use std::path::Path;

use super::mounts::{mkdir, write_file};
use super::rootfs::copy_symlink;
use super::{errno_of, fail};
use crate::Isolation;
use crate::protocol::InitError;

/// The name of the job's user and group in the generated passwd and group files.
pub(super) const JOB_USER: &str = "silo";

/// The uid and gid of `nobody` / `nogroup`.
const NOBODY: u32 = 65534;

/// Host files copied as they are, when present: name resolution and the dynamic loader's
/// cache.
const HOST_FILES: &[&str] = &[
    "resolv.conf",
    "services",
    "protocols",
    "ld.so.cache",
    "ld.so.conf",
];

/// Host directories copied one level deep, when present: the loader's extra paths and
/// Debian's alternatives (symlinks such as /etc/alternatives/awk that /usr/bin/awk goes
/// through).
const HOST_DIRS: &[&str] = &["ld.so.conf.d", "alternatives"];

const NSSWITCH: &str = "\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
";

/// Writes the job-independent part of /etc under `root`: nsswitch, mtab, localtime, and
/// the host's resolver and loader files.
pub(super) fn generate_common(root: &Path) -> Result<(), InitError> {
    let etc = root.join("etc");
    mkdir("write_etc", &etc, 0o755)?;
    write_file(
        "write_etc",
        &etc.join("nsswitch.conf"),
        NSSWITCH.as_bytes(),
        0o644,
    )?;
    super::mounts::symlink(
        "write_etc",
        Path::new("/proc/self/mounts"),
        &etc.join("mtab"),
    )?;
    copy_localtime(&etc)?;
    for name in HOST_FILES {
        copy_if_present(&Path::new("/etc").join(name), &etc.join(name))?;
    }
    // Directories are shown read-only rather than copied: /etc/alternatives alone holds
    // hundreds of symlinks, and copying them cost milliseconds per job.
    for dir in HOST_DIRS {
        let host = Path::new("/etc").join(dir);
        if !host.is_dir() {
            continue;
        }
        let target = etc.join(dir);
        mkdir("write_etc", &target, 0o755)?;
        super::mounts::bind("write_etc", &host, &target, super::rootfs::READ_ONLY)?;
    }
    Ok(())
}

/// Writes the job's own files into the generated /etc: passwd and group with its user,
/// hosts and hostname with its hostname.
pub(super) fn generate_for_job(root: &Path, iso: &Isolation) -> Result<(), InitError> {
    let etc = root.join("etc");
    write_file(
        "write_etc",
        &etc.join("passwd"),
        passwd(iso.uid, iso.gid).as_bytes(),
        0o644,
    )?;
    write_file(
        "write_etc",
        &etc.join("group"),
        group(iso.gid).as_bytes(),
        0o644,
    )?;
    write_file(
        "write_etc",
        &etc.join("hosts"),
        hosts(&iso.hostname).as_bytes(),
        0o644,
    )?;
    write_file(
        "write_etc",
        &etc.join("hostname"),
        format!("{}\n", iso.hostname).as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// The files of a runtime's /etc that belong to the job, not to the runtime, with
/// resolv.conf (the host's resolver configuration, the same for every job) last.
const RUNTIME_JOB_FILES: &[&str] = &["passwd", "group", "hosts", "hostname", "resolv.conf"];

/// The file in the root's tmpfs that is bound over the runtime's /etc/`name` until the job
/// fills it.
fn runtime_file_source(root: &Path, name: &str) -> std::path::PathBuf {
    root.join(format!(".silo-etc-{name}"))
}

/// Covers a runtime's /etc/passwd, group, hosts, hostname and resolv.conf, each with a file
/// of the root's tmpfs bound read-only over it; the job's contents are written into them
/// by [`fill_runtime_files`] at its start (no mount then: the launch pays only for writes).
/// resolv.conf gets the host's resolver configuration now. The runtime's tree is not
/// changed; a name the runtime does not have as a regular file is left out (a bind mount
/// needs a file to cover), and so is all of /etc unless it is a real directory of the
/// runtime (never through a symlink, which would resolve against the host's tree).
pub(super) fn cover_runtime_files(root: &Path) -> Result<(), InitError> {
    let etc = root.join("etc");
    if !fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    for name in RUNTIME_JOB_FILES {
        let target = etc.join(name);
        if !fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_file()) {
            continue;
        }
        let contents = match *name {
            "resolv.conf" => fs::read("/etc/resolv.conf").unwrap_or_default(),
            _ => Vec::new(),
        };
        let source = runtime_file_source(root, name);
        write_file("runtime_etc", &source, &contents, 0o644)?;
        super::mounts::bind("runtime_etc", &source, &target, super::rootfs::READ_ONLY)?;
        if *name == "resolv.conf" {
            remove_source(&source)?;
        }
    }
    Ok(())
}

/// Writes the job's passwd, group, hosts and hostname into the files
/// [`cover_runtime_files`] bound over the runtime's, then unlinks their sources from the
/// root (the mounts keep them).
pub(super) fn fill_runtime_files(root: &Path, iso: &Isolation) -> Result<(), InitError> {
    for name in RUNTIME_JOB_FILES {
        let source = runtime_file_source(root, name);
        if !source.exists() {
            continue;
        }
        let contents = match *name {
            "passwd" => passwd(iso.uid, iso.gid),
            "group" => group(iso.gid),
            "hosts" => hosts(&iso.hostname),
            _ => format!("{}\n", iso.hostname),
        };
        write_file("runtime_etc", &source, contents.as_bytes(), 0o644)?;
        remove_source(&source)?;
    }
    Ok(())
}

fn remove_source(source: &Path) -> Result<(), InitError> {
    fs::remove_file(source).map_err(|e| {
        fail(
            "runtime_etc",
            errno_of(&e),
            format_args!("remove {}", source.display()),
        )
    })
}

/// The passwd file: root, the job's user (unless it is root) and nobody. Home is /work.
pub(super) fn passwd(uid: u32, gid: u32) -> String {
    let mut out = String::from("root:x:0:0:root:/work:/bin/sh\n");
    if uid != 0 {
        out.push_str(&format!(
            "{JOB_USER}:x:{uid}:{gid}:silo job:/work:/bin/sh\n"
        ));
    }
    if uid != NOBODY {
        out.push_str(&format!(
            "nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n"
        ));
    }
    out
}

/// The group file: root, the job's group (unless it is root's) and nogroup.
pub(super) fn group(gid: u32) -> String {
    let mut out = String::from("root:x:0:\n");
    if gid != 0 {
        out.push_str(&format!("{JOB_USER}:x:{gid}:\n"));
    }
    if gid != NOBODY {
        out.push_str(&format!("nogroup:x:{NOBODY}:\n"));
    }
    out
}

/// The hosts file: localhost and the job's hostname.
pub(super) fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// /etc/localtime: the same symlink as the host's (its target, under /usr/share/zoneinfo,
/// is in the view), or a copy.
fn copy_localtime(etc: &Path) -> Result<(), InitError> {
    let host = Path::new("/etc/localtime");
    match fs::symlink_metadata(host) {
        Ok(meta) if meta.file_type().is_symlink() => {
            copy_symlink("write_etc", host, &etc.join("localtime"))
        }
        Ok(_) => copy_if_present(host, &etc.join("localtime")),
        Err(_) => Ok(()),
    }
}

/// Copies the contents of the host file `source` (following symlinks) to `target`, 0644;
/// does nothing when `source` does not exist.
fn copy_if_present(source: &Path, target: &Path) -> Result<(), InitError> {
    let contents = match fs::read(source) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(fail(
                "write_etc",
                errno_of(&e),
                format_args!("copy {} into the job's /etc", source.display()),
            ));
        }
    };
    write_file("write_etc", target, &contents, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_names_root_the_job_user_and_nobody() {
        assert_eq!(
            passwd(1000, 1001),
            "root:x:0:0:root:/work:/bin/sh\n\
             silo:x:1000:1001:silo job:/work:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
    }

    #[test]
    fn a_root_job_has_no_second_user_named_after_uid_0() {
        assert!(!passwd(0, 0).contains("silo"));
        assert!(!group(0).contains("silo"));
    }

    #[test]
    fn hosts_resolves_the_jobs_hostname_locally() {
        assert!(hosts("job-3f2a").contains("127.0.1.1\tjob-3f2a\n"));
        assert!(hosts("job-3f2a").starts_with("127.0.0.1\tlocalhost\n"));
    }
}
