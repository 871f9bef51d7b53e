//! SARIF 2.1.0, so CI systems annotate the manifest line at fault.

use serde_json::{Value, json};

use crate::finding::{Action, RuleId};
use crate::report::Report;

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(action: Action) -> &'static str {
    match action {
        Action::Deny => "error",
        Action::Warn => "warning",
        Action::Info => "note",
    }
}

/// A relative URI reference for a file path: forward slashes, reserved characters escaped.
fn uri(file: &str) -> String {
    let mut out = String::new();
    for c in file.replace('\\', "/").chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' | '/' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

pub fn render(report: &Report) -> String {
    let rules: Vec<Value> = RuleId::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.as_str(),
                "shortDescription": {"text": r.summary()},
                "fullDescription": {"text": r.summary()},
                "defaultConfiguration": {"level": r.default_action().action().map_or("none", level)},
                "help": {"text": format!("See README.md, rule {}", r.as_str())},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|l| {
            let f = &l.finding;
            let rule_index = RuleId::ALL.iter().position(|r| *r == f.rule).unwrap_or(0);
            json!({
                "ruleId": f.rule.as_str(),
                "ruleIndex": rule_index,
                "level": level(f.action),
                "message": {"text": format!("{} {}: {}", f.object, f.field, f.message)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&l.file)},
                        "region": {"startLine": l.line.max(1)},
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": format!("{}/{}/{}", f.object.namespace, f.object.kind, f.object.name),
                        "kind": "object",
                    }],
                }],
                "properties": {"field": f.field, "action": f.action.as_str()},
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": {"text": e.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&e.file)},
                        "region": {"startLine": e.line.max(1)},
                    }
                }],
            })
        })
        .collect();
    let sarif = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "extsvc-guard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
            "invocations": [{
                "executionSuccessful": report.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
        }],
    });
    serde_json::to_string_pretty(&sarif).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_use_forward_slashes_and_escape_spaces() {
        assert_eq!(uri("deploy\\my db.yaml"), "deploy/my%20db.yaml");
        assert_eq!(uri("<stdin>"), "%3Cstdin%3E");
    }
}
