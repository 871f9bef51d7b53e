//! Where each field of a YAML/JSON document is written: the line of every key and sequence
//! item, by the same field paths findings use (`subsets[0].ports[0].name`).

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::finding::field_key;

#[cfg(test)]
thread_local! {
    /// How many indexes this thread has built: lets tests count work instead of timing it.
    pub static BUILDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Field path → 1-based line within the document text it was built from.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, u64>,
}

impl LineIndex {
    /// Indexes a document; `None` when it does not parse as YAML (its errors are reported
    /// elsewhere).
    pub fn build(text: &str) -> Option<LineIndex> {
        #[cfg(test)]
        BUILDS.with(|n| n.set(n.get() + 1));
        let lines = super::fast_yaml::line_index(text).or_else(|| saphyr_lines(text))?;
        Some(LineIndex { lines })
    }

    fn walk(&mut self, node: &Node, path: String) {
        match node {
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = field_key(&path, &key.value);
                    self.lines.insert(child.clone(), key.referenced.line());
                    self.walk(&value.value, child);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.lines.insert(child.clone(), item.referenced.line());
                    self.walk(&item.value, child);
                }
            }
            Node::Scalar => {}
        }
    }

    /// The line of `path`, or of its nearest written ancestor (a missing label is reported
    /// at `metadata.labels`, or at `metadata` when there are no labels at all).
    pub fn line_of(&self, path: &str) -> Option<u64> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent(path)?;
        }
    }
}

/// The index as serde-saphyr places every key and item: for what the plain reader of
/// `fast_yaml` leaves alone.
pub(super) fn saphyr_lines(text: &str) -> Option<HashMap<String, u64>> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut index = LineIndex::default();
    index.walk(&root.value, String::new());
    Some(index.lines)
}

/// `a.b[0]` → `a.b`; `a.b` → `a`; `a["x.y"]` → `a`; `a` → none.
fn parent(path: &str) -> Option<&str> {
    if path.ends_with("\"]") {
        return path.rfind("[\"").map(|i| &path[..i]);
    }
    if path.ends_with(']') {
        return path.rfind('[').map(|i| &path[..i]);
    }
    path.rfind('.').map(|i| &path[..i])
}

/// Just the shape of a document, with where each key and item is.
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
                    let value = map.next_value()?;
                    let key = Spanned::new(key.value.0, key.referenced, key.defined);
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

/// A map key as text, whatever scalar it was written as (`80:` is a key too).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(KeyText(match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: mysql-ep\n  labels:\n    kubernetes.io/service-name: x\nsubsets:\n  - addresses:\n      - ip: 114.32.146.154\n    ports:\n      - name: mysql\n        port: 3306\n";

    #[test]
    fn every_key_and_item_has_its_line() {
        let index = LineIndex::build(DOC).unwrap();
        assert_eq!(index.line_of("metadata.name"), Some(4));
        assert_eq!(index.line_of("subsets[0].addresses[0].ip"), Some(9));
        assert_eq!(index.line_of("subsets[0].ports[0].name"), Some(11));
        assert_eq!(index.line_of("subsets[0].ports[0].port"), Some(12));
        assert_eq!(
            index.line_of("metadata.labels[\"kubernetes.io/service-name\"]"),
            Some(6)
        );
    }

    #[test]
    fn a_missing_field_falls_back_to_its_nearest_ancestor() {
        let index = LineIndex::build(DOC).unwrap();
        assert_eq!(index.line_of("metadata.annotations[\"a/b\"]"), Some(3));
        assert_eq!(index.line_of("metadata.labels.team"), Some(5));
        assert_eq!(index.line_of("spec.ports[0]"), None);
    }

    #[test]
    fn json_documents_are_indexed_too() {
        let index = LineIndex::build("{\n  \"kind\": \"Service\",\n  \"spec\": {\n    \"ports\": [\n      {\"port\": 80}\n    ]\n  }\n}\n").unwrap();
        assert_eq!(index.line_of("spec.ports[0].port"), Some(5));
    }
}
