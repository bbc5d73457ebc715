#!/usr/bin/env bash
# Build the serving image from only the files it needs (the allowlist in
# serving/Dockerfile.dockerignore), sent as a tar stream: the classic builder would
# otherwise upload the whole repository, .venv included, as the build context.
#   serving/build-image.sh [TAG]      (default tag: sparkmaker-serving:latest)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-sparkmaker-serving:latest}"
cd "$root"
shopt -s nullglob
files=(serving/Dockerfile)
while IFS= read -r pattern; do
  matches=($pattern)
  [ ${#matches[@]} -gt 0 ] || { echo "build-image.sh: nothing matches $pattern" >&2; exit 2; }
  files+=("${matches[@]}")
done < <(sed -n 's/^!//p' serving/Dockerfile.dockerignore)
tar -cf - "${files[@]}" | docker build -t "$tag" -f serving/Dockerfile -
