//! v2 `io`: bandwidth on one device (`io.max`) and bytes moved (`io.stat`).

use std::path::Path;

use crate::controller::Controller;
use crate::error::{CgroupError, Result};
use crate::file::{self, HeldFiles};
use crate::limits::IoLimit;
use crate::usage::Usage;

/// Writes "MAJ:MIN rbps=N wbps=N" to `io.max`.
pub(crate) fn apply(dir: &Path, io: &IoLimit) -> Result<()> {
    let (major, minor) = io.device;
    let value = format!("{major}:{minor} rbps={0} wbps={0}", io.bps);
    file::write(dir, "io.max", &value).map_err(|e| e.missing_means_unsupported(Controller::Io))
}

/// Sums `rbytes` and `wbytes` over every device in `io.stat`.
pub(crate) fn read_usage(files: &HeldFiles, dir: &Path, usage: &mut Usage) -> Result<()> {
    let Some(text) = files.read_optional(dir, "io.stat")? else {
        return Ok(());
    };
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        // "8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=0 dios=0"
        for pair in line.split_whitespace().skip(1) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let total = match key {
                "rbytes" => &mut read,
                "wbytes" => &mut written,
                _ => continue,
            };
            let value: u64 = value.parse().map_err(|_| {
                CgroupError::parse(dir, "io.stat", format!("{pair:?} is not KEY=NUMBER"))
            })?;
            *total = total.saturating_add(value);
        }
    }
    usage.io_read_bytes = Some(read);
    usage.io_write_bytes = Some(written);
    Ok(())
}
