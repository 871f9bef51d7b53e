#!/usr/bin/env python3
"""Generates a manifest set for timing `extsvc-guard check` (issue 6).

Usage: bench/gen-manifests.py N OUTDIR [--per-namespace K] [--seed S]

Writes exactly N objects (a namespace's last slots are filled with selector Services) as
Services, Endpoints and EndpointSlices, K per namespace (default 50, so 50k objects span
1,000 namespaces and 500k span 10,000: each namespace looks the same at every size, which
is what lets the timings show how cost grows with the number of objects). One file per
namespace, multi-document YAML, `OUTDIR/ns-00042.yaml`, in the layout `kubectl get -o yaml`
and hand-written manifests use (block style, two-space indents).

Each namespace is a run of "apps", drawn with a fixed seed (the output is the same on every
run and every machine):

  * ip mapping (3 objects): selectorless Service + same-name Endpoints + labelled EndpointSlice
  * headless mapping (2 objects): `clusterIP: None` Service + Endpoints
  * alias (1 object): ExternalName Service to a DNS name
  * in-cluster (1 object): a Service with a selector

About one app in eleven carries one of the mistakes the rules exist for, so roughly 5-10%
of the objects get findings:

  * Endpoints named `<app>-ep` for a Service `<app>-svc` (endpoints-orphaned, "did you mean")
  * an IP address in `externalName` (externalname-ip)
  * a headless Service with targetPort != port (headless-port-remap)
  * an endpoint address 169.254.169.254, the cloud metadata server (target-disallowed)
  * an Endpoints port named `default-ep` where the Service's is `mysql` (port-name-mismatch)
  * an EndpointSlice without the kubernetes.io/service-name label (endpointslice-unlabeled)

Prints the number of objects, files and mistaken apps to stderr. Python 3 standard library only.
"""

import argparse
import os
import random
import sys

PORTS = [("mysql", 3306), ("postgres", 5432), ("redis", 6379), ("http", 8080), ("grpc", 9090)]
WORDS = ["orders", "billing", "users", "search", "ledger", "audit", "cache", "queue",
         "legacy-db", "warehouse", "payments", "inventory", "reports", "mail", "auth"]
MISTAKES = ["renamed", "externalname-ip", "headless-remap", "metadata-ip", "port-name", "unlabeled"]
MISTAKE_RATE = 1 / 11


def service(ns, name, ports, *, selector=None, headless=False, external=None, target_port=None):
    out = [
        "apiVersion: v1",
        "kind: Service",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {ns}",
        "  labels:",
        f"    app.kubernetes.io/name: {name}",
        "    app.kubernetes.io/part-of: bench",
        "spec:",
    ]
    if external is not None:
        out += ["  type: ExternalName", f"  externalName: {external}"]
    if headless:
        out.append("  clusterIP: None")
    if selector is not None:
        out += ["  selector:", f"    app: {selector}"]
    out.append("  ports:")
    for pname, port in ports:
        out += [f"    - name: {pname}", f"      port: {port}", "      protocol: TCP"]
        tp = target_port if target_port is not None else port
        if external is None:
            out.append(f"      targetPort: {tp}")
    return out


def endpoints(ns, name, ips, ports):
    out = [
        "apiVersion: v1",
        "kind: Endpoints",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {ns}",
        "subsets:",
        "  - addresses:",
    ]
    for ip in ips:
        out.append(f"      - ip: {ip}")
    out.append("    ports:")
    for pname, port in ports:
        out += [f"      - name: {pname}", f"        port: {port}", "        protocol: TCP"]
    return out


def slice_(ns, name, service_name, ips, ports):
    out = [
        "apiVersion: discovery.k8s.io/v1",
        "kind: EndpointSlice",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {ns}",
        "  labels:",
    ]
    if service_name is not None:
        out.append(f"    kubernetes.io/service-name: {service_name}")
    out += [
        "    endpointslice.kubernetes.io/managed-by: bench.example.com",
        "addressType: IPv4",
        "endpoints:",
    ]
    for ip in ips:
        out += [f"  - addresses: [\"{ip}\"]", "    conditions:", "      ready: true"]
    out.append("ports:")
    for pname, port in ports:
        out += [f"  - name: {pname}", f"    port: {port}", "    protocol: TCP"]
    return out


def public_ip(rng):
    # Outside every range the default policy denies, and outside private ranges.
    return f"{rng.choice([23, 34, 52, 81, 114, 151, 185])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def app(rng, ns, n):
    """One app: a list of documents (each a list of lines), and its mistake or None."""
    base = f"{rng.choice(WORDS)}-{n}"
    pname, port = rng.choice(PORTS)
    ports = [(pname, port)]
    ips = [public_ip(rng) for _ in range(rng.randrange(1, 4))]
    mistake = rng.choice(MISTAKES) if rng.random() < MISTAKE_RATE else None
    shape = rng.choices(["ip", "headless", "alias", "selector"], weights=[5, 2, 2, 2])[0]
    # Each mistake belongs to one shape.
    if mistake in ("renamed", "metadata-ip", "port-name", "unlabeled"):
        shape = "ip"
    elif mistake == "externalname-ip":
        shape = "alias"
    elif mistake == "headless-remap":
        shape = "headless"

    if shape == "alias":
        host = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" \
            if mistake == "externalname-ip" else f"{base}.db.example.com"
        return [service(ns, base, ports, external=host)], mistake
    if shape == "selector":
        return [service(ns, base, ports, selector=base)], mistake
    if shape == "headless":
        tp = port + 1 if mistake == "headless-remap" else None
        return [service(ns, base, ports, headless=True, target_port=tp),
                endpoints(ns, base, ips, ports)], mistake
    svc_name, ep_name = base, base
    if mistake == "renamed":
        svc_name, ep_name = f"{base}-svc", f"{base}-ep"
    if mistake == "metadata-ip":
        ips = ips[:1] + ["169.254.169.254"]
    ep_ports = [("default-ep", port)] if mistake == "port-name" else ports
    label = None if mistake == "unlabeled" else svc_name
    docs = [service(ns, svc_name, ports),
            endpoints(ns, ep_name, ips, ep_ports)]
    if mistake != "renamed":
        # A renamed pair has no slice: the Service would otherwise have endpoints of its own.
        docs.append(slice_(ns, f"{svc_name}-abc12", label, ips, ports))
    return docs, mistake


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, help="number of objects")
    p.add_argument("outdir")
    p.add_argument("--per-namespace", type=int, default=50)
    p.add_argument("--seed", type=int, default=6)
    a = p.parse_args()
    if a.n < 1 or a.per_namespace < 1:
        p.error("N and --per-namespace must be positive")
    os.makedirs(a.outdir, exist_ok=True)
    left, ns_index, files, mistakes = a.n, 0, 0, 0
    while left > 0:
        ns = f"team-{ns_index:05d}"
        rng = random.Random(a.seed * 1_000_003 + ns_index)
        budget = min(a.per_namespace, left)
        docs, n = [], 0
        while len(docs) < budget:
            app_docs, mistake = app(rng, ns, n)
            n += 1
            room = budget - len(docs)
            if len(app_docs) > room:
                # Fill the namespace up with Services that have a selector (no findings).
                app_docs = [service(ns, f"fill-{n}-{i}", [("http", 80)], selector="fill")
                            for i in range(room)]
                mistake = None
            if mistake:
                mistakes += 1
            docs += app_docs
        with open(os.path.join(a.outdir, f"ns-{ns_index:05d}.yaml"), "w") as f:
            f.write("".join("---\n" + "\n".join(d) + "\n" for d in docs))
        left -= len(docs)
        ns_index += 1
        files += 1
    print(f"{a.n} objects, {files} files, {mistakes} apps with a mistake", file=sys.stderr)


if __name__ == "__main__":
    main()
