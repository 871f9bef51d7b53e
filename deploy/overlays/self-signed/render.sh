#!/usr/bin/env bash
# Prints the self-signed overlay with the caBundle of both webhook configurations filled
# in from certs/ca.crt, ready for `kubectl apply -f -`:
#
#   extsvc-guard certs --out deploy/overlays/self-signed/certs
#   deploy/overlays/self-signed/render.sh | kubectl apply -f -
#
# Needs kubectl (its built-in kustomize) and base64; GNU or BSD tools alike.
set -euo pipefail

overlay="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
certs="${overlay}/certs"

for file in ca.crt tls.crt tls.key; do
  if [[ ! -s "${certs}/${file}" ]]; then
    echo "render.sh: ${certs}/${file} is missing; create the certificates first:" >&2
    echo "  extsvc-guard certs --out ${certs}" >&2
    exit 1
  fi
done
if ! command -v kubectl >/dev/null 2>&1; then
  echo "render.sh: kubectl is not on PATH (its built-in kustomize renders the overlay)" >&2
  exit 1
fi

# One line, no wrapping (what `base64 -w0` prints; written so BSD base64 does the same).
ca_bundle="$(base64 <"${certs}/ca.crt" | tr -d '\n')"

# Render the overlay, then let a throwaway kustomization patch the caBundle into it:
# kustomize does the YAML editing, nothing here parses YAML.
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
kubectl kustomize "${overlay}" >"${work}/overlay.yaml"
cat >"${work}/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - overlay.yaml
patches:
  - target:
      group: admissionregistration.k8s.io
      kind: ValidatingWebhookConfiguration
      name: extsvc-guard
    patch: |-
      - op: add
        path: /webhooks/0/clientConfig/caBundle
        value: ${ca_bundle}
  - target:
      group: admissionregistration.k8s.io
      kind: MutatingWebhookConfiguration
      name: extsvc-guard
    patch: |-
      - op: add
        path: /webhooks/0/clientConfig/caBundle
        value: ${ca_bundle}
KUSTOMIZATION

kubectl kustomize "${work}"
