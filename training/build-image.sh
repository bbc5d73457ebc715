#!/usr/bin/env bash
# Build the training image from only the files it needs (the allowlist in
# training/Dockerfile.dockerignore), sent as a tar stream so that the classic builder does
# not upload the whole repository (.venv included) as the build context.
#   training/build-image.sh [TAG]      (default tag: sparkmaker-training:latest)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-sparkmaker-training:latest}"
cd "$root"
shopt -s nullglob
files=(training/Dockerfile)
while IFS= read -r pattern; do
  matches=($pattern)
  [ ${#matches[@]} -gt 0 ] || { echo "build-image.sh: nothing matches $pattern" >&2; exit 2; }
  files+=("${matches[@]}")
done < <(sed -n 's/^!//p' training/Dockerfile.dockerignore)
version="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- training features/contract.py 2>/dev/null)" ]; then version="$version+dirty"; fi
tar -cf - "${files[@]}" | docker build -t "$tag" --build-arg "CODE_VERSION=$version" -f training/Dockerfile -
