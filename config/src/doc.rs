//! A parsed TOML document that keeps every span, so that any key path can be located.
//!
//! Sections are deserialized one at a time (one load, one device, one tier), so that a mistake in
//! one entry never hides the mistakes in the others. Unknown keys are collected with
//! `serde_ignored`; type errors carry the span toml gives them.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::{Diagnostic, SourceFile};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    /// 0-based; shown counting from 1.
    Index(usize),
}

/// A key path such as `loads[3].control.kind`. Array positions are shown counting from 1, as a
/// person counts the `[[loads]]` blocks in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{}]", n + 1)?,
            }
        }
        Ok(())
    }
}

/// Where to point within a key/value pair.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Key,
    Value,
}

/// A document being read: its source, its spanned tree and the mistakes found so far.
pub(crate) struct Doc<'a> {
    file: &'a SourceFile,
    root: Option<Spanned<DeTable<'a>>>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl<'a> Doc<'a> {
    /// Parses the file; syntax errors are all reported (toml recovers where it can).
    pub(crate) fn parse(file: &'a SourceFile) -> Doc<'a> {
        let (root, errors) = DeTable::parse_recoverable(file.text());
        let mut doc = Doc {
            file,
            root: None,
            diags: Vec::new(),
        };
        if errors.is_empty() {
            doc.root = Some(root);
        } else {
            for e in errors {
                let at = e.span().map_or(0, |s| s.start);
                doc.push(
                    at,
                    String::new(),
                    format!("syntax error: {}", tidy(e.message())),
                );
            }
        }
        doc
    }

    pub(crate) fn file_name(&self) -> &str {
        self.file.name()
    }

    /// 1-based line and column of a byte offset in this document.
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        self.file.position(offset)
    }

    pub(crate) fn is_parsed(&self) -> bool {
        self.root.is_some()
    }

    fn push(&mut self, offset: usize, path: String, message: String) {
        let (line, col) = self.file.position(offset);
        self.diags.push(Diagnostic {
            file: self.file.name().to_owned(),
            line,
            col,
            path,
            message,
        });
    }

    /// Reports a mistake at the value (or, where it is missing, the closest enclosing item) of `path`.
    pub(crate) fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.error_at(path, At::Value, message);
    }

    pub(crate) fn error_at(&mut self, path: &KeyPath, at: At, message: impl Into<String>) {
        let span = self.span(path, at);
        self.push(span.start, path.to_string(), message.into());
    }

    /// The span of the item at `path`, or of its closest existing ancestor.
    pub(crate) fn span(&self, path: &KeyPath, at: At) -> Range<usize> {
        let Some(root) = &self.root else {
            return 0..0;
        };
        let mut best = root.span();
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for (i, seg) in path.0.iter().enumerate() {
            let last = i + 1 == path.0.len();
            let next = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => {
                    t.iter()
                        .find(|(key, _)| key.get_ref() == k)
                        .map(|(key, v)| {
                            if last && at == At::Key {
                                best = key.span();
                            } else {
                                best = value_span(v, key.span());
                            }
                            v
                        })
                }
                (Seg::Index(n), _, Some(v)) => {
                    let item = v.get_ref().as_array().and_then(|a| a.get(*n));
                    if let Some(item) = item {
                        best = value_span(item, best.clone());
                    }
                    item
                }
                _ => None,
            };
            let Some(v) = next else { break };
            value = Some(v);
            table = v.get_ref().as_table();
        }
        best
    }

    /// The value at `path`, if present.
    pub(crate) fn get(&self, path: &KeyPath) -> Option<&Spanned<DeValue<'a>>> {
        let root = self.root.as_ref()?;
        let mut table = Some(root.get_ref());
        let mut value = None;
        for seg in &path.0 {
            let v = match seg {
                Seg::Key(k) => table?
                    .iter()
                    .find(|(key, _)| key.get_ref() == k)
                    .map(|(_, v)| v),
                Seg::Index(n) => value
                    .and_then(|v: &Spanned<DeValue<'a>>| v.get_ref().as_array())
                    .and_then(|a| a.get(*n)),
            }?;
            table = v.get_ref().as_table();
            value = Some(v);
        }
        value
    }

    /// Keys of the table at `path` (the root when `path` is empty), in file order.
    pub(crate) fn keys(&self, path: &KeyPath) -> Vec<String> {
        let table = if path.0.is_empty() {
            self.root.as_ref().map(|r| r.get_ref())
        } else {
            self.get(path).and_then(|v| v.get_ref().as_table())
        };
        table.map_or_else(Vec::new, |t| {
            t.iter().map(|(k, _)| k.get_ref().to_string()).collect()
        })
    }

    /// Reports every key of the table at `path` that is not in `known`.
    pub(crate) fn unknown_keys(&mut self, path: &KeyPath, known: &[&str]) {
        for key in self.keys(path) {
            if !known.contains(&key.as_str()) {
                let message = unknown_key_message(&key, known);
                self.error_at(&path.key(&key), At::Key, message);
            }
        }
    }

    /// Deserializes the value at `path` into `T`, reporting unknown keys and type errors.
    /// `None` when absent or wrong; the reason is then among the diagnostics.
    ///
    /// A value of the wrong type under an optional key does not hide the rest of the entry: the key
    /// is reported, set aside, and the entry read again, so its other mistakes are found too. The
    /// entry still counts as wrong (the diagnostic is there), so nothing built from it is used.
    pub(crate) fn read<T: DeserializeOwned>(&mut self, path: &KeyPath) -> Option<T> {
        let mut value = self.get(path)?.clone();
        let known = crate::schema::fields_of::<T>();
        let mut set_aside: Vec<String> = Vec::new();
        // Each round removes one key, so this ends; the bound is a second guard.
        for _ in 0..=known.len() {
            let value_start = value.span().start;
            let de = toml::de::ValueDeserializer::from(value.clone());
            let mut track = serde_path_to_error::Track::new();
            let mut ignored = Vec::new();
            let result: Result<T, _> = serde_ignored::deserialize(
                serde_path_to_error::Deserializer::new(de, &mut track),
                |p: serde_ignored::Path<'_>| ignored.push(segments(&p)),
            );
            if set_aside.is_empty() {
                for segs in ignored {
                    let mut p = path.clone();
                    p.0.extend(segs);
                    let key = match p.0.last() {
                        Some(Seg::Key(k)) => k.clone(),
                        _ => String::new(),
                    };
                    self.error_at(&p, At::Key, unknown_key_message(&key, known));
                }
            }
            let err = match result {
                Ok(v) => return Some(v),
                Err(err) => err,
            };
            let inner_path = tracked_path(&track.path());
            let message = err.message().to_owned();
            // A required key we set aside ourselves: its own error is already reported.
            if set_aside
                .iter()
                .any(|k| message == format!("missing field `{k}`"))
            {
                return None;
            }
            let mut p = path.clone();
            p.0.extend(inner_path.iter().cloned());
            let offset = err.span().map_or(value_start, |s| s.start);
            self.push(offset, p.to_string(), tidy(&message));
            let Some(Seg::Key(first)) = inner_path.first() else {
                return None;
            };
            let removed = match value.get_mut() {
                DeValue::Table(t) => t.remove(first.as_str()).is_some(),
                _ => false,
            };
            if !removed {
                return None;
            }
            set_aside.push(first.clone());
        }
        None
    }

    /// How many entries the array at `path` has; reports a value that is not an array.
    pub(crate) fn array_len(&mut self, path: &KeyPath) -> usize {
        match self
            .get(path)
            .map(|v| v.get_ref().as_array().map(|a| a.len()))
        {
            None => 0,
            Some(Some(n)) => n,
            Some(None) => {
                self.error(path, "expected a list of tables, such as [[...]] blocks");
                0
            }
        }
    }

    /// Reads a `kind` key and checks it against the allowed kinds.
    pub(crate) fn kind(&mut self, path: &KeyPath, what: &str, allowed: &[&str]) -> Option<String> {
        let kpath = path.key("kind");
        let list = allowed.join(", ");
        match self
            .get(&kpath)
            .map(|v| v.get_ref().as_str().map(str::to_owned))
        {
            None => {
                self.error(path, format!("missing key `kind` ({what} kinds: {list})"));
                None
            }
            Some(None) => {
                self.error(
                    &kpath,
                    format!("expected a string naming the {what} kind ({list})"),
                );
                None
            }
            Some(Some(k)) if allowed.contains(&k.as_str()) => Some(k),
            Some(Some(k)) => {
                let hint = suggestion(&k, allowed)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                self.error(
                    &kpath,
                    format!("unknown {what} kind \"{k}\" (expected one of: {list}){hint}"),
                );
                None
            }
        }
    }
}

fn value_span(v: &Spanned<DeValue<'_>>, fallback: Range<usize>) -> Range<usize> {
    let s = v.span();
    if s.is_empty() { fallback } else { s }
}

fn segments(p: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    let mut out = match p {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match p {
        Path::Seq { index, .. } => out.push(Seg::Index(*index)),
        Path::Map { key, .. } => out.push(Seg::Key(key.clone())),
        _ => {}
    }
    out
}

fn tracked_path(p: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } | Segment::Enum { variant: key } if !key.starts_with("$__") => {
                Some(Seg::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match suggestion(key, known) {
        Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
        None if known.is_empty() => format!("unknown key `{key}`"),
        None => format!(
            "unknown key `{key}` (known keys here: {})",
            known.join(", ")
        ),
    }
}

/// The closest known word, if it is close enough to be a likely typo.
pub(crate) fn suggestion<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Serde's messages name Rust types; say what a person should write instead.
fn tidy(message: &str) -> String {
    let mut m = message.trim().trim_end_matches('.').to_owned();
    for (from, to) in [
        ("expected f64", "expected a number"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("invalid type: integer", "invalid type: whole number"),
        ("invalid value: integer", "invalid value: whole number"),
        ("invalid type: floating point", "invalid type: number"),
    ] {
        m = m.replace(from, to);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_strangers_do_not() {
        assert_eq!(
            suggestion("nominal_wats", &["id", "nominal_watts"]),
            Some("nominal_watts")
        );
        assert_eq!(suggestion("colour", &["id", "nominal_watts"]), None);
    }

    #[test]
    fn key_paths_count_array_positions_from_one() {
        let p = KeyPath::root().key("tiers").index(2).key("loads").index(0);
        assert_eq!(p.to_string(), "tiers[3].loads[1]");
    }
}
