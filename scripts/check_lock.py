"""Is requirements.lock current? Every pin of requirements.txt must be in it at the same version.

    python3 scripts/check_lock.py [REQUIREMENTS] [LOCK]     exit 0 when current, 1 with one line per mismatch

Standard library only: scripts/ensure_venv.sh runs it with the system Python before .venv exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def mismatches(requirements: Path, lock: Path) -> list[str]:
    if not lock.is_file():
        return [f"{lock.name} is missing"]
    locked = pins(lock)
    problems = []
    for name, version in pins(requirements).items():
        if name not in locked:
            problems.append(f"{name}=={version} is in {requirements.name} but not in {lock.name}")
        elif locked[name] != version:
            problems.append(f"{name}=={version} is in {requirements.name} but {lock.name} has {locked[name]}")
    return problems


def main(argv: list[str]) -> int:
    requirements = Path(argv[0]) if argv else ROOT / "requirements.txt"
    lock = Path(argv[1]) if len(argv) > 1 else ROOT / "requirements.lock"
    problems = mismatches(requirements, lock)
    for problem in problems:
        print(f"sparkmaker: {problem}: run scripts/lock.sh to refresh the lock", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
