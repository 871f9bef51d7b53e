#!/usr/bin/env bash
# What users feel: the added latency of a write through a real kube-apiserver once the guard
# is installed, against no admission, a one-rule ValidatingAdmissionPolicy and a minimal
# webhook (bench/apiserver.py says what is measured). Prints a markdown table.
#
#   KUBEBUILDER_ASSETS=DIR bench/apiserver.sh     # DIR: kube-apiserver, etcd, kubectl
#
# Builds the shipped binary (the dist profile; EXTSVC_GUARD=path to skip) and
# ../shared/bench/baseline-server. Environment: BENCH_ROUNDS (3), BENCH_SEQUENTIAL (300),
# BENCH_PARALLEL (1600), BENCH_CLIENTS (8), BENCH_DETAIL=1 (each write's sequential p50),
# BENCH_SERVE_LOG=FILE (keep serve's decision log: its own time per request, latency_us),
# BENCH_SETUPS (which setups, comma-separated), BENCH_PAIRED=1 (what each write costs,
# paired: see bench/apiserver.py).
# Needs openssl and python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
assets=${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kubectl}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${BENCH_SERVE_LOG:-}" ]; then cp "$work/serve.log" "$BENCH_SERVE_LOG" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -z "${EXTSVC_GUARD:-}" ]; then
  cargo build --locked --profile dist --quiet
  EXTSVC_GUARD=$CARGO_TARGET_DIR/dist/extsvc-guard
fi
baseline_target=${BASELINE_TARGET_DIR:-${TMPDIR:-/tmp}/extsvc-bench-baseline}
cargo build --release --quiet --manifest-path "$root/../shared/bench/baseline-server/Cargo.toml" \
  --target-dir "$baseline_target"
baseline=$baseline_target/release/baseline-server

# A PKI for the API server and its admin (openssl), and the webhooks' serving certificate.
pki=$work/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=bench-ca" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile server.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=bench-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
"$EXTSVC_GUARD" certs --out "$work/webhook" >/dev/null

etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
"$assets/etcd" --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
"$assets/kube-apiserver" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC --client-ca-file="$pki/ca.crt" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --service-account-issuer=https://bench --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" --endpoint-reconciler-type=none \
  >"$work/apiserver.log" 2>&1 &
pids+=($!)
export KUBECONFIG=$work/kubeconfig
kubectl=$assets/kubectl
"$kubectl" config set-cluster bench --server="https://127.0.0.1:$api_port" --certificate-authority="$pki/ca.crt" --embed-certs >/dev/null
"$kubectl" config set-credentials admin --client-certificate="$pki/admin.crt" --client-key="$pki/admin.key" --embed-certs >/dev/null
"$kubectl" config set-context bench --cluster=bench --user=admin >/dev/null
"$kubectl" config use-context bench >/dev/null
for _ in $(seq 1 120); do
  "$kubectl" get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.5
done
"$kubectl" get --raw /readyz >/dev/null

guard_port=$(free_port) guard_metrics=$(free_port) allow_port=$(free_port)
shape_port=$(free_port) shape_metrics=$(free_port)
"$EXTSVC_GUARD" serve --listen "127.0.0.1:$guard_port" --metrics-listen "127.0.0.1:$guard_metrics" \
  --tls-cert "$work/webhook/tls.crt" --tls-key "$work/webhook/tls.key" --kubeconfig "$KUBECONFIG" \
  --log-format json >"$work/serve.log" 2>&1 &
pids+=($!)
# The guard with the shape metadata on (bench/policy.yaml), for the guard-shape setup.
"$EXTSVC_GUARD" serve --listen "127.0.0.1:$shape_port" --metrics-listen "127.0.0.1:$shape_metrics" \
  --tls-cert "$work/webhook/tls.crt" --tls-key "$work/webhook/tls.key" --kubeconfig "$KUBECONFIG" \
  --policy "$root/bench/policy.yaml" --log-format json >"$work/serve-shape.log" 2>&1 &
pids+=($!)
"$baseline" "127.0.0.1:$allow_port" "$work/webhook/tls.crt" "$work/webhook/tls.key" >"$work/allow.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$guard_metrics/readyz" >/dev/null && break
  sleep 0.25
done
curl -sf "http://127.0.0.1:$guard_metrics/readyz" >/dev/null
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$shape_metrics/readyz" >/dev/null && break
  sleep 0.25
done
curl -sf "http://127.0.0.1:$shape_metrics/readyz" >/dev/null

"$kubectl" apply --dry-run=client -o json -f "$root/deploy/base/webhooks.yaml" >"$work/webhooks.json"
# deploy/ with the conditions and rules generated for bench/policy.yaml, as a user installs them.
mkdir -p "$work/shape/match-conditions"
cp "$root/deploy/base/webhooks.yaml" "$work/shape/"
"$EXTSVC_GUARD" policy match-conditions "$root/bench/policy.yaml" >"$work/shape/match-conditions/kustomization.yaml"
printf 'resources: [webhooks.yaml]\ncomponents: [match-conditions]\n' >"$work/shape/kustomization.yaml"
"$kubectl" kustomize "$work/shape" | "$kubectl" apply --dry-run=client -o json -f - >"$work/webhooks-shape.json"
BENCH_API="127.0.0.1:$api_port" BENCH_PKI="$pki" KUBECTL="$kubectl" \
  BENCH_GUARD_URL="https://127.0.0.1:$guard_port" BENCH_ALLOW_URL="https://127.0.0.1:$allow_port" \
  BENCH_GUARD_SHAPE_URL="https://127.0.0.1:$shape_port" BENCH_WEBHOOKS_SHAPE="$work/webhooks-shape.json" \
  BENCH_CA_BUNDLE="$(base64 -w0 "$work/webhook/ca.crt")" BENCH_WEBHOOKS="$work/webhooks.json" \
  python3 "$root/bench/apiserver.py"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); kube-apiserver $("$assets/kube-apiserver" --version 2>/dev/null | cut -d' ' -f2); extsvc-guard $EXTSVC_GUARD"
