#!/usr/bin/env bash
# Run the test suite: ./test.sh [pytest arguments]
# With no arguments: every test but the end-to-end ones marked `slow` (whole stacks, clusters,
# containers, Airflow runs), which .ci/run runs after it (`./test.sh -m slow`); `./test.sh -m ""`
# runs everything at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
scripts/ensure_venv.sh
scripts/ensure_system_packages.sh
# Airflow's own venv (tests/orchestration); if it cannot be installed, those tests skip and say why.
scripts/ensure_airflow_venv.sh || echo "sparkmaker: .venv-airflow could not be installed: the Airflow tests will skip" >&2
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# Lint and types before the tests (settings in pyproject.toml); SPARKMAKER_LINT=0 skips them for a quick local run.
if [ "${SPARKMAKER_LINT:-1}" != "0" ]; then
  .venv/bin/ruff check --quiet .
  .venv/bin/ruff format --check --quiet .
  .venv/bin/mypy
fi
if [ "$#" -eq 0 ]; then
  echo "sparkmaker: the suite without the slow end-to-end tests (./test.sh -m slow runs those; .ci/run runs both)" >&2
  set -- -m "not slow"
fi
exec .venv/bin/python -m pytest "$@"
