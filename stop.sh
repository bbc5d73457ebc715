#!/usr/bin/env bash
# ./stop.sh [--help]: see README.md ("Running the platform"). --compose runs the docker-compose cluster instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
if [ "${1:-}" = "--compose" ]; then
  shift
  exec configuration/bin/compose.sh stop "$@"
fi
configuration/bin/ensure_venv.sh
exec .venv/bin/python -m configuration.stack stop "$@"
