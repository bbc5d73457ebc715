#!/usr/bin/env bash
# ./restart.sh [--help]: see README.md ("Running the platform"). --compose runs the docker-compose cluster instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
if [ "${1:-}" = "--compose" ]; then
  shift
  exec compose/compose.sh restart "$@"
fi
scripts/ensure_venv.sh
exec .venv/bin/python -m stack restart "$@"
