#!/usr/bin/env bash
# Rewrite orchestration/airflow-constraints.txt from a clean install of
# orchestration/airflow-requirements.txt in a throwaway venv (Airflow's published
# constraints files are not reachable from every machine, so the project keeps its own).
# Run it after changing airflow-requirements.txt; commit both files.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/orchestration/airflow-constraints.txt"
python="$("$root/scripts/ensure_airflow_venv.sh" --print-python)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "freeze: installing orchestration/airflow-requirements.txt into a clean venv (about 300 MB) ..." >&2
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/orchestration/airflow-requirements.txt" >&2
{
  echo "# Every package of a clean install of orchestration/airflow-requirements.txt (Python 3.11),"
  echo "# written by orchestration/freeze-constraints.sh on $(date -u +%Y-%m-%d). Do not edit by hand."
  "$work/venv/bin/python" -m pip freeze --all | grep -vE '^(pip|setuptools|wheel)=='
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
