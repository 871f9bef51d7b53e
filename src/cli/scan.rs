//! `extsvc-guard scan`: read the live objects and report every rule's findings against the
//! whole cluster — "what would be denied today", before enforcement is switched on, and on
//! a schedule (deploy/components/audit) to keep PolicyReports current.
//!
//! The cluster is read namespace by namespace, in pages, each object kept in the watch
//! cache's compact form as it arrives ([`client::list_namespace`]), judged rebuilt
//! ([`audit`]), reported and dropped before the next namespace is read: memory follows the
//! largest namespace, not the cluster. A rule that looks into another namespace (an
//! ExternalName aliasing `<service>.<namespace>.svc`) has that Service listed by name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::audit;
use crate::cli::check::use_color;
use crate::cli::{Color, exit};
use crate::cluster::cache::{ClusterCache, Entry, Kept, WatchId, WatchedKind};
use crate::cluster::client::{self, Credentials};
use crate::cluster::consumers::Consumer;
use crate::cluster::{ClusterView, EndpointsInfo, ManifestView, PodCount, ServiceInfo, SliceInfo};
use crate::finding::Action;
use crate::object::{Kind, Object};
use crate::policy::Policy;
use crate::report::{Located, Report, policyreport, sarif, text};
use crate::rules::Unjudged;
use crate::rules::externalname_ip::external_name;
use crate::target::{host_part, in_cluster_service};

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Scan only this namespace (repeat for several); the whole cluster when absent.
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Vec<String>,
    /// Policy file (YAML); the embedded default policy when absent.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format; `policyreport` prints wgpolicyk8s.io/v1alpha2 PolicyReports (a List);
    /// `summary` one line of counts (what a scheduled `scan --apply` logs: it holds no
    /// finding in memory, however many there are).
    #[arg(long, value_enum, default_value_t = ScanFormat::Text)]
    format: ScanFormat,
    /// Write the PolicyReports to the cluster (server-side apply, one per namespace, or
    /// several where a namespace has more results than one report holds).
    #[arg(long)]
    apply: bool,
    /// Lowest action that makes the exit code 1; `never` exits 0 whatever is found (a
    /// scheduled `scan --apply`, whose job is the reports).
    #[arg(long, value_enum, default_value_t = ScanFailOn::Deny, value_name = "ACTION")]
    fail_on: ScanFailOn,
    /// Colour in text output.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Kubeconfig file (otherwise KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScanFormat {
    Text,
    Json,
    Sarif,
    Policyreport,
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScanFailOn {
    Deny,
    Warn,
    Never,
}

/// Results one PolicyReport holds at most. The API server refuses a request over 3 MiB
/// (413) and etcd an object over 1.5 MiB, and a result takes 300 bytes to 1 KiB: a
/// namespace with more objects gets several reports (`extsvc-guard`, `extsvc-guard-2`, …),
/// which Policy Reporter adds up.
pub const RESULTS_PER_REPORT: usize = 500;

pub fn run(args: ScanArgs) -> u8 {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("extsvc-guard: {e}");
                return exit::USAGE;
            }
        },
        None => Policy::embedded(),
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("extsvc-guard: cannot start the runtime: {e}");
            return exit::USAGE;
        }
    };
    match runtime.block_on(scan(&args, &policy)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("extsvc-guard: {e}");
            exit::USAGE
        }
    }
}

async fn scan(args: &ScanArgs, policy: &Policy) -> Result<u8, String> {
    let credentials = Credentials {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
    };
    let client = client::connect(&credentials)
        .await
        .map_err(|e| format!("cannot reach a cluster: {e}"))?;
    let namespaces = client::list_namespaces(&client, &args.namespace).await?;
    let consumers = consumers(&client, &args.namespace).await;
    // What the rules read, and the uid each report result names its object by.
    let kept = Kept {
        uid: true,
        ..Kept::for_policy(policy)
    };
    let mut report = Report {
        files: 1,
        ..Report::default()
    };
    let mut others = Others::default();
    let mut stream = ReportStream::start(args.format == ScanFormat::Policyreport);
    let mut written = BTreeSet::new();
    let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
    let keep_findings = matches!(
        args.format,
        ScanFormat::Text | ScanFormat::Json | ScanFormat::Sarif
    );
    let now = unix_now();
    for (namespace, found) in &namespaces {
        let cache = ClusterCache::scoped(std::slice::from_ref(namespace));
        cache.set_kept(kept.clone());
        if let Some(ns) = found {
            let entry = Entry::namespace(namespace.clone(), ns.metadata.labels.as_ref());
            let id = WatchId::new(WatchedKind::Namespaces, Some(namespace));
            cache.apply(&id, entry, std::time::Instant::now());
        }
        let listed = client::list_namespace(&client, namespace, &cache).await?;
        report.objects += listed.objects;
        if listed.maintained > 0 {
            *report
                .unjudged
                .entry(Unjudged::MaintainedByController)
                .or_default() += listed.maintained;
        }
        let names = cache.names_in(namespace);
        // The Services other namespaces' rules look up are read before any is judged.
        for chunk in names
            .iter()
            .take_while(|(kind, _)| *kind == Kind::Service)
            .cloned()
            .collect::<Vec<_>>()
            .chunks(audit::CHUNK)
        {
            others
                .look_up(&client, namespace, &cache.objects_of(namespace, chunk))
                .await;
        }
        let view = ScanView {
            namespace,
            inner: audit::view(&cache, &consumers),
            others: &others,
        };
        // A part at a time: the rebuilt objects, their findings and their report results
        // are held for RESULTS_PER_REPORT objects, not for the namespace.
        let mut parts = 0;
        for chunk in names.chunks(RESULTS_PER_REPORT) {
            let judged = audit::judge_objects(cache.objects_of(namespace, chunk), &view, policy);
            for (why, n) in &judged.unjudged {
                *report.unjudged.entry(why.clone()).or_default() += n;
            }
            for finding in &judged.findings {
                *counts.entry(finding.action).or_default() += 1;
                if keep_findings {
                    report.findings.push(Located {
                        finding: finding.clone(),
                        file: "cluster".to_owned(),
                        line: 0,
                    });
                }
            }
            let reports = policyreport::reports(&judged.objects, &view, &judged.findings, now);
            drop(judged);
            for part in reports.into_iter().flat_map(split) {
                let r = name_part(part, parts);
                parts += 1;
                stream.item(&r)?;
                if args.apply {
                    apply_report(&client, &r).await?;
                    if let (Some(ns), Some(name)) = (
                        r["metadata"]["namespace"].as_str(),
                        r["metadata"]["name"].as_str(),
                    ) {
                        written.insert((ns.to_owned(), name.to_owned()));
                    }
                }
            }
        }
    }
    stream.finish()?;
    let rendered = match args.format {
        ScanFormat::Text => text::render(
            &report,
            text::Style {
                color: use_color(args.color),
            },
        ),
        ScanFormat::Json => report.to_json() + "\n",
        ScanFormat::Sarif => sarif::render(&report) + "\n",
        ScanFormat::Policyreport => String::new(),
        ScanFormat::Summary => summary(&report, namespaces.len(), &counts),
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    for note in &others.notes {
        eprintln!("extsvc-guard: note: {note}");
    }
    if args.apply {
        let several = written.iter().any(|(_, name)| name != policyreport::NAME);
        eprintln!(
            "applied {} PolicyReport(s) named {}{}",
            written.len(),
            policyreport::NAME,
            if several {
                format!(
                    " (and {}-2 … where a namespace has more than {RESULTS_PER_REPORT} results)",
                    policyreport::NAME
                )
            } else {
                String::new()
            }
        );
        let pruned = prune_reports(&client, &args.namespace, &written).await?;
        if !pruned.is_empty() {
            eprintln!(
                "deleted the PolicyReport named {} in {}, where nothing is judged any more",
                policyreport::NAME,
                pruned.join(", ")
            );
        }
    }
    let count = |action| counts.get(&action).copied().unwrap_or(0);
    Ok(match args.fail_on {
        ScanFailOn::Deny if count(Action::Deny) > 0 => exit::DENIED,
        ScanFailOn::Warn if count(Action::Deny) + count(Action::Warn) > 0 => exit::DENIED,
        _ => exit::OK,
    })
}

/// `--format summary`: the counts, and what was left unjudged.
fn summary(report: &Report, namespaces: usize, counts: &BTreeMap<Action, usize>) -> String {
    let count = |action| counts.get(&action).copied().unwrap_or(0);
    let mut out = format!(
        "{} objects in {namespaces} namespaces: {} denials, {} warnings, {} notes\n",
        report.objects,
        count(Action::Deny),
        count(Action::Warn),
        count(Action::Info)
    );
    if !report.unjudged.is_empty() {
        let why: Vec<String> = report
            .unjudged
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        out.push_str(&format!(
            "{} objects not judged: {}\n",
            report.unjudged.values().sum::<usize>(),
            why.join(", ")
        ));
    }
    out
}

/// The Ingresses and Gateway API routes of the scanned scope. Without permission to list
/// them, Services are judged as if only in-cluster DNS clients used them, and scan says so.
async fn consumers(client: &kube::Client, scope: &[String]) -> ManifestView {
    let scopes: Vec<Option<&str>> = if scope.is_empty() {
        vec![None]
    } else {
        scope.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut view = ManifestView::new();
    for scope in scopes {
        match client::list_consumers(client, scope).await {
            Ok(consumers) => {
                for (consumer, backends) in consumers {
                    view.insert_consumer(&consumer, &backends);
                }
            }
            // Judged as if only DNS clients used the Services: stricter, never laxer.
            Err(e) => eprintln!(
                "extsvc-guard: note: {e}; without it, Services are judged as if only in-cluster DNS clients used them"
            ),
        }
    }
    view
}

/// Services of other namespaces that the scanned objects name (an ExternalName aliasing
/// `<service>.<namespace>.svc`), listed by name as they come up, and the namespaces that
/// could not be read.
#[derive(Default)]
struct Others {
    services: BTreeMap<(String, String), Option<ServiceInfo>>,
    unreadable: BTreeSet<String>,
    notes: Vec<String>,
}

impl Others {
    async fn look_up(&mut self, client: &kube::Client, namespace: &str, objects: &[Object]) {
        for object in objects {
            let Object::Service(service) = object else {
                continue;
            };
            let Some((name, other)) =
                external_name(service).and_then(|n| in_cluster_service(host_part(n)))
            else {
                continue;
            };
            let key = (other.clone(), name.clone());
            if other == namespace
                || self.unreadable.contains(&other)
                || self.services.contains_key(&key)
            {
                continue;
            }
            match client::find_service(client, &other, &name).await {
                Ok(found) => {
                    self.services.insert(key, found);
                }
                Err(e) => {
                    self.notes.push(format!(
                        "{e}; ExternalName Services aliasing a Service there are not judged for a missing target"
                    ));
                    self.unreadable.insert(other);
                }
            }
        }
    }
}

/// What one namespace's objects are judged against: that namespace as read (and the
/// consumers), and the Services of other namespaces looked up by name.
struct ScanView<'a> {
    namespace: &'a str,
    inner: crate::cluster::Overlay<'a>,
    others: &'a Others,
}

impl ClusterView for ScanView<'_> {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        if namespace == self.namespace {
            return self.inner.service(namespace, name);
        }
        self.others
            .services
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .flatten()
    }
    fn services_in(&self, namespace: &str) -> Vec<ServiceInfo> {
        self.inner.services_in(namespace)
    }
    fn endpoints(&self, namespace: &str, name: &str) -> Option<EndpointsInfo> {
        self.inner.endpoints(namespace, name)
    }
    fn endpoints_in(&self, namespace: &str) -> Vec<EndpointsInfo> {
        self.inner.endpoints_in(namespace)
    }
    fn slices_for(&self, namespace: &str, service: &str) -> Vec<SliceInfo> {
        self.inner.slices_for(namespace, service)
    }
    fn slices_in(&self, namespace: &str) -> Vec<SliceInfo> {
        self.inner.slices_in(namespace)
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.inner.namespace_labels(namespace)
    }
    fn pods_matching(&self, _: &str, _: &BTreeMap<String, String>) -> Option<PodCount> {
        None
    }
    fn consumers_of(&self, namespace: &str, service: &str) -> Vec<Consumer> {
        self.inner.consumers_of(namespace, service)
    }
    /// The namespace read, and another one where its Services could be listed: only the
    /// names looked up are asked about there.
    fn sees_cluster(&self, namespace: &str) -> bool {
        namespace == self.namespace || !self.others.unreadable.contains(namespace)
    }
}

/// `--format policyreport` written as the namespaces are judged: a `kind: List` whose items
/// are never all held at once. The same text as the whole List pretty-printed.
struct ReportStream {
    on: bool,
    items: usize,
}

impl ReportStream {
    fn start(on: bool) -> ReportStream {
        ReportStream { on, items: 0 }
    }

    fn write(&self, text: &str) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the report: {e}"))
    }

    fn item(&mut self, report: &Value) -> Result<(), String> {
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

    fn finish(&self) -> Result<(), String> {
        if self.items == 0 {
            self.write("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": []\n}\n")
        } else {
            self.write("\n  ]\n}\n")
        }
    }
}

/// `report` as reports of at most [`RESULTS_PER_REPORT`] results each, each with its own
/// summary (named by [`name_part`]).
fn split(mut report: Value) -> Vec<Value> {
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
fn name_part(mut report: Value, index: usize) -> Value {
    if index > 0 {
        report["metadata"]["name"] = format!("{}-{}", policyreport::NAME, index + 1).into();
    }
    report
}

/// Whether `name` is one of the names [`name_part`] gives.
fn ours(name: &str) -> bool {
    name == policyreport::NAME
        || name
            .strip_prefix(policyreport::NAME)
            .and_then(|n| n.strip_prefix('-'))
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2))
}

fn report_resource() -> ApiResource {
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
async fn prune_reports(
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
fn report_error(verb: &str, what: &str, error: &kube::Error) -> String {
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
async fn apply_report(client: &kube::Client, report: &Value) -> Result<(), String> {
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
