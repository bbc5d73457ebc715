"""One writer per dataset on a local lake: a second run stops at once, a killed holder frees the lock."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configuration.errors import UserError
from configuration.settings import load_settings
from features import lake

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from configuration.settings import load_settings
from features import lake
settings = load_settings(paths={"lake": sys.argv[1]})
with lake.exclusive(settings, "a test holder"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def settings(tmp_path):
    return load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})


def _hold(settings) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, settings.paths.lake], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_holder_frees_it(settings):
    holder = _hold(settings)
    try:
        with pytest.raises(UserError) as refused:
            with lake.exclusive(settings, "a second run"):
                pytest.fail("the lock was taken twice")
        message = str(refused.value)
        assert f"a test holder (pid {holder.pid}" in message and "wait for it to finish" in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    with lake.exclusive(settings, "after the kill"):  # the kernel dropped the dead holder's lock
        pass


def test_the_feature_job_waits_for_no_one_and_writes_nothing_while_locked(spark, lake_settings):
    from features import job

    holder = _hold(lake_settings)
    try:
        params = job.JobParams(input_uri=str(REPO / "does-not-matter.csv"), as_of=dt.date(2026, 1, 1))
        started = time.monotonic()
        with pytest.raises(UserError, match="is busy: a test holder"):
            job.run(spark, lake_settings, params)
        assert time.monotonic() - started < 5
        assert not (Path(lake_settings.paths.lake) / lake_settings.features.dataset / "snapshots").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)


def test_remote_lakes_are_not_locked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(paths={"lake": "s3a://bucket/lake"})
    entered = []
    with lake.exclusive(settings, "a run"):
        with lake.exclusive(settings, "a second run"):  # on a local lake this one is refused (the first test)
            entered.append("both")
    assert entered == ["both"]
    assert list(tmp_path.iterdir()) == []  # no lock file made in a local folder named after the URI


def test_a_lake_that_cannot_hold_the_lock_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    settings = load_settings(paths={"lake": str(tmp_path / "file" / "lake")})
    with pytest.raises(UserError, match="cannot lock .*: check that the lake .* is a writable folder"):
        with lake.exclusive(settings, "a run"):
            pass
