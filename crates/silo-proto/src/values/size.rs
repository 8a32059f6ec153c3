//! Sizes in bytes: `64M`, `1GiB`, `512k`, `100`; binary multiples only.

/// The largest size silo accepts anywhere: 1 PiB. Larger values are certainly typos.
pub const MAX_SIZE: u64 = 1 << 50;

/// Why a text is not a size. Its message is the reason alone, without the text, so that
/// callers can say which value it was in their own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// It starts with a minus sign.
    #[error("a size cannot be negative")]
    Negative,
    /// It does not start with a digit.
    #[error(
        "expected a whole number of bytes with an optional unit K, M, G or T (e.g. 512K, 64M, 1G)"
    )]
    NotANumber,
    /// It has a fraction, such as `1.5G`.
    #[error("use a whole number with a smaller unit (e.g. 1536M instead of 1.5G)")]
    Fraction,
    /// The unit after the number is not one of the known ones.
    #[error(
        "unknown unit {0:?}: expected K, M, G or T (binary multiples), optionally followed by B or iB"
    )]
    UnknownUnit(String),
    /// It is more than [`MAX_SIZE`].
    #[error("too large: at most 1 PiB")]
    TooLarge,
}

/// Parses a size in bytes: a whole number with an optional binary unit, case-insensitive:
/// `K`, `M`, `G`, `T` (powers of 1024), each optionally followed by `B` or `iB`; a bare
/// number or `B` means bytes. Blanks around the text are ignored. Examples: `1048576`,
/// `512KiB`, `64M`, `1g`, `2TB`.
///
/// Guarantees: the result is at most [`MAX_SIZE`]. Zero is a size; callers for which zero
/// makes no sense refuse it themselves.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotANumber);
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ if unit.starts_with('.') => return Err(SizeError::Fraction),
        _ => return Err(SizeError::UnknownUnit(unit.to_owned())),
    };
    let number: u64 = digits.parse().map_err(|_| SizeError::TooLarge)?;
    match number.checked_mul(multiplier) {
        Some(bytes) if bytes <= MAX_SIZE => Ok(bytes),
        _ => Err(SizeError::TooLarge),
    }
}

/// The binary units, largest first: how many bits they shift, their letter in the value
/// syntax, their name in prose.
const UNITS: [(u32, &str, &str); 4] = [
    (40, "T", "TiB"),
    (30, "G", "GiB"),
    (20, "M", "MiB"),
    (10, "K", "KiB"),
];

/// `bytes` as a whole number of the largest unit that divides it evenly, with that unit's
/// letter and name; `None` when no unit does (and for 0).
fn in_exact_unit(bytes: u64) -> Option<(u64, &'static str, &'static str)> {
    UNITS
        .iter()
        .find(|(shift, _, _)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
        .map(|&(shift, letter, name)| (bytes >> shift, letter, name))
}

/// A byte count as [`parse_size`] reads it back, exactly: with the largest binary unit that
/// divides it evenly (`64M`, `1G`, `1536K`), else in bytes (`100`, `1000001`).
pub fn format_size(bytes: u64) -> String {
    match in_exact_unit(bytes) {
        Some((count, letter, _)) => format!("{count}{letter}"),
        None => bytes.to_string(),
    }
}

/// A byte count for a sentence, exactly, with the same unit as [`format_size`]:
/// `64 MiB`, `1536 KiB`, `100 bytes`.
pub fn size_phrase(bytes: u64) -> String {
    match in_exact_unit(bytes) {
        Some((count, _, name)) => format!("{count} {name}"),
        None if bytes == 1 => "1 byte".to_owned(),
        None => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_bytes_and_binary_units_in_any_case() {
        let good = [
            ("0", 0),
            ("1", 1),
            ("1024", 1024),
            ("1B", 1),
            ("512K", 512 << 10),
            ("512k", 512 << 10),
            ("512KiB", 512 << 10),
            ("512kb", 512 << 10),
            ("64M", 64 << 20),
            ("64mib", 64 << 20),
            ("1G", 1 << 30),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            ("2T", 2 << 40),
            (" 8M ", 8 << 20),
            ("1024T", 1 << 50),
        ];
        for (input, expected) in good {
            assert_eq!(parse_size(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn sizes_refuse_negative_fractional_unknown_and_absurd_values_saying_why() {
        let bad = [
            ("-1", SizeError::Negative),
            ("-64M", SizeError::Negative),
            ("", SizeError::NotANumber),
            ("M", SizeError::NotANumber),
            ("+1", SizeError::NotANumber),
            ("1.5G", SizeError::Fraction),
            ("10X", SizeError::UnknownUnit("X".into())),
            ("10MX", SizeError::UnknownUnit("MX".into())),
            ("10 M", SizeError::UnknownUnit(" M".into())),
            ("1025T", SizeError::TooLarge),
            ("18446744073709551616", SizeError::TooLarge),
            ("17179869184G", SizeError::TooLarge),
        ];
        for (input, expected) in bad {
            assert_eq!(parse_size(input), Err(expected), "{input:?}");
        }
        assert_eq!(
            SizeError::UnknownUnit("X".into()).to_string(),
            "unknown unit \"X\": expected K, M, G or T (binary multiples), optionally followed by B or iB"
        );
    }

    #[test]
    fn sizes_are_written_exactly_in_the_largest_unit_that_divides_them() {
        // (bytes, in the value syntax, in a sentence): the same unit in both.
        let cases = [
            (64 << 20, "64M", "64 MiB"),
            (1 << 30, "1G", "1 GiB"),
            (2 << 40, "2T", "2 TiB"),
            (1536 << 10, "1536K", "1536 KiB"),
            // Never rounded: a limit reads as exactly what it is.
            ((32 << 20) + 1, "33554433", "33554433 bytes"),
            (100, "100", "100 bytes"),
            (1, "1", "1 byte"),
            (0, "0", "0 bytes"),
        ];
        for (bytes, value, phrase) in cases {
            assert_eq!(format_size(bytes), value);
            assert_eq!(size_phrase(bytes), phrase);
        }
    }

    #[test]
    fn every_formatted_size_parses_back_to_itself() {
        for bytes in [
            0,
            1,
            1023,
            1024,
            1536 << 10,
            64 << 20,
            (1 << 30) + 1,
            MAX_SIZE,
        ] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
    }
}
