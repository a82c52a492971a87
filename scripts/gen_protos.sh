#!/usr/bin/env bash
# Regenerate fedsite_proto/ (never edit it by hand) from protos/.
# Usage: scripts/gen_protos.sh [--check]   --check fails if the committed code is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=fedsite_proto
if [[ "${1:-}" == "--check" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  OUT_ROOT="$tmp" "$0"
  if ! diff -r -x __pycache__ "$tmp/$out" "$out" >/dev/null; then
    echo "fedsite_proto/ is stale: run 'make protos' and commit the result" >&2
    diff -r -x __pycache__ "$tmp/$out" "$out" | head -20 >&2
    exit 1
  fi
  echo "fedsite_proto/ is up to date"
  exit 0
fi
root=${OUT_ROOT:-.}
rm -rf "${root:?}/$out"
mkdir -p "$root"
mapfile -t files < <(find protos -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -Iprotos --python_out="$root" --grpc_python_out="$root" --pyi_out="$root" "${files[@]}"
find "$root/$out" -type d -exec sh -c 'printf "# Generated from protos/ by scripts/gen_protos.sh. Do not edit.\n" > "$1/__init__.py"' _ {} \;
