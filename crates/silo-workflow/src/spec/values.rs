//! The small value languages of a workflow file: durations (`1h30m`), sizes (`10G`), CPU
//! lists (`0-3,5`) and names. Each reader returns the value or the reason it was refused;
//! the caller adds where the text was.

use std::time::Duration;

/// The longest duration a workflow file may give anywhere: a year.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The highest CPU number a CPU list may name (Linux's largest `NR_CPUS` is 8192).
pub(crate) const MAX_CPU_INDEX: u32 = 8191;

/// Reads a duration written as one or more `<number><unit>` parts with the units `ms`, `s`,
/// `m`, `h` and `d`, e.g. `500ms`, `2s`, `1h30m`; at most [`MAX_DURATION`].
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXAMPLE: &str = "write it like 500ms, 2s, 1m or 1h30m";
    if text.is_empty() {
        return Err(format!("it is empty; {EXAMPLE}"));
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`; {EXAMPLE}"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{number}` has no unit; {EXAMPLE}")),
            other => {
                return Err(format!(
                    "unknown unit `{other}` (use ms, s, m, h or d); {EXAMPLE}"
                ));
            }
        };
        let too_long = || format!("it is longer than {} days", MAX_DURATION.as_secs() / 86_400);
        let number: u64 = number.parse().map_err(|_| too_long())?;
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(too_long)?;
        if total_ms > MAX_DURATION.as_millis() as u64 {
            return Err(too_long());
        }
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Reads a size in bytes: a number with an optional binary unit `K`, `M`, `G`, `T` or `P`
/// (any case, optionally followed by `i`, `B` or `iB`), e.g. `10G`, `512MiB`, `4096`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    const EXAMPLE: &str = "write it like 512M, 10G or 1T";
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("it does not start with a number; {EXAMPLE}"));
    }
    let (number, unit) = text.split_at(digits);
    let unit = unit.to_ascii_lowercase();
    let prefix = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .or_else(|| unit.strip_suffix('i'))
        .unwrap_or(&unit);
    let shift = match prefix {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(format!("unknown unit `{unit}`; {EXAMPLE}")),
    };
    if prefix.is_empty() && !unit.is_empty() && unit != "b" {
        return Err(format!("unknown unit `{unit}`; {EXAMPLE}"));
    }
    let too_big = || "it does not fit in 64 bits".to_owned();
    let number: u64 = number.parse().map_err(|_| too_big())?;
    number.checked_mul(1u64 << shift).ok_or_else(too_big)
}

/// Checks a CPU list as the kernel's `cpuset.cpus` takes it: comma-separated CPU numbers
/// and ranges `N-M` with `N <= M`, every number at most [`MAX_CPU_INDEX`].
pub(crate) fn check_cpu_list(text: &str) -> Result<(), String> {
    const EXAMPLE: &str = "write it like 0, 0-3 or 0-3,8";
    if text.is_empty() {
        return Err(format!("it is empty; {EXAMPLE}"));
    }
    let cpu = |part: &str| -> Result<u32, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{part}` is not a CPU number; {EXAMPLE}"));
        }
        match part.parse::<u32>() {
            Ok(n) if n <= MAX_CPU_INDEX => Ok(n),
            _ => Err(format!("CPU {part} is above {MAX_CPU_INDEX}")),
        }
    };
    for item in text.split(',') {
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (cpu(first)?, cpu(last)?);
                if first > last {
                    return Err(format!("the range {item} runs backwards"));
                }
            }
            None => {
                cpu(item)?;
            }
        }
    }
    Ok(())
}

/// Checks a job name: 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`.
pub(crate) fn check_job_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 64 {
        return Err("it is longer than 64 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    if !name.bytes().all(allowed) {
        return Err("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Checks a workflow name: 1 to 128 bytes without control characters.
pub(crate) fn check_workflow_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("it is empty");
    }
    if name.len() > 128 {
        return Err("it is longer than 128 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("it must not hold control characters");
    }
    Ok(())
}

/// Writes a duration the way a workflow file would give it (`1h30m`, `500ms`).
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size {
            text.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        text.push_str(&format!("{ms}ms"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_every_unit_and_combination() {
        let cases = [
            ("500ms", 500),
            ("2s", 2_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("0s", 0),
            ("1m30s250ms", 90_250),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_without_unit_or_with_junk_are_refused() {
        for text in [
            "",
            "10",
            "1x",
            "h",
            "1h 30m",
            "-1s",
            "1.5s",
            "99999999999999999999s",
            "400d",
        ] {
            assert!(parse_duration(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn durations_are_written_back_as_read() {
        for text in ["500ms", "2s", "1m", "1h30m", "1d2h", "1m30s250ms"] {
            let duration = parse_duration(text).expect(text);
            assert_eq!(format_duration(duration), text);
        }
    }

    #[test]
    fn sizes_take_binary_units_in_any_spelling() {
        let cases = [
            ("4096", 4096),
            ("10G", 10 << 30),
            ("10g", 10 << 30),
            ("10GiB", 10 << 30),
            ("10Gi", 10 << 30),
            ("10GB", 10 << 30),
            ("512M", 512 << 20),
            ("1T", 1 << 40),
            ("3K", 3 << 10),
            ("7B", 7),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn sizes_with_junk_or_overflow_are_refused() {
        for text in [
            "",
            "G",
            "10X",
            "10 G",
            "-1G",
            "99999999999P",
            "10iB",
            "1.5G",
        ] {
            assert!(parse_size(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn cpu_lists_take_numbers_and_ranges() {
        for text in ["0", "0-3", "0-3,5", "1,2,3", "8191"] {
            assert_eq!(check_cpu_list(text), Ok(()), "{text}");
        }
        for text in [
            "",
            "a",
            "3-1",
            "0-",
            "-1",
            "0,,1",
            "8192",
            "0 - 3",
            "99999999999",
        ] {
            assert!(check_cpu_list(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn job_names_follow_the_character_rule() {
        for name in ["fetch", "Train_2", "a.b-c", &"x".repeat(64)] {
            assert_eq!(check_job_name(name), Ok(()), "{name}");
        }
        for name in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_job_name(name).is_err(), "{name} was accepted");
        }
    }
}
