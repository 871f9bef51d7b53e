//! A reader for the plain YAML that manifests are almost always written in: block mappings
//! and sequences, two-space style, plain and simply quoted scalars, one-line flow sequences.
//!
//! Profiling `check` showed serde-saphyr's event machinery taking about two thirds of the
//! time on a large manifest set. This reader does the common case in one pass over the
//! lines and gives up (`None`) at the first thing it does not know for sure — anchors, tags,
//! block or multi-line scalars, flow mappings, comments after values, tabs, scalars whose
//! type is ambiguous (`yes`, `1.5`, `0x1F`, `~`), duplicate keys, odd indentation. The
//! caller then parses the document with serde-saphyr, so what a document means, and every
//! error message, is serde-saphyr's: a `Some` here is always the value serde-saphyr gives
//! (a test in this module holds it to that).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::finding::field_key;

/// The document as serde-saphyr would read it into a `Value`, or `None` when this reader
/// cannot be sure of that.
pub fn parse(text: &str) -> Option<Value> {
    read(text, None)
}

/// The 1-based line of every key and sequence item by field path, as
/// [`super::lines::LineIndex`] records them, or `None` where [`parse`] would give up.
pub fn line_index(text: &str) -> Option<HashMap<String, u64>> {
    let mut lines = HashMap::new();
    read(text, Some(&mut lines))?;
    Some(lines)
}

fn read(text: &str, index: Option<&mut HashMap<String, u64>>) -> Option<Value> {
    if text.starts_with('\u{feff}') {
        return None;
    }
    let mut lines = Vec::new();
    let mut first = true;
    for (number, raw) in (1u64..).zip(text.split('\n')) {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_end_matches(' ');
        if line.contains('\t') || line.contains('\r') {
            return None;
        }
        let text = line.trim_start_matches(' ');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if first && text == "---" && text.len() == line.len() {
            first = false;
            continue;
        }
        first = false;
        if text.starts_with("---") || text.starts_with("...") || text.starts_with('%') {
            return None;
        }
        lines.push(Line {
            indent: line.len() - text.len(),
            text,
            number,
        });
    }
    let start = lines.first()?.indent;
    let mut reader = Reader {
        lines,
        pos: 0,
        index,
        depth: 0,
    };
    let value = reader.node(start, "")?;
    (reader.pos == reader.lines.len()).then_some(value)
}

struct Line<'a> {
    indent: usize,
    text: &'a str,
    /// 1-based, in the document text.
    number: u64,
}

struct Reader<'a, 'i> {
    lines: Vec<Line<'a>>,
    pos: usize,
    /// Where to record the line of each key and item, when asked to.
    index: Option<&'i mut HashMap<String, u64>>,
    /// Mappings and sequences open around the current line.
    depth: usize,
}

/// Deeper nesting than any manifest needs is left to serde-saphyr, which has its own limits
/// (and this reader recurses).
const MAX_DEPTH: usize = 48;

impl Reader<'_, '_> {
    /// Records `path` at `line` when indexing; gives the path for the node's children
    /// (empty when not indexing: nobody reads it).
    fn record(&mut self, path: String, line: u64) -> String {
        match self.index.as_deref_mut() {
            Some(index) => {
                index.insert(path.clone(), line);
                path
            }
            None => path,
        }
    }

    /// One level deeper, unless that is too deep.
    fn enter(&mut self) -> Option<()> {
        (self.depth < MAX_DEPTH).then(|| self.depth += 1)
    }

    fn indexing(&self) -> bool {
        self.index.is_some()
    }

    /// The block node whose first line is the current one, at `indent`.
    fn node(&mut self, indent: usize, path: &str) -> Option<Value> {
        let line = self.lines.get(self.pos)?;
        if line.indent != indent {
            return None;
        }
        if is_item(line.text) {
            self.sequence(indent, path)
        } else {
            self.mapping(indent, path)
        }
    }

    fn mapping(&mut self, indent: usize, path: &str) -> Option<Value> {
        self.enter()?;
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || is_item(line.text) {
                return None;
            }
            let (key, rest) = split_key(line.text)?;
            let number = line.number;
            let child = if self.indexing() {
                field_key(path, key)
            } else {
                String::new()
            };
            let child = self.record(child, number);
            self.pos += 1;
            let value = if rest.is_empty() {
                match self.lines.get(self.pos) {
                    Some(next) if next.indent > indent => self.node(next.indent, &child)?,
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_item(next.text) => {
                        self.sequence(indent, &child)?
                    }
                    _ => Value::Null,
                }
            } else {
                self.inline(rest, &child, number)?
            };
            if map.insert(key.to_owned(), value).is_some() {
                return None;
            }
        }
        self.depth -= 1;
        Some(Value::Object(map))
    }

    fn sequence(&mut self, indent: usize, path: &str) -> Option<Value> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.pos) {
            if line.indent < indent || (line.indent == indent && !is_item(line.text)) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let after = &line.text[1..];
            let rest = after.trim_start_matches(' ');
            let column = indent + 1 + (after.len() - rest.len());
            let number = line.number;
            let child = if self.indexing() {
                format!("{path}[{}]", items.len())
            } else {
                String::new()
            };
            if rest.is_empty() {
                // Where serde-saphyr places such an item is its own business.
                if self.indexing() {
                    return None;
                }
                self.pos += 1;
                items.push(match self.lines.get(self.pos) {
                    Some(next) if next.indent > indent => self.node(next.indent, &child)?,
                    _ => Value::Null,
                });
            } else if is_item(rest) {
                return None;
            } else if split_key(rest).is_some() {
                // `- name: a` opens a mapping whose keys line up at `name`.
                let child = self.record(child, number);
                self.lines[self.pos] = Line {
                    indent: column,
                    text: rest,
                    number,
                };
                items.push(self.mapping(column, &child)?);
            } else {
                let child = self.record(child, number);
                self.pos += 1;
                items.push(self.inline(rest, &child, number)?);
            }
        }
        self.depth -= 1;
        Some(Value::Array(items))
    }

    /// A value written on its key's or item's line; nothing may continue it below.
    fn inline(&mut self, text: &str, path: &str, number: u64) -> Option<Value> {
        let value = if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            if inner.trim().is_empty() {
                Value::Array(Vec::new())
            } else {
                let items: Option<Vec<Value>> =
                    inner.split(',').map(|i| scalar(i.trim(), true)).collect();
                let items = items?;
                if self.indexing() {
                    for i in 0..items.len() {
                        self.record(format!("{path}[{i}]"), number);
                    }
                }
                Value::Array(items)
            }
        } else if text == "{}" {
            Value::Object(Map::new())
        } else {
            scalar(text, false)?
        };
        // The line just read must not go on below: a deeper line would continue the scalar.
        let read = self.pos.checked_sub(1).and_then(|i| self.lines.get(i));
        let next = self.lines.get(self.pos);
        if let (Some(read), Some(next)) = (read, next)
            && next.indent > read.indent
        {
            return None;
        }
        Some(value)
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: rest` → (key, rest); only plain keys that can only mean a string.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let colon = text.find(':')?;
    let (key, after) = (&text[..colon], &text[colon + 1..]);
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    let starts_with_letter = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if !starts_with_letter || !key.bytes().all(safe_byte) || ambiguous_word(key) {
        return None;
    }
    Some((key, after.trim_start_matches(' ')))
}

/// A scalar as serde-saphyr types it, for the spellings that cannot mean anything else.
fn scalar(text: &str, in_flow: bool) -> Option<Value> {
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let special: &[char] = if in_flow {
            &['"', '\\', ',']
        } else {
            &['"', '\\']
        };
        let plain = !inner.contains(special);
        return plain.then(|| Value::String(inner.to_owned()));
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'')?;
        let special: &[char] = if in_flow { &['\'', ','] } else { &['\''] };
        let plain = !inner.contains(special);
        return plain.then(|| Value::String(inner.to_owned()));
    }
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        "null" | "Null" | "NULL" => return Some(Value::Null),
        _ => {}
    }
    if let Some(n) = decimal(text) {
        return Some(n);
    }
    let first = text.bytes().next()?;
    let word = first.is_ascii_alphabetic() && text.bytes().all(safe_byte) && !ambiguous_word(text);
    // 10.1.2.3: digits and at least two dots is no number in any YAML schema.
    let dotted = first.is_ascii_digit()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() >= 2
        && !text.ends_with('.');
    (word || dotted).then(|| Value::String(text.to_owned()))
}

/// `0`, `8080`, `-1`: decimal integers without a leading zero that fit easily in 64 bits.
fn decimal(text: &str) -> Option<Value> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let canonical = digits == "0"
        || (!digits.is_empty()
            && digits.len() <= 18
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()));
    if !canonical || (negative && digits == "0") {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(Value::from(if negative { -n } else { n }))
}

fn safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

/// Words some YAML reading takes for a boolean, null or float.
fn ambiguous_word(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    ) || lower.starts_with("inf")
        || lower.starts_with("nan")
        || lower.starts_with(".inf")
        || lower.starts_with(".nan")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(text: &str) -> Option<Value> {
        serde_saphyr::from_str::<Value>(text).ok()
    }

    /// Whatever this reader accepts, serde-saphyr reads the same way.
    fn agrees(text: &str) {
        if let Some(fast) = parse(text) {
            assert_eq!(Some(fast), saphyr(text), "{text}");
        }
    }

    const SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: team-1\n  labels:\n    app.kubernetes.io/name: db\nspec:\n  clusterIP: None\n  ports:\n    - name: mysql\n      port: 3306\n      protocol: TCP\n      targetPort: 3307\n";

    #[test]
    fn a_plain_manifest_reads_as_serde_saphyr_reads_it() {
        assert!(parse(SERVICE).is_some());
        agrees(SERVICE);
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  labels:\n    kubernetes.io/service-name: db\naddressType: IPv4\nendpoints:\n  - addresses: [\"10.1.2.3\", \"10.1.2.4\"]\n    conditions:\n      ready: true\n  - addresses: []\nports:\n- name: mysql\n  port: 3306\n";
        assert!(parse(slice).is_some());
        agrees(slice);
    }

    #[test]
    fn anything_unusual_is_left_to_serde_saphyr() {
        for doc in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: |\n  text\n",
            "a: one\n  two\n",
            "a: {b: 1}\n",
            "a: 1 # comment\n",
            "a: yes\n",
            "a: 1.5\n",
            "a: 0x1F\n",
            "a: 0127\n",
            "a: ~\n",
            "a: 1\na: 2\n",
            "a:\n  b: 1\n c: 2\n",
            "a:\n\tb: 1\n",
            "\"a\": 1\n",
            "a: \"x\\ny\"\n",
            "a: [b, [c]]\n",
            "a: inf\n",
            "80: http\n",
            "- - a\n",
            "a: 2001:db8::1\n",
        ] {
            assert_eq!(parse(doc), None, "{doc}");
        }
    }

    #[test]
    fn scalars_get_the_types_serde_saphyr_gives_them() {
        for doc in [
            "a: 0\nb: -12\nc: 65535\nd: true\ne: false\nf: null\ng: NULL\nh:\n",
            "a: 10.0.0.1\nb: \"3306\"\nc: 'true'\nd: None\ne: db.example.com\nf: v1\n",
            "a:\n- 1\n-\n- x\nb: []\nc: {}\n",
            "- a: 1\n  b:\n    - c\n- d\n",
        ] {
            assert!(parse(doc).is_some(), "{doc}");
            agrees(doc);
        }
    }

    #[test]
    fn broken_indentation_is_left_to_serde_saphyr() {
        for doc in [
            "a:\n    b: 1\n  c: 2\n",
            "a: 1\n  b: 2\n",
            "- a\n b\n",
            "a:\n- b\n  - c\n",
        ] {
            assert_eq!(parse(doc), None, "{doc}");
        }
    }

    #[test]
    fn lines_are_indexed_as_serde_saphyr_places_them() {
        let slice = "---\n# a comment\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  labels:\n    kubernetes.io/service-name: db\n\nendpoints:\n  - addresses: [\"10.1.2.3\", \"10.1.2.4\"]\n    conditions:\n      ready: true\nports:\n- name: mysql\n  port: 3306\n";
        for doc in [SERVICE, slice] {
            let fast = line_index(doc).expect("a plain document is indexed");
            assert_eq!(
                fast,
                super::super::lines::saphyr_lines(doc).unwrap(),
                "{doc}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_saphyr() {
        let deep: String = (0..2_000)
            .map(|i| format!("{}- \n", " ".repeat(i)))
            .collect();
        assert_eq!(parse(&deep), None);
        let shallow: String = (0..10).map(|i| format!("{}- \n", " ".repeat(i))).collect();
        agrees(&shallow);
    }

    mod agreement {
        use super::*;
        use proptest::prelude::*;

        fn line() -> impl Strategy<Value = String> {
            let indent = prop::sample::select(vec!["", "  ", "    ", "      ", " "]);
            let head = prop::sample::select(vec![
                "- ", "", "- name: ", "port: ", "name: ", "a: ", "b: ", "- a: ",
            ]);
            let value = prop::sample::select(vec![
                "",
                "x",
                "1",
                "-1",
                "0",
                "01",
                "true",
                "yes",
                "null",
                "~",
                "1.5",
                "1.2.3.4",
                "\"q\"",
                "'s'",
                "[a, \"b\"]",
                "[]",
                "{}",
                "a: b",
                "- c",
                "#c",
                "x # c",
                "&a x",
                "*a",
                "!t x",
                "|",
                "inf",
                "None",
                "kubernetes.io/x",
            ]);
            (indent, head, value).prop_map(|(i, h, v)| format!("{i}{h}{v}\n"))
        }

        proptest! {
            #[test]
            fn whatever_it_reads_serde_saphyr_reads_the_same(
                lines in prop::collection::vec(line(), 1..10)
            ) {
                let doc: String = lines.concat();
                if let Some(fast) = parse(&doc) {
                    prop_assert_eq!(Some(fast), saphyr(&doc), "{}", doc);
                }
                if let Some(fast) = line_index(&doc) {
                    prop_assert_eq!(Some(fast), super::super::super::lines::saphyr_lines(&doc), "{}", doc);
                }
            }
        }
    }
}
