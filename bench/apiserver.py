#!/usr/bin/env python3
"""What a write through the API server costs once a guard is installed (bench/apiserver.sh).

Against a running kube-apiserver (admin client certificate), in one run, rounds interleaved:
  none      no admission of ours
  vap       a ValidatingAdmissionPolicy with one CEL rule (isIP on externalName)
  allow     a minimal Rust webhook (../shared/bench/baseline-server /allow), validating only,
            for every write of Services, Endpoints and EndpointSlices
  guard     extsvc-guard as deploy/ installs it: both webhooks, the generated matchConditions
and two write mixes, all dry-run (nothing stays, so every round writes the same):
  leaving   creates of an ExternalName Service, a selectorless Service (warned: no endpoints
            yet), and the Endpoints and EndpointSlice of an existing selectorless Service
  cluster   what a cluster writes: selector Service creates and label/annotation updates,
            the endpoints controllers' writes, and one write in ten of the leaving kind
For each: sequential p50/p95 and 8-client p50/p99 of the request as the client sees it, and
the same minus the round's `none` (the added cost). Loopback only; standard library only.
"""

import http.client
import json
import multiprocessing
import os
import ssl
import statistics
import subprocess
import sys
import time

API = os.environ["BENCH_API"]  # host:port
CERTS = os.environ["BENCH_PKI"]  # ca.crt, admin.crt, admin.key
KUBECONFIG = os.environ["KUBECONFIG"]
KUBECTL = os.environ.get("KUBECTL", "kubectl")
GUARD_URL = os.environ["BENCH_GUARD_URL"]  # https://127.0.0.1:P
ALLOW_URL = os.environ["BENCH_ALLOW_URL"]  # https://127.0.0.1:Q
CA_BUNDLE = os.environ["BENCH_CA_BUNDLE"]  # base64 CA of both webhooks' serving certificate
WEBHOOKS_YAML = os.environ["BENCH_WEBHOOKS"]  # deploy/base/webhooks.yaml rendered to JSON
SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "300"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "1600"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DETAIL = os.environ.get("BENCH_DETAIL") == "1"  # each write's sequential p50
NS = "bench"


def connection():
    context = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.crt"))
    context.load_cert_chain(os.path.join(CERTS, "admin.crt"), os.path.join(CERTS, "admin.key"))
    host, port = API.rsplit(":", 1)
    return http.client.HTTPSConnection(host, int(port), context=context)


def kubectl(*args, stdin=None):
    out = subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=stdin,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


# ---- the writes ------------------------------------------------------------------------

def service(name, spec, labels=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}}, "spec": spec}


LEAVING = [
    ("POST", f"/api/v1/namespaces/{NS}/services", None,
     service("ext-db", {"type": "ExternalName", "externalName": "db.example.com",
                        "ports": [{"name": "pg", "port": 5432}]})),
    ("POST", f"/api/v1/namespaces/{NS}/services", None,
     service("legacy-db", {"ports": [{"name": "mysql", "port": 3306}]})),
    ("POST", f"/api/v1/namespaces/{NS}/endpoints", None,
     {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy", "namespace": NS},
      "subsets": [{"addresses": [{"ip": "203.0.113.10"}], "ports": [{"name": "mysql", "port": 3306}]}]}),
    ("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", None,
     {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
      "metadata": {"name": "legacy-1", "namespace": NS,
                   "labels": {"kubernetes.io/service-name": "legacy"}},
      "addressType": "IPv4", "endpoints": [{"addresses": ["203.0.113.10"]}],
      "ports": [{"name": "mysql", "port": 3306}]}),
]

CONTROLLER = "system:serviceaccount:kube-system:endpoint-controller"
SLICE_CONTROLLER = "system:serviceaccount:kube-system:endpointslice-controller"

CLUSTER = (
    [("POST", f"/api/v1/namespaces/{NS}/services", None,
      service("web-new", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}))] * 2
    + [("PATCH", f"/api/v1/namespaces/{NS}/services/web", None,
        {"metadata": {"labels": {"release": "r2"}}})] * 2
    + [("PATCH", f"/api/v1/namespaces/{NS}/services/web", None,
        {"metadata": {"annotations": {"deployed-by": "ci"}}})]
    + [("PATCH", f"/api/v1/namespaces/{NS}/endpoints/web", CONTROLLER,
        {"metadata": {"annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-06T00:00:00Z"}}})] * 2
    + [("PATCH", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/web-1", SLICE_CONTROLLER,
        {"metadata": {"labels": {"bench": "x"}}})] * 2
    + [LEAVING[0]]
)

MIXES = {"leaving": LEAVING, "cluster": CLUSTER}


def send(conn, write):
    method, path, user, body = write
    headers = {"Content-Type": "application/json" if method == "POST"
               else "application/merge-patch+json"}
    if user:
        # As the controller (what the webhooks' conditions look at), allowed as an admin.
        headers["Impersonate-User"] = user
        headers["Impersonate-Group"] = "system:masters"
    start = time.perf_counter()
    conn.request(method, path + "?dryRun=All", body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    # A denial is an answer too; anything else is not a measurement of a write.
    if response.status not in (200, 201, 403):
        raise SystemExit(f"{method} {path} as {user}: {response.status}")
    return elapsed


def sequential(mix, n):
    conn = connection()
    for i in range(20):  # warm the connection and the API server's caches
        send(conn, mix[i % len(mix)])
    times = [send(conn, mix[i % len(mix)]) for i in range(n)]
    conn.close()
    if DETAIL:
        for i, write in enumerate(mix):
            mine = times[i::len(mix)]
            print(f"    write {i} {write[0]} {write[1].rsplit('/', 2)[-2:]} as {write[2] or 'admin'}:"
                  f" p50 {pct(mine, 50):.2f} ms", file=sys.stderr)
    return times


def client(args):
    mix_name, n, offset = args
    mix = MIXES[mix_name]
    conn = connection()
    for i in range(5):
        send(conn, mix[i % len(mix)])
    times = [send(conn, mix[(offset + i) % len(mix)]) for i in range(n)]
    conn.close()
    return times


def parallel(mix_name, total, clients, pool):
    per = total // clients
    results = pool.map(client, [(mix_name, per, k * 3) for k in range(clients)])
    return [t for r in results for t in r]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1000


# ---- the setups ------------------------------------------------------------------------

VAP = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "bench-externalname-ip"},
    "spec": {"failurePolicy": "Fail",
             "matchConstraints": {"resourceRules": [
                 {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                  "resources": ["services"]}]},
             "validations": [{"expression": "!has(object.spec.externalName) || !isIP(object.spec.externalName)",
                              "message": "externalName is an IP address"}]}}
VAP_BINDING = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": "bench-externalname-ip"},
    "spec": {"policyName": "bench-externalname-ip", "validationActions": ["Deny"]}}


def webhooks(url_for):
    """deploy/base/webhooks.yaml's configurations, pointed at `url_for(path)`."""
    configs = json.load(open(WEBHOOKS_YAML))["items"]
    for c in configs:
        for w in c["webhooks"]:
            w["clientConfig"] = {"url": url_for(w["clientConfig"]["service"]["path"]),
                                 "caBundle": CA_BUNDLE}
    return configs


def minimal_webhook():
    c = webhooks(lambda path: ALLOW_URL + "/allow")[0]  # the validating one
    w = c["webhooks"][0]
    w.pop("matchConditions", None)
    w["rules"] = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["services", "endpoints"],
                   "operations": ["CREATE", "UPDATE", "DELETE"], "scope": "*"},
                  {"apiGroups": ["discovery.k8s.io"], "apiVersions": ["v1"],
                   "resources": ["endpointslices"], "operations": ["CREATE", "UPDATE", "DELETE"],
                   "scope": "*"}]
    c["metadata"]["name"] = "bench-allow"
    w["name"] = "allow.bench.example.com"
    return [c]


SETUPS = {
    "none": [],
    "vap": [VAP, VAP_BINDING],
    "allow": None,  # built at start (needs the files)
    "guard": None,
}


def install(objects):
    kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "bench-externalname-ip", "--ignore-not-found")
    kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "extsvc-guard", "bench-allow", "--ignore-not-found")
    if objects:
        kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def wait_effective(name):
    """Until the API server uses the setup: an IP in externalName is refused by the VAP and
    the guard, and not without them; the minimal webhook allows everything, so it gets a few
    seconds to be picked up."""
    probe = service("probe", {"type": "ExternalName", "externalName": "192.168.1.10"})
    conn = connection()
    deadline = time.time() + 60
    while time.time() < deadline:
        conn.request("POST", f"/api/v1/namespaces/{NS}/services?dryRun=All",
                     body=json.dumps(probe), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        refused = r.status in (400, 403, 422)
        if refused == (name in ("vap", "guard")):
            time.sleep(3 if name == "allow" else 1)
            conn.close()
            return
        time.sleep(0.2)
    raise SystemExit(f"setup {name} never took effect")


def main():
    SETUPS["allow"] = minimal_webhook()
    SETUPS["guard"] = webhooks(lambda path: GUARD_URL + path)
    kubectl("create", "namespace", NS)
    # What the cluster mix updates, and the selectorless Service whose Endpoints and
    # EndpointSlice the leaving mix creates (the second half of a pair applied Service first).
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        service("legacy", {"ports": [{"name": "mysql", "port": 3306}]}),
        service("web", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}),
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": NS},
         "subsets": []},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": NS,
                      "labels": {"kubernetes.io/service-name": "web",
                                 "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
         "addressType": "IPv4", "endpoints": []},
    ]}))
    results = {}  # (setup, mix, measure) -> [values per round]
    order = list(SETUPS)
    pool = multiprocessing.Pool(CLIENTS)
    for round_ in range(ROUNDS):
        # Interleaved: each round in another order, so drift hits every setup alike.
        rotated = order[round_ % len(order):] + order[:round_ % len(order)]
        for name in rotated:
            install(SETUPS[name])
            wait_effective(name)
            for mix in MIXES:
                seq = sequential(MIXES[mix], SEQUENTIAL)
                par = parallel(mix, PARALLEL, CLIENTS, pool)
                for measure, value in [("seq p50", pct(seq, 50)), ("seq p95", pct(seq, 95)),
                                       ("8c p50", pct(par, 50)), ("8c p99", pct(par, 99))]:
                    results.setdefault((name, mix, measure), []).append(value)
                print(f"round {round_ + 1} {name:5} {mix:7} seq p50 {pct(seq, 50):.2f} ms "
                      f"8c p50 {pct(par, 50):.2f} ms p99 {pct(par, 99):.2f} ms", file=sys.stderr)
    install([])
    pool.close()
    measures = ["seq p50", "seq p95", "8c p50", "8c p99"]
    print("| setup | mix | " + " | ".join(measures) + " | added " + " | added ".join(measures) + " |")
    print("|---|---|" + "---|" * (2 * len(measures)))
    for name in order:
        for mix in MIXES:
            row = [statistics.median(results[(name, mix, m)]) for m in measures]
            added = [statistics.median([v - n for v, n in zip(results[(name, mix, m)],
                                                               results[("none", mix, m)])])
                     for m in measures]
            print(f"| {name} | {mix} | " + " | ".join(f"{v:.2f}" for v in row) + " | "
                  + " | ".join(f"{a:+.2f}" for a in added) + " |")
    print(f"\nms; medians over {ROUNDS} interleaved rounds of {SEQUENTIAL} sequential and "
          f"{PARALLEL} {CLIENTS}-client dry-run writes per setup and mix; added = minus the same "
          f"round's `none`.")


if __name__ == "__main__":
    main()
