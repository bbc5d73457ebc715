"""Request parsing: CSV and JSON rows into the model's feature order, and every way a body can be wrong."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from features.contract import FEATURE_COLUMNS
from serving.content_types import CSV, JSON
from serving.decoder import decode
from serving.encoder import encode
from serving.errors import BadRequest

F = FEATURE_COLUMNS


def _same(actual: list[list[float]], expected: list[list[float]]) -> None:
    """Rows of Python floats holding exactly the float32 values XGBoost would read."""
    assert isinstance(actual, list) and all(isinstance(row, list) for row in actual)
    assert all(isinstance(value, float) for row in actual for value in row)
    np.testing.assert_array_equal(
        np.array(actual, dtype=np.float64), np.array(expected, dtype=np.float32).astype(np.float64)
    )


def test_csv_rows_in_order_with_empty_fields_missing():
    body = b"1,2500.5,41,3,1\n0,,33,,0\r\n 2 , 10 ,20,1, \n\n"
    _same(decode(body, CSV, F), [[1, 2500.5, 41, 3, 1], [0, math.nan, 33, math.nan, 0], [2, 10, 20, 1, math.nan]])


def test_values_are_rounded_to_float32_as_xgboost_reads_them():
    # 0.1 and 1e-3 have no exact float32: the rows must hold numpy's float32 rounding, not the decimals.
    rows = decode(b"0.1,2500.123456789,1e-3,33.3,1", CSV, F)
    assert rows[0][0] != 0.1
    _same(rows, [[0.1, 2500.123456789, 1e-3, 33.3, 1]])
    _same(
        decode(json.dumps([[0.1, 2500.123456789, 1e-3, 33.3, 1]]).encode(), JSON, F),
        [[0.1, 2500.123456789, 1e-3, 33.3, 1]],
    )


def test_csv_nan_literal_is_missing_and_quotes_are_read():
    _same(decode(b'nan,"15",3,4,5', CSV, F), [[math.nan, 15, 3, 4, 5]])


def test_json_instances_by_name_in_any_key_order():
    instance = {
        "flag_own_car": 1,
        "age": 41,
        "years_on_the_job": None,
        "avg_amount_loans_previous": 2500.5,
        "nb_previous_loans": 1,
    }
    matrix = decode(json.dumps({"instances": [instance, dict(instance, age=None)]}).encode(), JSON, F)
    _same(matrix, [[1, 2500.5, 41, math.nan, 1], [1, 2500.5, math.nan, math.nan, 1]])


def test_json_list_of_rows_both_forms():
    rows = [[1, 2.5, 41, None, 0], [0, None, 30, 2, 1]]
    expected = [[1, 2.5, 41, math.nan, 0], [0, math.nan, 30, 2, 1]]
    _same(decode(json.dumps(rows).encode(), JSON, F), expected)
    _same(decode(json.dumps({"instances": rows}).encode(), JSON, F), expected)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "body is empty"),
        (b"\n\n", "no rows"),
        (b"1,2,3,4", "row 1 has 4 fields, the model takes 5"),
        (b"1,2,3,4,5\n1,2,3,4,5,6", "row 2 has 6 fields"),
        (b"1,2,3,4,5\n\n1,2,3,4,5", "row 2 is empty"),
        (b"1,2,abc,4,5", "row 1, field 3 (age): 'abc' is not a number"),
        (b"nb_previous_loans,avg_amount_loans_previous,age,years_on_the_job,flag_own_car", "looks like a header"),
        (b"1,inf,3,4,5", "not a finite number"),
        (b"1,1e39,3,4,5", "out of range"),
        (b"1,2,3,4,\xff", "not UTF-8"),
    ],
)
def test_bad_csv_is_a_400_naming_the_problem(body, fragment):
    with pytest.raises(BadRequest) as caught:
        decode(body, CSV, F)
    assert caught.value.status_code == 400
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message


GOOD = {"nb_previous_loans": 1, "avg_amount_loans_previous": 2.0, "age": 3, "years_on_the_job": 4, "flag_own_car": 1}


@pytest.mark.parametrize(
    "document, fragment",
    [
        ("{not json", "not valid JSON"),
        ('"text"', 'must be {"instances"'),
        ("{}", 'must hold only "instances"'),
        (json.dumps({"instances": [GOOD], "extra": 1}), "unexpected key 'extra'"),
        (json.dumps({"instances": []}), "non-empty list"),
        (json.dumps({"instances": {"a": 1}}), "non-empty list"),
        (json.dumps({"instances": [dict(GOOD, salary=3)]}), "unknown feature 'salary'"),
        (json.dumps({"instances": [{k: v for k, v in GOOD.items() if k != "age"}]}), "instance 0 lacks age"),
        (json.dumps({"instances": [dict(GOOD, age="41")]}), "feature age: '41' is not a number"),
        (json.dumps({"instances": [dict(GOOD, flag_own_car=True)]}), "feature flag_own_car: True is not a number"),
        (json.dumps({"instances": [GOOD, [1, 2, 3]]}), "instance 1 has 3 values, the model takes 5"),
        (json.dumps([1, 2, 3, 4, 5]), "instance 0 is 1"),
        ('{"instances": [[1, 2, 3, 4, Infinity]]}', "not a finite number"),
        (json.dumps({"instances": [[1, 2, 3, 4, 10**400]]}), "not a finite number"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(document, fragment):
    with pytest.raises(BadRequest) as caught:
        decode(document.encode(), JSON, F)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message


def test_encoders_write_the_managed_containers_formats():
    probabilities = [0.25, 0.125]
    assert encode(probabilities, CSV) == b"0.25\n0.125\n"
    assert json.loads(encode(probabilities, JSON)) == {"predictions": [{"score": 0.25}, {"score": 0.125}]}
