//! Findings and input errors, located in the manifests, written as text, JSON or SARIF.

pub mod policyreport;
pub mod sarif;
pub mod text;

use serde::Serialize;

use crate::finding::{Action, Finding};
use crate::manifest::InputError;

/// A finding with where its field is written.
#[derive(Debug, Clone)]
pub struct Located {
    pub finding: Finding,
    pub file: String,
    pub line: u64,
}

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Located>,
    pub errors: Vec<InputError>,
    pub objects: usize,
    pub files: usize,
    /// Objects left unjudged, by why.
    pub unjudged: std::collections::BTreeMap<crate::rules::Unjudged, usize>,
    /// Objects defined more than once in the inputs.
    pub duplicates: Vec<Duplicate>,
}

/// An object defined more than once, with each place (file, line), the judged one last.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub object: crate::object::ObjectRef,
    pub at: Vec<(String, u64)>,
}

impl Report {
    pub fn count(&self, action: Action) -> usize {
        self.findings
            .iter()
            .filter(|f| f.finding.action == action)
            .count()
    }

    /// The JSON contract: `{"findings":[…],"errors":[…]}`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct JsonFinding<'a> {
            rule: &'a str,
            action: &'a str,
            kind: &'a str,
            namespace: &'a str,
            name: &'a str,
            field: &'a str,
            file: &'a str,
            line: u64,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct JsonError<'a> {
            file: &'a str,
            document: usize,
            line: u64,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct JsonReport<'a> {
            findings: Vec<JsonFinding<'a>>,
            errors: Vec<JsonError<'a>>,
        }
        let report = JsonReport {
            findings: self
                .findings
                .iter()
                .map(|l| JsonFinding {
                    rule: l.finding.rule.as_str(),
                    action: l.finding.action.as_str(),
                    kind: l.finding.object.kind.as_str(),
                    namespace: &l.finding.object.namespace,
                    name: &l.finding.object.name,
                    field: &l.finding.field,
                    file: &l.file,
                    line: l.line,
                    message: &l.finding.message,
                })
                .collect(),
            errors: self
                .errors
                .iter()
                .map(|e| JsonError {
                    file: &e.file,
                    document: e.document,
                    line: e.line,
                    message: &e.message,
                })
                .collect(),
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string_pretty(&report).unwrap_or_default()
    }
}
