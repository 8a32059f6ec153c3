//! Checks a RunJob request before anything is created: bad input changes nothing.

use std::path::{Component, Path, PathBuf};

use silo_proto::v1::{JobSpec, Limits, Upload};
use silo_proto::values::CpuList;

use super::uploads;

/// Upper bounds the server accepts.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Online CPUs on this host.
    pub cpus: u32,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// Largest total size of a job's uploads.
    pub upload_bytes: u64,
    /// The server's maximum for each limit (`--max-*`); a request above is refused.
    pub max: Limits,
    /// The server's default for each limit (`--default-*`), for jobs that set none.
    pub defaults: Limits,
}

impl Bounds {
    /// Fills each limit the job left unset with the server's default.
    pub fn apply_defaults(&self, limits: &mut Option<Limits>) {
        let d = &self.defaults;
        if d == &Limits::default() {
            return;
        }
        let l = limits.get_or_insert_with(Limits::default);
        l.cpu_percent = l.cpu_percent.or(d.cpu_percent);
        l.cpus = l.cpus.take().or_else(|| d.cpus.clone());
        l.memory_bytes = l.memory_bytes.or(d.memory_bytes);
        l.io_bps = l.io_bps.or(d.io_bps);
        l.pids = l.pids.or(d.pids);
        l.disk_bytes = l.disk_bytes.or(d.disk_bytes);
    }
}

/// The smallest work directory filesystem (ext4 needs room for its own metadata).
pub const MIN_DISK_BYTES: u64 = 16 << 20;

pub use silo_proto::values::{MAX_STOP_GRACE_MS, MAX_TIMEOUT_MS};
/// Most processes a job may ask for (the kernel's pid_max ceiling).
pub const MAX_PIDS: u32 = 4_194_304;
/// Most bytes per second a job may ask for: 1 TiB/s.
pub const MAX_IO_BPS: u64 = 1 << 40;
/// Smallest memory limit accepted: the job's init lives inside the limit too.
pub const MIN_MEMORY: u64 = 4 << 20;
/// Most upload entries in one job.
const MAX_UPLOADS: usize = 100_000;

/// Why a request is refused: one sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks the spec and uploads of a RunJob request. Each refusal names the request's field
/// as the API spells it (`spec.workdir`, `limits.memory_bytes`, `uploads[3].path`).
pub fn check_request(spec: &JobSpec, uploads: &[Upload], bounds: &Bounds) -> Result<(), Invalid> {
    check_spec(spec, bounds)?;
    check_uploads(uploads, bounds)
}

fn no_nul(field: &str, s: &str) -> Result<(), Invalid> {
    if s.contains('\0') {
        return Err(invalid(format!("{field} contains a NUL byte")));
    }
    Ok(())
}

fn check_spec(spec: &JobSpec, bounds: &Bounds) -> Result<(), Invalid> {
    match spec.command.first() {
        None => {
            return Err(invalid("spec.command is empty: give a program to run"));
        }
        Some(p) if p.is_empty() => {
            return Err(invalid("spec.command[0], the program's name, is empty"));
        }
        Some(_) => {}
    }
    for (i, arg) in spec.command.iter().enumerate() {
        no_nul(&format!("spec.command[{i}]"), arg)?;
    }
    for (i, var) in spec.env.iter().enumerate() {
        if var.name.is_empty() {
            return Err(invalid(format!("spec.env[{i}].name is empty")));
        }
        if var.name.contains('=') {
            return Err(invalid(format!(
                "spec.env[{i}].name {:?} contains '='",
                var.name
            )));
        }
        no_nul(&format!("spec.env[{i}].name {:?}", var.name), &var.name)?;
        no_nul(
            &format!("spec.env[{i}].value (of {})", var.name),
            &var.value,
        )?;
    }
    crate::secrets::check(spec).map_err(invalid)?;
    no_nul("spec.workdir", &spec.workdir)?;
    no_nul("spec.name", &spec.name)?;
    if spec.name.len() > 256 {
        return Err(invalid("spec.name is longer than 256 bytes"));
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        return Err(invalid("spec.timeout_ms is longer than a year"));
    }
    if spec.stop_grace_ms > MAX_STOP_GRACE_MS {
        return Err(invalid("spec.stop_grace_ms is longer than an hour"));
    }
    if let Some(limits) = &spec.limits {
        check_limits(limits, bounds)?;
    }
    if spec.uid == Some(u32::MAX) || spec.gid == Some(u32::MAX) {
        return Err(invalid(
            "spec.uid and spec.gid may not be 4294967295, which means \"no user\"",
        ));
    }
    if silo_proto::v1::JobNetwork::try_from(spec.network).is_err() {
        return Err(invalid(format!(
            "spec.network {} is not a known network mode",
            spec.network
        )));
    }
    Ok(())
}

/// Checks each limit that is set: positive and within what this host has.
pub fn check_limits(l: &Limits, bounds: &Bounds) -> Result<(), Invalid> {
    if let Some(cpu) = l.cpu_percent {
        if cpu == 0 {
            return Err(invalid(
                "limits.cpu_percent must be positive (100 is one core)",
            ));
        }
        if cpu > bounds.cpus * 100 {
            return Err(invalid(format!(
                "limits.cpu_percent {cpu} is more than this host's {} cores ({})",
                bounds.cpus,
                bounds.cpus * 100
            )));
        }
    }
    if let Some(cpus) = &l.cpus {
        check_cpu_list(cpus, bounds.cpus)?;
    }
    if let Some(mem) = l.memory_bytes {
        if mem < MIN_MEMORY {
            return Err(invalid(format!(
                "limits.memory_bytes {mem} is too small: the least is 4 MiB, as the job's init runs inside the limit too"
            )));
        }
        if mem > bounds.memory_bytes {
            return Err(invalid(format!(
                "limits.memory_bytes {mem} is more than this host's memory ({} bytes)",
                bounds.memory_bytes
            )));
        }
    }
    if let Some(bps) = l.io_bps {
        if bps == 0 {
            return Err(invalid("limits.io_bps must be positive"));
        }
        if bps > MAX_IO_BPS {
            return Err(invalid(format!("limits.io_bps {bps} is more than 1 TiB/s")));
        }
    }
    if let Some(disk) = l.disk_bytes
        && disk < MIN_DISK_BYTES
    {
        return Err(invalid(format!(
            "limits.disk_bytes {disk} is too small: the least is 16 MiB"
        )));
    }
    if let Some(pids) = l.pids {
        if pids == 0 {
            return Err(invalid("limits.pids must be positive"));
        }
        if pids > MAX_PIDS {
            return Err(invalid(format!(
                "limits.pids {pids} is more than {MAX_PIDS}"
            )));
        }
    }
    check_maximums(l, &bounds.max)
}

/// Each limit at most the server's maximum for it.
fn check_maximums(l: &Limits, max: &Limits) -> Result<(), Invalid> {
    let above = |field: &str, asked: u64, most: u64| {
        Err(invalid(format!(
            "{field} {asked} is above this server's maximum of {most}"
        )))
    };
    if let (Some(a), Some(m)) = (l.cpu_percent, max.cpu_percent)
        && a > m
    {
        return above("limits.cpu_percent", a.into(), m.into());
    }
    if let (Some(a), Some(m)) = (l.memory_bytes, max.memory_bytes)
        && a > m
    {
        return above("limits.memory_bytes", a, m);
    }
    if let (Some(a), Some(m)) = (l.io_bps, max.io_bps)
        && a > m
    {
        return above("limits.io_bps", a, m);
    }
    if let (Some(a), Some(m)) = (l.pids, max.pids)
        && a > m
    {
        return above("limits.pids", a.into(), m.into());
    }
    if let (Some(a), Some(m)) = (l.disk_bytes, max.disk_bytes)
        && a > m
    {
        return above("limits.disk_bytes", a, m);
    }
    Ok(())
}

/// `limits.cpus` as the set of CPUs it names ([`CpuList`]: "0-3,6", "2,0"); its syntax
/// only, [`check_limits`] also checks that this host has them.
pub fn cpu_list(list: &str) -> Result<CpuList, Invalid> {
    CpuList::parse(list)
        .map_err(|e| invalid(format!("limits.cpus {list:?} is not a CPU list: {e}")))
}

/// A CPU list whose every CPU is below `online`.
fn check_cpu_list(list: &str, online: u32) -> Result<(), Invalid> {
    let highest = cpu_list(list)?.highest();
    if highest >= online {
        return Err(invalid(format!(
            "limits.cpus {list:?} names CPU {highest}, which does not exist (this host has CPUs 0-{})",
            online.saturating_sub(1)
        )));
    }
    Ok(())
}

/// The longest upload path, in bytes (PATH_MAX).
const MAX_UPLOAD_PATH: usize = 4096;
/// The longest name in an upload path, in bytes (NAME_MAX).
const MAX_UPLOAD_NAME: usize = 255;
/// The most characters of an upload path a message quotes.
const SHOWN_PATH_CHARS: usize = 64;

/// `uploads[i].path "its value"`, cut short when long: how a refusal names an upload.
fn upload_field(index: usize, path: &str) -> String {
    let shown = match path.char_indices().nth(SHOWN_PATH_CHARS) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_owned(),
    };
    format!("uploads[{index}].path {shown:?}")
}

/// Upload `index`'s path: a relative path that names an entry inside the work directory,
/// which any filesystem can hold.
fn check_upload_path(index: usize, path: &str) -> Result<(), Invalid> {
    let field = upload_field(index, path);
    if path.is_empty() {
        return Err(invalid(format!("uploads[{index}].path is empty")));
    }
    no_nul(&field, path)?;
    if path.len() > MAX_UPLOAD_PATH {
        return Err(invalid(format!(
            "{field} is {} bytes long, more than the {MAX_UPLOAD_PATH} a path may have",
            path.len()
        )));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(invalid(format!(
            "{field} is absolute; uploads go into the job's work directory"
        )));
    }
    for c in p.components() {
        match c {
            Component::Normal(name) if name.len() > MAX_UPLOAD_NAME => {
                return Err(invalid(format!(
                    "{field} has a name of {} bytes, more than the {MAX_UPLOAD_NAME} a name may have",
                    name.len()
                )));
            }
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(invalid(format!(
                    "{field} escapes the job's work directory: \"..\" is not allowed"
                )));
            }
        }
    }
    if uploads::work_path(path).as_os_str().is_empty() {
        return Err(invalid(format!(
            "{field} names the work directory itself; give a name inside it"
        )));
    }
    Ok(())
}

fn check_uploads(uploads: &[Upload], bounds: &Bounds) -> Result<(), Invalid> {
    if uploads.len() > MAX_UPLOADS {
        return Err(invalid(format!(
            "uploads has more than {MAX_UPLOADS} entries"
        )));
    }
    let mut total = 0u64;
    let mut landing = Vec::with_capacity(uploads.len());
    for (i, u) in uploads.iter().enumerate() {
        check_upload_path(i, &u.path)?;
        landing.push((uploads::work_path(&u.path), i));
        total += u.content.len() as u64;
    }
    if total > bounds.upload_bytes {
        return Err(invalid(format!(
            "the uploads hold {total} bytes, more than the server's limit of {} bytes",
            bounds.upload_bytes
        )));
    }
    check_upload_tree(uploads, landing)
}

/// No two uploads land on the same entry, and no upload's path goes through an uploaded
/// file. `landing` holds where each upload lands, with its index.
fn check_upload_tree(
    uploads: &[Upload],
    mut landing: Vec<(PathBuf, usize)>,
) -> Result<(), Invalid> {
    // Paths compare name by name, so each path is followed at once by the paths below
    // it ("a", "a/b", "a-c"): comparing neighbours finds every clash.
    landing.sort();
    let field = |k: usize| upload_field(k, &uploads[k].path);
    for pair in landing.windows(2) {
        let ((first, i), (next, j)) = (&pair[0], &pair[1]);
        if first == next {
            return Err(invalid(format!(
                "{} names the same entry as {}",
                field(*j),
                field(*i)
            )));
        }
        if !uploads[*i].directory && next.starts_with(first) {
            return Err(invalid(format!(
                "{} goes through {}, which is a file",
                field(*j),
                field(*i)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_proto::v1::EnvVar;

    fn bounds() -> Bounds {
        Bounds {
            cpus: 2,
            memory_bytes: 8 << 30,
            upload_bytes: 1 << 20,
            max: Limits::default(),
            defaults: Limits::default(),
        }
    }

    fn spec(cmd: &[&str]) -> JobSpec {
        JobSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn err(spec: &JobSpec, uploads: &[Upload]) -> String {
        check_request(spec, uploads, &bounds()).unwrap_err().0
    }

    fn file(path: &str) -> Upload {
        Upload {
            path: path.into(),
            content: b"x".to_vec(),
            ..Default::default()
        }
    }

    fn dir(path: &str) -> Upload {
        Upload {
            path: path.into(),
            directory: true,
            ..Default::default()
        }
    }

    fn upload_err(uploads: &[Upload]) -> String {
        err(&spec(&["true"]), uploads)
    }

    #[test]
    fn a_plain_command_is_accepted() {
        assert!(check_request(&spec(&["echo", "hi"]), &[], &bounds()).is_ok());
    }

    #[test]
    fn empty_commands_and_nul_bytes_are_refused_naming_the_field() {
        assert!(err(&spec(&[]), &[]).contains("spec.command is empty"));
        assert!(err(&spec(&[""]), &[]).contains("spec.command[0]"));
        let e = err(&spec(&["echo", "a\0b"]), &[]);
        assert!(e.contains("spec.command[1]") && e.contains("NUL"), "{e}");
        let mut s = spec(&["env"]);
        s.env.push(EnvVar {
            name: "A".into(),
            value: "x\0".into(),
        });
        let e = err(&s, &[]);
        assert!(e.contains("spec.env[0].value") && e.contains("NUL"), "{e}");
        s.env[0] = EnvVar {
            name: "A=B".into(),
            value: "x".into(),
        };
        let e = err(&s, &[]);
        assert!(e.contains("spec.env[0].name") && e.contains("'='"), "{e}");
        s.env[0] = EnvVar {
            name: String::new(),
            value: "x".into(),
        };
        assert!(err(&s, &[]).contains("spec.env[0].name is empty"));
        let mut s = spec(&["true"]);
        s.workdir = "a\0".into();
        assert!(err(&s, &[]).contains("spec.workdir"));
    }

    #[test]
    fn limits_must_be_positive_and_fit_the_host() {
        let cases: Vec<(Limits, &str, &str)> = vec![
            (
                Limits {
                    cpu_percent: Some(0),
                    ..Default::default()
                },
                "limits.cpu_percent",
                "positive",
            ),
            (
                Limits {
                    cpu_percent: Some(201),
                    ..Default::default()
                },
                "limits.cpu_percent",
                "more than this host",
            ),
            (
                Limits {
                    memory_bytes: Some(0),
                    ..Default::default()
                },
                "limits.memory_bytes",
                "too small",
            ),
            (
                Limits {
                    memory_bytes: Some(1 << 50),
                    ..Default::default()
                },
                "limits.memory_bytes",
                "more than this host",
            ),
            (
                Limits {
                    pids: Some(0),
                    ..Default::default()
                },
                "limits.pids",
                "positive",
            ),
            (
                Limits {
                    io_bps: Some(0),
                    ..Default::default()
                },
                "limits.io_bps",
                "positive",
            ),
            (
                Limits {
                    disk_bytes: Some(1 << 20),
                    ..Default::default()
                },
                "limits.disk_bytes",
                "too small",
            ),
            (
                Limits {
                    cpus: Some("3".into()),
                    ..Default::default()
                },
                "limits.cpus",
                "does not exist",
            ),
            (
                Limits {
                    cpus: Some("1-0".into()),
                    ..Default::default()
                },
                "limits.cpus",
                "not a CPU list",
            ),
            (
                Limits {
                    cpus: Some("a".into()),
                    ..Default::default()
                },
                "limits.cpus",
                "not a CPU list",
            ),
        ];
        for (limits, field, want) in cases {
            let mut s = spec(&["true"]);
            s.limits = Some(limits.clone());
            let got = err(&s, &[]);
            assert!(
                got.contains(field) && got.contains(want),
                "{limits:?}: {got}"
            );
            // The API's messages name its fields, never the CLI's flags.
            assert!(!got.contains("--"), "{limits:?}: {got}");
        }
        let mut s = spec(&["true"]);
        s.limits = Some(Limits {
            cpu_percent: Some(50),
            cpus: Some("0-1".into()),
            memory_bytes: Some(64 << 20),
            io_bps: Some(10 << 20),
            pids: Some(64),
            disk_bytes: Some(1 << 30),
        });
        assert!(check_request(&s, &[], &bounds()).is_ok());
    }

    #[test]
    fn server_maximums_refuse_and_defaults_fill_in() {
        let mut b = bounds();
        b.max = Limits {
            memory_bytes: Some(1 << 30),
            pids: Some(100),
            ..Default::default()
        };
        b.defaults = Limits {
            memory_bytes: Some(256 << 20),
            ..Default::default()
        };
        let mut s = spec(&["true"]);
        s.limits = Some(Limits {
            memory_bytes: Some(2 << 30),
            ..Default::default()
        });
        let e = check_request(&s, &[], &b).unwrap_err().0;
        assert_eq!(
            e,
            "limits.memory_bytes 2147483648 is above this server's maximum of 1073741824"
        );
        s.limits = Some(Limits {
            pids: Some(50),
            ..Default::default()
        });
        b.apply_defaults(&mut s.limits);
        let l = s.limits.clone().unwrap();
        assert_eq!((l.memory_bytes, l.pids), (Some(256 << 20), Some(50)));
        assert!(check_request(&s, &[], &b).is_ok());
    }

    #[test]
    fn every_upload_the_work_directory_cannot_hold_is_refused_naming_its_path() {
        let long_name = format!("d/{}", "n".repeat(MAX_UPLOAD_NAME + 1));
        let long_path = "ab/".repeat(MAX_UPLOAD_PATH / 3 + 1);
        let cases: Vec<(Vec<Upload>, &str, &str)> = vec![
            // The three.
            (vec![file("a"), file("a/b")], "uploads[1].path", "through"),
            (vec![dir(".")], "uploads[0].path", "work directory itself"),
            (vec![file(&long_name)], "uploads[0].path", "255"),
            // A path through a file, whichever comes first, and past a sibling that sorts
            // between them byte by byte ("a-c" < "a/b").
            (vec![file("a/b"), file("a")], "uploads[0].path", "through"),
            (
                vec![file("a"), file("a-c"), file("a/b/c")],
                "uploads[2].path",
                "through",
            ),
            (
                vec![dir("d"), file("d/f"), file("d/f/g")],
                "uploads[2].path",
                "through",
            ),
            // The same entry twice, however spelled, file or directory.
            (
                vec![file("a"), file("./a/")],
                "uploads[1].path",
                "same entry",
            ),
            (vec![file("a"), dir("a")], "uploads[1].path", "same entry"),
            (vec![dir("a"), dir("a")], "uploads[1].path", "same entry"),
            (
                vec![file("x/y"), file("x//y")],
                "uploads[1].path",
                "same entry",
            ),
            // Not a name inside the work directory.
            (vec![file("")], "uploads[0].path", "empty"),
            (vec![file("./")], "uploads[0].path", "work directory itself"),
            (vec![file("/etc/passwd")], "uploads[0].path", "absolute"),
            (vec![file("../x")], "uploads[0].path", "escapes"),
            (vec![file("a/../../x")], "uploads[0].path", "escapes"),
            (vec![file("a/../b")], "uploads[0].path", "escapes"),
            (vec![file("a/\0")], "uploads[0].path", "NUL"),
            (vec![file(&long_path)], "uploads[0].path", "4096"),
            // The index is the upload's own.
            (
                vec![file("ok1"), file("ok2"), dir("ok3"), file("../x")],
                "uploads[3].path",
                "escapes",
            ),
        ];
        for (uploads, field, want) in cases {
            let paths: Vec<&str> = uploads.iter().map(|u| u.path.as_str()).collect();
            let got = upload_err(&uploads);
            assert!(
                got.contains(field) && got.contains(want),
                "{paths:?}: {got}"
            );
            // Only what the client sent: no host path, and long paths cut short.
            assert!(
                !got.contains("/tmp") && !got.contains("/var/lib/silo"),
                "{got}"
            );
            assert!(got.len() < 400, "{got}");
        }
    }

    #[test]
    fn uploads_that_nest_cleanly_are_accepted() {
        let name = "n".repeat(MAX_UPLOAD_NAME);
        let longest = [name.as_str(); 16].join("/");
        assert_eq!(longest.len(), 16 * 256 - 1);
        let ok = [
            dir("d"),
            file("d/./f"),
            file("d/e/g"),
            // A directory may come after what it holds.
            file("h/i"),
            dir("h"),
            // Siblings whose names share a beginning.
            file("a"),
            file("a-c"),
            file("ab/c"),
            file(&longest),
        ];
        assert!(check_request(&spec(&["true"]), &ok, &bounds()).is_ok());
    }

    #[test]
    fn uploads_larger_than_the_limit_are_refused() {
        let big = Upload {
            path: "big".into(),
            content: vec![0; (1 << 20) + 1],
            ..Default::default()
        };
        assert!(err(&spec(&["true"]), &[big]).contains("limit"));
    }
}
