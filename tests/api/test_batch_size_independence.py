"""A customer's probability and label do not depend on how many rows share the request (issue 13, item 6).

The model server answers small requests with its compiled evaluator and larger ones with
XGBoost; batch scoring uses XGBoost in Spark. Every row of a snapshot is scored through
GET, through POST at several batch sizes (below, at and above the evaluator's 32-row limit)
and through batch scoring, and every answer must be XGBoost's own float32 value, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.batch import run_batch
from tests.api.conftest import (
    CUSTOMERS,
    THRESHOLD,
    deploy,
    expected_features,
    reference_probabilities,
    teardown_deployment,
)
from tests.serving.conftest import registry_with

BATCH_SIZES = (1, 7, 32, 33, 100, len(CUSTOMERS))


@pytest.fixture
def everything(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, max_batch=len(CUSTOMERS))
    yield deployed
    teardown_deployment(deployed)


def test_get_post_and_batch_scoring_give_xgboosts_bits_whatever_the_batch(everything, model_dir, spark, lake_settings):
    features = expected_features()
    reference = reference_probabilities(model_dir, [features[i] for i in CUSTOMERS]).astype(np.float32)
    labels = [int(float(p) >= THRESHOLD) for p in reference]
    assert 0 < sum(labels) < len(labels)  # the threshold splits this snapshot: labels can differ
    answers: dict[str, dict[int, tuple[float, int]]] = {}

    got = {}
    for ident in CUSTOMERS:
        response = everything.get(f"/predict/{ident}")
        assert response.status_code == 200, response.text
        body = response.json()
        got[ident] = (body["probability"], body["label"])
    answers["GET"] = got

    for size in BATCH_SIZES:
        got = {}
        for start in range(0, len(CUSTOMERS), size):
            response = everything.post("/predict", {"ids": CUSTOMERS[start : start + size]})
            assert response.status_code == 200, response.text
            for prediction in response.json()["predictions"]:
                got[prediction["id"]] = (prediction["probability"], prediction["label"])
        answers[f"POST of {size}"] = got

    # Batch scoring on the very snapshot the API serves (deploy published it in this test's lake).
    assert lake_settings.paths.lake == everything.settings.paths.lake
    registry_with(lake_settings.registry_dir(), model_dir)
    result = run_batch(lake_settings, version="1", spark=spark)
    scored = pq.read_table(result["output"]).to_pandas()
    answers["batch scoring"] = {
        int(i): (float(p), int(label)) for i, p, label in zip(scored["id"], scored["probability"], scored["label"])
    }

    for path, got in answers.items():
        assert sorted(got) == CUSTOMERS, path
        probabilities = np.array([got[i][0] for i in CUSTOMERS])
        differing = int(np.count_nonzero(probabilities != reference.astype(np.float64)))
        assert differing == 0, f"{path}: {differing} of {len(CUSTOMERS)} probabilities differ from XGBoost's"
        assert [got[i][1] for i in CUSTOMERS] == labels, path
