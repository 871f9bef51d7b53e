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

mod reports;
use reports::{ReportStream, apply_report, name_part, prune_reports, split};

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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
