#!/usr/bin/env bash
# Peak resident memory of `extsvc-guard scan` against a real kube-apiserver (issue 24's own
# measurement: 5,000 selectorless Services and their Endpoints in one namespace). Starts
# etcd and kube-apiserver from $KUBEBUILDER_ASSETS on loopback (token authentication, a
# throwaway CA), creates $SERVICES Services and Endpoints in namespace `big` with kubectl,
# then runs `scan -n big --format policyreport` and `scan --format summary` with each build
# of $BUILDS (default: the dist build): wall, CPU and max RSS (GNU time).
#
#   KUBEBUILDER_ASSETS=/path/to/assets bench/scan-apiserver.sh
#   BUILDS="/tmp/old/extsvc-guard target/dist/extsvc-guard" KUBEBUILDER_ASSETS=… bench/scan-apiserver.sh
#
# Needs openssl, curl and GNU time. Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
assets=${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a directory with etcd, kube-apiserver and kubectl}
services=${SERVICES:-5000}
etcd_port=${ETCD_PORT:-28379} api_port=${API_PORT:-28643}
work=$(mktemp -d)
trap 'kill "${api:-}" "${etcd:-}" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "${BUILDS:-}" ]; then
  cargo build --profile dist --locked -q
  BUILDS=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
fi
builds=""
for bin in $BUILDS; do builds="$builds $(realpath "$bin")"; done
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout api.key -out api.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
openssl x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out api.crt -days 1 -extfile san.ext 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,bench-admin,bench-admin,system:masters" >tokens.csv
"$assets/etcd" --data-dir etcd --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls http://127.0.0.1:0 \
  >etcd.log 2>&1 &
etcd=$!
"$assets/kube-apiserver" --bind-address=127.0.0.1 --secure-port="$api_port" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=RBAC --token-auth-file=tokens.csv \
  --tls-cert-file=api.crt --tls-private-key-file=api.key --client-ca-file=ca.crt \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=sa.pub \
  --service-account-signing-key-file=sa.key --endpoint-reconciler-type=none \
  --cert-dir=certs >api.log 2>&1 &
api=$!
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$work/ca.crt"}}]
users: [{name: bench, user: {token: "$token"}}]
contexts: [{name: bench, context: {cluster: bench, user: bench}}]
current-context: bench
EOF
for _ in $(seq 120); do
  curl -sf --cacert ca.crt -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null && break
  sleep 0.5
done
k() { "$assets/kubectl" --kubeconfig kubeconfig "$@"; }
k create namespace big >/dev/null
python3 - "$services" >objects.json <<'PY'
import json, sys
items = []
for i in range(int(sys.argv[1])):
    name = f"db-{i}"
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "big"},
                  "spec": {"ports": [{"name": "sql", "port": 5432, "targetPort": 5432}]}})
    items.append({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "big"},
                  "subsets": [{"addresses": [{"ip": "203.0.113.7"}, {"ip": "203.0.113.8"}],
                               "ports": [{"name": "sql", "port": 5432}]}]})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
started=$(date +%s)
k apply -f objects.json >/dev/null   # client-side apply: each object carries last-applied
echo "created $((2 * services)) objects with kubectl apply in $(( $(date +%s) - started )) s"
echo "| build | command | exit | wall | CPU | max RSS |"
echo "|---|---|---:|---:|---:|---:|"
for bin in $builds; do
  for args in "-n big --format policyreport" "--format summary"; do
    if [[ "$args" == *summary* ]] && ! "$bin" scan --help | grep -q "possible values:.*summary"; then continue; fi
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e %U %S %M" -o time "$bin" scan --kubeconfig kubeconfig $args >out 2>err && code=0 || code=$?
    read -r wall user sys rss <time
    printf '| %s | scan %s | %s | %s s | %.1f s | %.1f MiB |\n' "$bin" "$args" "$code" "$wall" \
      "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)"
  done
done
