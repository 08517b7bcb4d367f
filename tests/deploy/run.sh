#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes): every resource checked against the API schemas
# of Kubernetes 1.30 and 1.37, strictly (an unknown field fails), every file a kustomization
# names exists, and the pieces fit each other and the server (check.py: probes on routes the
# server has, autoscalers on Deployments that exist, GPUs for the workers). kubernetes-validate (PyPI) carries the schemas, so this runs
# offline; it lives in its own venv under .cache. kubectl itself is not needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
VALIDATOR="kubernetes-validate==1.37.0"
venv=.cache/kubernetes-validate
if [ "$(cat "$venv/.finerank" 2>/dev/null)" != "$VALIDATOR" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$VALIDATOR"
  echo "$VALIDATOR" >"$venv/.finerank"
fi

passed=0 failed=0
check() {
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
exists() {
  [ -e "$1" ] || { echo "FAIL $2 names $1, which does not exist"; return 1; }
}
for kustomization in $(find deploy/kubernetes -name kustomization.yaml); do
  dir=$(dirname "$kustomization")
  for resource in $(sed -n '/^resources:/,/^[a-z]/s/^  - //p' "$kustomization"); do
    check exists "$dir/$resource" "$kustomization"
  done
done
for manifest in $(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort); do
  for version in 1.30.0 1.37.0; do
    check "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$manifest"
  done
done
check "$venv/bin/python" tests/deploy/check.py
echo "deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
