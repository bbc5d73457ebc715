#!/usr/bin/env bash
# Create or refresh .venv at the repository root from requirements.lock (every package pinned,
# with hashes; generated from requirements.txt by scripts/lock.sh), installed with --require-hashes.
# Idempotent: does nothing when .venv matches both files; rebuilds it when either changed
# (the sha256 of the two is kept in .venv/.requirements.sha256).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/requirements.lock" | sha256sum | cut -d' ' -f1)"

if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  echo "sparkmaker: Java 17 is required by Spark and was not found: install it (Debian: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME" >&2
  exit 2
fi

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# A development checkout that shares a venv it manages itself (e.g. several worktrees).
if [ "${SPARKMAKER_TRUST_VENV:-}" = "1" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "sparkmaker: Python 3.11 is required and was not found on PATH: install it (Debian: apt-get install -y python3.11 python3.11-venv)" >&2
  exit 2
fi

# A pin added to requirements.txt without a refreshed lock would silently not be installed.
if ! "$python" "$root/scripts/check_lock.py"; then
  exit 2
fi

echo "sparkmaker: creating .venv from requirements.lock (first run takes a few minutes)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
# pip at the one version of scripts/pip.txt (hashed in scripts/pip.lock), as the images install it.
"$venv/bin/python" -m pip install --quiet --require-hashes -r "$root/scripts/pip.lock" >&2
if ! "$venv/bin/python" -m pip install --quiet --require-hashes -r "$root/requirements.lock" >&2; then
  echo "sparkmaker: installing requirements.lock failed (see pip's message above); fix it and rerun" >&2
  rm -f "$stamp"
  exit 1
fi
echo "$want" > "$stamp"
echo "sparkmaker: .venv is ready" >&2
