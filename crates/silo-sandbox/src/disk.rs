//! The job's /work as a filesystem of its own: an ext4 image attached to a loop device and
//! mounted, detached from every mount namespace, by the server; the job's init attaches the
//! mount at /work when the job starts ([`crate::isolation::attach_work_disk`]).
//!
//! A job that fills it gets ENOSPC and nothing else does: the image's size is the job's disk
//! limit, whatever the host's filesystem offers. Its inodes are its own too, and inside the
//! job the mount is named by the loop device, not by a path under the server's state
//! directory. The loop device is configured with `LO_FLAGS_AUTOCLEAR`, so it detaches itself
//! when the filesystem is unmounted, which is when the last reference to the mount goes:
//! the server's descriptor of a disk no job took, or the job's mount namespace.
//!
//! The server makes these ahead of its jobs (see its disk pool): the loop device's
//! configuration (a block-queue freeze, a flush of the image to the host's disk) and the
//! mount (ext4 reading its metadata through the loop device) are kernel waits of up to
//! several milliseconds that no launch waits for.
//! See loop(4): https://man7.org/linux/man-pages/man4/loop.4.html

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// `LOOP_CTL_GET_FREE` from linux/loop.h: the number of a free loop device.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` from linux/loop.h: attach a file and set its flags in one call.
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// Detach the device when its last user (the mount) closes it.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Read and write the image with direct I/O, so its pages are not cached twice (the kernel
/// falls back to buffered I/O where the host filesystem cannot).
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// Free loop devices taken by someone else between asking and attaching are retried this
/// many times.
const ATTACH_ATTEMPTS: usize = 64;

/// From linux/mount.h: `fsopen`, `fsconfig` and `fsmount` flags and commands.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    size_limit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` (an ext4 image) to a free loop device and mounts its filesystem,
/// nosuid and nodev, as a detached mount (`fsmount`): returns the mount's descriptor, which
/// [`crate::isolation::attach_work_disk`] moves to a job's /work, and through which the
/// server writes the job's files first. mkfs's empty `lost+found` is removed.
pub fn mount_detached(image: &Path) -> io::Result<OwnedFd> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| context(e, format_args!("open the disk image {}", image.display())))?;
    let (device, _loop_fd) = attach(&backing)?;
    // The mount now holds the device; once it goes, so does the device (autoclear).
    let mount = mount_device(&device)?;
    // SAFETY: unlinkat with a descriptor we own and a NUL-terminated name; a failure (the
    // template had no lost+found) changes nothing.
    unsafe {
        libc::unlinkat(
            mount.as_raw_fd(),
            c"lost+found".as_ptr(),
            libc::AT_REMOVEDIR,
        )
    };
    Ok(mount)
}

/// The ext4 on `device` as a detached mount.
fn mount_device(device: &Path) -> io::Result<OwnedFd> {
    let failed = |what: &str| {
        context(
            io::Error::last_os_error(),
            format_args!("mount {} ({what})", device.display()),
        )
    };
    // SAFETY: fsopen with a NUL-terminated name; it returns a new descriptor or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"ext4".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(failed("fsopen"));
    }
    // SAFETY: fsopen succeeded, so `fs` is a new descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let source = std::ffi::CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let set = |command: libc::c_uint, key: &CStr, value: Option<&CStr>| {
        // SAFETY: fsconfig on a descriptor we own with NUL-terminated strings that outlive
        // the call (or a null value, which a flag takes).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                command,
                key.as_ptr(),
                value.map_or(std::ptr::null(), |v| v.as_ptr()),
                0,
            )
        };
        if r < 0 {
            return Err(failed(&key.to_string_lossy()));
        }
        Ok(())
    };
    set(FSCONFIG_SET_STRING, c"source", Some(&source))?;
    // The image is sparse and new: its inode tables read as zeros, and zeroing them
    // (ext4's lazyinit thread) would only write the whole table into the host's disk.
    set(FSCONFIG_SET_FLAG, c"noinit_itable", None)?;
    // No cache flushes: the filesystem never outlives its job (a host crash ends the
    // job, and its image is emptied at its end), so a flush would buy no durability anyone
    // can use. Each one reaches the host's disk through the loop device (an fsync of the
    // image): the unmount's alone cost 0.65 ms, and a job that calls fsync on /work pays
    // it every time.
    set(FSCONFIG_SET_FLAG, c"nobarrier", None)?;
    // SAFETY: fsconfig's create command takes no key or value.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if created < 0 {
        return Err(failed("create"));
    }
    // SAFETY: fsmount on the configured context we own; it returns a new descriptor or -1.
    let mount = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if mount < 0 {
        return Err(failed("fsmount"));
    }
    // SAFETY: fsmount succeeded, so `mount` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mount as RawFd) })
}

/// While it lives, the calling thread runs under the normal policy if it ran under
/// `SCHED_IDLE` (a disk made ahead of its job): the lock on /dev/loop-control is held at
/// the normal priority, so that a launch that makes its disk on its path never waits for
/// a thread the scheduler starves while it holds the lock.
struct NormalPolicy {
    was_idle: bool,
}

impl NormalPolicy {
    fn enter() -> NormalPolicy {
        // SAFETY: sched_getscheduler of the calling thread; no memory is passed.
        let was_idle = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_IDLE;
        if was_idle {
            set_policy(libc::SCHED_OTHER);
        }
        NormalPolicy { was_idle }
    }
}

impl Drop for NormalPolicy {
    fn drop(&mut self) {
        if self.was_idle {
            set_policy(libc::SCHED_IDLE);
        }
    }
}

/// Sets the calling thread's scheduling policy (priority 0); a failure leaves it as it was.
fn set_policy(policy: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler of the calling thread; `param` outlives the call.
    unsafe { libc::sched_setscheduler(0, policy, &param) };
}

/// `e` with what was being done in front: "cannot {what}: {e}".
fn context(e: io::Error, what: std::fmt::Arguments<'_>) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what}: {e}"))
}

/// The errno as an I/O error with what was being done in front.
fn errno_error(errno: Errno, what: std::fmt::Arguments<'_>) -> io::Error {
    context(io::Error::from_raw_os_error(errno as i32), what)
}

/// A free loop device with `backing` attached; returns its path and an open descriptor,
/// which must stay open until the device is mounted.
fn attach(backing: &File) -> io::Result<(PathBuf, File)> {
    // Declared first, so that it restores the policy after `control` (and the lock) goes.
    let _policy = NormalPolicy::enter();
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(|e| context(e, format_args!("open /dev/loop-control")))?;
    // Inits that start together would be handed the same free device and all but one
    // refused with EBUSY: silo's inits take turns, holding an exclusive lock on
    // /dev/loop-control from asking for a free device until it is attached (released when
    // `control` closes). Other programs on the host do not take the lock; their races are
    // what the retries below are for.
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    while unsafe { libc::flock(control.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let errno = Errno::last();
        if errno != Errno::EINTR {
            return Err(errno_error(errno, format_args!("lock /dev/loop-control")));
        }
    }
    let mut last = Errno::EBUSY;
    for attempt in 0..ATTACH_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(attempt.min(20) as u64));
        }
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(errno_error(
                Errno::last(),
                format_args!("find a free loop device"),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| context(e, format_args!("open {}", path.display())))?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                size_limit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                file_name: [0; 64],
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is, laid out
        // as the kernel's (repr(C), same fields and sizes); the kernel does not keep the
        // pointer.
        let r = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if r == 0 {
            return Ok((path, device));
        }
        last = Errno::last();
        // Someone else attached this device between our asking and attaching: try again.
        if last != Errno::EBUSY {
            break;
        }
    }
    Err(errno_error(
        last,
        format_args!("attach the disk image to a loop device"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
