#!/usr/bin/env bash
# Rewrite compose/constraints.txt from the repository's .venv (see its header).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/ensure_venv.sh
out=compose/constraints.txt
{ sed -n '/^#/p' "$out"; .venv/bin/python -m pip freeze --all | grep -vE '^(pip|setuptools|wheel)=='; } > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
