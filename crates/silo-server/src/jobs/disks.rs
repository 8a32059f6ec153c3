//! Job disks: each job's /work is an ext4 filesystem of its own (`--default-disk`), in a
//! sparse image in the job's directory, attached to a loop device and mounted by the server
//! as a detached mount ([`silo_sandbox::disk::mount_detached`]) that the job's init attaches
//! at /work when the job starts.
//!
//! Making one takes several milliseconds of kernel waits (the loop device's configuration
//! freezes its block queue and flushes the image to the host's disk; the mount reads the
//! filesystem's metadata through the device) for about 1 ms of CPU. The server keeps a few
//! disks of the default size made ahead, apart from its ready inits: a ready init takes one
//! while it is prepared, and so does a launch that found no ready init and prepares its own,
//! which then waits for none of that. A disk of another size is made when its job comes.
//!
//! A pooled disk is a detached mount held only by the server's descriptor: when the server
//! drops it (at shutdown, or when it dies), the filesystem is unmounted and the loop device
//! detaches itself. Its image waits in `<state>/disks/` and moves into the job's directory
//! when an init takes it; images left there by a server that died are removed at start.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{JobError, JobManager};

/// A disk made ahead: its image and its filesystem, mounted detached.
struct Disk {
    image: PathBuf,
    mount: OwnedFd,
}

/// The disks of the default size made ahead of the inits that will take them.
pub(super) struct DiskPool {
    /// Where the pooled disks' images wait (`<state>/disks`).
    dir: PathBuf,
    /// How many it keeps.
    target: usize,
    disks: Mutex<Vec<Disk>>,
    /// Whether a task is topping it up now.
    refilling: AtomicBool,
}

impl DiskPool {
    /// A pool of `target` disks whose images wait in `dir`, emptied of what a server that
    /// died left there.
    pub(super) fn new(dir: PathBuf, target: usize) -> std::io::Result<DiskPool> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(DiskPool {
            dir,
            target,
            disks: Mutex::default(),
            refilling: AtomicBool::new(false),
        })
    }

    /// How many disks wait now.
    fn len(&self) -> usize {
        self.disks.lock().map(|d| d.len()).unwrap_or(0)
    }
}

impl JobManager {
    /// The job disk of `size` bytes for the job whose directory is `job_dir`: its image is
    /// `job_dir/disk.img` and its root belongs to `owner`; returns the detached mount. A
    /// disk of the default size comes from the pool when it has one, and the pool is then
    /// topped up in the background; else it is made now (with `idle`, under `SCHED_IDLE`).
    pub(super) async fn take_disk(
        &self,
        size: u64,
        idle: bool,
        job_dir: &Path,
        owner: (u32, u32),
    ) -> Result<OwnedFd, JobError> {
        let image = job_dir.join(DISK_IMAGE);
        let default = Some(size) == self.inner.settings.bounds.defaults.disk_bytes;
        let pooled = match default {
            true => self.inner.disks.disks.lock().ok().and_then(|mut d| d.pop()),
            false => None,
        };
        if default {
            self.refill_disks();
        }
        // A pooled disk's image moves into the job's directory and its root is handed to
        // the job's user, on a blocking thread. Should the move fail (the jobs' directory
        // on another filesystem), the disk goes, and one is made there.
        let taken = match pooled {
            Some(disk) => {
                let to = image.clone();
                super::idle::run(idle, move || match std::fs::rename(&disk.image, &to) {
                    Ok(()) => hand_over(&disk.mount, owner).map(|()| Some(disk.mount)),
                    Err(e) => {
                        tracing::warn!(
                            "cannot move the disk image {} to {}: {e}",
                            disk.image.display(),
                            to.display()
                        );
                        let _ = std::fs::remove_file(&disk.image);
                        Ok(None)
                    }
                })
                .await?
                .map_err(|e| {
                    JobError::Host(format!(
                        "cannot hand the job's disk {} over: {e}",
                        image.display()
                    ))
                })?
            }
            None => None,
        };
        match taken {
            Some(mount) => Ok(mount),
            None => self.make_disk(&image, size, idle, Some(owner)).await,
        }
    }

    /// Makes a disk of `size` bytes with its image at `image` (a copy of the template of
    /// that size when it is the default) and mounts it, detached; with `owner`, its root
    /// belongs to that uid and gid.
    async fn make_disk(
        &self,
        image: &Path,
        size: u64,
        idle: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<OwnedFd, JobError> {
        let template = (Some(size) == self.inner.settings.bounds.defaults.disk_bytes).then(|| {
            self.inner
                .settings
                .jobs_dir
                .with_file_name("disk-templates")
                .join(format!("{TEMPLATE_PREFIX}{size}.img"))
        });
        if let Err(e) = make_image(image, size, idle, template).await {
            let _ = std::fs::remove_file(image);
            return Err(e);
        }
        let path = image.to_path_buf();
        let mounted = super::idle::run(idle, move || {
            let mount = silo_sandbox::disk::mount_detached(&path)?;
            if let Some(owner) = owner {
                hand_over(&mount, owner)?;
            }
            Ok::<_, std::io::Error>(mount)
        })
        .await
        .and_then(|m| {
            m.map_err(|e| {
                JobError::Host(format!(
                    "cannot mount the job's disk {}: {e}",
                    image.display()
                ))
            })
        });
        if mounted.is_err() {
            let _ = std::fs::remove_file(image);
        }
        mounted
    }

    /// Tops the disk pool up in the background, one disk at a time, unless a task does
    /// already: under `SCHED_IDLE` while the pool still has a disk, at the normal priority
    /// once it is empty (a launch would otherwise make its disk on its path).
    pub(super) fn refill_disks(&self) {
        let pool = &self.inner.disks;
        let Some(size) = self.inner.settings.bounds.defaults.disk_bytes else {
            return;
        };
        if pool.target == 0 || pool.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            let pool = &manager.inner.disks;
            let mut failed = false;
            loop {
                let have = pool.len();
                if have >= pool.target {
                    break;
                }
                let image = pool
                    .dir
                    .join(format!("{}.img", uuid::Uuid::new_v4().simple()));
                match manager.make_disk(&image, size, have > 0, None).await {
                    Ok(mount) => {
                        if let Ok(mut disks) = pool.disks.lock() {
                            disks.push(Disk { image, mount });
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cannot make a job disk ahead: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::SeqCst);
            // A disk taken after the last count and before the flag was cleared started
            // no refill: count again (not after a failure, which would only repeat).
            if !failed && pool.len() < pool.target {
                manager.refill_disks();
            }
        });
    }

    /// Unmounts the pool's disks and removes their images (at shutdown).
    pub(super) fn drain_disks(&self) {
        let disks = self
            .inner
            .disks
            .disks
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for disk in disks {
            drop(disk.mount);
            let _ = std::fs::remove_file(&disk.image);
        }
    }
}

/// Gives the root of the disk mounted at `mount` to `owner` (uid, gid).
fn hand_over(mount: &OwnedFd, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    nix::unistd::fchownat(
        mount.as_fd(),
        "",
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)
}

/// The start of the disk templates' names (the version of the mkfs options, then the size):
/// a template made with other options has another name.
const TEMPLATE_PREFIX: &str = "ext4-v2-";

/// The name of a job's disk image in its directory.
pub(super) const DISK_IMAGE: &str = "disk.img";

/// Frees what the ended job in `job_dir` wrote to its disk: its image is truncated to
/// nothing. Called once the job's mount namespace is gone, so its filesystem is unmounted;
/// a process of the job that still held it (a descriptor passed out of a host-network job)
/// would only see its own job's disk go, never another's. Nothing outside the job reads
/// an ended job's /work, and before this an image kept every byte the job wrote until
/// the job was removed: a thousand ended jobs of 5 GB each filled the host. The empty file
/// stays until then, because removing it frees an inode per job, and on an ext4 without a
/// journal every inode allocated in the next 30 seconds skips each recently freed one
/// (`recently_deleted`): after a burst of removals, a launch cost 40 % more CPU.
pub(super) fn free_disk(job_dir: &Path) {
    let image = job_dir.join(DISK_IMAGE);
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&image);
    let freed = match opened {
        Ok(file) => file.set_len(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = freed {
        tracing::warn!("cannot free the ended job's disk {}: {e}", image.display());
    }
}

/// Gives back the blocks an ended job's init allocated ahead of its log's end (see
/// `silo_log::LogWriter::reserve`): the init does it itself once it has reported the exit,
/// but an init killed first (one that lingered past its grace, one the kernel killed) left
/// them, about 2.4 MB a job, for as long as the job is kept. A truncate to the log's own
/// size frees them; nothing writes the log any more.
pub(super) fn release_log_room(job_dir: &Path) {
    let log = job_dir.join("log");
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&log);
    let released = opened.and_then(|file| {
        let len = file.metadata()?.len();
        file.set_len(len)
    });
    match released {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("cannot give back the room of {}: {e}", log.display());
        }
        _ => {}
    }
}

/// Makes an empty ext4 filesystem of `size` bytes in a new sparse file at `image` (a copy of
/// `template` when given, made first if missing), in a
/// few milliseconds and a few hundred KiB whatever its size: no journal (the filesystem
/// lives as long as its job, and a host crash ends the job anyway), no blocks reserved for
/// root (the job's root is not the host's), no reserve for online resizing, no backup
/// superblocks (nothing but the job writes to it, and only through the filesystem), and inode
/// tables left unwritten (lazy init; the disk is mounted with noinit_itable, and a sparse
/// file reads as zeros). With `idle`, mkfs runs under `SCHED_IDLE` (it prepares a later
/// job, and must not slow a starting one).
async fn make_image(
    image: &Path,
    size: u64,
    idle: bool,
    template: Option<PathBuf>,
) -> Result<(), JobError> {
    let failed = |e: String| {
        JobError::Host(format!(
            "cannot make the job's disk {}: {e}",
            image.display()
        ))
    };
    let Some(template) = template else {
        return mkfs(image, size, idle).await.map_err(failed);
    };
    if !template.exists() {
        // Made beside it and renamed into place: a template is whole or absent. Two
        // inits that make one at once both succeed; either copy serves.
        let dir = template.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let partial = template.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        if let Err(e) = mkfs(&partial, size, idle).await {
            let _ = std::fs::remove_file(&partial);
            return Err(failed(e));
        }
        // Without mkfs's empty lost+found, whose removal from each disk (the first write
        // to its new filesystem) costs a millisecond or more. Best effort:
        // `mount_detached` removes it when it is there.
        let mut debugfs = tokio::process::Command::new("debugfs");
        silo_sandbox::spawn::with_started_open_files(debugfs.as_std_mut());
        let removed = debugfs
            .args(["-w", "-R", "rmdir lost+found"])
            .arg(&partial)
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        if !removed.as_ref().is_ok_and(|o| o.status.success()) {
            tracing::debug!(
                "debugfs could not remove lost+found from the disk template: {removed:?}"
            );
        }
        std::fs::rename(&partial, &template)
            .map_err(|e| failed(format!("{}: {e}", template.display())))?;
        // Templates an older server made with other options are not used again.
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("ext4-v") && !name.starts_with(TEMPLATE_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let (from, to) = (template.clone(), image.to_path_buf());
    super::idle::run(idle, move || copy_sparse(&from, &to, size))
        .await?
        .map_err(|e| failed(format!("copying {}: {e}", template.display())))
}

/// A new file `image` of `size` bytes with an empty ext4 filesystem (mkfs.ext4; with
/// `idle`, under `SCHED_IDLE`: it prepares a later job, and must not slow a starting one).
async fn mkfs(image: &Path, size: u64, idle: bool) -> Result<(), String> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(image)
        .map_err(|e| e.to_string())?;
    file.set_len(size).map_err(|e| e.to_string())?;
    drop(file);
    let mut mkfs = tokio::process::Command::new("mkfs.ext4");
    silo_sandbox::spawn::with_started_open_files(mkfs.as_std_mut());
    if idle {
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call on a value it owns.
        unsafe {
            mkfs.pre_exec(|| {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
                Ok(())
            });
        }
    }
    let out = mkfs
        .args(["-q", "-F", "-m", "0"])
        .args(["-O", "^has_journal,^resize_inode,sparse_super2"])
        .args(["-E", "num_backup_sb=0,nodiscard,lazy_itable_init=1"])
        // One flex group's metadata for 16 GiB (128 groups) instead of 2 GiB: its bitmaps
        // sit together, so the image has fewer, larger pieces to copy and read.
        .args(["-G", "128"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Copies `template` (a sparse image of `size` bytes) to the new file `image`: only its
/// data (about 160 KiB for an empty 10 GiB ext4), holes stay holes.
fn copy_sparse(template: &Path, image: &Path, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(template)?;
    if from.metadata()?.len() != size {
        return Err(std::io::Error::other("the template has another size"));
    }
    let to = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(image)?;
    to.set_len(size)?;
    let mut offset: i64 = 0;
    loop {
        // SAFETY: lseek on a descriptor this function owns.
        let data = unsafe { libc::lseek(from.as_raw_fd(), offset, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            // No data past `offset`: done.
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (mut src, mut dst) = (data, data);
        while src < hole {
            // SAFETY: both descriptors are open and owned here; the offsets are valid
            // pointers to locals that outlive the call.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut src,
                    to.as_raw_fd(),
                    &mut dst,
                    (hole - src) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Err(std::io::Error::other("the template ended early"));
            }
        }
        offset = hole;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    use super::copy_sparse;

    #[test]
    fn a_sparse_copy_has_the_same_bytes_and_keeps_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (template, image) = (dir.path().join("t.img"), dir.path().join("i.img"));
        let size = 64 << 20;
        let mut t = std::fs::File::create(&template).unwrap();
        t.set_len(size).unwrap();
        for (at, byte) in [
            (0, 1u8),
            (1 << 20, 2),
            ((40 << 20) + 7, 3),
            (size - 4096, 4),
        ] {
            t.seek(SeekFrom::Start(at)).unwrap();
            t.write_all(&vec![byte; 5000.min((size - at) as usize)])
                .unwrap();
        }
        drop(t);
        copy_sparse(&template, &image, size).unwrap();
        assert_eq!(
            std::fs::read(&template).unwrap(),
            std::fs::read(&image).unwrap()
        );
        let blocks = std::fs::metadata(&image).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "the copy holds {blocks} bytes");
        // A template of another size is refused, and the image is not made.
        let other = dir.path().join("o.img");
        assert!(copy_sparse(&template, &other, size * 2).is_err());
        assert!(!other.exists());
    }
}
