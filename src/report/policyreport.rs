//! `wgpolicyk8s.io/v1alpha2` PolicyReports: one per namespace, a result per object and rule,
//! with summary counts, so Policy Reporter and the Kyverno ecosystem's dashboards show what
//! extsvc-guard finds in a cluster.

use std::collections::BTreeMap;

use serde_json::{Value, json};

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
pub fn reports(objects: &[Object], findings: &[Finding], now_seconds: i64) -> Vec<Value> {
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let timestamp = json!({"seconds": now_seconds, "nanos": 0});
    for object in objects.iter().filter(|o| !o.is_control_plane_managed()) {
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
        let (objects, _) = objects(MYSQL_PAIR);
        let report = &reports(&objects, &[], 0)[0];
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
        let reports = reports(&objects, &findings, 1_700_000_000);
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

    #[test]
    fn a_clean_object_is_a_pass() {
        let (objects, _) = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {type: ExternalName, externalName: db.example.com}\n",
        );
        let reports = reports(&objects, &[], 0);
        assert_eq!(reports[0]["summary"]["pass"], 1);
        assert_eq!(reports[0]["metadata"]["namespace"], "shop");
    }
}
