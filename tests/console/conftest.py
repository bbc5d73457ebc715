"""A platform for the console tests: a lake snapshot with rejects, a registry of two versions, the real model server.

Everything is real and small: the snapshot is laid out as the feature job lays it out
(latest and rejects Parquet, manifest, CURRENT pointer), the registry is the local
registry with two trained models (model cards and plots drawn by training.card), and the
API scores through `python -m serving` (tests.api.conftest.model_server).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configuration.settings import Settings
from features.online.materialize import materialize
from tests.api.conftest import (  # noqa: F401 (fixtures)
    API_KEY,
    AS_OF,
    CUSTOMERS,
    RUN_ID,
    api_settings,
    log_section,
    make_model_dir,
    model_dir,
    model_server,
    store_section,
)
from tests.online.conftest import feature_rows, publish_lake_snapshot
from tests.serving.conftest import registry_with

REJECTS = [
    {
        "raw_line": None,
        "loan_id": "x1",
        "id": "abc",
        "loan_date": "2020-01-01",
        "loan_amount": "10",
        "reason": "bad_id",
    },
    {
        "raw_line": None,
        "loan_id": "7",
        "id": "5008804",
        "loan_date": "2020-13-40",
        "loan_amount": "10",
        "reason": "bad_loan_date",
    },
    {
        "raw_line": "1,2,3",
        "loan_id": None,
        "id": None,
        "loan_date": None,
        "loan_amount": None,
        "reason": "malformed_row",
    },
]
REJECT_COUNTS = {
    "malformed_row": 1,
    "bad_id": 1,
    "bad_loan_id": 0,
    "bad_loan_date": 1,
    "bad_loan_amount": 0,
    "bad_status": 0,
    "duplicate_loan_id": 0,
}


def write_snapshot(lake: Path, run_id: str = RUN_ID, current: bool = True) -> dict:
    rows = feature_rows(CUSTOMERS)
    manifest = publish_lake_snapshot(lake, run_id, AS_OF, rows, current=current)
    snapshot = lake / "credit_risk" / "snapshots" / run_id
    (snapshot / "rejects").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(REJECTS), snapshot / "rejects" / "part-00000.parquet")
    manifest.update(
        rows_in=len(rows) + 3,
        rows_accepted=len(rows),
        rejects=REJECT_COUNTS,
        exact_duplicates_removed=2,
        input={"uri": "/data/loans.csv", "size_bytes": 123, "sha256": "0" * 64},
    )
    manifest["outputs"]["rejects"] = {"uri": str(snapshot / "rejects"), "rows": 3, "table": "credit_risk.rejects"}
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    return manifest


CARD = """# Model card: seed {seed}

| metric | value |
|---|---|
| ROC-AUC | 0.7{seed} |

<script>alert("card")</script>

![ROC](roc.png)
"""


def add_card(model: Path, seed: int) -> None:
    """Plots drawn by training.card from made-up validation scores, and a small card (with raw HTML that must be escaped)."""
    from training import metrics
    from training.card import plot_calibration, plot_roc

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    plot_roc(model / "roc.png", y, p, None, None)
    plot_calibration(model / "calibration.png", metrics.calibration_bins(y, p, bins=10))
    (model / "model-card.md").write_text(CARD.format(seed=seed), encoding="utf-8")


@pytest.fixture(scope="session")
def platform_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console-platform")
    lake = root / "lake"
    write_snapshot(lake)
    models = []
    for seed in (11, 12):
        model = make_model_dir(root / f"model-{seed}", seed=seed)
        add_card(model, seed)
        models.append(model)
    registry = registry_with(lake / "registry", *models)
    registry.promote("2")
    return root


@pytest.fixture
def console_settings(platform_root: Path, model_server, tmp_path, request) -> Settings:  # noqa: F811
    settings = api_settings(
        tmp_path,
        store_section("sqlite", tmp_path, request),
        {**log_section("sqlite", tmp_path, request), "prediction_log_table": f"console_{uuid.uuid4().hex[:8]}"},
        model_server.url,
    )
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"lake": str(platform_root / "lake")})}
    )
    materialize(settings, RUN_ID)
    return settings
