//! `wgpolicyk8s.io/v1alpha2` PolicyReports: one per namespace, a result per object and rule,
//! with summary counts, so Policy Reporter and the Kyverno ecosystem's dashboards show what
//! extsvc-guard finds in a cluster.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cluster::{ClusterView, written_by_controller};
use crate::finding::{Action, Finding};
use crate::object::Object;

pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const KIND: &str = "PolicyReport";
/// The name of the report extsvc-guard owns in each namespace.
pub const NAME: &str = "extsvc-guard";
/// Selects the label every report carries (`scan --apply` prunes by it).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=extsvc-guard";

fn result_of(action: Action) -> Option<(&'static str, &'static str)> {
    match action {
        Action::Deny => Some(("fail", "high")),
        Action::Warn => Some(("warn", "medium")),
        Action::Info => None,
    }
}

fn resource(object: &Object) -> Value {
    let meta = object.metadata();
    let api_version = match object {
        Object::EndpointSlice(_) => "discovery.k8s.io/v1",
        _ => "v1",
    };
    let mut r = json!({
        "apiVersion": api_version,
        "kind": object.kind().as_str(),
        "namespace": object.namespace(),
        "name": object.name(),
    });
    if let Some(uid) = &meta.uid {
        r["uid"] = json!(uid);
    }
    r
}

/// The reports for `objects` and their `findings` (as `judge` gave them), at `now_seconds`
/// (Unix time).
pub fn reports(
    objects: &[Object],
    view: &dyn ClusterView,
    findings: &[Finding],
    now_seconds: i64,
) -> Vec<Value> {
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let timestamp = json!({"seconds": now_seconds, "nanos": 0});
    for object in objects.iter().filter(|o| !written_by_controller(o, view)) {
        let reference = object.reference();
        let own: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.object == reference && f.action > Action::Info)
            .collect();
        let results = by_namespace.entry(object.namespace()).or_default();
        if own.is_empty() {
            results.push(json!({
                "policy": "extsvc-guard",
                "rule": "all-rules",
                "result": "pass",
                "source": "extsvc-guard",
                "category": "External Services",
                "message": "no finding",
                "resources": [resource(object)],
                "timestamp": timestamp,
                "scored": true,
            }));
        }
        for f in own {
            let Some((result, severity)) = result_of(f.action) else {
                continue;
            };
            results.push(json!({
                "policy": "extsvc-guard",
                "rule": f.rule.as_str(),
                "result": result,
                "severity": severity,
                "source": "extsvc-guard",
                "category": "External Services",
                "message": f.message,
                "properties": {"field": f.field, "action": f.action.as_str()},
                "resources": [resource(object)],
                "timestamp": timestamp,
                "scored": true,
            }));
        }
    }
    by_namespace
        .into_iter()
        .map(|(namespace, results)| {
            let count = |r: &str| results.iter().filter(|x| x["result"] == r).count();
            json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": NAME,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "extsvc-guard"},
                },
                "summary": {
                    "pass": count("pass"),
                    "fail": count("fail"),
                    "warn": count("warn"),
                    "error": 0,
                    "skip": 0,
                },
                "results": results,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{MYSQL_PAIR, objects};
    use crate::rules::{Mode, judge};

    #[test]
    fn the_selector_scan_prunes_by_selects_the_label_every_report_carries() {
        let (objects, view) = objects(MYSQL_PAIR);
        let report = &reports(&objects, &view, &[], 0)[0];
        let (key, value) = MANAGED_BY_SELECTOR.split_once('=').unwrap();
        assert_eq!(report["metadata"]["labels"][key], value);
        assert_eq!(report["metadata"]["name"], NAME);
    }

    #[test]
    fn the_seed_pair_gives_one_report_with_two_failures_and_a_warning() {
        let (objects, view) = objects(MYSQL_PAIR);
        let policy = crate::policy::Policy::embedded();
        let findings: Vec<Finding> = objects
            .iter()
            .flat_map(|o| judge(o, &view, &policy, Mode::Set))
            .collect();
        let reports = reports(&objects, &view, &findings, 1_700_000_000);
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r["metadata"]["namespace"], "default");
        assert_eq!(
            r["summary"],
            json!({"pass": 0, "fail": 2, "warn": 1, "error": 0, "skip": 0})
        );
        let rules: Vec<&str> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["rule"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            vec![
                "service-no-endpoints",
                "endpoints-orphaned",
                "port-name-mismatch"
            ]
        );
        assert_eq!(r["results"][1]["resources"][0]["name"], "mysql-ep");
        assert_eq!(r["results"][1]["properties"]["field"], "metadata.name");
    }

    /// The `wgpolicyk8s.io/v1alpha2` PolicyReport schema, as the CRD that Kyverno and Policy
    /// Reporter install defines it, for the fields extsvc-guard writes: their types, the
    /// enums, the required fields, and `additionalProperties: false` where the CRD lists
    /// the properties (a field it does not list is pruned by the API server without a word).
    fn v1alpha2_schema() -> Value {
        let string = json!({"type": "string"});
        let integer = json!({"type": "integer"});
        let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let object_reference = json!({"type": "object", "additionalProperties": false, "properties": {
            "apiVersion": string, "fieldPath": string, "kind": string, "name": string,
            "namespace": string, "resourceVersion": string, "uid": string,
        }});
        let result = json!({"type": "object", "additionalProperties": false, "required": ["policy"], "properties": {
            "category": string,
            "message": string,
            "policy": string,
            "properties": string_map,
            "resources": {"type": "array", "items": object_reference},
            "result": {"type": "string", "enum": ["pass", "fail", "warn", "error", "skip"]},
            "rule": string,
            "scored": {"type": "boolean"},
            "severity": {"type": "string", "enum": ["critical", "high", "low", "medium", "info"]},
            "source": string,
            "timestamp": {"type": "object", "additionalProperties": false, "required": ["nanos", "seconds"], "properties": {
                "nanos": {"type": "integer", "minimum": 0, "maximum": i32::MAX},
                "seconds": integer,
            }},
        }});
        json!({"type": "object", "additionalProperties": false, "properties": {
            "apiVersion": string,
            "kind": string,
            "metadata": {"type": "object"},
            "results": {"type": "array", "items": result},
            "summary": {"type": "object", "additionalProperties": false, "properties": {
                "error": integer, "fail": integer, "pass": integer, "skip": integer, "warn": integer,
            }},
        }})
    }

    /// Where `value` breaks `schema` (the keywords [`v1alpha2_schema`] uses), as JSON paths.
    fn violations(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
        let type_ok = match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        if !type_ok {
            out.push(format!("{path}: {value} is not of type {}", schema["type"]));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            out.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
        if let Some(n) = value.as_i64()
            && (schema["minimum"].as_i64().is_some_and(|min| n < min)
                || schema["maximum"].as_i64().is_some_and(|max| n > max))
        {
            out.push(format!("{path}: {n} is out of range"));
        }
        if let Some(items) = value.as_array() {
            for (i, item) in items.iter().enumerate() {
                violations(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        if let Some(fields) = value.as_object() {
            for required in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(required.as_str().unwrap()) {
                    out.push(format!("{path}: required field {required} is missing"));
                }
            }
            for (name, field) in fields {
                let field_path = format!("{path}.{name}");
                match (&schema["properties"][name], &schema["additionalProperties"]) {
                    (Value::Null, Value::Bool(false)) => {
                        out.push(format!("{field_path}: not in the schema, would be pruned"))
                    }
                    (Value::Null, Value::Null) => {}
                    (Value::Null, additional) => violations(field, additional, &field_path, out),
                    (property, _) => violations(field, property, &field_path, out),
                }
            }
        }
    }

    #[test]
    fn the_schema_check_catches_a_pruned_field_a_wrong_enum_and_a_missing_policy() {
        let bad = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {},
            "summary": {"pass": 0, "passed": 1},
            "results": [{"result": "failed", "resources": [{"name": "x", "labels": {}}]}]});
        let mut found = Vec::new();
        violations(&bad, &v1alpha2_schema(), "$", &mut found);
        assert_eq!(
            found,
            vec![
                "$.results[0]: required field \"policy\" is missing",
                "$.results[0].resources[0].labels: not in the schema, would be pruned",
                r#"$.results[0].result: "failed" is not one of [String("pass"), String("fail"), String("warn"), String("error"), String("skip")]"#,
                "$.summary.passed: not in the schema, would be pruned",
            ]
        );
    }

    #[test]
    fn the_reports_of_every_seed_conform_to_the_policyreport_crd_schema() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeds");
        let set = crate::manifest::ManifestSet::load(&[seeds]);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let view = set.view();
        let policy = crate::policy::Policy::embedded();
        let mut objects: Vec<Object> = set.objects.iter().map(|o| (*o.object).clone()).collect();
        // A uid, as objects read from a cluster have.
        let uid = Some("6c1f7a1e-0d1b-4c55-9a43-2f1d3e6b8a90".to_owned());
        match &mut objects[0] {
            Object::Service(o) => o.metadata.uid = uid,
            Object::Endpoints(o) => o.metadata.uid = uid,
            Object::EndpointSlice(o) => o.metadata.uid = uid,
        }
        let findings: Vec<Finding> = objects
            .iter()
            .flat_map(|o| judge(o, &view, &policy, Mode::Set))
            .collect();
        let results = |action| findings.iter().filter(|f| f.action == action).count();
        assert!(results(Action::Deny) > 0 && results(Action::Warn) > 0);
        let reports = reports(&objects, &view, &findings, 1_700_000_000);
        assert!(reports.len() > 1);
        for report in &reports {
            let mut found = Vec::new();
            violations(report, &v1alpha2_schema(), "$", &mut found);
            assert!(found.is_empty(), "{found:#?}\nin {report:#}");
        }
    }

    #[test]
    fn a_clean_object_is_a_pass() {
        let (objects, view) = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {type: ExternalName, externalName: db.example.com}\n",
        );
        let reports = reports(&objects, &view, &[], 0);
        assert_eq!(reports[0]["summary"]["pass"], 1);
        assert_eq!(reports[0]["metadata"]["namespace"], "shop");
    }
}
