//! Finding the disk to throttle for a path.
//!
//! Bandwidth limits (`io.max`, `blkio.throttle.*`) apply to whole-disk devices: the kernel
//! refuses partitions, and file systems without a block device (tmpfs, overlay, btrfs
//! subvolumes report an anonymous 0:N device) have nothing to throttle.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{CgroupError, Result};

/// The whole-disk block device (major, minor) that holds `path`, e.g. (254, 0) for
/// `/dev/vda` when `path` is on `/dev/vda1`.
///
/// Fails with [`CgroupError::NoBlockDevice`] when the path is on a file system without a
/// block device.
pub fn block_device_of(path: &Path) -> Result<(u32, u32)> {
    let metadata = std::fs::metadata(path).map_err(|cause| CgroupError::NoBlockDevice {
        path: path.to_owned(),
        reason: format!("cannot stat it: {cause}"),
    })?;
    let dev = metadata.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let (Ok(major), Ok(minor)) = (u32::try_from(major), u32::try_from(minor)) else {
        return Err(CgroupError::NoBlockDevice {
            path: path.to_owned(),
            reason: format!("device number {major}:{minor} is out of range"),
        });
    };
    whole_disk(Path::new("/sys/dev/block"), (major, minor)).map_err(|reason| {
        CgroupError::NoBlockDevice {
            path: path.to_owned(),
            reason,
        }
    })
}

/// Maps a block device to its whole disk using sysfs (`sys_dev_block` is normally
/// `/sys/dev/block`, whose `MAJ:MIN` entries link into the device tree, where a partition is
/// a directory with a `partition` file inside its disk's directory).
pub(crate) fn whole_disk(sys_dev_block: &Path, device: (u32, u32)) -> Result<(u32, u32), String> {
    let (major, minor) = device;
    if major == 0 {
        return Err(format!(
            "it is on device {major}:{minor}, a file system without a disk \
             (tmpfs, overlay, a btrfs subvolume or similar)"
        ));
    }
    let entry = sys_dev_block.join(format!("{major}:{minor}"));
    if !entry.exists() {
        return Err(format!(
            "device {major}:{minor} is not a block device (no {})",
            entry.display()
        ));
    }
    if !entry.join("partition").exists() {
        return Ok(device);
    }
    let real = entry
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", entry.display()))?;
    let disk = real
        .parent()
        .ok_or_else(|| format!("partition {} has no parent disk", real.display()))?;
    let dev_file = disk.join("dev");
    let text = std::fs::read_to_string(&dev_file)
        .map_err(|e| format!("cannot read {}: {e}", dev_file.display()))?;
    parse_dev(text.trim()).ok_or_else(|| {
        format!(
            "{} holds {:?}, not MAJ:MIN",
            dev_file.display(),
            text.trim()
        )
    })
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// /sys/devices/virtual/block/vda (254:0) with partition vda1 (254:1), and zram0 (253:0).
    fn fake_sysfs() -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        let vda = sys.path().join("devices/pci0000:00/virtio1/block/vda");
        fs::create_dir_all(vda.join("vda1")).unwrap();
        fs::write(vda.join("dev"), "254:0\n").unwrap();
        fs::write(vda.join("vda1/dev"), "254:1\n").unwrap();
        fs::write(vda.join("vda1/partition"), "1\n").unwrap();
        let zram = sys.path().join("devices/virtual/block/zram0");
        fs::create_dir_all(&zram).unwrap();
        fs::write(zram.join("dev"), "253:0\n").unwrap();
        let links = sys.path().join("dev/block");
        fs::create_dir_all(&links).unwrap();
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, links.join(name)).unwrap()
        };
        link("254:0", &vda);
        link("254:1", &vda.join("vda1"));
        link("253:0", &zram);
        sys
    }

    #[test]
    fn a_partition_maps_to_its_whole_disk() {
        let sys = fake_sysfs();
        assert_eq!(
            whole_disk(&sys.path().join("dev/block"), (254, 1)),
            Ok((254, 0))
        );
    }

    #[test]
    fn a_whole_disk_maps_to_itself() {
        let sys = fake_sysfs();
        let dev_block = sys.path().join("dev/block");
        assert_eq!(whole_disk(&dev_block, (254, 0)), Ok((254, 0)));
        assert_eq!(whole_disk(&dev_block, (253, 0)), Ok((253, 0)));
    }

    #[test]
    fn an_anonymous_device_has_no_disk() {
        let sys = fake_sysfs();
        let err = whole_disk(&sys.path().join("dev/block"), (0, 31)).unwrap_err();
        assert!(err.contains("without a disk"), "{err}");
    }

    #[test]
    fn an_unknown_device_is_refused() {
        let sys = fake_sysfs();
        let err = whole_disk(&sys.path().join("dev/block"), (8, 0)).unwrap_err();
        assert!(err.contains("not a block device"), "{err}");
    }

    #[test]
    fn proc_is_not_on_a_block_device() {
        let err = block_device_of(Path::new("/proc/self")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no block device to throttle for /proc/self"),
            "{err}"
        );
    }
}
