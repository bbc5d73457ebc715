#!/usr/bin/env bash
# ./start.sh [--help]: see README.md ("Running the platform"). --compose runs the docker-compose cluster instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
if [ "${1:-}" = "--compose" ]; then
  shift
  exec compose/compose.sh start "$@"
fi
scripts/ensure_venv.sh
exec .venv/bin/python -m stack start "$@"
