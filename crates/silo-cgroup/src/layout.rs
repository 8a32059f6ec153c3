//! Which cgroup hierarchies this host has mounted, read once from the mount table.
//!
//! Three layouts exist in the wild (see
//! <https://systemd.io/CGROUP_DELEGATION/#three-different-tree-setups->):
//! unified (one cgroup2 mount holding every controller), legacy (one cgroup v1 mount per
//! controller or group of controllers), and hybrid (v1 controllers plus a cgroup2 mount that
//! usually has no controllers but still offers `cgroup.kill`, `cgroup.events`, `cgroup.freeze`
//! and `cpu.stat`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// The v1 controllers the kernel knows; other words in a v1 mount's options are mount flags.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// How the cgroup file systems are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only.
    Unified {
        /// The cgroup2 mount point, usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
    /// cgroup v1 only.
    Legacy {
        /// Each v1 controller and the mount point of its hierarchy (co-mounted controllers,
        /// like `cpu,cpuacct`, share one path).
        controllers: BTreeMap<String, PathBuf>,
    },
    /// v1 controllers beside a cgroup2 mount.
    Hybrid {
        /// Each v1 controller and the mount point of its hierarchy.
        controllers: BTreeMap<String, PathBuf>,
        /// The cgroup2 mount point, usually `/sys/fs/cgroup/unified`.
        unified: PathBuf,
    },
}

impl CgroupLayout {
    /// The cgroup2 mount point, in the unified and hybrid layouts.
    pub fn unified_root(&self) -> Option<&Path> {
        match self {
            CgroupLayout::Unified { root } => Some(root),
            CgroupLayout::Hybrid { unified, .. } => Some(unified),
            CgroupLayout::Legacy { .. } => None,
        }
    }

    /// The v1 controllers and their mount points (empty in the unified layout).
    pub fn legacy_controllers(&self) -> Option<&BTreeMap<String, PathBuf>> {
        match self {
            CgroupLayout::Unified { .. } => None,
            CgroupLayout::Legacy { controllers } | CgroupLayout::Hybrid { controllers, .. } => {
                Some(controllers)
            }
        }
    }
}

impl fmt::Display for CgroupLayout {
    /// One line for a start-up log, e.g. "hybrid (v1 controllers: cpu,memory,pids; unified at
    /// /sys/fs/cgroup/unified)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |controllers: &BTreeMap<String, PathBuf>| {
            controllers.keys().cloned().collect::<Vec<_>>().join(",")
        };
        match self {
            CgroupLayout::Unified { root } => {
                write!(f, "unified (cgroup v2 at {})", root.display())
            }
            CgroupLayout::Legacy { controllers } => {
                write!(f, "legacy (v1 controllers: {})", names(controllers))
            }
            CgroupLayout::Hybrid {
                controllers,
                unified,
            } => write!(
                f,
                "hybrid (v1 controllers: {}; unified at {})",
                names(controllers),
                unified.display()
            ),
        }
    }
}

/// Detects the layout of this process's mount namespace from `/proc/self/mountinfo`.
pub fn detect() -> Result<CgroupLayout> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|cause| CgroupError::Mountinfo {
        path: path.to_owned(),
        cause,
    })?;
    detect_in(&text, &path.display().to_string())
}

/// Detects the layout from the text of a mount table in `/proc/<pid>/mountinfo` format.
/// When a hierarchy is mounted twice, the first mount wins.
pub fn detect_from(mountinfo: &str) -> Result<CgroupLayout> {
    detect_in(mountinfo, "the given mount table")
}

fn detect_in(mountinfo: &str, source: &str) -> Result<CgroupLayout> {
    let mut unified: Option<PathBuf> = None;
    let mut controllers: BTreeMap<String, PathBuf> = BTreeMap::new();
    for mount in mountinfo.lines().filter_map(Mount::parse) {
        match mount.fstype {
            "cgroup2" => {
                unified.get_or_insert(mount.point);
            }
            "cgroup" => {
                for option in mount.super_options.split(',') {
                    if V1_CONTROLLERS.contains(&option) {
                        controllers
                            .entry(option.to_owned())
                            .or_insert_with(|| mount.point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    match (controllers.is_empty(), unified) {
        (true, Some(root)) => Ok(CgroupLayout::Unified { root }),
        (false, None) => Ok(CgroupLayout::Legacy { controllers }),
        (false, Some(unified)) => Ok(CgroupLayout::Hybrid {
            controllers,
            unified,
        }),
        (true, None) => Err(CgroupError::NotMounted {
            mountinfo: source.to_owned(),
        }),
    }
}

/// The fields of one mountinfo line this module needs.
struct Mount<'a> {
    point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> Mount<'a> {
    /// Parses "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    /// (proc(5)): the optional fields end at a lone "-".
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (before, after) = line.split_once(" - ")?;
        let point = before.split(' ').nth(4)?;
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let _source = after.next()?;
        let super_options = after.next().unwrap_or("");
        Some(Mount {
            point: PathBuf::from(unescape(point)),
            fstype,
            super_options,
        })
    }
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and backslashes ("\040").
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let octal = match tail {
            [a, b, c, ..]
                if first == b'\\' && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(*d)) =>
            {
                u8::try_from(
                    (u32::from(a - b'0') << 6) | (u32::from(b - b'0') << 3) | u32::from(c - b'0'),
                )
                .ok()
            }
            _ => None,
        };
        match octal {
            Some(byte) => {
                out.push(byte);
                rest = tail.get(3..).unwrap_or_default();
            }
            None => {
                out.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const UNIFIED: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const LEGACY: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 25 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
28 26 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
29 26 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
30 26 0:27 / /sys/fs/cgroup/blkio rw,nosuid shared:13 - cgroup cgroup rw,blkio
31 26 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:14 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn a_lone_cgroup2_mount_is_the_unified_layout() {
        let layout = detect_from(UNIFIED).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::Unified {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
        assert_eq!(layout.to_string(), "unified (cgroup v2 at /sys/fs/cgroup)");
    }

    #[test]
    fn v1_mounts_alone_are_the_legacy_layout_with_comounted_controllers_sharing_a_path() {
        let layout = detect_from(LEGACY).unwrap();
        let CgroupLayout::Legacy { controllers } = &layout else {
            panic!("expected legacy, got {layout:?}");
        };
        assert_eq!(
            controllers.get("cpu"),
            Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(controllers.get("cpuacct"), controllers.get("cpu"));
        assert!(
            !controllers.contains_key("name=systemd"),
            "named hierarchies are not controllers"
        );
        assert_eq!(
            layout.to_string(),
            "legacy (v1 controllers: blkio,cpu,cpuacct,memory)"
        );
    }

    #[test]
    fn v1_controllers_beside_a_cgroup2_mount_are_the_hybrid_layout() {
        let layout = detect_from(HYBRID).unwrap();
        assert_eq!(
            layout.unified_root(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            layout.to_string(),
            "hybrid (v1 controllers: cpu,cpuacct,memory,pids; unified at /sys/fs/cgroup/unified)"
        );
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let err = detect_from("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap_err();
        assert!(matches!(err, CgroupError::NotMounted { .. }), "{err}");
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let text = "30 24 0:26 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            detect_from(text).unwrap().unified_root(),
            Some(Path::new("/mnt/my cgroup"))
        );
    }

    #[test]
    fn the_first_mount_of_a_hierarchy_wins() {
        let text = "\
30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 24 0:26 / /run/other rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            detect_from(text).unwrap().unified_root(),
            Some(Path::new("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn this_hosts_mount_table_parses() {
        // Whatever the host has, detection must either find a layout or say none is mounted.
        match detect() {
            Ok(layout) => assert!(!layout.to_string().is_empty()),
            Err(CgroupError::NotMounted { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
