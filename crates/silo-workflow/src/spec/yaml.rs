//! A workflow file's YAML as a tree of nodes with their places, built from granit-parser's
//! events (the parser under serde-saphyr) in one pass.
//!
//! serde-saphyr, which silo used before, read the benchmark's 10,000-job file in 100-200 ms
//! on a 2-vCPU VM, about three times the parser's own 30-50 ms (its event layer, and the
//! places of values); this tree is built during the parser's pass, and the whole
//! validation of that file takes 45-65 ms there. Nothing is copied but the text of the
//! values [`super::file`] keeps.
//!
//! What YAML allows and a workflow file may use: one document; anchors and aliases (an
//! alias is the anchored node itself, not a copy, so a file of aliases costs no memory);
//! merge keys (`<<: *defaults` or `<<: [*a, *b]`: the mapping's own keys win, then the
//! earlier source); `!!str` to make a scalar text, and the other tags of YAML's core schema
//! (`!!int`, `!!bool`, `!!null`, `!!float`, `!!seq`, `!!map`), which change nothing. Any
//! other tag (`!!binary`, `!!timestamp`, `!custom`) is refused: a value silo would read
//! differently from what its tag says is a mistake to report, not to guess. A node nested
//! deeper than [`MAX_DEPTH`] collections, an alias to a collection from inside it,
//! merges that copy more than [`MAX_MERGED`] entries and files of more than [`MAX_VALUES`]
//! values are refused, so that no input can take unbounded time or memory.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use granit_parser::{Event, Parser, ScalarStyle, Span};

use super::{Location, SpecError};

/// The deepest nesting of collections read.
pub(crate) const MAX_DEPTH: usize = 64;
/// The most mapping entries that merge keys may copy in one file.
pub(crate) const MAX_MERGED: usize = 1_000_000;
/// The most values (scalars and collections, an alias not counted) read from one file:
/// about 20 per job of the largest workflow ([`super::MAX_JOBS`]). Each value costs the
/// reader about a hundred bytes, so that a file of small values (`[0,0,0,…]`) cannot make
/// it take more than a few hundred MB.
pub(crate) const MAX_VALUES: usize = 2_000_000;

/// A node's index in its [`Document`].
pub(crate) type NodeId = u32;

/// The parsed file: every node once, in the order the file gives them.
pub(crate) struct Document<'a> {
    nodes: Vec<Node<'a>>,
    /// The children of every collection, each a range of this: a sequence's items, or a
    /// mapping's keys and values in turns.
    children: Vec<NodeId>,
    root: Option<NodeId>,
}

/// One node: a scalar, a sequence or a mapping, and where it starts.
pub(crate) struct Node<'a> {
    pub at: Location,
    pub kind: Kind<'a>,
}

/// What a node is.
pub(crate) enum Kind<'a> {
    /// A scalar's text after YAML's escapes; `plain` when it was written without quotes or
    /// block style and without `!!str`, so that it may read as a number, a boolean or null.
    Scalar { text: Cow<'a, str>, plain: bool },
    /// A sequence: `len` items from `start` in [`Document::children`].
    Seq { start: u32, len: u32 },
    /// A mapping: `len` entries, each a key and its value, from `start` in
    /// [`Document::children`]; merge keys already applied.
    Map { start: u32, len: u32 },
}

impl<'a> Kind<'a> {
    /// What it is, for a message: "a list", "a mapping" or the scalar in backticks.
    pub(crate) fn describe(&self) -> String {
        match self {
            Kind::Scalar { text, plain } if *plain && is_null(text) => "empty".into(),
            Kind::Scalar { text, .. } => {
                let shown: String = text.chars().take(40).collect();
                let more = if shown.len() < text.len() { "…" } else { "" };
                format!("`{}{more}`", shown.escape_debug())
            }
            Kind::Seq { .. } => "a list".into(),
            Kind::Map { .. } => "a mapping".into(),
        }
    }
}

/// Whether a plain scalar is YAML's null.
pub(crate) fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

impl<'a> Document<'a> {
    /// The top node; `None` for a file without one (empty, or only comments).
    pub(crate) fn root(&self) -> Option<NodeId> {
        self.root
    }

    /// How many nodes the file has (an alias is not one).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node `id`.
    pub(crate) fn node(&self, id: NodeId) -> &Node<'a> {
        &self.nodes[id as usize]
    }

    /// A sequence's items.
    pub(crate) fn items(&self, start: u32, len: u32) -> &[NodeId] {
        &self.children[start as usize..(start + len) as usize]
    }

    /// A mapping's entries, each a key and its value.
    pub(crate) fn entries(&self, start: u32, len: u32) -> impl Iterator<Item = (NodeId, NodeId)> {
        self.children[start as usize..(start + 2 * len) as usize]
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
    }

    /// Parses `yaml`; syntax errors, more than one document and the limits above are
    /// refused with their place.
    pub(crate) fn parse(yaml: &'a str) -> Result<Document<'a>, SpecError> {
        Builder::default().run(yaml)
    }
}

/// A collection being read.
struct Open {
    id: NodeId,
    map: bool,
    anchor: usize,
    /// Where its items start in [`Builder::pending`].
    from: usize,
    /// Whether it has a `<<` key.
    merges: bool,
}

#[derive(Default)]
struct Builder<'a> {
    nodes: Vec<Node<'a>>,
    children: Vec<NodeId>,
    /// The items of the open collections, innermost last.
    pending: Vec<NodeId>,
    open: Vec<Open>,
    /// Anchor ids (the parser's) to the nodes they name, once those are complete.
    anchors: HashMap<usize, NodeId>,
    merged: usize,
    root: Option<NodeId>,
    documents: usize,
}

impl<'a> Builder<'a> {
    fn run(mut self, yaml: &'a str) -> Result<Document<'a>, SpecError> {
        for event in Parser::new_from_str(yaml) {
            let (event, span) = event.map_err(|e| {
                let mark = e.marker();
                SpecError::Yaml {
                    at: Some(Location {
                        line: mark.line() as u64,
                        column: mark.col() as u64 + 1,
                    }),
                    message: e.info(),
                }
            })?;
            self.event(event, &span)?;
        }
        Ok(Document {
            nodes: self.nodes,
            children: self.children,
            root: self.root,
        })
    }

    fn event(&mut self, event: Event<'a>, span: &Span) -> Result<(), SpecError> {
        let at = Location {
            line: span.start.line() as u64,
            column: span.start.col() as u64 + 1,
        };
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(refused(
                        at,
                        "a workflow file holds one YAML document; this is a second",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                check_tag(at, tag.as_deref())?;
                let forced_text = tag.as_ref().is_some_and(|t| t.core_suffix() == Some("str"));
                let plain = style == ScalarStyle::Plain && !forced_text;
                let id = self.push(at, Kind::Scalar { text, plain })?;
                if anchor != 0 {
                    self.anchors.insert(anchor, id);
                }
                self.add(id);
            }
            Event::Alias(anchor) => {
                let Some(&id) = self.anchors.get(&anchor) else {
                    return Err(refused(
                        at,
                        "this alias names a collection that contains it; a workflow file cannot refer to itself",
                    ));
                };
                self.add(id);
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                check_tag(at, tag.as_deref())?;
                if self.open.len() >= MAX_DEPTH {
                    return Err(refused(
                        at,
                        &format!("collections are nested more than {MAX_DEPTH} deep"),
                    ));
                }
                let map = matches!(event, Event::MappingStart(..));
                let id = self.push(at, Kind::Seq { start: 0, len: 0 })?;
                self.open.push(Open {
                    id,
                    map,
                    anchor,
                    from: self.pending.len(),
                    merges: false,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => self.close()?,
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, at: Location, kind: Kind<'a>) -> Result<NodeId, SpecError> {
        if self.nodes.len() >= MAX_VALUES {
            return Err(refused(
                at,
                &format!("the file has more than {MAX_VALUES} values"),
            ));
        }
        let id = NodeId::try_from(self.nodes.len())
            .map_err(|_| refused(at, "the file has too many values"))?;
        self.nodes.push(Node { at, kind });
        Ok(id)
    }

    /// Adds a complete node to the collection open now, or makes it the root.
    fn add(&mut self, id: NodeId) {
        match self.open.last_mut() {
            Some(open) => {
                // A key position: items so far, counted from the collection's start, even.
                if open.map
                    && (self.pending.len() - open.from).is_multiple_of(2)
                    && matches!(&self.nodes[id as usize].kind,
                        Kind::Scalar { text, plain: true } if text == "<<")
                {
                    open.merges = true;
                }
                self.pending.push(id);
            }
            None => self.root = Some(id),
        }
    }

    /// Completes the innermost open collection.
    fn close(&mut self) -> Result<(), SpecError> {
        let Some(open) = self.open.pop() else {
            return Ok(());
        };
        let start = u32::try_from(self.children.len()).map_err(|_| {
            refused(
                self.nodes[open.id as usize].at,
                "the file has too many values",
            )
        })?;
        let kind = if open.map && open.merges {
            let len = self.merge(&open)?;
            Kind::Map { start, len }
        } else {
            self.children.extend(self.pending.drain(open.from..));
            let len = self.children.len() as u32 - start;
            match open.map {
                true => Kind::Map {
                    start,
                    len: len / 2,
                },
                false => Kind::Seq { start, len },
            }
        };
        self.pending.truncate(open.from);
        self.nodes[open.id as usize].kind = kind;
        if open.anchor != 0 {
            self.anchors.insert(open.anchor, open.id);
        }
        self.add(open.id);
        Ok(())
    }

    /// Writes the entries of the mapping `open`, whose keys include `<<`, to `children`:
    /// its own entries in order, then each source's entries whose keys it has not seen
    /// (the earlier source first). Returns how many.
    fn merge(&mut self, open: &Open) -> Result<u32, SpecError> {
        let items: Vec<NodeId> = self.pending.drain(open.from..).collect();
        let mut sources = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let start = self.children.len();
        for pair in items.chunks_exact(2) {
            let (key, value) = (pair[0], pair[1]);
            match &self.nodes[key as usize].kind {
                Kind::Scalar { text, plain: true } if text == "<<" => {
                    let node = &self.nodes[value as usize];
                    match node.kind {
                        Kind::Map { .. } => sources.push(value),
                        Kind::Seq { start, len } => {
                            for &item in &self.children[start as usize..(start + len) as usize] {
                                match self.nodes[item as usize].kind {
                                    Kind::Map { .. } => sources.push(item),
                                    _ => {
                                        return Err(refused(
                                            self.nodes[item as usize].at,
                                            "a merge key (`<<`) takes a mapping or a list of mappings",
                                        ));
                                    }
                                }
                            }
                        }
                        Kind::Scalar { .. } => {
                            return Err(refused(
                                node.at,
                                "a merge key (`<<`) takes a mapping or a list of mappings",
                            ));
                        }
                    }
                }
                kind => {
                    if let Kind::Scalar { text, .. } = kind {
                        seen.insert(text);
                    }
                    self.children.extend([key, value]);
                }
            }
        }
        let mut copied = Vec::new();
        for source in sources {
            let Kind::Map { start, len } = self.nodes[source as usize].kind else {
                continue;
            };
            for pair in self.children[start as usize..(start + 2 * len) as usize].chunks_exact(2) {
                self.merged += 1;
                if self.merged > MAX_MERGED {
                    return Err(refused(
                        self.nodes[open.id as usize].at,
                        &format!("merge keys copy more than {MAX_MERGED} entries"),
                    ));
                }
                let fresh = match &self.nodes[pair[0] as usize].kind {
                    Kind::Scalar { text, .. } => seen.insert(text),
                    _ => true,
                };
                if fresh {
                    copied.extend_from_slice(pair);
                }
            }
        }
        self.children.extend(copied);
        Ok(((self.children.len() - start) / 2) as u32)
    }
}

/// Refuses a tag outside YAML's core schema (see the module's documentation).
fn check_tag(at: Location, tag: Option<&granit_parser::Tag>) -> Result<(), SpecError> {
    match tag {
        Some(tag) if tag.core_suffix().is_none() => {
            // As written (`!!binary`), not as resolved (`tag:yaml.org,2002:binary`).
            let written = match tag.original_handle() {
                "" => tag.to_string(),
                handle => format!("{handle}{}", tag.suffix()),
            };
            Err(refused(
                at,
                &format!(
                    "the tag `{written}` is not one a workflow file may use (its values are text, numbers, booleans, lists and mappings; `!!str` makes a value text)"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn refused(at: Location, message: &str) -> SpecError {
    SpecError::Yaml {
        at: Some(at),
        message: message.to_owned(),
    }
}
