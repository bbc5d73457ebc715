"""Explanations from the model server: exact TreeSHAP, in Clarify's shape, through HTTP and boto3.

Three independent references: XGBoost's own `pred_contribs` on a booster loaded here from
the model file; Shapley values computed by brute force over every subset of the five
features from the trees' JSON (the definition TreeSHAP computes exactly); and the
server's own plain answer (the explained probabilities must be the same numbers, and
the attributions must add up to their logit).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest

from features.contract import FEATURE_COLUMNS
from tests.serving.conftest import reference_predict, synthetic_features
from tests.serving.test_runtime_api import runtime  # noqa: F401 (boto3's client on the server: a fixture)

ENDPOINT = "sparkmaker-credit-risk"
HEADER = "X-Amzn-SageMaker-Enable-Explanations"


def _csv(matrix: np.ndarray) -> bytes:
    return ("\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in matrix) + "\n").encode()


def _booster(model_dir: Path):
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    return booster


def _reference_contribs(model_dir: Path, matrix: np.ndarray) -> np.ndarray:
    import xgboost

    dmatrix = xgboost.DMatrix(matrix, missing=np.nan, feature_names=list(FEATURE_COLUMNS))
    return _booster(model_dir).predict(dmatrix, pred_contribs=True)


def _attributions(document: dict) -> np.ndarray:
    """Clarify's kernel_shap lists as a rows x features matrix, checking the feature headers."""
    rows = document["explanations"]["kernel_shap"]
    matrix = []
    for row in rows:
        assert [entry["feature_header"] for entry in row] == list(FEATURE_COLUMNS)
        assert all(entry["feature_type"] == "numerical" for entry in row)
        matrix.append([entry["attributions"][0]["attribution"][0] for entry in row])
    return np.array(matrix)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


@pytest.fixture(scope="module")
def client(dir_server):
    with httpx.Client(base_url=dir_server.url, timeout=30) as session:
        yield session


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_attributions_are_xgboosts_own_and_add_up_to_the_served_probability(client, model_a, rows):
    matrix = synthetic_features(rows, seed=40 + rows)
    plain = client.post("/invocations", content=_csv(matrix), headers={"Content-Type": "text/csv"})
    answer = client.post(
        "/invocations",
        content=_csv(matrix),
        headers={"Content-Type": "text/csv", "Accept": "text/csv", HEADER: "`true`"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-model-version"] == "7"
    document = answer.json()
    assert document["version"] == "1.0"
    assert document["predictions"]["content_type"] == "text/csv"
    assert document["predictions"]["data"] == plain.text  # the very answer the plain route gives
    served = np.array([float(v) for v in document["predictions"]["data"].split()])
    np.testing.assert_allclose(served, reference_predict(model_a, matrix), atol=1e-6)

    reference = _reference_contribs(model_a, matrix)
    attributions = _attributions(document)
    base = np.array(document["base_values"])
    assert attributions.shape == (rows, len(FEATURE_COLUMNS))
    np.testing.assert_allclose(attributions, reference[:, :-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(base, reference[:, -1], rtol=1e-5, atol=1e-6)
    # Additivity: base value + attributions = the logit of the probability served.
    np.testing.assert_allclose(base + attributions.sum(axis=1), _logit(served.astype(np.float64)), atol=2e-4)
    assert document["attribution_scale"] == "log_odds"


def _tree_expectation(tree: dict, node: int, x: np.ndarray, known: frozenset[int]) -> float:
    """E[tree(x) | the features in `known`], other features averaged by the training cover (path-dependent)."""
    left, right = tree["left_children"][node], tree["right_children"][node]
    if left == -1:
        return tree["base_weights"][node]
    feature = tree["split_indices"][node]
    if feature in known:
        value = x[feature]
        if math.isnan(value):
            child = left if tree["default_left"][node] else right
        else:
            child = left if value < tree["split_conditions"][node] else right
        return _tree_expectation(tree, child, x, known)
    cover = tree["sum_hessian"]
    return (
        cover[left] * _tree_expectation(tree, left, x, known) + cover[right] * _tree_expectation(tree, right, x, known)
    ) / (cover[left] + cover[right])


def test_attributions_are_the_exact_shapley_values_by_brute_force(model_b):
    """Model B (30 trees of depth 3): Shapley's formula over all 2^5 feature subsets, from the trees' JSON."""
    trees = json.loads(bytes(_booster(model_b).save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    matrix = synthetic_features(4, seed=77)
    matrix[0, 1] = np.nan  # a missing value follows the default branch when known
    m = len(FEATURE_COLUMNS)

    def value(x: np.ndarray, known: frozenset[int]) -> float:
        return sum(_tree_expectation(tree, 0, x, known) for tree in trees)

    expected = np.zeros((len(matrix), m))
    for r, x in enumerate(matrix.astype(np.float32)):
        for i in range(m):
            others = [j for j in range(m) if j != i]
            for size in range(m):
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                for subset in itertools.combinations(others, size):
                    known = frozenset(subset)
                    expected[r, i] += weight * (value(x, known | {i}) - value(x, known))

    from serving.explain import contributions  # what the server calls (model A is served: B is explained here)

    got = contributions(_booster(model_b), matrix.tolist())
    np.testing.assert_allclose(got[:, :m], expected, rtol=1e-4, atol=1e-5)


def test_boto3_enable_explanations_gets_clarifys_shape(runtime, model_a):  # noqa: F811
    matrix = synthetic_features(3, seed=91)
    answer = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, Body=_csv(matrix), ContentType="text/csv", Accept="text/csv", EnableExplanations="`true`"
    )
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "version-7"
    document = json.loads(answer["Body"].read())
    # Parsed as Clarify's documented response: predictions.data is the model's CSV answer.
    scores = np.array([float(line) for line in document["predictions"]["data"].splitlines()])
    np.testing.assert_allclose(scores, reference_predict(model_a, matrix), atol=1e-6)
    np.testing.assert_allclose(
        _attributions(document), _reference_contribs(model_a, matrix)[:, :-1], rtol=1e-5, atol=1e-6
    )


def test_boto3_false_is_clarifys_shape_with_no_explanations(runtime):  # noqa: F811
    answer = runtime.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=b"1,2000,40,3,1",
        ContentType="text/csv",
        Accept="text/csv",
        EnableExplanations="`false`",
    )
    document = json.loads(answer["Body"].read())
    assert document["explanations"] == {}
    assert 0 < float(document["predictions"]["data"]) < 1


def test_json_answer_type_is_kept_inside_predictions(client):
    answer = client.post(
        "/invocations",
        content=b"1,2000,40,3,1\n",
        headers={"Content-Type": "text/csv", "Accept": "application/json", HEADER: "true"},
    )
    document = answer.json()
    assert document["predictions"]["content_type"] == "application/json"
    assert len(json.loads(document["predictions"]["data"])["predictions"]) == 1


def test_without_the_header_nothing_changes(client):
    answer = client.post("/invocations", content=b"1,2000,40,3,1\n", headers={"Content-Type": "text/csv"})
    assert answer.headers["content-type"].startswith("text/csv")
    assert 0 < float(answer.text) < 1


def test_an_expression_the_server_does_not_evaluate_is_a_clear_error(runtime):  # noqa: F811
    with pytest.raises(runtime.exceptions.ModelError) as caught:
        runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            Body=b"1,2000,40,3,1",
            ContentType="text/csv",
            Accept="text/csv",
            EnableExplanations="[0]>`0.8`",
        )
    assert caught.value.response["OriginalStatusCode"] == 400
    assert "does not evaluate other JMESPath expressions" in caught.value.response["OriginalMessage"]


def test_a_bad_row_is_still_a_400_when_explaining(client):
    answer = client.post("/invocations", content=b"1,2,x,4,5\n", headers={"Content-Type": "text/csv", HEADER: "`true`"})
    assert answer.status_code == 400
    assert "'x' is not a number" in answer.text
