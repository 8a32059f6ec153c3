//! The cgroup v2 backend: the unified tree's controller enabling, limits and usage.
//!
//! See <https://docs.kernel.org/admin-guide/cgroup-v2.html>.

pub(crate) mod cpu;
pub(crate) mod cpuset;
pub(crate) mod events;
pub(crate) mod freezer;
pub(crate) mod io;
pub(crate) mod memory;

use std::path::{Path, PathBuf};

use crate::controller::{Controller, Controllers};
use crate::error::Result;
use crate::file;

/// The controllers a v2 cgroup offers its children (`cgroup.controllers`).
pub(crate) fn offered(dir: &Path) -> Result<Controllers> {
    Ok(file::read_optional(dir, "cgroup.controllers")?
        .map(|text| parse_controller_list(&text))
        .unwrap_or_default())
}

/// The controllers enabled for a v2 cgroup's children (`cgroup.subtree_control`).
pub(crate) fn enabled(dir: &Path) -> Result<Controllers> {
    Ok(parse_controller_list(&file::read(
        dir,
        "cgroup.subtree_control",
    )?))
}

/// Enables `wanted` controllers down a chain of cgroups, top first, so that the last one's
/// children can use them. At each level only the controllers the level is offered are
/// enabled, and only those not enabled yet are written: a delegated subtree whose parents
/// already did their part is never written above the delegation point.
///
/// Returns the controllers the children of the last level can use.
///
/// Only ancestors are written, never leaves: the kernel's "no internal processes" rule
/// refuses controllers in `cgroup.subtree_control` of a non-root cgroup that holds processes
/// (<https://docs.kernel.org/admin-guide/cgroup-v2.html#no-internal-process-constraint>).
pub(crate) fn enable_down(chain: &[PathBuf], mut wanted: Controllers) -> Result<Controllers> {
    for dir in chain {
        let offered = offered(dir)?;
        wanted = wanted.iter().filter(|c| offered.contains(*c)).collect();
        let already = enabled(dir)?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| !already.contains(*c))
            .map(|c| format!("+{}", c.v2_name()))
            .collect();
        if !missing.is_empty() {
            file::write(dir, "cgroup.subtree_control", &missing.join(" "))?;
        }
    }
    Ok(wanted)
}

/// Moves a process into a v2 cgroup.
pub(crate) fn add_pid(dir: &Path, pid: i32) -> Result<()> {
    file::write(dir, "cgroup.procs", &pid.to_string())
}

/// Reads the controllers silo uses from a space-separated list ("cpu io memory"; a `+` or
/// `-` prefix, as written to `cgroup.subtree_control`, is accepted too).
fn parse_controller_list(text: &str) -> Controllers {
    text.split_whitespace()
        .filter_map(|word| Controller::from_v2_name(word.trim_start_matches(['+', '-'])))
        .collect()
}
