//! The job's /work as a filesystem of its own: an ext4 image the server made, attached to a
//! loop device and mounted at /work.
//!
//! A job that fills it gets ENOSPC and nothing else does: the image's size is the job's disk
//! limit, whatever the host's filesystem offers. Its inodes are its own too, and inside the
//! job the mount is named by the loop device, not by a path under the server's state
//! directory. The loop device is configured with `LO_FLAGS_AUTOCLEAR`, so it detaches itself
//! when the mount goes, which is when the job's mount namespace dies.
//! See loop(4): https://man7.org/linux/man-pages/man4/loop.4.html

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::{errno_of, fail};
use crate::protocol::InitError;

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

/// Attaches `image` to a free loop device and mounts its ext4 filesystem on `target`
/// (nosuid, nodev), then removes mkfs's empty `lost+found`.
pub(super) fn mount(image: &Path, target: &Path) -> Result<(), InitError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| {
            fail(
                "work_disk",
                errno_of(&e),
                format_args!("open the job's disk image {}", image.display()),
            )
        })?;
    let (device, _loop_fd) = attach(&backing)?;
    // The mount now holds the device; once it goes, so does the device (autoclear).
    mount_device(&device, target)?;
    let _ = std::fs::remove_dir(target.join("lost+found"));
    Ok(())
}

/// Mounts the ext4 on `device` at `target`.
fn mount_device(device: &Path, target: &Path) -> Result<(), InitError> {
    nix::mount::mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        // The image is sparse and new: its inode tables read as zeros, and zeroing them
        // (ext4's lazyinit thread) would only write the whole table into the host's disk.
        // No cache flushes (nobarrier): the filesystem never outlives its job (a host
        // crash ends the job, and its image is emptied at its end), so a flush would buy
        // no durability anyone can use. Each one reaches the host's disk through the loop
        // device (an fsync of the image): the unmount's alone cost 0.65 ms, and a job that
        // calls fsync on /work pays it every time.
        Some("noinit_itable,nobarrier"),
    )
    .map_err(|e| {
        fail(
            "work_disk",
            e,
            format_args!("mount {} on {}", device.display(), target.display()),
        )
    })
}

/// A free loop device with `backing` attached; returns its path and an open descriptor,
/// which must stay open until the device is mounted.
fn attach(backing: &File) -> Result<(PathBuf, File), InitError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(|e| {
            fail(
                "work_disk",
                errno_of(&e),
                format_args!("open /dev/loop-control"),
            )
        })?;
    // Inits that start together would be handed the same free device and all but one
    // refused with EBUSY: silo's inits take turns, holding an exclusive lock on
    // /dev/loop-control from asking for a free device until it is attached (released when
    // `control` closes). Other programs on the host do not take the lock; their races are
    // what the retries below are for.
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    while unsafe { libc::flock(control.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let errno = Errno::last();
        if errno != Errno::EINTR {
            return Err(fail(
                "work_disk",
                errno,
                format_args!("lock /dev/loop-control"),
            ));
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
            return Err(fail(
                "work_disk",
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
            .map_err(|e| {
                fail(
                    "work_disk",
                    errno_of(&e),
                    format_args!("open {}", path.display()),
                )
            })?;
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
    Err(fail(
        "work_disk",
        last,
        format_args!("attach the job's disk image to a loop device"),
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
