//! `extsvc-guard scan`: list the live objects once and report every rule's findings against
//! the whole cluster — "what would be denied today", before enforcement is switched on.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;

use crate::cli::check::{exit_code, use_color};
use crate::cli::{Color, FailOn, exit};
use crate::cluster::client::{self, Credentials};
use crate::policy::Policy;
use crate::report::{Located, Report, policyreport, sarif, text};
use crate::rules::{self, Mode, judge};

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Scan only this namespace (repeat for several); the whole cluster when absent.
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Vec<String>,
    /// Policy file (YAML); the embedded default policy when absent.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format; `policyreport` prints wgpolicyk8s.io/v1alpha2 PolicyReports (a List).
    #[arg(long, value_enum, default_value_t = ScanFormat::Text)]
    format: ScanFormat,
    /// Write the PolicyReports to the cluster (server-side apply, one per namespace).
    #[arg(long)]
    apply: bool,
    /// Lowest action that makes the exit code 1.
    #[arg(long, value_enum, default_value_t = FailOn::Deny, value_name = "ACTION")]
    fail_on: FailOn,
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
}

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
    let snapshot = client::list_cluster(&client, &args.namespace).await?;
    for note in &snapshot.notes {
        eprintln!("extsvc-guard: note: {note}");
    }
    let mut findings = Vec::new();
    let mut unjudged = std::collections::BTreeMap::new();
    for object in &snapshot.objects {
        match rules::unjudged(object, &snapshot.view, policy, Mode::Set) {
            Some(why) => *unjudged.entry(why).or_default() += 1,
            None => findings.extend(judge(object, &snapshot.view, policy, Mode::Set)),
        }
    }
    let reports = policyreport::reports(&snapshot.objects, &snapshot.view, &findings, unix_now());
    let report = Report {
        findings: findings
            .iter()
            .cloned()
            .map(|finding| Located {
                finding,
                file: "cluster".to_owned(),
                line: 0,
            })
            .collect(),
        errors: Vec::new(),
        objects: snapshot.objects.len(),
        files: 1,
        unjudged,
        duplicates: Vec::new(),
    };
    let rendered = match args.format {
        ScanFormat::Text => text::render(
            &report,
            text::Style {
                color: use_color(args.color),
            },
        ),
        ScanFormat::Json => report.to_json() + "\n",
        ScanFormat::Sarif => sarif::render(&report) + "\n",
        ScanFormat::Policyreport => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": reports});
            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.as_bytes())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    if args.apply {
        apply_reports(&client, &reports).await?;
        eprintln!(
            "applied {} PolicyReport(s) named {}",
            reports.len(),
            policyreport::NAME
        );
        let pruned = prune_reports(&client, &args.namespace, &reports).await?;
        if !pruned.is_empty() {
            eprintln!(
                "deleted the PolicyReport named {} in {}, where nothing is judged any more",
                policyreport::NAME,
                pruned.join(", ")
            );
        }
    }
    Ok(exit_code(&report, args.fail_on))
}

fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", policyreport::KIND),
        "policyreports",
    )
}

/// Deletes our report in each scanned namespace that got none this time (its last judged
/// object is gone): left alone, it would go on showing the old failures on the dashboards.
/// Only reports named and labelled as ours are touched. Returns their namespaces.
async fn prune_reports(
    client: &kube::Client,
    scope: &[String],
    written: &[serde_json::Value],
) -> Result<Vec<String>, String> {
    let resource = report_resource();
    let written: BTreeSet<&str> = written
        .iter()
        .filter_map(|r| r["metadata"]["namespace"].as_str())
        .collect();
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
    let ours = ListParams::default().labels(policyreport::MANAGED_BY_SELECTOR);
    let mut pruned = Vec::new();
    for (what, api) in apis {
        let list = match api.list_metadata(&ours).await {
            Ok(list) => list,
            // No CRD, so no report to leave behind (with reports to write, apply said so).
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(report_error("list", &what, &e)),
        };
        for report in list.items {
            let (Some(namespace), Some(name)) = (report.metadata.namespace, report.metadata.name)
            else {
                continue;
            };
            if name != policyreport::NAME || written.contains(namespace.as_str()) {
                continue;
            }
            let api: kube::Api<DynamicObject> =
                kube::Api::namespaced_with(client.clone(), &namespace, &resource);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => pruned.push(namespace),
                // Deleted meanwhile by someone else: the outcome wanted.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    let what = format!("the stale policyreport in namespace {namespace}");
                    return Err(report_error("delete", &what, &e));
                }
            }
        }
    }
    Ok(pruned)
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

/// Server-side applies each report, owned by field manager `extsvc-guard`.
async fn apply_reports(client: &kube::Client, reports: &[serde_json::Value]) -> Result<(), String> {
    let resource = report_resource();
    let params = PatchParams::apply("extsvc-guard").force();
    for report in reports {
        let namespace = report["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(client.clone(), namespace, &resource);
        api.patch(policyreport::NAME, &params, &Patch::Apply(report))
            .await
            .map_err(|e| {
                let what = format!("policyreports in namespace {namespace}");
                match &e {
                    kube::Error::Api(status) if status.code == 404 => format!(
                        "{} (is the PolicyReport CRD wgpolicyk8s.io/v1alpha2 installed?)",
                        client::explain("apply", &what, &e)
                    ),
                    _ => report_error("apply", &what, &e),
                }
            })?;
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
