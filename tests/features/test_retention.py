"""Snapshot listing and pruning on a local lake: what stays, what goes, and the command's answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from configuration.errors import UserError
from configuration.settings import load_settings
from features import cli, retention
from training import artifact
from tests.serving.conftest import make_model_dir, registry_with

DAY = 24 * 3600


@pytest.fixture
def settings(tmp_path):
    return load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})


def _snapshot(settings, run_id: str, rows: int | None, age_seconds: float = 0) -> Path:
    """A snapshot folder as the job leaves it: Parquet-like files and, when finished, its manifest."""
    folder = Path(settings.paths.lake) / settings.features.dataset / "snapshots" / run_id
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "part-0.parquet").write_bytes(b"x" * 1000)
    if rows is not None:
        manifest = {
            "run_id": run_id,
            "as_of": "2026-11-01",
            "outputs": {"training": {"uri": str(folder / "training"), "rows": rows}},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
    stamp = time.time() - age_seconds
    os.utime(folder, (stamp, stamp))
    return folder


def _current(settings, run_id: str) -> None:
    pointer = Path(settings.paths.lake) / settings.features.dataset / "CURRENT.json"
    pointer.write_text(json.dumps({"run_id": run_id, "as_of": "2026-11-01", "manifest": "m"}))


def _model_trained_on(settings, tmp_path, run_id: str) -> None:
    model_dir = make_model_dir(tmp_path / "model", rounds=2, depth=1)
    metadata = artifact.read_metadata(model_dir)
    metadata["training_data"] = {**metadata["training_data"], "run_id": run_id}
    artifact.write_metadata(model_dir, metadata)
    registry_with(settings.registry_dir(), model_dir)


def test_prune_keeps_current_newest_models_lineage_and_runs_in_progress(settings, tmp_path, capsys):
    runs = [f"20261{m:02d}01T000000Z-aaaaaa" for m in range(1, 8)]  # oldest first
    for run in runs:
        _snapshot(settings, run, rows=10, age_seconds=10 * DAY)
    abandoned = _snapshot(settings, "20260101T000000Z-dead00", rows=None, age_seconds=3 * DAY)
    writing = _snapshot(settings, "20261201T000000Z-busy00", rows=None, age_seconds=60)
    _current(settings, runs[2])  # a rollback made an old snapshot current
    _model_trained_on(settings, tmp_path, runs[0])

    assert cli.main(["snapshots", "--prune", "--keep", "2", "--lake", settings.paths.lake]) == 0
    dry = capsys.readouterr().out
    assert "would delete 4 snapshot(s)" in dry
    assert all(
        (Path(settings.paths.lake) / settings.features.dataset / "snapshots" / r).exists() for r in runs
    )  # a dry run

    assert cli.main(["snapshots", "--prune", "--keep", "2", "--yes", "--lake", settings.paths.lake]) == 0
    assert "deleted 4 snapshot(s)" in capsys.readouterr().out
    left = {p.name for p in (Path(settings.paths.lake) / settings.features.dataset / "snapshots").iterdir()}
    # Kept: the newest two complete (runs 7, 6), the current (3), the model's (1), the one being written.
    assert left == {runs[6], runs[5], runs[2], runs[0], writing.name}
    assert not abandoned.exists()


def test_listing_says_why_each_snapshot_stays(settings, tmp_path, capsys):
    old, new = "20260101T000000Z-aaaaaa", "20260201T000000Z-bbbbbb"
    _snapshot(settings, old, rows=5, age_seconds=DAY * 30)
    _snapshot(settings, new, rows=7)
    _current(settings, new)
    assert cli.main(["snapshots", "--all", "--keep", "0", "--lake", settings.paths.lake]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(new) and "[current]" in lines[0] and "training 7" in lines[0]
    assert lines[1].startswith(old) and "[can be deleted]" in lines[1]
    assert (Path(settings.paths.lake) / settings.features.dataset / "snapshots" / old).exists()  # --all deletes nothing


def test_mistakes_are_one_line_errors(settings, capsys):
    with pytest.raises(UserError, match="--yes only confirms --prune"):
        cli.main(["snapshots", "--yes", "--lake", settings.paths.lake])
    with pytest.raises(UserError, match="--keep -1"):
        cli.main(["snapshots", "--prune", "--keep", "-1", "--lake", settings.paths.lake])
    with pytest.raises(UserError, match="not local"):
        retention.list_snapshots(load_settings(paths={"lake": "s3a://bucket/lake"}))
    assert cli.main(["snapshots", "--all", "--lake", settings.paths.lake]) == 0
    assert "no snapshots in" in capsys.readouterr().out
