#!/usr/bin/env bash
# The docker-compose cluster test (tests/compose/test_cluster.py): starts the container
# engine when this machine has the podman stand-in (../shared/containers/engine-up.sh),
# then runs the test with SPARKMAKER_COMPOSE_TESTS=1. Extra arguments go to pytest.
#   compose/compose-test.sh [-x] [-k NAME]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
engine_up="${SPARKMAKER_ENGINE_UP:-$root/../shared/containers/engine-up.sh}"
if [ -z "${DOCKER_HOST:-}" ] && [ -x "$engine_up" ]; then
  engine_env="$("$engine_up" --env)" || { echo "compose-test: the container engine did not start ($engine_up)" >&2; exit 1; }
  eval "$engine_env"
fi
export SPARKMAKER_COMPOSE_TESTS=1
exec ./test.sh tests/compose/test_cluster.py "$@"
