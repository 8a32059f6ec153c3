//! Checks a RunJob request before anything is created: bad input changes nothing.

use std::path::{Component, Path};

use silo_proto::v1::{JobSpec, Limits, Upload};

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

/// The longest timeout accepted: a year.
const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;
/// Most processes a job may ask for (the kernel's pid_max ceiling).
const MAX_PIDS: u32 = 4_194_304;
/// Most bytes per second a job may ask for: 1 TiB/s.
const MAX_IO_BPS: u64 = 1 << 40;
/// Smallest memory limit accepted: the job's init lives inside the limit too.
const MIN_MEMORY: u64 = 4 << 20;
/// Most upload entries in one job.
const MAX_UPLOADS: usize = 100_000;

/// Why a request is refused: one sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks the spec and uploads of a RunJob request.
pub fn check_request(spec: &JobSpec, uploads: &[Upload], bounds: &Bounds) -> Result<(), Invalid> {
    check_spec(spec, bounds)?;
    check_uploads(uploads, bounds)
}

fn no_nul(what: &str, s: &str) -> Result<(), Invalid> {
    if s.contains('\0') {
        return Err(invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn check_spec(spec: &JobSpec, bounds: &Bounds) -> Result<(), Invalid> {
    match spec.command.first() {
        None => return Err(invalid("the command is empty: give a program to run")),
        Some(p) if p.is_empty() => return Err(invalid("the program name is empty")),
        Some(_) => {}
    }
    for (i, arg) in spec.command.iter().enumerate() {
        no_nul(&format!("argument {i}"), arg)?;
    }
    for var in &spec.env {
        if var.name.is_empty() {
            return Err(invalid("an environment variable has an empty name"));
        }
        if var.name.contains('=') {
            return Err(invalid(format!(
                "environment variable name {:?} contains '='",
                var.name
            )));
        }
        no_nul(&format!("environment variable {:?}", var.name), &var.name)?;
        no_nul(
            &format!("the value of environment variable {}", var.name),
            &var.value,
        )?;
    }
    no_nul("the working directory", &spec.workdir)?;
    no_nul("the job name", &spec.name)?;
    if spec.name.len() > 256 {
        return Err(invalid("the job name is longer than 256 bytes"));
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        return Err(invalid("the timeout is longer than a year"));
    }
    if spec.stop_grace_ms > 3_600_000 {
        return Err(invalid("the stop grace period is longer than an hour"));
    }
    if let Some(limits) = &spec.limits {
        check_limits(limits, bounds)?;
    }
    if spec.uid == Some(u32::MAX) || spec.gid == Some(u32::MAX) {
        return Err(invalid(
            "uid and gid 4294967295 are reserved (they mean \"no user\")",
        ));
    }
    if silo_proto::v1::JobNetwork::try_from(spec.network).is_err() {
        return Err(invalid(format!("unknown network mode {}", spec.network)));
    }
    Ok(())
}

/// Checks each limit that is set: positive and within what this host has.
pub fn check_limits(l: &Limits, bounds: &Bounds) -> Result<(), Invalid> {
    if let Some(cpu) = l.cpu_percent {
        if cpu == 0 {
            return Err(invalid("--cpu must be positive (100 is one core)"));
        }
        if cpu > bounds.cpus * 100 {
            return Err(invalid(format!(
                "--cpu {cpu}% is more than this host's {} cores ({}%)",
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
                "--memory {mem} bytes is too small: the least is 4 MiB (the job's init runs inside the limit too)"
            )));
        }
        if mem > bounds.memory_bytes {
            return Err(invalid(format!(
                "--memory {mem} bytes is more than this host's memory ({} bytes)",
                bounds.memory_bytes
            )));
        }
    }
    if let Some(bps) = l.io_bps {
        if bps == 0 {
            return Err(invalid("--io-bps must be positive"));
        }
        if bps > MAX_IO_BPS {
            return Err(invalid("--io-bps is more than 1 TiB/s"));
        }
    }
    if let Some(disk) = l.disk_bytes
        && disk < MIN_DISK_BYTES
    {
        return Err(invalid(format!(
            "--disk {disk} bytes is too small: the least is 16 MiB"
        )));
    }
    if let Some(pids) = l.pids {
        if pids == 0 {
            return Err(invalid("--pids must be positive"));
        }
        if pids > MAX_PIDS {
            return Err(invalid(format!("--pids {pids} is more than {MAX_PIDS}")));
        }
    }
    check_maximums(l, &bounds.max)
}

/// Each limit at most the server's maximum for it.
fn check_maximums(l: &Limits, max: &Limits) -> Result<(), Invalid> {
    let above = |flag: &str, asked: String, most: String| {
        Err(invalid(format!(
            "{flag} {asked} is above this server's maximum of {most}"
        )))
    };
    if let (Some(a), Some(m)) = (l.cpu_percent, max.cpu_percent)
        && a > m
    {
        return above("--cpu", format!("{a}%"), format!("{m}%"));
    }
    if let (Some(a), Some(m)) = (l.memory_bytes, max.memory_bytes)
        && a > m
    {
        return above("--memory", format!("{a} bytes"), format!("{m} bytes"));
    }
    if let (Some(a), Some(m)) = (l.io_bps, max.io_bps)
        && a > m
    {
        return above("--io-bps", format!("{a} bytes/s"), format!("{m} bytes/s"));
    }
    if let (Some(a), Some(m)) = (l.pids, max.pids)
        && a > m
    {
        return above("--pids", a.to_string(), m.to_string());
    }
    if let (Some(a), Some(m)) = (l.disk_bytes, max.disk_bytes)
        && a > m
    {
        return above("--disk", format!("{a} bytes"), format!("{m} bytes"));
    }
    Ok(())
}

/// A cpuset list such as "0-3,6": each CPU below `online`.
fn check_cpu_list(list: &str, online: u32) -> Result<(), Invalid> {
    let bad = || invalid(format!("--cpus {list:?} is not a CPU list like 0-3 or 1,3"));
    if list.is_empty() {
        return Err(bad());
    }
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        if hi >= online {
            return Err(invalid(format!(
                "--cpus {list}: CPU {hi} does not exist (this host has CPUs 0-{})",
                online.saturating_sub(1)
            )));
        }
    }
    Ok(())
}

/// A relative path that stays inside the work directory.
pub fn check_upload_path(path: &str) -> Result<(), Invalid> {
    no_nul("an upload path", path)?;
    if path.is_empty() {
        return Err(invalid("an upload has an empty path"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(invalid(format!(
            "upload path {path} is absolute; uploads go into the job's work directory"
        )));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(invalid(format!(
                    "upload path {path} escapes the job's work directory"
                )));
            }
        }
    }
    Ok(())
}

fn check_uploads(uploads: &[Upload], bounds: &Bounds) -> Result<(), Invalid> {
    if uploads.len() > MAX_UPLOADS {
        return Err(invalid(format!("more than {MAX_UPLOADS} uploaded files")));
    }
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    for u in uploads {
        check_upload_path(&u.path)?;
        if !seen.insert(
            Path::new(&u.path)
                .components()
                .collect::<std::path::PathBuf>(),
        ) {
            return Err(invalid(format!("upload path {} appears twice", u.path)));
        }
        total += u.content.len() as u64;
    }
    if total > bounds.upload_bytes {
        return Err(invalid(format!(
            "the uploads are {total} bytes, more than the server's limit of {} bytes",
            bounds.upload_bytes
        )));
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

    #[test]
    fn a_plain_command_is_accepted() {
        assert!(check_request(&spec(&["echo", "hi"]), &[], &bounds()).is_ok());
    }

    #[test]
    fn empty_commands_and_nul_bytes_are_refused() {
        assert!(err(&spec(&[]), &[]).contains("command is empty"));
        assert!(err(&spec(&[""]), &[]).contains("program name is empty"));
        assert!(err(&spec(&["echo", "a\0b"]), &[]).contains("NUL"));
        let mut s = spec(&["env"]);
        s.env.push(EnvVar {
            name: "A".into(),
            value: "x\0".into(),
        });
        assert!(err(&s, &[]).contains("NUL"));
        s.env[0] = EnvVar {
            name: "A=B".into(),
            value: "x".into(),
        };
        assert!(err(&s, &[]).contains("'='"));
        s.env[0] = EnvVar {
            name: String::new(),
            value: "x".into(),
        };
        assert!(err(&s, &[]).contains("empty name"));
    }

    #[test]
    fn limits_must_be_positive_and_fit_the_host() {
        let cases: Vec<(Limits, &str)> = vec![
            (
                Limits {
                    cpu_percent: Some(0),
                    ..Default::default()
                },
                "positive",
            ),
            (
                Limits {
                    cpu_percent: Some(201),
                    ..Default::default()
                },
                "more than this host",
            ),
            (
                Limits {
                    memory_bytes: Some(0),
                    ..Default::default()
                },
                "too small",
            ),
            (
                Limits {
                    memory_bytes: Some(1 << 50),
                    ..Default::default()
                },
                "more than this host",
            ),
            (
                Limits {
                    pids: Some(0),
                    ..Default::default()
                },
                "positive",
            ),
            (
                Limits {
                    io_bps: Some(0),
                    ..Default::default()
                },
                "positive",
            ),
            (
                Limits {
                    cpus: Some("3".into()),
                    ..Default::default()
                },
                "does not exist",
            ),
            (
                Limits {
                    cpus: Some("1-0".into()),
                    ..Default::default()
                },
                "not a CPU list",
            ),
            (
                Limits {
                    cpus: Some("a".into()),
                    ..Default::default()
                },
                "not a CPU list",
            ),
        ];
        for (limits, want) in cases {
            let mut s = spec(&["true"]);
            s.limits = Some(limits.clone());
            let got = err(&s, &[]);
            assert!(got.contains(want), "{limits:?}: {got}");
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
        assert!(e.contains("above this server's maximum"), "{e}");
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
    fn upload_paths_must_stay_inside_the_work_directory() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a/\0"] {
            let up = Upload {
                path: bad.into(),
                ..Default::default()
            };
            assert!(
                check_request(&spec(&["true"]), &[up], &bounds()).is_err(),
                "{bad:?}"
            );
        }
        let ok = Upload {
            path: "dir/./file.txt".into(),
            ..Default::default()
        };
        assert!(check_request(&spec(&["true"]), std::slice::from_ref(&ok), &bounds()).is_ok());
        assert!(err(&spec(&["true"]), &[ok.clone(), ok]).contains("twice"));
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
