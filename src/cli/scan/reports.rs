//! The PolicyReports a scan writes: printed as they are made, split where a namespace has
//! more results than one report holds, applied, and ours the run did not write pruned.

use std::collections::BTreeSet;
use std::io::Write;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::cluster::client;
use crate::report::policyreport;

use super::RESULTS_PER_REPORT;

/// `--format policyreport` written as the namespaces are judged: a `kind: List` whose items
/// are never all held at once. The same text as the whole List pretty-printed.
pub(super) struct ReportStream {
    on: bool,
    items: usize,
}

impl ReportStream {
    pub(super) fn start(on: bool) -> ReportStream {
        ReportStream { on, items: 0 }
    }

    pub(super) fn write(&self, text: &str) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the report: {e}"))
    }

    pub(super) fn item(&mut self, report: &Value) -> Result<(), String> {
        let pretty = serde_json::to_string_pretty(report).unwrap_or_default();
        let indented: Vec<String> = pretty.lines().map(|l| format!("    {l}")).collect();
        let head = if self.items == 0 {
            "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n"
        } else {
            ",\n"
        };
        self.items += 1;
        self.write(&format!("{head}{}", indented.join("\n")))
    }

    pub(super) fn finish(&self) -> Result<(), String> {
        if self.items == 0 {
            self.write("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": []\n}\n")
        } else {
            self.write("\n  ]\n}\n")
        }
    }
}

/// `report` as reports of at most [`RESULTS_PER_REPORT`] results each, each with its own
/// summary (named by [`name_part`]).
pub(super) fn split(mut report: Value) -> Vec<Value> {
    let results = match report["results"].take() {
        Value::Array(results) => results,
        _ => Vec::new(),
    };
    let mut parts = Vec::new();
    let mut results = results.into_iter().peekable();
    while results.peek().is_some() || parts.is_empty() {
        let chunk: Vec<Value> = results.by_ref().take(RESULTS_PER_REPORT).collect();
        let count = |r: &str| chunk.iter().filter(|x| x["result"] == r).count();
        let mut part = report.clone();
        part["summary"] = serde_json::json!({
            "pass": count("pass"),
            "fail": count("fail"),
            "warn": count("warn"),
            "error": 0,
            "skip": 0,
        });
        part["results"] = Value::Array(chunk);
        parts.push(part);
    }
    parts
}

/// Names the `index`th report of a namespace: `extsvc-guard`, then `extsvc-guard-2`, ….
pub(super) fn name_part(mut report: Value, index: usize) -> Value {
    if index > 0 {
        report["metadata"]["name"] = format!("{}-{}", policyreport::NAME, index + 1).into();
    }
    report
}

/// Whether `name` is one of the names [`name_part`] gives.
pub(super) fn ours(name: &str) -> bool {
    name == policyreport::NAME
        || name
            .strip_prefix(policyreport::NAME)
            .and_then(|n| n.strip_prefix('-'))
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2))
}

pub(super) fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", policyreport::KIND),
        "policyreports",
    )
}

/// Deletes our reports in each scanned namespace that this run did not write (the
/// namespace's last judged object is gone, or it has fewer results than reports now): left
/// alone, they would go on showing old failures on the dashboards. Only reports named and
/// labelled as ours are touched, and only as this run listed them: one another run has
/// rewritten meanwhile stays. Returns the namespaces whose last report went.
pub(super) async fn prune_reports(
    client: &kube::Client,
    scope: &[String],
    written: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, String> {
    let resource = report_resource();
    let apis: Vec<(String, kube::Api<DynamicObject>)> = if scope.is_empty() {
        let all = kube::Api::all_with(client.clone(), &resource);
        vec![("policyreports in all namespaces".to_owned(), all)]
    } else {
        scope
            .iter()
            .map(|ns| {
                let api = kube::Api::namespaced_with(client.clone(), ns, &resource);
                (format!("policyreports in namespace {ns}"), api)
            })
            .collect()
    };
    let with_reports: BTreeSet<&str> = written.iter().map(|(ns, _)| ns.as_str()).collect();
    let selector = ListParams::default().labels(policyreport::MANAGED_BY_SELECTOR);
    let mut pruned = BTreeSet::new();
    for (what, api) in apis {
        let list = match api.list_metadata(&selector).await {
            Ok(list) => list,
            // No CRD, so no report to leave behind (with reports to write, apply said so).
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(report_error("list", &what, &e)),
        };
        for report in list.items {
            let version = report.metadata.resource_version.clone();
            let (Some(namespace), Some(name)) = (report.metadata.namespace, report.metadata.name)
            else {
                continue;
            };
            if !ours(&name) || written.contains(&(namespace.clone(), name.clone())) {
                continue;
            }
            let api: kube::Api<DynamicObject> =
                kube::Api::namespaced_with(client.clone(), &namespace, &resource);
            let params = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: version,
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {
                    if !with_reports.contains(namespace.as_str()) {
                        pruned.insert(namespace);
                    }
                }
                // Deleted meanwhile by someone else: the outcome wanted. Rewritten meanwhile
                // (by another scan): newer than this run's view, so it stays.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(e) => {
                    let what = format!("the stale policyreport in namespace {namespace}");
                    return Err(report_error("delete", &what, &e));
                }
            }
        }
    }
    Ok(pruned.into_iter().collect())
}

/// An error writing or reading reports; a refusal names the permission `--apply` needs.
pub(super) fn report_error(verb: &str, what: &str, error: &kube::Error) -> String {
    match error {
        // Not the webhook's read permissions: whoever runs scan needs to write.
        kube::Error::Api(status) if status.code == 403 => format!(
            "missing permission: cannot {verb} {what} ({}); grant patch, create, list and delete on policyreports.wgpolicyk8s.io to the account scan --apply runs as",
            status.message
        ),
        _ => client::explain(verb, what, error),
    }
}

/// Server-side applies one report, owned by field manager `extsvc-guard`.
pub(super) async fn apply_report(client: &kube::Client, report: &Value) -> Result<(), String> {
    let resource = report_resource();
    let params = PatchParams::apply("extsvc-guard").force();
    let namespace = report["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = report["metadata"]["name"]
        .as_str()
        .unwrap_or(policyreport::NAME);
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &resource);
    api.patch(name, &params, &Patch::Apply(report))
        .await
        .map(|_| ())
        .map_err(|e| {
            let what = format!("policyreports in namespace {namespace}");
            match &e {
                kube::Error::Api(status) if status.code == 404 => format!(
                    "{} (is the PolicyReport CRD wgpolicyk8s.io/v1alpha2 installed?)",
                    client::explain("apply", &what, &e)
                ),
                _ => report_error("apply", &what, &e),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(results: usize) -> Value {
        let results: Vec<Value> = (0..results)
            .map(|i| serde_json::json!({"result": if i % 3 == 0 { "fail" } else { "pass" }}))
            .collect();
        serde_json::json!({"metadata": {"name": policyreport::NAME, "namespace": "big"}, "results": results})
    }

    #[test]
    fn a_namespace_with_more_results_than_a_report_holds_gets_several_each_with_its_summary() {
        assert_eq!(split(report_of(RESULTS_PER_REPORT)).len(), 1);
        assert_eq!(split(report_of(0)).len(), 1, "an empty report stays one");
        let parts: Vec<Value> = split(report_of(2 * RESULTS_PER_REPORT + 1))
            .into_iter()
            .enumerate()
            .map(|(i, p)| name_part(p, i))
            .collect();
        let names: Vec<&str> = parts
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["extsvc-guard", "extsvc-guard-2", "extsvc-guard-3"]);
        assert!(names.iter().all(|n| ours(n)));
        let total: u64 = parts
            .iter()
            .map(|p| {
                p["summary"]["fail"].as_u64().unwrap() + p["summary"]["pass"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(total, 2 * RESULTS_PER_REPORT as u64 + 1);
        assert_eq!(parts[2]["results"].as_array().unwrap().len(), 1);
        assert!(!ours("extsvc-guard-x") && !ours("extsvc-guard-1") && !ours("kyverno"));
    }
}
