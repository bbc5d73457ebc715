"""requirements.lock: complete for requirements.txt, hashed, and a stale lock is caught before an install."""

from __future__ import annotations

import subprocess
import sys

from configuration.settings import REPO_ROOT

CHECK = REPO_ROOT / "scripts" / "check_lock.py"


def run_check(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_lock_holds_every_direct_pin_at_its_version():
    done = run_check()
    assert done.returncode == 0, done.stderr


def test_every_locked_package_has_a_pinned_version_and_a_sha256():
    lines = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    packages = [line for line in lines if line[:1].isalnum()]
    assert len(packages) > 100
    for line in packages:
        assert "==" in line and line.endswith("\\"), line  # name==version, then hash lines
    text = "\n".join(lines)
    assert text.count("--hash=sha256:") >= len(packages)


def test_a_pin_missing_from_the_lock_or_at_another_version_is_named(tmp_path):
    requirements = tmp_path / "requirements.txt"
    lock = tmp_path / "requirements.lock"
    requirements.write_text("# direct pins\nfastapi==0.165.0\nuvicorn[standard]==0.54.0\nnewthing==1.0  # added\n")
    lock.write_text("fastapi==0.164.0 \\\n    --hash=sha256:00\nuvicorn==0.54.0 \\\n    --hash=sha256:11\n")
    done = run_check(requirements, lock)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "sparkmaker: fastapi==0.165.0 is in requirements.txt but requirements.lock has 0.164.0: run scripts/lock.sh to refresh the lock",
        "sparkmaker: newthing==1.0 is in requirements.txt but not in requirements.lock: run scripts/lock.sh to refresh the lock",
    ]
