//! Issue 23 on the real API server: verdicts that know the consumer. What the Service says
//! (external-dns's annotations) and what the namespace holds (Ingresses, Gateway API
//! HTTPRoutes naming the Service as a backend, read live by `serve`) turn findings that hold
//! for in-cluster DNS clients alone into warnings naming the consumer.

use serde_json::{Value, json};

use crate::apiserver::deploy::install_rendered;
use crate::apiserver::kubectl_apply::warning_line;
use crate::envtest::{self, ControlPlane};
use crate::support::Server;
use crate::{decisions, eventually, repo, serve, serve_as, texts, wait_ready};

/// `kubectl create -f -` of `manifest`: (stdout, stderr).
fn create(cp: &ControlPlane, manifest: &Value) -> (String, String) {
    texts(&cp.kubectl(&["create", "-f", "-"], Some(&manifest.to_string())))
}

/// How kubectl prints the webhook's denial of a create from stdin, up to `message_start`.
fn denied(message_start: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"validate.extsvc-guard.io\" denied the request: {message_start}"
    )
}

/// An ExternalName Service holding an IP, with `annotations`.
fn ip_alias(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"type": "ExternalName", "externalName": "192.168.1.10"}})
}

async fn registered<'a>(
    cp: &'a ControlPlane,
    server: &Server,
    tag: &str,
    namespaces: &[&str],
) -> envtest::Webhooks<'a> {
    wait_ready(server).await;
    cp.register(server, &format!("extsvc-guard-{tag}"), namespaces)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_externalname_that_external_dns_publishes_is_admitted_with_a_warning_and_denied_without_it()
 {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("consumers-external-dns", &[]);
    let server = serve(&cp, &[]);
    let _webhooks = registered(&cp, &server, "consumers-external-dns", &[&ns]).await;

    let (stdout, stderr) = create(
        &cp,
        &ip_alias(
            &ns,
            "nas",
            json!({"external-dns.alpha.kubernetes.io/hostname": "nas.home.example.com"}),
        ),
    );
    assert_eq!(stdout, "service/nas created\n", "{stderr}");
    // One warning, whole: what works, what still breaks, and the fix.
    assert_eq!(
        stderr,
        format!(
            "Warning: [externalname-ip] Service {ns}/nas spec.externalName: \"192.168.1.10\" is an IP address, which its other consumers read directly (external-dns (annotation external-dns.alpha.kubernetes.io/hostname)), but CoreDNS serves no record for it, so in-cluster lookups of nas.{ns}.svc fail with NXDOMAIN; for in-cluster clients, use a Service without selector and an EndpointSlice with 192.168.1.10 instead\n"
        )
    );

    let (stdout, stderr) = create(&cp, &ip_alias(&ns, "nas-plain", json!({})));
    assert_eq!(stdout, "", "{stderr}");
    assert!(
        stderr.starts_with(&denied(&format!(
            "[externalname-ip] Service {ns}/nas-plain spec.externalName: \"192.168.1.10\" is an IP address: CoreDNS serves no record for an ExternalName that is an IP (it makes CNAMEs of names only), so lookups of nas-plain.{ns}.svc fail with NXDOMAIN"
        ))),
        "{stderr}"
    );
}

/// An Ingress sending `host` to Service `backend` port 5000.
fn ingress(ns: &str, name: &str, backend: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"rules": [{"host": "nas.home.example.com", "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": backend, "port": {"number": 5000}}}}]}}]}})
}

/// An Ingress applied before the IP ExternalName it names: the Service is admitted with a
/// warning naming the Ingress (read live by `server`); without an Ingress it is denied.
async fn an_ingress_backend_is_warned_naming_the_ingress(
    cp: &ControlPlane,
    server: &Server,
    ns: &str,
) {
    assert_eq!(
        cp.apply(&ingress(ns, "nas-web", "nas").to_string()),
        "ingress.networking.k8s.io/nas-web created\n"
    );
    let (stdout, stderr) = create(cp, &ip_alias(ns, "nas", json!({})));
    assert_eq!(stdout, "service/nas created\n", "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Warning: [externalname-ip] Service {ns}/nas spec.externalName: \"192.168.1.10\" is an IP address, which its other consumers read directly (Ingress {ns}/nas-web), but CoreDNS serves no record for it, so in-cluster lookups of nas.{ns}.svc fail with NXDOMAIN"
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (_, stderr) = create(cp, &ip_alias(ns, "nas-direct", json!({})));
    assert!(
        stderr.starts_with(&denied(&format!(
            "[externalname-ip] Service {ns}/nas-direct"
        ))),
        "{stderr}"
    );
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("missing permission") || l.contains("cannot read the Ingresses")),
        "{:#?}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_externalname_an_ingress_sends_to_is_admitted_with_a_warning_naming_the_ingress() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("consumers-ingress", &[]);
    let server = serve(&cp, &[]);
    let _webhooks = registered(&cp, &server, "consumers-ingress", &[&ns]).await;
    an_ingress_backend_is_warned_naming_the_ingress(&cp, &server, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployed_service_account_may_list_the_ingresses_that_soften_a_verdict() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    install_rendered(&cp);
    let dir = cp.tempdir();
    // The account the Deployment runs as, with the rendered ClusterRole and nothing else.
    let kubeconfig = cp.token_kubeconfig("extsvc-guard", "extsvc-guard", dir.path());
    let server = serve_as(&kubeconfig, &[]);
    let ns = cp.namespace("consumers-deployed-rbac", &[]);
    let _webhooks = registered(&cp, &server, "consumers-deployed-rbac", &[&ns]).await;
    an_ingress_backend_is_warned_naming_the_ingress(&cp, &server, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_header_warning_is_left_out_for_an_externalname_an_ingress_sends_to() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("consumers-host", &[]);
    let server = serve(&cp, &[]);
    let _webhooks = registered(&cp, &server, "consumers-host", &[&ns]).await;
    // An ExternalName on port 443: a client in the cluster would send Host/SNI "<name>".
    let api = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
               "spec": {"type": "ExternalName", "externalName": "api.payments.example.com",
                        "ports": [{"name": "https", "port": 443}]}})
    };
    let mut edge = ingress(&ns, "payments-edge", "payments");
    edge["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] =
        json!({"number": 443});
    cp.apply(&edge.to_string());
    // The ingress controller sends the public Host (or sets it by annotation): nothing to say.
    assert_eq!(
        create(&cp, &api("payments")),
        ("service/payments created\n".to_owned(), String::new())
    );
    let (stdout, stderr) = create(&cp, &api("payments-direct"));
    assert_eq!(stdout, "service/payments-direct created\n", "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Warning: [externalname-host-mismatch] Service {ns}/payments-direct spec.ports[0]: port 443 looks like HTTP(S)"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_consumer_awareness_off_an_ip_externalname_is_denied_whatever_consumes_it() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let ns = cp.namespace("consumers-off", &[]);
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "consumerAware: false\n").unwrap();
    let server = serve(&cp, &["--policy", policy.to_str().unwrap()]);
    let _webhooks = registered(&cp, &server, "consumers-off", &[&ns]).await;
    cp.apply(&ingress(&ns, "nas-web", "nas").to_string());
    let (_, stderr) = create(
        &cp,
        &ip_alias(
            &ns,
            "nas",
            json!({"external-dns.alpha.kubernetes.io/hostname": "nas.home.example.com"}),
        ),
    );
    assert!(
        stderr.starts_with(&denied(&format!(
            "[externalname-ip] Service {ns}/nas spec.externalName: \"192.168.1.10\" is an IP address: CoreDNS serves no record"
        ))),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// In-cluster aliases

/// An ExternalName Service aliasing `target`.
fn alias(ns: &str, name: &str, target: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"type": "ExternalName", "externalName": target}})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_to_a_missing_in_cluster_service_is_warned_and_one_into_another_namespace_is_deniable()
 {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let (ns, other) = (
        cp.namespace("aliases", &[]),
        cp.namespace("aliases-other", &[]),
    );
    let dir = cp.tempdir();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  externalname-cross-namespace: deny\n").unwrap();
    let server = serve(&cp, &["--policy", policy.to_str().unwrap()]);
    let _webhooks = registered(&cp, &server, "aliases", &[&ns]).await;

    let (stdout, stderr) = create(
        &cp,
        &alias(&ns, "orders", &format!("db.{ns}.svc.cluster.local")),
    );
    assert_eq!(stdout, "service/orders created\n", "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Warning: [externalname-target-missing] Service {ns}/orders spec.externalName: "
        )),
        "{stderr}"
    );
    // Once Service db exists, an alias to it says nothing (the watch delivers it a moment later).
    cp.apply(
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
        "spec": {"ports": [{"name": "pg", "port": 5432}]}})
        .to_string(),
    );
    eventually(
        std::time::Duration::from_secs(20),
        "an alias to the existing Service is admitted without warnings",
        || {
            let out = cp.kubectl(
                &["create", "--dry-run=server", "-f", "-"],
                Some(&alias(&ns, "orders-2", &format!("db.{ns}.svc")).to_string()),
            );
            texts(&out).1.is_empty().then_some(())
        },
    );
    // Into another namespace: off by default, denied by this policy.
    let (_, stderr) = create(
        &cp,
        &alias(&ns, "reports", &format!("db.{other}.svc.cluster.local")),
    );
    assert!(
        stderr.contains(&denied(&format!(
            "[externalname-cross-namespace] Service {ns}/reports spec.externalName: "
        ))),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Gateway API

const HTTPROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

/// A headless Service for port 3306 and hand-written Endpoints serving 3307 (the remap
/// `headless-port-remap` is about): the Service's create and the Endpoints' create, as
/// kubectl prints them.
fn headless_pair(cp: &ControlPlane, ns: &str) -> ((String, String), (String, String)) {
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mysql", "namespace": ns},
        "spec": {"clusterIP": "None", "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}]}});
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "mysql", "namespace": ns},
        "subsets": [{"addresses": [{"ip": "203.0.113.10"}], "ports": [{"name": "mysql", "port": 3307, "protocol": "TCP"}]}]});
    (create(cp, &service), create(cp, &endpoints))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_httproute_backend_turns_a_headless_services_endpoint_port_remap_into_a_warning() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let (before, routed, unrouted) = (
        cp.namespace("consumers-no-crd", &[]),
        cp.namespace("consumers-route", &[]),
        cp.namespace("consumers-no-route", &[]),
    );
    let server = serve(&cp, &[]);
    let _webhooks = registered(
        &cp,
        &server,
        "consumers-gateway",
        &[&before, &routed, &unrouted],
    )
    .await;
    let remap_denied = |ns: &str, stderr: &str| {
        stderr.starts_with(&denied(&format!(
            "[headless-port-remap] Endpoints {ns}/mysql subsets[0].ports[0].port: port 3307 differs from port 3306 of headless Service mysql: on a headless Service clients resolve its name to the endpoint IPs and dial port 3306"
        )))
    };

    // No Gateway API installed (this test alone installs it): the route lists answer 404,
    // and the judgement is the one for DNS clients.
    let (_, stderr) = texts(&cp.kubectl(&["get", "crd", HTTPROUTE_CRD], None));
    assert!(stderr.contains("NotFound"), "{stderr}");
    let (service, (stdout, stderr)) = headless_pair(&cp, &before);
    assert_eq!(service.0, "service/mysql created\n", "{service:?}");
    assert_eq!(stdout, "", "{stderr}");
    assert!(remap_denied(&before, &stderr), "{stderr}");

    let crd = std::fs::read_to_string(
        repo().join("tests/fixtures/crds/gateway.networking.k8s.io_httproutes.yaml"),
    )
    .unwrap();
    cp.apply(&crd);
    cp.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{HTTPROUTE_CRD}"),
            "--timeout=60s",
        ],
        None,
    );
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "db-admin", "namespace": routed},
        "spec": {"parentRefs": [{"name": "internal"}], "hostnames": ["db-admin.example.com"],
                 "rules": [{"backendRefs": [{"name": "mysql", "port": 3306}]}]}});
    // kubectl's discovery may not know the new kind for a moment.
    eventually(
        std::time::Duration::from_secs(30),
        "the HTTPRoute is created",
        || {
            let out = cp.kubectl(&["apply", "-f", "-"], Some(&route.to_string()));
            out.status.success().then_some(())
        },
    );

    let (service, (stdout, stderr)) = headless_pair(&cp, &routed);
    assert_eq!(service.0, "service/mysql created\n", "{service:?}");
    assert_eq!(stdout, "endpoints/mysql created\n", "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "Warning: {}\n",
            warning_line(&format!(
                "[headless-port-remap] Endpoints {routed}/mysql subsets[0].ports[0].port: port 3307 differs from port 3306 of headless Service mysql: HTTPRoute {routed}/db-admin send traffic to the endpoint port 3307 itself, which works, but in-cluster clients resolving the headless Service dial port 3306 on the endpoint IPs and nothing remaps it; if they use it too, set this port to 3306, or recreate Service mysql with a cluster IP (without clusterIP: None) so kube-proxy maps 3306 → 3307"
            ))
        )
    );

    // The CRD installed, no route in this namespace: denied as before.
    let (_, (stdout, stderr)) = headless_pair(&cp, &unrouted);
    assert_eq!(stdout, "", "{stderr}");
    assert!(remap_denied(&unrouted, &stderr), "{stderr}");
    // Each Endpoints judged once (the log is read as it comes: wait for the last line).
    let judged = eventually(
        std::time::Duration::from_secs(10),
        "the three Endpoints' decisions are logged",
        || {
            let judged: Vec<Value> = decisions(&server)
                .into_iter()
                .filter(|d| d["kind"] == "Endpoints" && d["path"] == "/validate")
                .collect();
            (judged.len() >= 3).then_some(judged)
        },
    );
    assert_eq!(judged.len(), 3, "{judged:#?}");
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("cannot read the Ingresses and routes")),
        "{:#?}",
        server.logs()
    );
}
