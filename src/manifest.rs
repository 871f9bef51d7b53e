//! Manifest files → objects: files, directories (recursively: `.yaml`, `.yml`, `.json`) and
//! stdin; multi-document YAML, `kind: List`, JSON. All inputs form one manifest set.
//!
//! A document that does not parse, or a Service/Endpoints/EndpointSlice that does not match
//! its schema, becomes an [`InputError`] with file, document and line, and the rest is still
//! loaded. Kinds other than those three (and Namespaces, read for their labels) are skipped.

mod fast_yaml;
pub mod lines;

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cluster::ManifestView;
use crate::cluster::consumers::{self, Consumer};
use crate::object::Object;
use lines::LineIndex;

/// One input: a file or stdin, and its text.
#[derive(Debug)]
pub struct Source {
    /// As the user named it (`deploy/db.yaml`), or `<stdin>`.
    pub name: String,
    pub text: String,
}

/// Where a document sits in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSpan {
    pub source: usize,
    /// 1-based index among the non-empty documents of the source.
    pub document: usize,
    /// Byte range of the document in the source text.
    pub start: usize,
    pub end: usize,
    /// 1-based line of the document's first line in the source.
    pub first_line: u64,
}

/// An object read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    /// Boxed: the three kinds differ much in size, and the set holds many.
    pub object: Box<Object>,
    pub span: DocumentSpan,
    /// `items[3]` for an item of a `kind: List`, empty otherwise.
    pub path_prefix: String,
}

/// A document or input that could not be read as what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    /// 1-based document index; 0 when the whole input is at fault (unreadable file).
    pub document: usize,
    /// 1-based line; 0 when unknown.
    pub line: u64,
    pub message: String,
}

/// Everything read from the inputs.
#[derive(Debug, Default)]
pub struct ManifestSet {
    pub sources: Vec<Source>,
    pub objects: Vec<LoadedObject>,
    pub namespaces: Vec<Namespace>,
    /// Ingresses and Gateway API routes, with the Services they send traffic to.
    pub consumers: Vec<(Consumer, Vec<(String, String)>)>,
    pub errors: Vec<InputError>,
}

impl ManifestSet {
    /// Reads every path (`-` is stdin) into one set. Files are read and parsed in parallel;
    /// the set is the same as reading them one after another.
    pub fn load(paths: &[PathBuf]) -> ManifestSet {
        let mut inputs = Vec::new();
        for path in paths {
            if path.as_os_str() == "-" {
                let mut text = String::new();
                inputs.push(match std::io::stdin().read_to_string(&mut text) {
                    Ok(_) => Input::Text("<stdin>".to_owned(), text),
                    Err(e) => Input::Failed(InputError {
                        file: "<stdin>".to_owned(),
                        document: 0,
                        line: 0,
                        message: format!("cannot read standard input: {e}"),
                    }),
                });
                continue;
            }
            let mut files = Vec::new();
            if let Err(e) = collect_files(path, true, &mut files) {
                inputs.push(Input::Failed(InputError {
                    file: path.display().to_string(),
                    document: 0,
                    line: 0,
                    message: e,
                }));
            }
            inputs.extend(files.into_iter().map(Input::File));
        }
        let read = crate::parallel::map(&inputs, |input| match input {
            Input::Failed(e) => Err(e.clone()),
            Input::Text(name, text) => Ok(parse_source(name.clone(), text.clone())),
            Input::File(file) => read_file(file).map(|(name, text)| parse_source(name, text)),
        });
        let mut set = ManifestSet::default();
        for result in read {
            match result {
                Ok(parsed) => set.add_parsed(parsed),
                Err(e) => set.errors.push(e),
            }
        }
        set
    }

    /// Parses one input's text and adds what it holds.
    pub fn add_source(&mut self, name: String, text: String) {
        self.add_parsed(parse_source(name, text));
    }

    fn add_parsed(&mut self, parsed: ParsedSource) {
        let source = self.sources.len();
        self.objects.extend(parsed.objects.into_iter().map(|mut o| {
            o.span.source = source;
            o
        }));
        self.namespaces.extend(parsed.namespaces);
        self.consumers.extend(parsed.consumers);
        self.errors.extend(parsed.errors);
        self.sources.push(parsed.source);
    }

    /// A view of the set for the cross-object rules.
    pub fn view(&self) -> ManifestView {
        let mut view = ManifestView::new();
        for o in &self.objects {
            view.insert(&o.object);
        }
        for ns in &self.namespaces {
            view.insert_namespace(ns);
        }
        for (consumer, backends) in &self.consumers {
            view.insert_consumer(consumer, backends);
        }
        view
    }

    /// Builds line lookups for the documents that need them, once each.
    pub fn locator(&self) -> Locator<'_> {
        Locator {
            set: self,
            cache: std::collections::HashMap::new(),
        }
    }
}

/// One named input, before it is read.
enum Input {
    File(PathBuf),
    Text(String, String),
    Failed(InputError),
}

fn read_file(file: &Path) -> Result<(String, String), InputError> {
    let name = file.display().to_string();
    match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok((name, text)),
            Err(_) => Err(InputError {
                file: name,
                document: 0,
                line: 0,
                message: "is not UTF-8 text".to_owned(),
            }),
        },
        Err(e) => Err(InputError {
            file: name,
            document: 0,
            line: 0,
            message: format!("cannot read it: {e}"),
        }),
    }
}

/// What one source holds, read on its own (sources are read in parallel). Its objects'
/// spans say source 0 until the set gives the source its place.
struct ParsedSource {
    source: Source,
    objects: Vec<LoadedObject>,
    namespaces: Vec<Namespace>,
    consumers: Vec<(Consumer, Vec<(String, String)>)>,
    errors: Vec<InputError>,
}

fn parse_source(name: String, text: String) -> ParsedSource {
    let mut out = ParsedSource {
        source: Source {
            name: String::new(),
            text: String::new(),
        },
        objects: Vec::new(),
        namespaces: Vec::new(),
        consumers: Vec::new(),
        errors: Vec::new(),
    };
    // JSON is YAML too: `.json` files and JSON streams (concatenated JSON objects, which
    // kubectl reads) take the (faster, stricter) JSON parser, so flow-style YAML on stdin
    // (`{kind: Service, …}`) is still read as YAML.
    let stream = json_stream(&text);
    let is_json = name.ends_with(".json") || stream.as_ref().is_some_and(|s| s.len() > 1);
    let chunks = if is_json {
        stream.unwrap_or_else(|| {
            vec![Chunk {
                start: 0,
                end: text.len(),
                first_line: 1,
            }]
        })
    } else {
        split_documents(&text)
    };
    let mut document = 0;
    for chunk in chunks {
        let doc_text = &text[chunk.start..chunk.end];
        if !is_json && is_empty_document(doc_text) {
            continue;
        }
        document += 1;
        let span = DocumentSpan {
            source: 0,
            document,
            start: chunk.start,
            end: chunk.end,
            first_line: chunk.first_line,
        };
        let parsed = if is_json {
            serde_json::from_str::<Value>(doc_text).map_err(|e| {
                (
                    u64::try_from(e.line()).unwrap_or(0),
                    format!("is not valid JSON: {e}"),
                )
            })
        } else {
            // Most manifests are plain block YAML that a simple reader gets right; anything
            // else takes the full parser (see `fast_yaml`).
            fast_yaml::parse(doc_text)
                .map(Ok)
                .unwrap_or_else(|| serde_saphyr::from_str::<Value>(doc_text))
                .map_err(|e| {
                    let line = e.location().map_or(0, |l| l.line());
                    (
                        line,
                        format!("is not valid YAML: {}", yaml_error_message(&e)),
                    )
                })
        };
        match parsed {
            Ok(value) => {
                let mut doc = Document {
                    file: &name,
                    span: &span,
                    text: doc_text,
                    lines: None,
                };
                out.add_document(&mut doc, value);
            }
            Err((line, message)) => out.errors.push(InputError {
                file: name.clone(),
                document,
                line: absolute_line(&span, line),
                message: format!("document {document} {message}"),
            }),
        }
    }
    out.source = Source { name, text };
    out
}

/// A document being read, with its line index once an error needs it: built at most once
/// per document, however many of its items are at fault (a `kind: List` of a thousand
/// broken items used to index its text a thousand times).
struct Document<'a> {
    file: &'a str,
    span: &'a DocumentSpan,
    text: &'a str,
    lines: Option<Option<LineIndex>>,
}

impl Document<'_> {
    /// The absolute line of `field`, or of the document's first line when unknown.
    fn line_of(&mut self, field: &str) -> u64 {
        let text = self.text;
        let line = self
            .lines
            .get_or_insert_with(|| LineIndex::build(text))
            .as_ref()
            .and_then(|index| index.line_of(field))
            .unwrap_or(1);
        absolute_line(self.span, line)
    }
}

impl ParsedSource {
    fn add_document(&mut self, doc: &mut Document<'_>, value: Value) {
        if value.is_null() {
            return;
        }
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && value.get("items").is_some();
        if is_list {
            let Some(items) = value.get("items").and_then(Value::as_array) else {
                self.error_at(
                    doc,
                    "items",
                    "items of a List must be a sequence of objects".into(),
                );
                return;
            };
            for (i, item) in items.iter().enumerate() {
                self.add_object(doc, item, format!("items[{i}]"));
            }
        } else {
            self.add_object(doc, &value, String::new());
        }
    }

    fn add_object(&mut self, doc: &mut Document<'_>, value: &Value, prefix: String) {
        let at = |field: &str| join_path(&prefix, field);
        if !value.is_object() {
            self.error_at(
                doc,
                &prefix,
                "is not a Kubernetes object: expected a mapping with apiVersion and kind".into(),
            );
            return;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(kind) = value.get("kind").and_then(Value::as_str) else {
            self.error_at(
                doc,
                &prefix,
                "has no kind: every Kubernetes object needs apiVersion and kind".into(),
            );
            return;
        };
        let object = match (kind, api_version) {
            ("Service", "v1") => typed::<Service>(value).map(Object::Service),
            ("Endpoints", "v1") => typed::<Endpoints>(value).map(Object::Endpoints),
            ("EndpointSlice", "discovery.k8s.io/v1") => {
                typed::<EndpointSlice>(value).map(Object::EndpointSlice)
            }
            ("EndpointSlice", "discovery.k8s.io/v1beta1") => Err((
                "apiVersion".to_owned(),
                "EndpointSlice discovery.k8s.io/v1beta1 is no longer served (removed in Kubernetes 1.25); use apiVersion: discovery.k8s.io/v1".to_owned(),
            )),
            ("Service" | "Endpoints", other) => Err((
                "apiVersion".to_owned(),
                format!("{kind} has apiVersion {other:?}; it must be v1"),
            )),
            ("Namespace", "v1") => {
                match typed::<Namespace>(value) {
                    Ok(ns) => self.namespaces.push(ns),
                    Err((field, message)) => self.error_at(doc, &at(&field), message),
                }
                return;
            }
            _ => {
                self.consumers.extend(consumers::consumer_of(value));
                return;
            }
        };
        match object {
            Ok(object) => self.objects.push(LoadedObject {
                object: Box::new(object),
                span: doc.span.clone(),
                path_prefix: prefix,
            }),
            Err((field, message)) => {
                let message = if field.is_empty() {
                    format!("{kind} does not match its schema: {message}")
                } else {
                    format!("{kind} field {}: {message}", at(&field))
                };
                self.error_at(doc, &at(&field), message)
            }
        }
    }

    fn error_at(&mut self, doc: &mut Document<'_>, field: &str, message: String) {
        let line = doc.line_of(field);
        self.errors.push(InputError {
            file: doc.file.to_owned(),
            document: doc.span.document,
            line,
            message: format!("document {}: {message}", doc.span.document),
        });
    }
}

/// Finds the line of a field of a loaded object, indexing each document at most once.
pub struct Locator<'a> {
    set: &'a ManifestSet,
    cache: std::collections::HashMap<(usize, usize), Option<LineIndex>>,
}

impl Locator<'_> {
    /// The source name and 1-based line of `field` in `object`.
    pub fn locate(&mut self, object: &LoadedObject, field: &str) -> (String, u64) {
        let span = &object.span;
        let source = &self.set.sources[span.source];
        let index = self
            .cache
            .entry((span.source, span.start))
            .or_insert_with(|| LineIndex::build(&source.text[span.start..span.end]));
        let path = join_path(&object.path_prefix, field);
        let line = index.as_ref().and_then(|i| i.line_of(&path)).unwrap_or(1);
        (source.name.clone(), absolute_line(span, line))
    }
}

fn join_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if field.starts_with('[') => format!("{prefix}{field}"),
        _ => format!("{prefix}.{field}"),
    }
}

fn absolute_line(span: &DocumentSpan, line_in_document: u64) -> u64 {
    if line_in_document == 0 {
        span.first_line
    } else {
        span.first_line + line_in_document - 1
    }
}

/// Deserialises a typed object; on failure, the path of the field at fault and why.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    // Tracking the path costs a fifth of the conversion: do it only for what fails.
    if let Ok(object) = T::deserialize(value) {
        return Ok(object);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

pub use crate::policy::yaml_error_message;

struct Chunk {
    start: usize,
    end: usize,
    first_line: u64,
}

/// The values of a JSON stream (one JSON value after another, as `kubectl get -o json`
/// of several objects writes them), or `None` when `text` is not one.
fn json_stream(text: &str) -> Option<Vec<Chunk>> {
    let first = text.find(|c: char| !c.is_whitespace())?;
    if !text[first..].starts_with(['{', '[']) {
        return None;
    }
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    let mut chunks = Vec::new();
    let mut end = 0;
    while let Some(value) = values.next() {
        value.ok()?;
        let start = end + text[end..].find(|c: char| !c.is_whitespace()).unwrap_or(0);
        end = values.byte_offset();
        let first_line = text[..start].bytes().filter(|b| *b == b'\n').count() as u64 + 1;
        chunks.push(Chunk {
            start,
            end,
            first_line,
        });
    }
    Some(chunks)
}

/// Splits a YAML stream at its document markers. A line starting with `---` or `...`
/// followed by a space or the line's end can only be a marker (YAML forbids such lines
/// inside a document), so a document that fails to parse cannot take its neighbours with it.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_no = n as u64 + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = |m: &str| {
            bare.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if is_marker("---") {
            chunks.push(Chunk {
                start,
                end: offset,
                first_line,
            });
            start = offset;
            first_line = line_no;
        } else if is_marker("...") {
            chunks.push(Chunk {
                start,
                end: offset,
                first_line,
            });
            start = offset + line.len();
            first_line = line_no + 1;
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        start,
        end: text.len(),
        first_line,
    });
    chunks
}

/// Blank lines, comments and markers only.
fn is_empty_document(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with("--- #")
    })
}

/// Collects manifest files under `path`. Named files are read whatever their extension;
/// in directories only `.yaml`, `.yml` and `.json`, in name order, without following
/// symbolic links to directories (no loops).
fn collect_files(path: &Path, named: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = if named {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| format!("cannot read it: {e}"))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot list the directory: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            collect_files(&entry, false, out)?;
        }
    } else if named
        || (meta.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json")))
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> ManifestSet {
        let mut set = ManifestSet::default();
        set.add_source(name.to_owned(), text.to_owned());
        set
    }

    #[test]
    fn a_broken_document_does_not_hide_its_neighbours() {
        let set = load(
            "m.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: [oops\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n",
        );
        assert_eq!(set.objects.len(), 2);
        assert_eq!(set.errors.len(), 1);
        assert_eq!(set.errors[0].document, 2);
        assert!(set.errors[0].line >= 5, "{:?}", set.errors[0]);
        assert_eq!(set.objects[1].span.document, 3);
        assert_eq!(set.objects[1].span.first_line, 8);
    }

    #[test]
    fn a_schema_error_names_the_field_and_its_line() {
        let set = load(
            "m.yaml",
            "# leading comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n    - port: \"eighty\"\n",
        );
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        let e = &set.errors[0];
        assert_eq!(e.document, 1);
        assert_eq!(e.line, 8, "{e:?}");
        assert!(e.message.contains("spec.ports[0].port"), "{e:?}");
    }

    #[test]
    fn lists_and_json_are_read() {
        let set = load(
            "l.json",
            r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
  {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "b"}, "addressType": "IPv4", "endpoints": []}
]}"#,
        );
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        assert_eq!(set.objects.len(), 2);
        assert_eq!(set.objects[1].path_prefix, "items[2]");
        let mut locator = set.locator();
        assert_eq!(locator.locate(&set.objects[1], "metadata.name").1, 4);
    }

    #[test]
    fn a_json_stream_is_read_object_by_object_as_kubectl_reads_it() {
        let set = load(
            "<stdin>",
            "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"a\"}}\n{\"apiVersion\": \"v1\",\n \"kind\": \"Service\", \"metadata\": {\"name\": \"b\"}}{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": 3}}",
        );
        let names: Vec<String> = set.objects.iter().map(|o| o.object.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(set.objects[1].span.first_line, 2);
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert_eq!(set.errors[0].document, 3);
        // Flow-style YAML is still YAML.
        let yaml = load(
            "<stdin>",
            "{apiVersion: v1, kind: Service, metadata: {name: c}}\n",
        );
        assert_eq!(yaml.objects.len(), 1, "{:?}", yaml.errors);
    }

    #[test]
    fn other_kinds_are_skipped_and_namespaces_kept_for_their_labels() {
        let set = load(
            "m.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns, labels: {team: a}}\n",
        );
        assert!(set.objects.is_empty());
        assert!(set.errors.is_empty());
        assert_eq!(set.namespaces.len(), 1);
    }

    #[test]
    fn a_document_without_kind_is_an_error() {
        let set = load("m.yaml", "apiVersion: v1\nmetadata: {name: a}\n");
        assert_eq!(set.errors.len(), 1);
        assert!(set.errors[0].message.contains("has no kind"));
    }

    #[test]
    fn a_list_of_a_thousand_broken_items_is_indexed_once_and_every_error_has_its_line() {
        let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for i in 0..1000 {
            text.push_str(&format!(
                "  - apiVersion: v1\n    kind: Service\n    metadata:\n      name: s{i}\n    spec:\n      ports:\n        - port: \"eighty\"\n"
            ));
        }
        let before = lines::BUILDS.with(std::cell::Cell::get);
        let set = load("l.yaml", &text);
        let builds = lines::BUILDS.with(std::cell::Cell::get) - before;
        assert_eq!(set.errors.len(), 1000);
        for (i, e) in set.errors.iter().enumerate() {
            // Item i starts on line 4 + 7i; its `port` is the item's seventh line.
            assert_eq!(e.line, 10 + 7 * i as u64, "{e:?}");
            assert!(
                e.message
                    .contains(&format!("items[{i}].spec.ports[0].port")),
                "{e:?}"
            );
        }
        assert_eq!(
            builds, 1,
            "the document's line index is built once, not per error"
        );
    }

    #[test]
    fn document_markers_with_content_and_ends_split_documents() {
        let chunks = split_documents("a: 1\n--- # two\nb: 2\n...\n---\nc: 3\n");
        let texts: Vec<&str> = chunks
            .iter()
            .map(|c| &"a: 1\n--- # two\nb: 2\n...\n---\nc: 3\n"[c.start..c.end])
            .collect();
        assert_eq!(
            texts,
            vec!["a: 1\n", "--- # two\nb: 2\n", "", "---\nc: 3\n"]
        );
    }
}
