"""Typed hyperparameters of the training entry point, parsed from SageMaker's all-string values.

SageMaker hands the container `/opt/ml/input/config/hyperparameters.json` with every value
a string (`{"max_depth": "2"}`); the training toolkit's `SM_HPS` holds the same as JSON
values. Both go through `parse_hyperparameters`, which validates with pydantic and turns
the first problem into one sentence naming the hyperparameter.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from configuration.errors import UserError

# Keys SageMaker tooling may add on its own (the SDK's `sagemaker_*` entries); never ours.
_IGNORED_PREFIXES = ("sagemaker_", "_")


class HyperparameterError(UserError):
    """A hyperparameter is unknown or its value is not valid."""


class Hyperparameters(BaseModel):
    """Defaults were chosen on the generator's 777,715-row sample (benchmarks/README.md, Training)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    # The learner (XGBoost binary:logistic, hist): names as XGBoost and SageMaker's XGBoost spell them.
    num_round: int = Field(
        1000, ge=1, le=100_000, description="Most boosting rounds (early stopping usually ends sooner)."
    )
    early_stopping_rounds: int = Field(
        50,
        ge=0,
        description="Stop when validation AUC on the early-stopping slice has not improved for this many rounds; 0: train num_round rounds.",
    )
    max_depth: int = Field(2, ge=1, le=16, description="Depth of each tree.")
    eta: float = Field(0.05, gt=0, le=1, description="Learning rate.")
    min_child_weight: float = Field(50.0, ge=0, description="Smallest sum of instance weight (hessian) in a leaf.")
    subsample: float = Field(0.8, gt=0, le=1, description="Share of training rows sampled for each tree.")
    colsample_bytree: float = Field(1.0, gt=0, le=1, description="Share of features sampled for each tree.")
    reg_lambda: float = Field(10.0, ge=0, alias="lambda", description="L2 regularisation of leaf weights.")
    alpha: float = Field(0.0, ge=0, description="L1 regularisation of leaf weights.")
    max_bin: int = Field(256, ge=2, le=4096, description="Histogram bins per feature.")
    scale_pos_weight: Literal["auto"] | float = Field(
        1.0,
        description="Weight of status = 1 rows: a number, or 'auto' for negatives/positives counted on the training "
        "part only (after the split). Predicted probabilities are corrected back to the unweighted scale.",
    )
    seed: int = Field(0, ge=0, description="Random seed of the learner.")
    nthread: int = Field(0, ge=0, description="CPU threads; 0: every CPU of the instance.")

    # Evaluation.
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Without a validation channel: share of rows (the latest loan dates) held out for validation.",
    )
    split_date: dt.date | None = Field(
        None,
        description="Without a validation channel: validate on loans dated on or after this day (overrides validation_fraction).",
    )
    early_stopping_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training part (its latest loan dates) watched for early stopping."
    )
    refit: bool = Field(
        False,
        description="After early stopping, retrain on the whole training part with the number of rounds found "
        "(off by default: on the 777,715-row sample it doubled the time and did not raise validation AUC).",
    )
    threshold_rule: Literal["f1", "youden"] = Field(
        "f1",
        description="How the decision threshold is chosen on validation: f1 (maximise F1) or youden (maximise TPR - FPR).",
    )

    # Provenance, recorded in the model metadata (the runners fill them in).
    data_run_id: str = Field("", max_length=256, description="run_id of the feature snapshot the train channel holds.")
    data_uri: str = Field("", max_length=256, description="URI of the training data as the runner saw it.")

    @field_validator("scale_pos_weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected 'auto' or a positive number") from None
        if not (weight > 0 and weight != float("inf")):
            raise ValueError("expected 'auto' or a positive number")
        return weight

    def learner_params(self, nthread: int) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "eval_metric": "auc",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "alpha": self.alpha,
            "max_bin": self.max_bin,
            "seed": self.seed,
            "nthread": nthread,
        }

    def as_record(self) -> dict[str, Any]:
        """JSON-ready typed values, keyed as a user writes them."""
        return json.loads(self.model_dump_json(by_alias=True))


def _field_of(alias_or_name: str) -> str:
    for name, field in Hyperparameters.model_fields.items():
        if alias_or_name in (name, field.alias):
            return field.alias or name
    return alias_or_name


def parse_hyperparameters(raw: dict[str, Any]) -> Hyperparameters:
    """Validate hyperparameters given as SageMaker gives them (strings) or as JSON values."""
    if not isinstance(raw, dict):
        raise HyperparameterError("the hyperparameters are not a JSON object of name: value pairs")
    known = {field.alias or name for name, field in Hyperparameters.model_fields.items()}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if any(str(key).startswith(prefix) for prefix in _IGNORED_PREFIXES):
            continue
        if key not in known:
            raise HyperparameterError(f"unknown hyperparameter {key!r}: known ones are {', '.join(sorted(known))}")
        # The empty string means "not set" (a launcher that writes every key); keep the default.
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue
        values[key] = value.strip() if isinstance(value, str) else value
    try:
        return Hyperparameters.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _field_of(str(first["loc"][0])) if first["loc"] else "hyperparameters"
        given = values.get(name, first.get("input"))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] in ("int_parsing", "int_from_float"):
            message = "not a whole number"
        elif first["type"] in ("float_parsing", "finite_number"):
            message = "not a finite number"
        else:
            message = message.replace("Input should be", "must be")
        raise HyperparameterError(f"hyperparameter {name}={given!r} is invalid: {message}") from None


def to_strings(values: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters as SageMaker wants them: every value a string (booleans as true/false)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out
