//! CPU lists in cpuset syntax: `0-3`, `1,3`, `0-1,4`.
//!
//! A list names a set of CPUs: the order of its items and any repetition do not matter, so
//! `2,0` is the set {0, 2}. Every list has one normal form, the kernel's own (ascending
//! ranges that neither overlap nor touch, `0,2` and `0-3`), and that form is what reaches
//! `cpuset.cpus`.

use std::fmt;
use std::str::FromStr;

/// The highest CPU number a list may name (the kernel's largest `NR_CPUS` is 8192).
pub const MAX_CPU: u32 = 8191;

/// Why a text is not a CPU list. Its message is the reason alone, without the text, so
/// that callers can say which value it was in their own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// The text is empty or blank.
    #[error("expected CPU numbers or ranges, e.g. 0-3 or 1,3")]
    Empty,
    /// An item, or one end of a range, is not a whole number.
    #[error("{0:?} is not a CPU number (expected e.g. 0-3 or 1,3)")]
    NotACpu(String),
    /// A CPU number is above [`MAX_CPU`].
    #[error("CPU {0} is above {MAX_CPU}")]
    TooHigh(String),
    /// A range ends below its start, such as `3-1`.
    #[error("range {0} is backwards")]
    Backwards(String),
}

/// A set of CPUs, kept in its normal form: ascending ranges that neither overlap nor
/// touch. Its text ([`fmt::Display`]) is that form, e.g. `0-3,6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    ranges: Vec<(u32, u32)>,
}

impl CpuList {
    /// Parses comma-separated CPU numbers and inclusive ranges (`0-3`, `1,3`, `2,0`,
    /// `0-2,1`), with blanks allowed around each number. Items may come in any order and
    /// may repeat or overlap.
    ///
    /// Guarantees: the list names at least one CPU, each at most [`MAX_CPU`].
    pub fn parse(text: &str) -> Result<CpuList, CpuListError> {
        if text.trim().is_empty() {
            return Err(CpuListError::Empty);
        }
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let range = match item.split_once('-') {
                Some((first, last)) => (cpu(first)?, cpu(last)?),
                None => (cpu(item)?, cpu(item)?),
            };
            if range.0 > range.1 {
                return Err(CpuListError::Backwards(item.trim().to_owned()));
            }
            ranges.push(range);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some(previous) if first <= previous.1.saturating_add(1) => {
                    previous.1 = previous.1.max(last);
                }
                _ => merged.push((first, last)),
            }
        }
        Ok(CpuList { ranges: merged })
    }

    /// The ranges of the set, ascending, inclusive at both ends; none overlap or touch.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// The highest CPU in the set.
    pub fn highest(&self) -> u32 {
        self.ranges.last().map_or(0, |range| range.1)
    }
}

/// One CPU number: digits only, blanks around them ignored.
fn cpu(text: &str) -> Result<u32, CpuListError> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuListError::NotACpu(digits.to_owned()));
    }
    digits
        .parse()
        .ok()
        .filter(|number| *number <= MAX_CPU)
        .ok_or_else(|| CpuListError::TooHigh(digits.to_owned()))
}

impl FromStr for CpuList {
    type Err = CpuListError;

    fn from_str(text: &str) -> Result<CpuList, CpuListError> {
        CpuList::parse(text)
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, &(first, last)) in self.ranges.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(text: &str) -> String {
        CpuList::parse(text).unwrap().to_string()
    }

    #[test]
    fn lists_in_the_kernel_form_stay_as_they_are() {
        for text in ["0", "0-3", "1,3", "0-1,4", "0,2-5,7", "8191"] {
            assert_eq!(normal(text), text);
        }
    }

    #[test]
    fn order_repetition_and_overlap_do_not_matter() {
        assert_eq!(normal("2,0"), "0,2");
        assert_eq!(CpuList::parse("2,0"), CpuList::parse("0,2"));
        assert_eq!(normal("0,0"), "0");
        assert_eq!(normal("0-2,1"), "0-2");
        assert_eq!(normal("4-6,0-5"), "0-6");
        assert_eq!(normal("3,1,2"), "1-3");
        assert_eq!(normal("0,1"), "0-1");
        assert_eq!(normal(" 1 , 3 - 4 "), "1,3-4");
    }

    #[test]
    fn the_set_is_told_by_its_ranges_and_highest_cpu() {
        let list = CpuList::parse("6,0-3").unwrap();
        assert_eq!(list.ranges(), &[(0, 3), (6, 6)]);
        assert_eq!(list.highest(), 6);
        assert_eq!("5".parse::<CpuList>().unwrap().highest(), 5);
    }

    #[test]
    fn malformed_lists_are_refused_saying_why() {
        let cases = [
            ("", CpuListError::Empty),
            ("  ", CpuListError::Empty),
            ("a", CpuListError::NotACpu("a".into())),
            ("1,,2", CpuListError::NotACpu("".into())),
            ("1,", CpuListError::NotACpu("".into())),
            ("0-", CpuListError::NotACpu("".into())),
            ("-1", CpuListError::NotACpu("".into())),
            ("+1", CpuListError::NotACpu("+1".into())),
            ("1 2", CpuListError::NotACpu("1 2".into())),
            ("0;1", CpuListError::NotACpu("0;1".into())),
            ("0-1-2", CpuListError::NotACpu("1-2".into())),
            ("3-1", CpuListError::Backwards("3-1".into())),
            ("8192", CpuListError::TooHigh("8192".into())),
            ("99999999999", CpuListError::TooHigh("99999999999".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(CpuList::parse(text), Err(expected), "{text:?}");
        }
        assert_eq!(
            CpuListError::NotACpu("a".into()).to_string(),
            "\"a\" is not a CPU number (expected e.g. 0-3 or 1,3)"
        );
    }
}
