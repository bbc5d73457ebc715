"""The numpy fast path against XGBoost's own predictions, and the models it must decline."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost

from serving.model import probe_rows
from serving.tree_eval import compile_trees
from tests.serving.conftest import synthetic_features


def _train(params: dict, rounds: int, seed: int = 0, labels=None) -> xgboost.Booster:
    x = synthetic_features(2000, seed)
    rng = np.random.default_rng(seed)
    y = labels if labels is not None else (rng.random(len(x)) < 0.15 + 0.05 * np.nan_to_num(x[:, 4])).astype(int)
    return xgboost.train({"nthread": 1, "seed": seed, **params}, xgboost.DMatrix(x, label=y), rounds)


@pytest.mark.parametrize(
    "params, rounds",
    [
        ({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, 150),
        ({"objective": "binary:logistic", "max_depth": 2, "eta": 0.5}, 5),
        ({"objective": "binary:logistic", "max_depth": 10, "eta": 0.3, "min_child_weight": 0}, 20),
        ({"objective": "binary:logistic", "max_depth": 4, "base_score": 0.9}, 10),
        ({"objective": "binary:logistic", "max_depth": 0, "grow_policy": "lossguide", "max_leaves": 31}, 30),
        ({"objective": "reg:logistic", "max_depth": 4}, 10),
        ({"objective": "binary:logistic", "max_depth": 4, "tree_method": "exact"}, 10),
    ],
)
def test_fast_path_matches_xgboost(params, rounds):
    booster = _train(params, rounds)
    compiled = compile_trees(bytes(booster.save_raw("json")))
    assert compiled is not None
    # Random rows, missing values, and values exactly on and beside every split threshold.
    for matrix in (synthetic_features(500, seed=9), probe_rows(booster, 5)):
        expected = booster.predict(xgboost.DMatrix(matrix, missing=np.nan))
        for rows in (matrix[:1], matrix[:7], matrix):
            np.testing.assert_allclose(compiled.predict(rows), expected[: len(rows)], rtol=0, atol=2e-6)


def test_fast_path_survives_a_json_round_trip_of_the_model():
    booster = _train({"objective": "binary:logistic", "max_depth": 5}, 40)
    reloaded = xgboost.Booster()
    reloaded.load_model(bytearray(booster.save_raw("json")))
    compiled = compile_trees(bytes(reloaded.save_raw("json")))
    matrix = synthetic_features(300, seed=4)
    np.testing.assert_allclose(compiled.predict(matrix), booster.predict(xgboost.DMatrix(matrix)), atol=2e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary:logistic", "booster": "dart", "rate_drop": 0.1},
        {"objective": "reg:squarederror"},
        {"objective": "binary:logitraw"},
        {"objective": "multi:softprob", "num_class": 3},
        {"objective": "binary:logistic", "booster": "gblinear"},
    ],
)
def test_models_it_cannot_reproduce_are_declined(params):
    labels = np.random.default_rng(0).integers(0, 3 if "num_class" in params else 2, 2000)
    booster = _train(params, 5, labels=labels)
    assert compile_trees(bytes(booster.save_raw("json"))) is None


def test_categorical_splits_are_declined():
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": pd.Categorical(rng.choice(list("xyz"), 500)), "b": rng.normal(size=500)})
    labels = (frame["a"] == "x").astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_cat_to_onehot": 1, "tree_method": "hist"},
        xgboost.DMatrix(frame, label=labels, enable_categorical=True),
        5,
    )
    assert compile_trees(bytes(booster.save_raw("json"))) is None


def test_garbage_is_declined():
    assert compile_trees(b"{}") is None
    assert compile_trees(b"not json") is None
