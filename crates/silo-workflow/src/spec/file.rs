//! The workflow file's shape as YAML gives it, before any value is checked.
//!
//! Every value that a later check may refuse is kept with its place in the file
//! ([`Spanned`]), so that the refusal can name the line and column. Unknown keys are refused
//! here; duplicate keys in mappings read as [`Entries`] are kept, for the checks to name.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::{Location, SpecError};

/// The largest workflow file read, so that hostile input cannot take unbounded memory.
pub(crate) const MAX_FILE_BYTES: usize = 64 << 20;

/// Reads the file's shape; syntax errors, wrong types and unknown keys are refused here.
pub(crate) fn read(yaml: &str) -> Result<WorkflowFile, SpecError> {
    if yaml.len() > MAX_FILE_BYTES {
        return Err(SpecError::TooLarge {
            bytes: yaml.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    // The default budget allows 250,000 nodes, fewer than a file of 100,000 jobs holds;
    // the file's size limit above already bounds the work.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 20_000_000,
            max_events: 40_000_000,
        },
        // Duplicate keys reach the visitors: derived structs refuse repeated fields, and
        // `Entries` keeps them so the checks can say which job or variable appears twice.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    serde_saphyr::from_str_with_options(yaml, options).map_err(yaml_error)
}

/// The place a spanned value was given, or `None` when the parser does not know it.
pub(crate) fn location<T>(spanned: &Spanned<T>) -> Option<Location> {
    let place = &spanned.referenced;
    (place.line() > 0).then(|| Location {
        line: place.line(),
        column: place.column(),
    })
}

/// Turns the YAML library's error into one located sentence in the file's words (a
/// mapping's entries are "keys" to the person writing it).
fn yaml_error(error: serde_saphyr::Error) -> SpecError {
    let at = error.location().filter(|l| l.line() > 0).map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut message = error.without_snippet().to_string();
    if let Some(at) = at {
        let suffix = format!(" at line {}, column {}", at.line, at.column);
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    let message = message
        .replace("unknown field `", "unknown key `")
        .replace("missing field `", "missing key `")
        .replace("duplicate field `", "duplicate key `");
    SpecError::Yaml { at, message }
}

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowFile {
    pub name: Spanned<String>,
    pub jobs: Option<Spanned<Entries<Option<JobFile>>>>,
    pub max_parallel: Option<Spanned<u64>>,
    pub timeout: Option<Spanned<String>>,
    pub fail_fast: Option<bool>,
    pub defaults: Option<Spanned<JobFile>>,
}

/// One job, or the `defaults` every job inherits; every key is optional here because a
/// job may take it from `defaults`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFile {
    pub command: Option<Spanned<String>>,
    pub args: Option<Vec<Spanned<String>>>,
    pub runtime: Option<Spanned<String>>,
    pub uploads: Option<UploadsFile>,
    pub environment: Option<Entries<Spanned<String>>>,
    pub secret_environment: Option<Entries<Spanned<String>>>,
    pub resources: Option<ResourcesFile>,
    pub retry: Option<RetryFile>,
    pub timeout: Option<Spanned<String>>,
    pub continue_on_failure: Option<bool>,
    pub workdir: Option<Spanned<String>>,
    pub network: Option<Spanned<String>>,
    pub pids: Option<Spanned<u64>>,
    pub disk: Option<Spanned<String>>,
    pub requires: Option<Spanned<Vec<Spanned<RequirementFile>>>>,
    pub needs: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One entry of `requires`: `- job: CONDITION`, a mapping that should have one entry.
/// Anything else is kept as `Other`, for the checks to refuse with a sentence that shows
/// the expected shape.
pub(crate) enum RequirementFile {
    Pair(Entries<Spanned<String>>),
    Other,
}

impl<'de> Deserialize<'de> for RequirementFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequirementVisitor;
        impl<'de> Visitor<'de> for RequirementVisitor {
            type Value = RequirementFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`job: CONDITION`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let entries =
                    Entries::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RequirementFile::Pair(entries))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RequirementFile::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RequirementFile::Other)
            }
        }
        d.deserialize_any(RequirementVisitor)
    }
}

/// `uploads: {files: [...]}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadsFile {
    pub files: Option<Vec<Spanned<String>>>,
}

/// `resources: {...}`; the units are the other system's: MiB, percent of one core, bytes/s.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesFile {
    pub max_cpu: Option<Spanned<u64>>,
    pub max_memory: Option<Spanned<u64>>,
    pub max_io_bps: Option<Spanned<u64>>,
    pub cpu_cores: Option<Spanned<String>>,
}

/// `retry: {limit, backoff, max_backoff}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryFile {
    pub limit: Option<Spanned<u64>>,
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
}

/// A mapping read in file order, keys with their places, duplicates kept.
pub(crate) struct Entries<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}
