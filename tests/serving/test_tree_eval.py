"""The compiled fast path against XGBoost's own predictions, and the models it must decline."""

from __future__ import annotations

import dis
import json

import numpy as np
import pytest
import xgboost

from serving import native, tree_eval
from serving.model import probe_rows
from serving.tree_eval import compile_trees
from tests.serving.conftest import synthetic_features


def _predict(compiled, matrix: np.ndarray) -> np.ndarray:
    # The server hands it rows of float32 values as Python floats (serving.decoder).
    return np.asarray(compiled.predict_rows(matrix.astype(np.float32).tolist()), dtype=np.float32)


def _train(params: dict, rounds: int, seed: int = 0, labels=None) -> xgboost.Booster:
    x = synthetic_features(2000, seed)
    rng = np.random.default_rng(seed)
    y = labels if labels is not None else (rng.random(len(x)) < 0.15 + 0.05 * np.nan_to_num(x[:, 4])).astype(int)
    return xgboost.train({"nthread": 1, "seed": seed, **params}, xgboost.DMatrix(x, label=y), rounds)


@pytest.fixture(params=["ifs", "tables", "walk"])
def evaluator(request, monkeypatch):
    """Each way of finding the leaves: generated `if`s only, tables wherever they fit, or the walk in C
    (serving/ensemble.c, which the machine's compiler builds: the two Python ways run without it)."""
    if request.param == "walk":
        assert native.ensemble() is not None, "serving/ensemble.c did not build: see the log's warning"
        return request.param
    monkeypatch.setattr(tree_eval, "_walk", lambda *args: None)
    if request.param == "ifs":
        monkeypatch.setattr(tree_eval, "GROUP_ENTRIES_LIMIT", 0)
    else:
        monkeypatch.setattr(tree_eval, "TREES_PER_TABLE", 0)
    return request.param


@pytest.mark.parametrize(
    "params, rounds",
    [
        ({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, 150),
        ({"objective": "binary:logistic", "max_depth": 2, "eta": 0.5}, 5),
        # The shape training's defaults give: many shallow trees, so many thresholds per feature.
        ({"objective": "binary:logistic", "max_depth": 2, "eta": 0.05, "min_child_weight": 5}, 240),
        ({"objective": "binary:logistic", "max_depth": 10, "eta": 0.3, "min_child_weight": 0}, 20),
        ({"objective": "binary:logistic", "max_depth": 4, "base_score": 0.9}, 10),
        ({"objective": "binary:logistic", "max_depth": 0, "grow_policy": "lossguide", "max_leaves": 31}, 30),
        ({"objective": "reg:logistic", "max_depth": 4}, 10),
        ({"objective": "binary:logistic", "max_depth": 4, "tree_method": "exact"}, 10),
        # Trees that are a single leaf (no split pays for itself).
        ({"objective": "binary:logistic", "max_depth": 3, "gamma": 1e6}, 5),
    ],
)
def test_fast_path_matches_xgboost(params, rounds, evaluator):
    booster = _train(params, rounds)
    compiled = compile_trees(bytes(booster.save_raw("json")))
    assert compiled is not None
    assert (compiled.walk is not None) == (evaluator == "walk")
    if evaluator == "ifs":
        assert compiled.tables == 0
    # Random rows, missing values, and values exactly on and beside every split threshold.
    for matrix in (synthetic_features(500, seed=9), probe_rows(booster, 5)):
        expected = booster.predict(xgboost.DMatrix(matrix, missing=np.nan))
        for rows in (matrix[:1], matrix[:7], matrix):
            np.testing.assert_array_equal(_predict(compiled, rows), expected[: len(rows)])


def test_fast_path_survives_a_json_round_trip_of_the_model():
    booster = _train({"objective": "binary:logistic", "max_depth": 5}, 40)
    reloaded = xgboost.Booster()
    reloaded.load_model(bytearray(booster.save_raw("json")))
    compiled = compile_trees(bytes(reloaded.save_raw("json")))
    matrix = synthetic_features(300, seed=4)
    np.testing.assert_array_equal(_predict(compiled, matrix), booster.predict(xgboost.DMatrix(matrix)))


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


def test_trees_sharing_splits_are_merged_without_changing_the_answer(monkeypatch):
    monkeypatch.setattr(tree_eval, "GROUP_ENTRIES_LIMIT", 0)  # the generated `if`s, not tables
    # Depth-2 trees over few histogram bins: many trees share their splits.
    x = synthetic_features(2000, 3)
    y = ((np.nan_to_num(x[:, 4]) > 0) ^ (np.nan_to_num(x[:, 0]) > 2)).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "max_bin": 4, "eta": 0.1}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), 60)
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]

    def split(tree, node):
        return (tree["split_indices"][node], tree["split_conditions"][node], tree["default_left"][node])

    # Expected comparisons, counted from the JSON: one per distinct root split, plus one per
    # distinct split below it on each side.
    roots, below = set(), set()
    for tree in trees:
        if tree["left_children"][0] == -1:
            continue
        roots.add(split(tree, 0))
        for side in ("left_children", "right_children"):
            child = tree[side][0]
            if tree["left_children"][child] != -1:
                below.add((split(tree, 0), side, split(tree, child)))
    internal = sum(sum(1 for c in t["left_children"] if c != -1) for t in trees)
    assert len(roots) + len(below) < internal  # the premise: shared splits
    compiled = compile_trees(bytes(booster.save_raw("json")))
    comparisons = [i for i in dis.get_instructions(compiled.leaves) if i.opname == "COMPARE_OP"]
    assert len(comparisons) == len(roots) + len(below)
    matrix = np.concatenate([synthetic_features(300, seed=5), probe_rows(booster, 5)])
    np.testing.assert_array_equal(_predict(compiled, matrix), booster.predict(xgboost.DMatrix(matrix, missing=np.nan)))


def test_many_thresholds_on_a_feature_become_a_search_that_still_matches_xgboost(monkeypatch):
    monkeypatch.setattr(tree_eval, "GROUP_ENTRIES_LIMIT", 0)  # the generated `if`s, not tables
    booster = _train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.05}, 240, seed=3)
    compiled = compile_trees(bytes(booster.save_raw("json")))
    assert compiled.searches > 0
    # Values on, just below and just above every threshold, and missing values.
    matrix = np.concatenate([probe_rows(booster, 5, rows=2000), synthetic_features(500, seed=8)])
    np.testing.assert_array_equal(_predict(compiled, matrix), booster.predict(xgboost.DMatrix(matrix, missing=np.nan)))


@pytest.mark.parametrize("entries_limit", [None, 40])
def test_many_shallow_trees_are_answered_by_tables_that_match_xgboost(monkeypatch, entries_limit):
    # The shape training's defaults give; with a small limit, groups are halved until their tables fit.
    if entries_limit is not None:
        monkeypatch.setattr(tree_eval, "GROUP_ENTRIES_LIMIT", entries_limit)
        monkeypatch.setattr(tree_eval, "TREES_PER_TABLE", 1)  # halved groups are many: take them anyway
    booster = _train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.05}, 240, seed=3)
    compiled = compile_trees(bytes(booster.save_raw("json")))
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    feature_sets = {
        frozenset(f for f, left in zip(t["split_indices"], t["left_children"]) if left != -1) for t in trees
    }
    assert compiled.searches == 0
    if entries_limit is None:
        assert compiled.tables == len(feature_sets)  # one group per set of features split on
    else:
        assert compiled.tables > len(feature_sets)
    matrix = np.concatenate([probe_rows(booster, 5, rows=2000), synthetic_features(500, seed=8)])
    expected = booster.predict(xgboost.DMatrix(matrix, missing=np.nan))
    for rows in (matrix[:1], matrix[:32], matrix):
        np.testing.assert_array_equal(_predict(compiled, rows), expected[: len(rows)])


def test_requests_it_answers_shrink_as_the_model_grows():
    small = compile_trees(bytes(_train({"objective": "binary:logistic", "max_depth": 2}, 20).save_raw("json")))
    large = compile_trees(
        bytes(_train({"objective": "binary:logistic", "max_depth": 8, "min_child_weight": 0}, 300).save_raw("json"))
    )
    assert small.max_rows == tree_eval.ROWS_LIMIT
    assert 1 <= large.max_rows < small.max_rows
    assert large.max_rows == max(1, tree_eval._NODES_PER_XGBOOST_CALL // large.nodes)


def test_models_too_large_or_too_deep_are_left_to_xgboost(monkeypatch):
    raw = bytes(_train({"objective": "binary:logistic", "max_depth": 6}, 10).save_raw("json"))
    assert compile_trees(raw) is not None
    monkeypatch.setattr(tree_eval, "MAX_NODES", 50)
    assert compile_trees(raw) is None
    monkeypatch.undo()
    monkeypatch.setattr(tree_eval, "GROUP_ENTRIES_LIMIT", 0)
    monkeypatch.setattr(tree_eval, "NESTING_LIMIT", 3)
    assert compile_trees(raw) is None


def test_sigmoid_is_xgboosts_own_float32_transform():
    # XGBoost applies its transform to a DMatrix's base margin plus the trees: with one tree of
    # zero leaves (eta 0), its probabilities are its sigmoid of exactly the margins given.
    x = synthetic_features(200, 1)
    booster = xgboost.train(
        {"objective": "binary:logistic", "eta": 0.0, "max_depth": 1, "nthread": 1},
        xgboost.DMatrix(x, label=(np.nan_to_num(x[:, 4]) > 0).astype(int)),
        1,
    )
    rng = np.random.default_rng(2)
    margins = np.concatenate(
        [
            rng.uniform(-100, 100, 40_000),
            rng.uniform(-4, 4, 40_000),
            rng.normal(0, 1e-3, 5_000),
            [88.7, -88.7, 88.8, -88.8, 0.0],
        ]
    ).astype(np.float32)
    data = xgboost.DMatrix(np.zeros((len(margins), x.shape[1]), np.float32), base_margin=margins)
    assert np.array_equal(booster.predict(data, output_margin=True), margins)  # the premise: margins pass unchanged
    np.testing.assert_array_equal(
        np.asarray(tree_eval.sigmoid_float32(margins.tolist()), dtype=np.float32), booster.predict(data)
    )


@pytest.mark.parametrize("base_score", [0.5, 0.2463, 0.9, 1e-7, 0.999999])
def test_base_margin_is_xgboosts_float32_logit(base_score):
    x = synthetic_features(200, 1)
    booster = xgboost.train(
        {"objective": "binary:logistic", "eta": 0.0, "max_depth": 1, "nthread": 1, "base_score": base_score},
        xgboost.DMatrix(x, label=(np.nan_to_num(x[:, 4]) > 0).astype(int)),
        1,
    )
    compiled = compile_trees(bytes(booster.save_raw("json")))
    margin = booster.predict(xgboost.DMatrix(x[:1]), output_margin=True)[0]  # base margin + a zero leaf
    assert compiled.base_margin == float(margin)
