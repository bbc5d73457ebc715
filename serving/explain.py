"""Exact TreeSHAP explanations, answered in the shape of SageMaker Clarify's online explainability.

A request carrying `X-Amzn-SageMaker-Enable-Explanations` (boto3's
`invoke_endpoint(..., EnableExplanations="`true`")`) is answered with Clarify's JSON body:

    {"version": "1.0",
     "predictions": {"content_type": "text/csv", "data": "0.21\\n"},      the usual answer, as a string
     "explanations": {"kernel_shap": [                                    one list per row ...
         [{"feature_header": "age", "feature_type": "numerical",          ... one entry per feature
           "attributions": [{"attribution": [0.13]}]}, ...]]},
     "base_values": [-1.52], "attribution_scale": "log_odds", "explainer": "xgboost pred_contribs (exact TreeSHAP)"}

The attributions are not sampled: they are XGBoost's own `pred_contribs` (exact TreeSHAP
of the served booster), on the log-odds scale, and each row's `base_values` plus its
attributions add up to the logit of its prediction. The key stays `kernel_shap` because
that is where Clarify's clients read the attributions; the three last keys are this
server's additions (Clarify has no base value), which Clarify's parsers ignore.

EnableExplanations is a JMESPath expression in SageMaker; this server takes the two
constant ones, `true` and `false` (with or without the backticks), and refuses any other
with a 400 rather than guess. `false` answers the Clarify shape with empty explanations,
as Clarify does for a record its expression rejects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.errors import BadRequest

HEADER = b"x-amzn-sagemaker-enable-explanations"
EXPLAINER = "xgboost pred_contribs (exact TreeSHAP)"
_VALUES = {"`true`": True, "true": True, "`false`": False, "false": False}


def wanted(header: bytes) -> bool:
    """The header's value as a switch; BadRequest (400) for anything but true or false."""
    text = header.decode("latin-1").strip().lower()
    try:
        return _VALUES[text]
    except KeyError:
        raise BadRequest(
            f"X-Amzn-SageMaker-Enable-Explanations {text[:60]!r} is not supported: this server explains every row "
            "(`true`) or none (`false`); it does not evaluate other JMESPath expressions"
        ) from None


def contributions(booster: Any, rows: Sequence[Sequence[float]]) -> np.ndarray:
    """XGBoost's exact TreeSHAP values: one row per input row, one column per feature, then the bias (base value)."""
    import xgboost

    matrix = xgboost.DMatrix(np.asarray(rows, dtype=np.float32).reshape(len(rows), -1), missing=np.nan)
    return np.asarray(booster.predict(matrix, pred_contribs=True, validate_features=False), dtype=np.float64)


def clarify_body(answer: bytes, answer_type: str, feature_names: Sequence[str], contribs: np.ndarray | None) -> bytes:
    """The Clarify-shaped JSON body around an already encoded answer (`contribs` None: not explained)."""
    document: dict[str, Any] = {
        "version": "1.0",
        "predictions": {"content_type": answer_type, "data": answer.decode("utf-8")},
        "explanations": {},
    }
    if contribs is not None:
        per_row = contribs[:, : len(feature_names)].tolist()
        document["explanations"] = {
            "kernel_shap": [
                [
                    {"feature_header": name, "feature_type": "numerical", "attributions": [{"attribution": [value]}]}
                    for name, value in zip(feature_names, row)
                ]
                for row in per_row
            ]
        }
        document["base_values"] = contribs[:, len(feature_names)].tolist()
        document["attribution_scale"] = "log_odds"
        document["explainer"] = EXPLAINER
    return json.dumps(document).encode("utf-8")
