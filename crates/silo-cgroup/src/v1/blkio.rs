//! v1 `blkio`: throttling (`blkio.throttle.{read,write}_bps_device`) and bytes moved.

use std::path::Path;

use crate::controller::Controller;
use crate::error::{CgroupError, Result};
use crate::file::{self, HeldFiles};
use crate::limits::IoLimit;
use crate::usage::Usage;

/// Writes "MAJ:MIN BPS" to the read and the write throttle.
pub(crate) fn apply(dir: &Path, io: &IoLimit) -> Result<()> {
    let (major, minor) = io.device;
    let value = format!("{major}:{minor} {}", io.bps);
    for name in [
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
    ] {
        file::write(dir, name, &value).map_err(|e| e.missing_means_unsupported(Controller::Io))?;
    }
    Ok(())
}

/// Sums the `Read` and `Write` lines of `blkio.throttle.io_service_bytes_recursive` (or of
/// the non-recursive file on kernels without it) over every device.
pub(crate) fn read_usage(files: &HeldFiles, dir: &Path, usage: &mut Usage) -> Result<()> {
    let mut name = "blkio.throttle.io_service_bytes_recursive";
    let mut text = files.read_optional(dir, name)?;
    if text.is_none() {
        name = "blkio.throttle.io_service_bytes";
        text = files.read_optional(dir, name)?;
    }
    let Some(text) = text else {
        return Ok(());
    };
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        // "254:0 Read 4096" ... "Total 8192"
        let words: Vec<&str> = line.split_whitespace().collect();
        let [_device, op, value] = words[..] else {
            continue;
        };
        let total = match op {
            "Read" => &mut read,
            "Write" => &mut written,
            _ => continue,
        };
        let value: u64 = value
            .parse()
            .map_err(|_| CgroupError::parse(dir, name, format!("{line:?} has no byte count")))?;
        *total = total.saturating_add(value);
    }
    usage.io_read_bytes = Some(read);
    usage.io_write_bytes = Some(written);
    Ok(())
}
