#!/usr/bin/env python3
"""What a write through the API server costs once a guard is installed (bench/apiserver.sh).

Against a running kube-apiserver (admin client certificate), in one run, rounds interleaved:
  none         no admission of ours
  vap          a ValidatingAdmissionPolicy with one CEL rule (isIP on externalName)
  allow        a minimal Rust webhook (../shared/bench/baseline-server /allow), validating
               only, for every write of Services, Endpoints and EndpointSlices
  guard        extsvc-guard as deploy/ installs it: both webhook configurations, the
               generated matchConditions (the default policy patches nothing, so the
               mutating webhook is registered for nothing)
  guard-shape  extsvc-guard with bench/policy.yaml (the shape metadata on) and the
               conditions and rules `policy match-conditions` generates for it
  conditions   (paired only) the guard's configurations with a last condition that is always
               false: what evaluating its conditions costs, without any call
and two write mixes, all dry-run (nothing stays, so every round writes the same):
  leaving   creates of an ExternalName Service, a selectorless Service (warned: no endpoints
            yet), and the Endpoints and EndpointSlice of an existing selectorless Service
  cluster   what a cluster writes: selector Service creates and label/annotation updates,
            the endpoints controllers' writes, and one write in ten of the leaving kind
For each: sequential p50/p95 and 8-client p50/p99 of the request as the client sees it, and
the same minus the round's `none` (the added cost).

BENCH_PAIRED=1 measures instead what each write of both mixes costs under each setup, free of
the machine's drift from one setup to the next: one connection alternates the same write
between namespace `bench` (where the setup applies) and `bench-b` (which every setup
excludes by its namespace selector), and the added cost is the median of the differences.
Loopback only; standard library only.
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
SHAPE_URL = os.environ["BENCH_GUARD_SHAPE_URL"]  # serve with bench/policy.yaml
WEBHOOKS_SHAPE_YAML = os.environ["BENCH_WEBHOOKS_SHAPE"]  # with its generated conditions
CA_BUNDLE = os.environ["BENCH_CA_BUNDLE"]  # base64 CA of both webhooks' serving certificate
WEBHOOKS_YAML = os.environ["BENCH_WEBHOOKS"]  # deploy/base/webhooks.yaml rendered to JSON
SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "300"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "1600"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DETAIL = os.environ.get("BENCH_DETAIL") == "1"  # each write's sequential p50
PAIRED = os.environ.get("BENCH_PAIRED") == "1"
NS = "bench"
NS_EXCLUDED = "bench-b"  # excluded by every setup: the paired runs' reference


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


def webhooks(url_for, rendered=WEBHOOKS_YAML):
    """deploy/base/webhooks.yaml's configurations (or `rendered`), pointed at `url_for(path)`."""
    configs = json.load(open(rendered))["items"]
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


def conditions_only():
    """The guard's configurations with a last condition that is always false."""
    configs = webhooks(lambda path: GUARD_URL + path)
    for c in configs:
        for w in c["webhooks"]:
            w["matchConditions"].append({"name": "never", "expression": "false"})
    return configs


SETUPS = {  # built at start (they need the files)
    "none": lambda: [],
    "vap": lambda: [VAP, VAP_BINDING],
    "allow": minimal_webhook,
    "guard": lambda: webhooks(lambda path: GUARD_URL + path),
    "guard-shape": lambda: webhooks(lambda path: SHAPE_URL + path, WEBHOOKS_SHAPE_YAML),
    "conditions": conditions_only,
}
# Whether an IP in externalName is refused once the setup is in effect.
REFUSES = {"vap", "guard", "guard-shape"}


def excluding_reference(objects):
    """`objects` with namespace NS_EXCLUDED left out by their namespace selectors."""
    objects = json.loads(json.dumps(objects))
    excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS_EXCLUDED]}
    for o in objects:
        if o["kind"] == "ValidatingAdmissionPolicyBinding":
            o["spec"]["matchResources"] = {"namespaceSelector": {"matchExpressions": [excluded]}}
        for w in o.get("webhooks", []):
            w.setdefault("namespaceSelector", {}).setdefault("matchExpressions", []).append(excluded)
    return objects


def install(objects):
    kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "bench-externalname-ip", "--ignore-not-found")
    kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "extsvc-guard", "bench-allow", "--ignore-not-found")
    if objects:
        kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": excluding_reference(objects)}))


def wait_effective(name):
    """Until the API server uses the setup: an IP in externalName is refused by the VAP and
    the guard, and not without them; the minimal webhook allows everything (and the
    conditions-only setup calls nothing), so they get a few seconds to be picked up."""
    probe = service("probe", {"type": "ExternalName", "externalName": "192.168.1.10"})
    conn = connection()
    deadline = time.time() + 60
    while time.time() < deadline:
        conn.request("POST", f"/api/v1/namespaces/{NS}/services?dryRun=All",
                     body=json.dumps(probe), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        refused = r.status in (400, 403, 422)
        if refused == (name in REFUSES):
            time.sleep(1 if name in REFUSES else 3)
            conn.close()
            return
        time.sleep(0.2)
    raise SystemExit(f"setup {name} never took effect")


def prepare(namespace):
    """What the cluster mix updates, and the selectorless Service whose Endpoints and
    EndpointSlice the leaving mix creates (the second half of a pair applied Service first)."""
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        service("legacy", {"ports": [{"name": "mysql", "port": 3306}]}),
        service("web", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}),
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}, "subsets": []},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1",
                      "labels": {"kubernetes.io/service-name": "web",
                                 "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
         "addressType": "IPv4", "endpoints": []},
    ]}).replace(f'"namespace": "{NS}"', f'"namespace": "{namespace}"'))


def in_namespace(write, namespace):
    """`write` in `namespace` instead of NS."""
    method, path, user, body = write
    body = json.loads(json.dumps(body).replace(f'"namespace": "{NS}"', f'"namespace": "{namespace}"'))
    return (method, path.replace(f"/namespaces/{NS}/", f"/namespaces/{namespace}/"), user, body)


def paired(names):
    """What each write costs under each setup: the median of (in NS) − (in NS_EXCLUDED), the
    two sent back to back on one connection, in alternating order."""
    writes = [("leaving", w) for w in LEAVING] + [("cluster", w) for w in CLUSTER[:-1]]
    n = SEQUENTIAL
    added = {}  # (setup, write index) -> [medians per round]
    for round_ in range(ROUNDS):
        rotated = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in rotated:
            install(SETUPS[name])
            wait_effective(name)
            conn = connection()
            for _, w in writes * 2:  # warm both namespaces
                send(conn, in_namespace(w, NS))
                send(conn, in_namespace(w, NS_EXCLUDED))
            diffs = {i: [] for i in range(len(writes))}
            for k in range(n):
                for i, (_, w) in enumerate(writes):
                    a, b = in_namespace(w, NS), in_namespace(w, NS_EXCLUDED)
                    if k % 2:
                        ta = send(conn, a)
                        tb = send(conn, b)
                    else:
                        tb = send(conn, b)
                        ta = send(conn, a)
                    diffs[i].append(ta - tb)
            conn.close()
            for i in diffs:
                added.setdefault((name, i), []).append(statistics.median(diffs[i]) * 1000)
            print(f"round {round_ + 1} {name} done", file=sys.stderr)
    install([])
    print("| write | as | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for i, (mix, (method, path, user, body)) in enumerate(writes):
        parts = path.rsplit("/", 2)
        resource, name = (parts[-1], body["metadata"]["name"]) if method == "POST" else parts[-2:]
        what = f"{mix}: {method} {resource}/{name}"
        cells = [f"{statistics.median(added[(name, i)]):+.2f}" for name in names]
        print(f"| {i} {what} | {(user or 'admin').rsplit(':', 1)[-1]} | " + " | ".join(cells) + " |")
    print(f"\nms added per write (median of {n} paired differences, median over {ROUNDS} rounds); "
          "writes as in bench/apiserver.py's LEAVING and CLUSTER.")


def main():
    for name in SETUPS:
        SETUPS[name] = SETUPS[name]()
    prepare(NS)
    prepare(NS_EXCLUDED)
    default = "vap,conditions,allow,guard,guard-shape" if PAIRED else "none,vap,allow,guard,guard-shape"
    names = os.environ.get("BENCH_SETUPS", default).split(",")
    if PAIRED:
        paired(names)
        return
    results = {}  # (setup, mix, measure) -> [values per round]
    order = names
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
