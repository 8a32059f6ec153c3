//! Facts about the host, read from the kernel: names, uptime, memory, load, pressure
//! (PSI) and the free space of a filesystem. The parsers take the files' text, so they
//! are tested on samples; [`read_host`] reads the real files.

use std::path::Path;
use std::time::Duration;

use silo_proto::v1::{LoadAverage, Pressure, PressureLine};

/// A host fact that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The file (or filesystem) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was read.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The file's text is not what the kernel writes there.
    #[error("cannot understand {path}: {what}")]
    Malformed {
        /// What was read.
        path: String,
        /// What is wrong with it.
        what: String,
    },
}

/// Why a kernel file's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Physical memory, from /proc/meminfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// MemTotal, bytes.
    pub total_bytes: u64,
    /// MemAvailable (MemFree on kernels older than 3.14, which lack it), bytes.
    pub available_bytes: u64,
}

/// The host's facts that the server does not know by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// The kernel's hostname.
    pub hostname: String,
    /// The kernel's release.
    pub kernel: String,
    /// Time since boot.
    pub uptime: Duration,
    /// Physical memory.
    pub memory: Memory,
    /// Online cores, at least 1.
    pub cpus: u32,
    /// The filesystem holding the state directory: size and bytes free for root.
    pub disk_total_bytes: u64,
    /// See `disk_total_bytes`.
    pub disk_free_bytes: u64,
    /// Load averages, where /proc/loadavg can be read.
    pub load: Option<LoadAverage>,
    /// CPU, memory and io pressure, where the kernel has PSI.
    pub cpu_pressure: Option<Pressure>,
    /// See `cpu_pressure`.
    pub memory_pressure: Option<Pressure>,
    /// See `cpu_pressure`.
    pub io_pressure: Option<Pressure>,
}

/// `/proc/meminfo`: `MemTotal:  16316412 kB` lines. MemTotal is required.
pub fn parse_meminfo(text: &str) -> Result<Memory, Malformed> {
    let field = |name: &str| -> Result<Option<u64>, Malformed> {
        let Some(line) = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        else {
            return Ok(None);
        };
        let mut words = line.split_whitespace();
        let value: u64 = words
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Malformed(format!("{name} is not a number: {:?}", line.trim())))?;
        let scale = match words.next() {
            None => 1,
            Some("kB") => 1024,
            Some(unit) => return Err(Malformed(format!("{name} has unknown unit {unit:?}"))),
        };
        Ok(Some(value.saturating_mul(scale)))
    };
    let total_bytes = field("MemTotal")?.ok_or_else(|| Malformed("no MemTotal line".into()))?;
    let available_bytes = match field("MemAvailable")? {
        Some(available) => available,
        None => field("MemFree")?.ok_or_else(|| Malformed("no MemAvailable line".into()))?,
    };
    Ok(Memory {
        total_bytes,
        available_bytes,
    })
}

/// `/proc/loadavg`: `0.52 0.58 0.59 1/389 12345`.
pub fn parse_loadavg(text: &str) -> Result<LoadAverage, Malformed> {
    let mut numbers = text.split_whitespace().map(|w| w.parse::<f64>());
    let mut next = |which: &str| match numbers.next() {
        Some(Ok(n)) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(Malformed(format!(
            "no {which}-minute load average in {:?}",
            text.trim()
        ))),
    };
    Ok(LoadAverage {
        one: next("1")?,
        five: next("5")?,
        fifteen: next("15")?,
    })
}

/// `/proc/uptime`: `350735.47 234388.90` (seconds since boot, then idle seconds).
pub fn parse_uptime(text: &str) -> Result<Duration, Malformed> {
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| Malformed(format!("no uptime in {:?}", text.trim())))
}

/// `/proc/pressure/{cpu,memory,io}`: a `some` line and, on most kernels, a `full` line,
/// each `avg10=0.12 avg60=0.05 avg300=0.01 total=123456`.
pub fn parse_pressure(text: &str) -> Result<Pressure, Malformed> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, rest) = line
            .split_once(' ')
            .ok_or_else(|| Malformed(format!("a pressure line without values: {line:?}")))?;
        let parsed = parse_pressure_line(rest)
            .map_err(|Malformed(what)| Malformed(format!("{kind}: {what}")))?;
        match kind {
            "some" => some = Some(parsed),
            "full" => full = Some(parsed),
            other => return Err(Malformed(format!("unknown pressure line {other:?}"))),
        }
    }
    if some.is_none() {
        return Err(Malformed("no \"some\" line".into()));
    }
    Ok(Pressure { some, full })
}

fn parse_pressure_line(text: &str) -> Result<PressureLine, Malformed> {
    let value = |key: &str| {
        text.split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| Malformed(format!("no {key}")))
    };
    let average = |key: &str| -> Result<f64, Malformed> {
        value(key)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Malformed(format!("{key} is not a number")))
    };
    Ok(PressureLine {
        avg10: average("avg10")?,
        avg60: average("avg60")?,
        avg300: average("avg300")?,
        total_usec: value("total")?
            .parse()
            .map_err(|_| Malformed("total is not a number".into()))?,
    })
}

fn read(path: &str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parsed<T>(path: &str, parse: impl Fn(&str) -> Result<T, Malformed>) -> Result<T, HostError> {
    parse(&read(path)?).map_err(|Malformed(what)| HostError::Malformed {
        path: path.to_owned(),
        what,
    })
}

/// A fact the host may lack (load, PSI): absent when its file cannot be read (a kernel
/// without PSI, or booted with psi=0, answers EOPNOTSUPP), logged when it cannot be parsed.
fn optional<T>(path: &str, parse: impl Fn(&str) -> Result<T, Malformed>) -> Option<T> {
    match parsed(path, parse) {
        Ok(value) => Some(value),
        Err(HostError::Read { .. }) => None,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// Reads the host's facts now, with `state_dir`'s filesystem for the disk. Blocking
/// (statvfs may wait on a slow filesystem): call it on a blocking thread.
pub fn read_host(state_dir: &Path) -> Result<HostFacts, HostError> {
    let disk = nix::sys::statvfs::statvfs(state_dir).map_err(|e| HostError::Read {
        path: format!("the filesystem of {}", state_dir.display()),
        source: e.into(),
    })?;
    let fragment = disk.fragment_size();
    Ok(HostFacts {
        hostname: read("/proc/sys/kernel/hostname")?.trim().to_owned(),
        kernel: read("/proc/sys/kernel/osrelease")?.trim().to_owned(),
        uptime: parsed("/proc/uptime", parse_uptime)?,
        memory: parsed("/proc/meminfo", parse_meminfo)?,
        cpus: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        disk_total_bytes: disk.blocks().saturating_mul(fragment),
        disk_free_bytes: disk.blocks_free().saturating_mul(fragment),
        load: optional("/proc/loadavg", parse_loadavg),
        cpu_pressure: optional("/proc/pressure/cpu", parse_pressure),
        memory_pressure: optional("/proc/pressure/memory", parse_pressure),
        io_pressure: optional("/proc/pressure/io", parse_pressure),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_total_and_available_in_bytes() {
        let text = "MemTotal:       16316412 kB\n\
                    MemFree:         1203340 kB\n\
                    MemAvailable:   12012960 kB\n\
                    Buffers:          411316 kB\n\
                    HugePages_Total:       0\n";
        assert_eq!(
            parse_meminfo(text),
            Ok(Memory {
                total_bytes: 16316412 * 1024,
                available_bytes: 12012960 * 1024,
            })
        );
    }

    #[test]
    fn meminfo_without_memavailable_falls_back_to_memfree() {
        let text = "MemTotal: 2048 kB\nMemFree: 1024 kB\n";
        assert_eq!(parse_meminfo(text).unwrap().available_bytes, 1024 * 1024);
    }

    #[test]
    fn meminfo_without_a_total_or_with_garbage_is_refused_saying_why() {
        assert_eq!(
            parse_meminfo("MemFree: 1 kB\n"),
            Err(Malformed("no MemTotal line".into()))
        );
        let err = parse_meminfo("MemTotal: lots kB\n").unwrap_err();
        assert!(err.0.contains("MemTotal is not a number"), "{err:?}");
        let err = parse_meminfo("MemTotal: 1 MB\n").unwrap_err();
        assert!(err.0.contains("unknown unit \"MB\""), "{err:?}");
    }

    #[test]
    fn loadavg_gives_the_three_averages() {
        assert_eq!(
            parse_loadavg("0.52 0.58 1.59 1/389 12345\n"),
            Ok(LoadAverage {
                one: 0.52,
                five: 0.58,
                fifteen: 1.59,
            })
        );
        assert!(parse_loadavg("0.52 nope").is_err());
        assert!(parse_loadavg("").is_err());
    }

    #[test]
    fn uptime_is_the_first_number_in_seconds() {
        assert_eq!(
            parse_uptime("350735.47 234388.90\n"),
            Ok(Duration::from_millis(350_735_470))
        );
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-3 1").is_err());
    }

    #[test]
    fn pressure_has_some_and_full_lines() {
        let text = "some avg10=1.25 avg60=0.50 avg300=0.10 total=123456\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        let p = parse_pressure(text).unwrap();
        let some = p.some.unwrap();
        assert_eq!(
            (some.avg10, some.avg60, some.avg300, some.total_usec),
            (1.25, 0.5, 0.1, 123456)
        );
        assert_eq!(p.full.unwrap().total_usec, 42);
    }

    #[test]
    fn cpu_pressure_of_older_kernels_has_no_full_line() {
        let p = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(p.some.is_some() && p.full.is_none());
    }

    #[test]
    fn malformed_pressure_is_refused_naming_the_line() {
        let err = parse_pressure("some avg10=x avg60=0 avg300=0 total=0\n").unwrap_err();
        assert_eq!(err, Malformed("some: avg10 is not a number".into()));
        let err = parse_pressure("full avg10=0 avg60=0 avg300=0 total=0\n").unwrap_err();
        assert_eq!(err, Malformed("no \"some\" line".into()));
        assert!(parse_pressure("some avg10=0 avg60=0 avg300=0\n").is_err());
    }

    #[test]
    fn this_hosts_facts_are_sane() {
        let facts = read_host(Path::new("/")).unwrap();
        assert!(facts.cpus >= 1);
        assert!(facts.memory.total_bytes > 0);
        assert!(facts.memory.available_bytes <= facts.memory.total_bytes);
        assert!(facts.disk_total_bytes >= facts.disk_free_bytes);
        assert!(!facts.kernel.is_empty());
    }
}
