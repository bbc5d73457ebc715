"""Reason codes: one entry per model feature, kept beside the feature contract (features.contract).

A reason names a feature that pushed a customer's risk up (a positive TreeSHAP
contribution), with a short code that never changes meaning and a sentence a person
reads: "R01: number of previous loans (28)". Codes are stable: a new feature gets a new
code, a removed feature's code is never reused.

    reasons_for(features, contributions)   -> [{"code", "feature", "text", "contribution"}, ...] most risk first
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from features.contract import FEATURE_COLUMNS


@dataclass(frozen=True)
class Reason:
    code: str
    feature: str
    describe: Callable[[Any], str]  # the feature's value (not None) -> the sentence
    unknown: str  # the sentence when the value is missing


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _amount(value: Any) -> str:
    return f"{float(value):,.2f}"


REASONS: tuple[Reason, ...] = (
    Reason(
        "R01",
        "nb_previous_loans",
        lambda v: f"number of previous loans ({_count(v)})",
        "number of previous loans not known",
    ),
    Reason(
        "R02",
        "avg_amount_loans_previous",
        lambda v: f"average amount of previous loans ({_amount(v)})",
        "no previous loan amounts",
    ),
    Reason("R03", "age", lambda v: f"age ({_count(v)})", "age not known"),
    Reason(
        "R04", "years_on_the_job", lambda v: f"years on the current job ({_count(v)})", "years on the job not known"
    ),
    Reason(
        "R05",
        "flag_own_car",
        lambda v: "owns a car" if int(v) == 1 else "does not own a car",
        "car ownership not known",
    ),
)
BY_FEATURE: dict[str, Reason] = {reason.feature: reason for reason in REASONS}

if tuple(BY_FEATURE) != FEATURE_COLUMNS:  # the contract changed: give each new feature a reason code
    raise RuntimeError(f"features.reasons covers {tuple(BY_FEATURE)}, the contract lists {FEATURE_COLUMNS}")


def sentence(feature: str, value: Any) -> str:
    reason = BY_FEATURE[feature]
    return reason.unknown if value is None or value != value else reason.describe(value)


def reasons_for(
    features: Mapping[str, Any], contributions: Mapping[str, float], limit: int = len(REASONS)
) -> list[dict[str, Any]]:
    """The features whose contribution raised the risk (> 0), largest first (ties in contract order)."""
    raising = [(contributions[r.feature], index, r) for index, r in enumerate(REASONS) if contributions[r.feature] > 0]
    raising.sort(key=lambda item: (-item[0], item[1]))
    return [
        {
            "code": r.code,
            "feature": r.feature,
            "text": f"{r.code}: {sentence(r.feature, features.get(r.feature))}",
            "contribution": value,
        }
        for value, _, r in raising[:limit]
    ]
