#!/usr/bin/env bash
# Create or refresh .venv-airflow at the repository root: Apache Airflow in a venv of its own
# (its FastAPI pin conflicts with .venv's), from orchestration/airflow-requirements.txt under
# the committed orchestration/airflow-constraints.txt.
# Idempotent: does nothing when the venv matches both files (their sha256 is kept in
# .venv-airflow/.requirements.sha256); rebuilds it when either changed. One build at a time
# (flock), so ./test.sh and ./start.sh started together do not both install.
#   scripts/ensure_airflow_venv.sh                 ensure the venv
#   scripts/ensure_airflow_venv.sh --print-python  print the Python 3.11 it builds with
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-airflow"
requirements="$root/orchestration/airflow-requirements.txt"
constraints="$root/orchestration/airflow-constraints.txt"
stamp="$venv/.requirements.sha256"

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "sparkmaker: Python 3.11 is required for the Airflow venv and was not found on PATH: install it (Debian: apt-get install -y python3.11 python3.11-venv)" >&2
  return 2
}

if [ "${1:-}" = "--print-python" ]; then
  find_python
  exit $?
fi

want="$(cat "$requirements" "$constraints" | sha256sum | cut -d' ' -f1)"
current() { [ -x "$venv/bin/airflow" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }
if current; then
  exit 0
fi

exec 9>"$root/.venv-airflow.lock"
flock 9
if current; then  # another process built it while this one waited
  exit 0
fi
python="$(find_python)"
echo "sparkmaker: creating .venv-airflow (Apache Airflow, about 300 MB; the first run takes a few minutes)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
# pip at the project's one version (scripts/pip.lock), as .venv and the images have it: the pip a new
# venv comes with (23.x on Python 3.11) refuses the hashed lock, asking a pin of an extra
# (fastapi-cli's uvicorn[standard]) that pip 26 takes from the lock's uvicorn.
if ! "$venv/bin/python" -m pip install --quiet --require-hashes -r "$root/scripts/pip.lock" >&2; then
  echo "sparkmaker: installing pip (scripts/pip.lock) into .venv-airflow failed (see pip's message above)" >&2
  exit 1
fi
# SPARKMAKER_AIRFLOW_LOCK: a hashed lock of the same two files (compose/airflow.lock, by scripts/lock.sh),
# installed with --require-hashes instead; the images use it (compose/Dockerfile).
install=(-r "$requirements" -c "$constraints")
if [ -n "${SPARKMAKER_AIRFLOW_LOCK:-}" ]; then install=(--require-hashes -r "$SPARKMAKER_AIRFLOW_LOCK"); fi
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${install[@]}" >&2; then
  echo "sparkmaker: installing Airflow into .venv-airflow failed (see pip's message above); fix it and rerun, or regenerate the constraints with orchestration/freeze-constraints.sh" >&2
  rm -f "$stamp"
  exit 1
fi
echo "$want" > "$stamp"
echo "sparkmaker: .venv-airflow is ready" >&2
