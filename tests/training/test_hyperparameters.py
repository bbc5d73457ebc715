"""Hyperparameters arrive as strings (SageMaker) or JSON values (SM_HPS) and leave typed, or as one sentence."""

from __future__ import annotations

import datetime as dt

import pytest

from training.hyperparameters import HyperparameterError, parse_hyperparameters, to_strings


# The defaults table of training/README.md, copied by hand: the documented interface, not the code's own values.
DOCUMENTED_DEFAULTS = {
    "num_round": 1000,
    "early_stopping_rounds": 50,
    "early_stopping_fraction": 0.1,
    "refit": False,
    "max_depth": 2,
    "eta": 0.05,
    "min_child_weight": 50,
    "subsample": 0.8,
    "colsample_bytree": 1.0,
    "reg_lambda": 10,
    "alpha": 0,
    "max_bin": 256,
    "scale_pos_weight": 1,
    "seed": 0,
    "nthread": 0,
    "validation_fraction": 0.2,
    "split_date": None,
    "threshold_rule": "f1",
}


def test_defaults_are_the_documented_ones():
    hps = parse_hyperparameters({})
    assert {name: getattr(hps, name) for name in DOCUMENTED_DEFAULTS} == DOCUMENTED_DEFAULTS
    assert hps.max_depth == 2 and isinstance(hps.max_depth, int) and isinstance(hps.eta, float)


def test_strings_become_typed_values():
    hps = parse_hyperparameters(
        {
            "max_depth": "3",
            "eta": "0.3",
            "lambda": "2.5",
            "scale_pos_weight": "auto",
            "split_date": "2020-06-01",
            "refit": "yes",
            "num_round": " 40 ",
            "threshold_rule": "youden",
            "early_stopping_rounds": "0",
        }
    )
    assert hps.max_depth == 3 and isinstance(hps.max_depth, int)
    assert hps.eta == 0.3 and hps.reg_lambda == 2.5
    assert hps.scale_pos_weight == "auto"
    assert hps.split_date == dt.date(2020, 6, 1)
    assert hps.refit is True and hps.num_round == 40 and hps.early_stopping_rounds == 0
    assert hps.threshold_rule == "youden"


def test_json_values_as_sm_hps_gives_them():
    hps = parse_hyperparameters({"max_depth": 4, "eta": 0.2, "refit": True, "scale_pos_weight": 12})
    assert (hps.max_depth, hps.eta, hps.refit, hps.scale_pos_weight) == (4, 0.2, True, 12.0)


def test_empty_string_keeps_the_default_and_sagemaker_keys_are_ignored():
    hps = parse_hyperparameters({"max_depth": "", "sagemaker_program": "x", "_tuning_objective_metric": "y"})
    assert hps.max_depth == 2  # the documented default


def test_learner_params_use_xgboost_names():
    params = parse_hyperparameters({"lambda": "3"}).learner_params(nthread=2)
    assert params["objective"] == "binary:logistic" and params["tree_method"] == "hist"
    assert params["lambda"] == 3.0 and params["nthread"] == 2


def test_record_round_trips_through_strings():
    hps = parse_hyperparameters({"scale_pos_weight": "auto", "split_date": "2020-01-02", "refit": "true"})
    record = {k: v for k, v in hps.as_record().items() if v is not None}
    strings = to_strings(record)
    # What SageMaker's hyperparameters.json would hold, written out by hand (XGBoost's names: lambda).
    assert {
        k: strings[k]
        for k in ("scale_pos_weight", "split_date", "refit", "max_depth", "eta", "lambda", "threshold_rule")
    } == {
        "scale_pos_weight": "auto",
        "split_date": "2020-01-02",
        "refit": "true",
        "max_depth": "2",
        "eta": "0.05",
        "lambda": "10.0",
        "threshold_rule": "f1",
    }
    back = parse_hyperparameters(strings)
    assert (back.scale_pos_weight, back.split_date, back.refit, back.reg_lambda) == (
        "auto",
        dt.date(2020, 1, 2),
        True,
        10.0,
    )


@pytest.mark.parametrize(
    "raw, sentence",
    [
        ({"max_depth": "abc"}, "hyperparameter max_depth='abc' is invalid: not a whole number"),
        ({"max_depth": "2.5"}, "hyperparameter max_depth='2.5' is invalid: not a whole number"),
        ({"eta": "fast"}, "hyperparameter eta='fast' is invalid: not a finite number"),
        ({"eta": "nan"}, "hyperparameter eta='nan' is invalid: not a finite number"),
        ({"eta": "2"}, "hyperparameter eta='2' is invalid: must be less than or equal to 1"),
        ({"max_depth": "0"}, "hyperparameter max_depth='0' is invalid: must be greater than or equal to 1"),
        (
            {"scale_pos_weight": "-3"},
            "hyperparameter scale_pos_weight='-3' is invalid: expected 'auto' or a positive number",
        ),
        (
            {"scale_pos_weight": "heavy"},
            "hyperparameter scale_pos_weight='heavy' is invalid: expected 'auto' or a positive number",
        ),
        (
            {"threshold_rule": "accuracy"},
            "hyperparameter threshold_rule='accuracy' is invalid: must be 'f1' or 'youden'",
        ),
        ({"split_date": "2020-02-30"}, "hyperparameter split_date='2020-02-30' is invalid"),
        ({"lambda": "x"}, "hyperparameter lambda='x' is invalid: not a finite number"),
        ({"max_dept": "3"}, "unknown hyperparameter 'max_dept': known ones are"),
    ],
)
def test_each_bad_value_is_one_sentence(raw, sentence):
    with pytest.raises(HyperparameterError) as info:
        parse_hyperparameters(raw)
    assert str(info.value).startswith(sentence)
    assert "\n" not in str(info.value)


def test_not_an_object():
    with pytest.raises(HyperparameterError, match="not a JSON object"):
        parse_hyperparameters(["max_depth", "3"])  # type: ignore[arg-type]
