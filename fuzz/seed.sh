#!/bin/sh
# Seeds the fuzz corpora (fuzz/corpus/<target>/) from the inputs the project already has:
# the real AdmissionReviews kube-apiserver sent, the example manifests and policies.
# Usage: fuzz/seed.sh   (from anywhere; existing corpus files are kept)
set -eu
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
mkdir -p "$fuzz/corpus/request" "$fuzz/corpus/manifest" "$fuzz/corpus/policy"
cp "$root"/tests/fixtures/admission/*.json "$root"/docs/reviews/*.json "$fuzz/corpus/request/"
cp "$root"/docs/examples/*.yaml "$root"/tests/fixtures/seeds/*.yaml "$fuzz/corpus/manifest/"
cp "$root"/engine/src/policy/default.yaml "$fuzz/corpus/policy/default.yaml"
cp "$root"/docs/policies/*.yaml "$fuzz/corpus/policy/"
# What the fuzzers found before (minimised), so every run starts from it.
for target in request manifest policy; do
    if [ -d "$root/tests/fixtures/hostile/$target" ]; then
        cp "$root/tests/fixtures/hostile/$target"/* "$fuzz/corpus/$target/" 2>/dev/null || true
    fi
done
echo "corpus: $(ls "$fuzz/corpus/request" | wc -l) request, $(ls "$fuzz/corpus/manifest" | wc -l) manifest, $(ls "$fuzz/corpus/policy" | wc -l) policy inputs"
