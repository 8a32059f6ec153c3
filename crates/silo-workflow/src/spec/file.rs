//! The workflow file's shape, read from its YAML ([`super::yaml`]) before any value is
//! checked.
//!
//! Every value that a later check may refuse is kept with its place in the file
//! ([`Spanned`]), so that the refusal can name the line and column. Unknown keys, repeated
//! keys of a job or of the file, and values of the wrong type are refused here; repeated
//! keys in mappings read as [`Entries`] are kept, for the checks to name.

use super::yaml::{Document, Kind, NodeId, is_null};
use super::{Location, SpecError};

/// The largest workflow file read, so that hostile input cannot take unbounded memory (a
/// workflow of the most jobs, [`super::MAX_JOBS`], each a few lines, is about 5 MB).
pub(crate) const MAX_FILE_BYTES: usize = 16 << 20;

/// How many values beyond the file's own aliases may make the reader visit: an alias is
/// read again wherever it is used, and a file of aliases of aliases must not take
/// unbounded time.
const MAX_REPEATED: usize = 1_000_000;

/// How many bytes of text beyond the file's own its aliases may make the reader copy: an
/// alias of a long text used many times (a megabyte, a million times) must not take
/// unbounded memory, which the count of values alone does not bound.
const MAX_REPEATED_TEXT: usize = 16 << 20;

/// A value and where the file gives it.
pub(crate) struct Spanned<T> {
    pub value: T,
    pub at: Location,
}

/// Reads the file's shape; syntax errors, wrong types and unknown keys are refused here.
pub(crate) fn read(yaml: &str) -> Result<WorkflowFile, SpecError> {
    if yaml.len() > MAX_FILE_BYTES {
        return Err(SpecError::TooLarge {
            bytes: yaml.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let doc = Document::parse(yaml)?;
    let mut reader = Reader {
        doc: &doc,
        budget: doc.len().saturating_add(MAX_REPEATED),
        text_budget: yaml.len().saturating_add(MAX_REPEATED_TEXT),
    };
    reader.workflow()
}

/// The place a spanned value was given.
pub(crate) fn location<T>(spanned: &Spanned<T>) -> Option<Location> {
    Some(spanned.at)
}

/// The whole file.
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
#[derive(Default)]
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

/// `uploads: {files: [...]}`.
#[derive(Default)]
pub(crate) struct UploadsFile {
    pub files: Option<Vec<Spanned<String>>>,
}

/// `resources: {...}`; the units are the other system's: MiB, percent of one core, bytes/s.
#[derive(Default)]
pub(crate) struct ResourcesFile {
    pub max_cpu: Option<Spanned<u64>>,
    pub max_memory: Option<Spanned<u64>>,
    pub max_io_bps: Option<Spanned<u64>>,
    pub cpu_cores: Option<Spanned<String>>,
}

/// `retry: {limit, backoff, max_backoff}`.
#[derive(Default)]
pub(crate) struct RetryFile {
    pub limit: Option<Spanned<u64>>,
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
}

/// A mapping read in file order, keys with their places, duplicates kept.
pub(crate) struct Entries<V>(pub Vec<(Spanned<String>, V)>);

/// Where a key is, for messages: `timeout`, `defaults.timeout`, `jobs.fetch.timeout`.
#[derive(Clone, Copy)]
enum Path<'p> {
    Top,
    Defaults,
    Job(&'p str),
}

impl Path<'_> {
    fn key(self, key: &str) -> String {
        match self {
            Path::Top => key.to_owned(),
            Path::Defaults => format!("defaults.{key}"),
            Path::Job(job) => format!("jobs.{job}.{key}"),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "jobs",
    "max_parallel",
    "timeout",
    "fail_fast",
    "defaults",
];
const JOB_KEYS: &[&str] = &[
    "command",
    "args",
    "runtime",
    "uploads",
    "environment",
    "secret_environment",
    "resources",
    "retry",
    "timeout",
    "continue_on_failure",
    "workdir",
    "network",
    "pids",
    "disk",
    "requires",
    "needs",
];
const UPLOADS_KEYS: &[&str] = &["files"];
const RESOURCES_KEYS: &[&str] = &["max_cpu", "max_memory", "max_io_bps", "cpu_cores"];
const RETRY_KEYS: &[&str] = &["limit", "backoff", "max_backoff"];

/// Reads a [`Document`] into the file's shape, counting every value it visits against
/// `budget` and every byte of text against `text_budget`.
struct Reader<'d, 'a> {
    doc: &'d Document<'a>,
    budget: usize,
    text_budget: usize,
}

impl<'d, 'a> Reader<'d, 'a> {
    /// The node `id`, counted against the budget.
    fn visit(&mut self, id: NodeId) -> Result<&'d super::yaml::Node<'a>, SpecError> {
        let doc: &'d Document<'a> = self.doc;
        let node = doc.node(id);
        self.budget = self.budget.checked_sub(1).ok_or_else(|| SpecError::Yaml {
            at: Some(node.at),
            message: format!("aliases repeat more than {MAX_REPEATED} values; use fewer aliases"),
        })?;
        if let Kind::Scalar { text, .. } = &node.kind {
            self.text_budget =
                self.text_budget
                    .checked_sub(text.len())
                    .ok_or_else(|| SpecError::Yaml {
                        at: Some(node.at),
                        message: format!(
                            "aliases repeat more than {} MiB of text; use fewer aliases",
                            MAX_REPEATED_TEXT >> 20
                        ),
                    })?;
        }
        Ok(node)
    }

    fn workflow(&mut self) -> Result<WorkflowFile, SpecError> {
        let (mut name, mut jobs, mut max_parallel, mut timeout, mut fail_fast, mut defaults) =
            (None, None, None, None, None, None);
        let root = self.doc.root();
        if let Some(root) = root {
            let what = "a workflow file (name, jobs, ...)";
            self.fields(root, what, TOP_KEYS, |r, field, value| {
                let path = Path::Top;
                match field {
                    0 => name = r.opt_string(value, path, "name")?,
                    1 => jobs = r.jobs(value)?,
                    2 => max_parallel = r.opt_number(value, path, "max_parallel")?,
                    3 => timeout = r.opt_string(value, path, "timeout")?,
                    4 => fail_fast = r.opt_bool(value, path, "fail_fast")?,
                    _ => defaults = r.opt_job(value, Path::Defaults, "defaults")?,
                }
                Ok(())
            })?;
        }
        let name = name.ok_or_else(|| SpecError::Yaml {
            at: root.map(|r| self.doc.node(r).at),
            message: "missing key `name`".into(),
        })?;
        Ok(WorkflowFile {
            name,
            jobs,
            max_parallel,
            timeout,
            fail_fast,
            defaults,
        })
    }

    fn jobs(&mut self, id: NodeId) -> Result<Option<Spanned<Entries<Option<JobFile>>>>, SpecError> {
        let node = self.visit(id)?;
        let Kind::Map { start, len } = node.kind else {
            if is_null_node(&node.kind) {
                return Ok(None);
            }
            return Err(wrong(node, "jobs", "a mapping of job names to jobs"));
        };
        let mut entries = Vec::with_capacity(len as usize);
        for (key, value) in self.doc.entries(start, len) {
            let name = self.key(key, "job names")?;
            let job = self.opt_job(
                value,
                Path::Job(&name.value),
                &format!("jobs.{}", name.value),
            )?;
            entries.push((name, job.map(|j| j.value)));
        }
        Ok(Some(Spanned {
            value: Entries(entries),
            at: node.at,
        }))
    }

    /// A job's keys, or `defaults`'; null reads as none.
    fn opt_job(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<Spanned<JobFile>>, SpecError> {
        let at = self.doc.node(id).at;
        if is_null_node(&self.doc.node(id).kind) {
            self.visit(id)?;
            return Ok(None);
        }
        let mut job = JobFile::default();
        self.fields(id, key, JOB_KEYS, |r, field, value| {
            match field {
                0 => job.command = r.opt_string(value, path, "command")?,
                1 => job.args = r.opt_strings(value, path, "args")?.map(|s| s.value),
                2 => job.runtime = r.opt_string(value, path, "runtime")?,
                3 => job.uploads = r.uploads(value, path)?,
                4 => job.environment = r.opt_entries(value, path, "environment")?,
                5 => job.secret_environment = r.opt_entries(value, path, "secret_environment")?,
                6 => job.resources = r.resources(value, path)?,
                7 => job.retry = r.retry(value, path)?,
                8 => job.timeout = r.opt_string(value, path, "timeout")?,
                9 => job.continue_on_failure = r.opt_bool(value, path, "continue_on_failure")?,
                10 => job.workdir = r.opt_string(value, path, "workdir")?,
                11 => job.network = r.opt_string(value, path, "network")?,
                12 => job.pids = r.opt_number(value, path, "pids")?,
                13 => job.disk = r.opt_string(value, path, "disk")?,
                14 => job.requires = r.requires(value, path)?,
                _ => job.needs = r.opt_strings(value, path, "needs")?,
            }
            Ok(())
        })?;
        Ok(Some(Spanned { value: job, at }))
    }

    fn uploads(&mut self, id: NodeId, path: Path<'_>) -> Result<Option<UploadsFile>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        let mut uploads = UploadsFile::default();
        let what = path.key("uploads");
        self.fields(id, &what, UPLOADS_KEYS, |r, _, value| {
            uploads.files = r
                .opt_strings(value, path, "uploads.files")?
                .map(|s| s.value);
            Ok(())
        })?;
        Ok(Some(uploads))
    }

    fn resources(
        &mut self,
        id: NodeId,
        path: Path<'_>,
    ) -> Result<Option<ResourcesFile>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        let mut resources = ResourcesFile::default();
        let what = path.key("resources");
        self.fields(id, &what, RESOURCES_KEYS, |r, field, value| {
            match field {
                0 => resources.max_cpu = r.opt_number(value, path, "resources.max_cpu")?,
                1 => resources.max_memory = r.opt_number(value, path, "resources.max_memory")?,
                2 => resources.max_io_bps = r.opt_number(value, path, "resources.max_io_bps")?,
                _ => resources.cpu_cores = r.opt_string(value, path, "resources.cpu_cores")?,
            }
            Ok(())
        })?;
        Ok(Some(resources))
    }

    fn retry(&mut self, id: NodeId, path: Path<'_>) -> Result<Option<RetryFile>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        let mut retry = RetryFile::default();
        let what = path.key("retry");
        self.fields(id, &what, RETRY_KEYS, |r, field, value| {
            match field {
                0 => retry.limit = r.opt_number(value, path, "retry.limit")?,
                1 => retry.backoff = r.opt_string(value, path, "retry.backoff")?,
                _ => retry.max_backoff = r.opt_string(value, path, "retry.max_backoff")?,
            }
            Ok(())
        })?;
        Ok(Some(retry))
    }

    /// `requires`: a list whose entries are kept as `job: CONDITION` mappings when they are
    /// mappings of text, else as [`RequirementFile::Other`] for the checks to refuse.
    fn requires(
        &mut self,
        id: NodeId,
        path: Path<'_>,
    ) -> Result<Option<Spanned<Vec<Spanned<RequirementFile>>>>, SpecError> {
        let node = self.visit(id)?;
        let Kind::Seq { start, len } = node.kind else {
            if is_null_node(&node.kind) {
                return Ok(None);
            }
            return Err(wrong(
                node,
                &path.key("requires"),
                "a list like `- fetch: COMPLETED`",
            ));
        };
        let mut entries = Vec::with_capacity(len as usize);
        for &item in self.doc.items(start, len) {
            let entry = self.visit(item)?;
            let value = match entry.kind {
                Kind::Map { start, len } => {
                    let mut pairs = Vec::with_capacity(len as usize);
                    let mut text = true;
                    for (key, value) in self.doc.entries(start, len) {
                        let (k, v) = (self.visit(key)?, self.visit(value)?);
                        match (&k.kind, &v.kind) {
                            (
                                Kind::Scalar { text: k_text, .. },
                                Kind::Scalar { text: v_text, .. },
                            ) => {
                                pairs.push((
                                    Spanned {
                                        value: k_text.to_string(),
                                        at: k.at,
                                    },
                                    Spanned {
                                        value: v_text.to_string(),
                                        at: v.at,
                                    },
                                ));
                            }
                            _ => text = false,
                        }
                    }
                    match text {
                        true => RequirementFile::Pair(Entries(pairs)),
                        false => RequirementFile::Other,
                    }
                }
                _ => RequirementFile::Other,
            };
            entries.push(Spanned {
                value,
                at: entry.at,
            });
        }
        Ok(Some(Spanned {
            value: entries,
            at: node.at,
        }))
    }

    /// A mapping of text to text (`environment`), duplicates kept; null reads as none.
    fn opt_entries(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<Entries<Spanned<String>>>, SpecError> {
        let node = self.visit(id)?;
        let Kind::Map { start, len } = node.kind else {
            if is_null_node(&node.kind) {
                return Ok(None);
            }
            return Err(wrong(node, &path.key(key), "a mapping of names to values"));
        };
        let mut entries = Vec::with_capacity(len as usize);
        for (name, value) in self.doc.entries(start, len) {
            let name = self.key(name, "variable names")?;
            let value = self.string(value, || format!("{}.{}", path.key(key), name.value))?;
            entries.push((name, value));
        }
        Ok(Some(Entries(entries)))
    }

    /// A mapping's keys that `keys` names, each given to `each` with its index in `keys`;
    /// any other key, or one given twice, is refused. `what` names the mapping in a message
    /// when the node is not one.
    fn fields(
        &mut self,
        id: NodeId,
        what: &str,
        keys: &[&str],
        mut each: impl FnMut(&mut Self, usize, NodeId) -> Result<(), SpecError>,
    ) -> Result<(), SpecError> {
        let node = self.visit(id)?;
        let Kind::Map { start, len } = node.kind else {
            return Err(wrong(node, what, "a mapping"));
        };
        let mut seen = 0u64;
        for (key, value) in self.doc.entries(start, len) {
            let key_node = self.visit(key)?;
            let field = match &key_node.kind {
                Kind::Scalar { text, .. } => keys.iter().position(|k| k == text),
                _ => None,
            };
            let Some(field) = field else {
                let message = match &key_node.kind {
                    Kind::Scalar { .. } => format!(
                        "unknown key {}, expected one of {}",
                        key_node.kind.describe(),
                        keys.join(", ")
                    ),
                    kind => format!(
                        "a key here is one of {}, not {}",
                        keys.join(", "),
                        kind.describe()
                    ),
                };
                return Err(SpecError::Yaml {
                    at: Some(key_node.at),
                    message,
                });
            };
            if seen & (1 << field) != 0 {
                let doc = self.doc;
                let first = doc
                    .entries(start, len)
                    .map(|(k, _)| doc.node(k))
                    .find(|k| matches!(&k.kind, Kind::Scalar { text, .. } if text == keys[field]));
                return Err(SpecError::Yaml {
                    at: Some(key_node.at),
                    message: format!(
                        "duplicate key `{}`{}",
                        keys[field],
                        first.map_or(String::new(), |k| format!(" (first at {})", k.at))
                    ),
                });
            }
            seen |= 1 << field;
            each(self, field, value)?;
        }
        Ok(())
    }

    /// A key of a mapping read as [`Entries`]: text. `what` says what the keys are.
    fn key(&mut self, id: NodeId, what: &str) -> Result<Spanned<String>, SpecError> {
        let node = self.visit(id)?;
        match &node.kind {
            Kind::Scalar { text, .. } => Ok(Spanned {
                value: text.to_string(),
                at: node.at,
            }),
            kind => Err(SpecError::Yaml {
                at: Some(node.at),
                message: format!("{what} are text, not {}", kind.describe()),
            }),
        }
    }

    /// Whether the node is null (and so absent); counts it when it is.
    fn null(&mut self, id: NodeId) -> Result<bool, SpecError> {
        match is_null_node(&self.doc.node(id).kind) {
            true => self.visit(id).map(|_| true),
            false => Ok(false),
        }
    }

    /// Text: any scalar as written (null as the empty text); `key` names it in a message.
    fn string(
        &mut self,
        id: NodeId,
        key: impl FnOnce() -> String,
    ) -> Result<Spanned<String>, SpecError> {
        let node = self.visit(id)?;
        match &node.kind {
            Kind::Scalar { text, plain } => Ok(Spanned {
                value: match *plain && is_null(text) {
                    true => String::new(),
                    false => text.to_string(),
                },
                at: node.at,
            }),
            _ => Err(wrong(node, &key(), "text")),
        }
    }

    fn opt_string(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<Spanned<String>>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        self.string(id, || path.key(key)).map(Some)
    }

    /// A list of text; null reads as none.
    fn opt_strings(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<Spanned<Vec<Spanned<String>>>>, SpecError> {
        let node = self.visit(id)?;
        let Kind::Seq { start, len } = node.kind else {
            if is_null_node(&node.kind) {
                return Ok(None);
            }
            return Err(wrong(node, &path.key(key), "a list"));
        };
        let mut items = Vec::with_capacity(len as usize);
        for (i, &item) in self.doc.items(start, len).iter().enumerate() {
            items.push(self.string(item, || format!("{}[{i}]", path.key(key)))?);
        }
        Ok(Some(Spanned {
            value: items,
            at: node.at,
        }))
    }

    /// A whole number of 0 or more: decimal, or YAML's `0x` and `0o` forms; null reads as
    /// none.
    fn opt_number(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<Spanned<u64>>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        let node = self.visit(id)?;
        let number = match &node.kind {
            Kind::Scalar { text, plain: true } => parse_number(text),
            _ => None,
        };
        match number {
            Some(value) => Ok(Some(Spanned { value, at: node.at })),
            None => Err(wrong(node, &path.key(key), "a whole number (0 or more)")),
        }
    }

    /// `true` or `false`; null reads as none.
    fn opt_bool(
        &mut self,
        id: NodeId,
        path: Path<'_>,
        key: &str,
    ) -> Result<Option<bool>, SpecError> {
        if self.null(id)? {
            return Ok(None);
        }
        let node = self.visit(id)?;
        if let Kind::Scalar { text, plain: true } = &node.kind {
            match text.as_ref() {
                "true" | "True" | "TRUE" => return Ok(Some(true)),
                "false" | "False" | "FALSE" => return Ok(Some(false)),
                _ => {}
            }
        }
        Err(wrong(node, &path.key(key), "`true` or `false`"))
    }
}

/// Whether a node is YAML's null (an empty value, `~` or `null`).
fn is_null_node(kind: &Kind<'_>) -> bool {
    matches!(kind, Kind::Scalar { text, plain: true } if is_null(text))
}

/// YAML 1.2's unsigned integers: `123`, `+123`, `0x7B`, `0o173`.
fn parse_number(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if let Some(hex) = digits.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.starts_with('+'));
    }
    if let Some(octal) = digits.strip_prefix("0o") {
        return u64::from_str_radix(octal, 8)
            .ok()
            .filter(|_| !octal.starts_with('+'));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// "`key` must be EXPECTED, not WHAT IT IS" at the node.
fn wrong(node: &super::yaml::Node<'_>, key: &str, expected: &str) -> SpecError {
    SpecError::Yaml {
        at: Some(node.at),
        message: format!("{key} must be {expected}, not {}", node.kind.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_are_read_as_yaml_writes_them() {
        for (text, number) in [
            ("0", Some(0)),
            ("512", Some(512)),
            ("+7", Some(7)),
            ("0x1F", Some(31)),
            ("0o17", Some(15)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("-1", None),
            ("1.5", None),
            ("1_000", None),
            ("", None),
            ("+", None),
            ("0x", None),
            ("0x+1", None),
            ("many", None),
        ] {
            assert_eq!(parse_number(text), number, "{text}");
        }
    }
}
