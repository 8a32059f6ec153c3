//! The manifest's text form: a header, then one line per entry.
//!
//! ```text
//! silo-runtime-manifest 1
//! name python-3.11
//! version 1.0.0
//! d 0755 0 0 usr
//! f 0644 0 0 12 <64 hex sha256> usr/hello%20world.txt
//! l 0 0 usr/lib64 lib
//! ```
//!
//! Fields are separated by one space and lines end with `\n`. In paths and targets every
//! byte up to space (0x00..=0x20), `%` and DEL is written `%XX` (uppercase hex), so a
//! field never holds a separator. Modes are four octal digits. There is exactly one way
//! to write a manifest, so its bytes (and the signature over them) identify it.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Entry, EntryKind, Manifest, ManifestError, check_path, parent};
use crate::spec::{check_name, parse_version};

const MAGIC: &str = "silo-runtime-manifest 1";

pub(super) fn encode(manifest: &Manifest) -> Vec<u8> {
    let mut out = String::with_capacity(64 + manifest.entries.len() * 100);
    out.push_str(MAGIC);
    out.push('\n');
    let _ = writeln!(out, "name {}", escape(&manifest.name));
    let _ = writeln!(out, "version {}", manifest.version);
    for entry in &manifest.entries {
        encode_entry(&mut out, entry);
        out.push('\n');
    }
    out.into_bytes()
}

fn encode_entry(out: &mut String, entry: &Entry) {
    let path = escape(&entry.path);
    let (uid, gid) = (entry.uid, entry.gid);
    // Writing to a String cannot fail.
    let _ = match &entry.kind {
        EntryKind::Dir { mode } => write!(out, "d {mode:04o} {uid} {gid} {path}"),
        EntryKind::File { mode, size, sha256 } => write!(
            out,
            "f {mode:04o} {uid} {gid} {size} {} {path}",
            hex::encode(sha256)
        ),
        EntryKind::Symlink { target } => {
            write!(out, "l {uid} {gid} {path} {}", escape(target))
        }
    };
}

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && needs_escape(c as u8) {
            let _ = write!(out, "%{:02X}", c as u8);
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(field: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes.next().and_then(|&h| (h as char).to_digit(16));
        let lo = bytes.next().and_then(|&l| (l as char).to_digit(16));
        match (hi, lo) {
            // Both digits are < 16, so the byte fits.
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => return Err("a `%` is not followed by two hex digits".to_owned()),
        }
    }
    String::from_utf8(out).map_err(|_| "a path or target is not valid UTF-8".to_owned())
}

pub(super) fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let syntax = |line: usize, reason: String| ManifestError::Syntax { line, reason };
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(syntax(
            1,
            "the manifest is empty or does not end with a newline".into(),
        ));
    };
    let mut lines = body
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l));

    let mut header = |want: &str| -> Result<(usize, &[u8]), ManifestError> {
        let (n, line) = lines
            .next()
            .ok_or_else(|| syntax(1, "the header is incomplete".into()))?;
        Ok((
            n,
            line.strip_prefix(want.as_bytes())
                .ok_or_else(|| syntax(n, format!("expected `{want}`")))?,
        ))
    };
    let (n, rest) = header(MAGIC)?;
    if !rest.is_empty() {
        return Err(syntax(n, format!("expected `{MAGIC}`")));
    }
    let (n, name) = header("name ")?;
    let name = std::str::from_utf8(name).map_err(|_| syntax(n, "the name is not UTF-8".into()))?;
    check_name(name)?;
    let (n, version) = header("version ")?;
    let version =
        std::str::from_utf8(version).map_err(|_| syntax(n, "the version is not UTF-8".into()))?;
    let version = parse_version(version)?;

    let mut entries: Vec<Entry> = Vec::new();
    let mut dirs: HashSet<String> = HashSet::new();
    let mut canonical = String::new();
    for (n, line) in lines {
        let entry = decode_entry(line).map_err(|reason| syntax(n, reason))?;
        check_path(&entry.path).map_err(|bad| syntax(n, format!("`{}`: {bad}", entry.path)))?;
        if let Some(previous) = entries.last() {
            if entry.path == previous.path {
                return Err(syntax(n, format!("`{}` appears twice", entry.path)));
            }
            if entry.path < previous.path {
                return Err(syntax(
                    n,
                    format!(
                        "`{}` is out of order (after `{}`)",
                        entry.path, previous.path
                    ),
                ));
            }
        }
        if let Some(parent) = parent(&entry.path)
            && !dirs.contains(parent)
        {
            return Err(syntax(
                n,
                format!("the parent of `{}` is not a directory entry", entry.path),
            ));
        }
        canonical.clear();
        encode_entry(&mut canonical, &entry);
        if canonical.as_bytes() != line {
            return Err(syntax(
                n,
                format!("the line is not in canonical form (expected `{canonical}`)"),
            ));
        }
        if matches!(entry.kind, EntryKind::Dir { .. }) {
            dirs.insert(entry.path.clone());
        }
        entries.push(entry);
    }
    Ok(Manifest {
        name: name.to_owned(),
        version,
        entries,
    })
}

fn decode_entry(line: &[u8]) -> Result<Entry, String> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let number = |field: &[u8], what: &str| -> Result<u64, String> {
        std::str::from_utf8(field)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| format!("the {what} is not a decimal number"))
    };
    let id = |field: &[u8], what: &str| -> Result<u32, String> {
        u32::try_from(number(field, what)?).map_err(|_| format!("the {what} is too large"))
    };
    let mode = |field: &[u8]| -> Result<u32, String> {
        std::str::from_utf8(field)
            .ok()
            .filter(|t| t.len() == 4)
            .and_then(|t| u32::from_str_radix(t, 8).ok())
            .ok_or_else(|| "the mode is not four octal digits".to_owned())
    };
    match fields.as_slice() {
        [b"d", m, uid, gid, path] => Ok(Entry {
            path: unescape(path)?,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            kind: EntryKind::Dir { mode: mode(m)? },
        }),
        [b"f", m, uid, gid, size, sha, path] => {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(sha, &mut sha256)
                .map_err(|_| "the sha256 is not 64 hex digits".to_owned())?;
            Ok(Entry {
                path: unescape(path)?,
                uid: id(uid, "uid")?,
                gid: id(gid, "gid")?,
                kind: EntryKind::File {
                    mode: mode(m)?,
                    size: number(size, "size")?,
                    sha256,
                },
            })
        }
        [b"l", uid, gid, path, target] => {
            let target = unescape(target)?;
            if target.is_empty() || target.contains('\0') {
                return Err("a symlink target is empty or holds NUL".to_owned());
            }
            Ok(Entry {
                path: unescape(path)?,
                uid: id(uid, "uid")?,
                gid: id(gid, "gid")?,
                kind: EntryKind::Symlink { target },
            })
        }
        [kind, ..] if [&b"d"[..], b"f", b"l"].contains(kind) => {
            Err("wrong number of fields for its kind".to_owned())
        }
        _ => Err("an entry line starts with `d`, `f` or `l`".to_owned()),
    }
}
