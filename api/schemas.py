"""Request and response bodies (what /docs shows)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from features.contract import FEATURE_COLUMNS

# Ids are bigints in the lake; the API takes 0 .. 2**53 - 1, the integers every JSON client
# (JavaScript's numbers, float64 parsers) represents exactly, which holds the 7-digit real ids.
ID_MIN, ID_MAX = 0, 2**53 - 1


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 5008804 or 5008804.0, but not true or "5008804" (which lax parsing would take)."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("an id is a JSON integer, not a boolean or a string")
    return value


def decimal_digits(value: object) -> object:
    """A path id is ASCII decimal digits only: not "+5008804", " 5008804", "5008804.0", "5_008_804" or
    full-width digits, all of which int() takes."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("an id is decimal digits only, e.g. 5008804")
    return value


CustomerId = Annotated[
    int, Field(ge=ID_MIN, le=ID_MAX, description="Customer id (bigint), e.g. 5008804."), BeforeValidator(_json_integer)
]


class Features(BaseModel):
    """The customer's latest features, exactly as sent to the model (null: missing)."""

    model_config = ConfigDict(extra="forbid")

    nb_previous_loans: int | None = Field(description="Loans before the snapshot's as_of date.")
    avg_amount_loans_previous: float | None = Field(description="Mean amount of those loans.")
    age: int | None = Field(description="Completed years at as_of.")
    years_on_the_job: int | None = Field(description="Completed years in the job at as_of.")
    flag_own_car: int | None = Field(description="1 owns a car, 0 does not.")


if tuple(Features.model_fields) != FEATURE_COLUMNS:  # the contract changed: this model must follow
    raise RuntimeError(f"api.schemas.Features lists {tuple(Features.model_fields)}, the contract {FEATURE_COLUMNS}")


class FeatureSnapshot(BaseModel):
    run_id: str = Field(description="Feature-job run that computed the features.")
    as_of: str = Field(description="Date (YYYY-MM-DD) the features describe.")


class Contributions(BaseModel):
    """One TreeSHAP contribution per feature, in log-odds (positive: raises the risk)."""

    nb_previous_loans: float
    avg_amount_loans_previous: float
    age: float
    years_on_the_job: float
    flag_own_car: float


if tuple(Contributions.model_fields) != FEATURE_COLUMNS:
    raise RuntimeError(
        f"api.schemas.Contributions lists {tuple(Contributions.model_fields)}, the contract {FEATURE_COLUMNS}"
    )


class Explanation(BaseModel):
    """Exact TreeSHAP (XGBoost's own pred_contribs) of this prediction, on the log-odds scale.

    base_value + the sum of contributions = logit(probability) = ln(p / (1 - p)), to float32
    precision: the contributions say how far each feature moved this customer's risk from
    the model's base value.
    """

    base_value: float = Field(description="The model's expected log-odds (the bias term of TreeSHAP).")
    contributions: Contributions = Field(
        description="One contribution per feature, log-odds; base_value + their sum = logit(probability)."
    )
    scale: Literal["log_odds"] = "log_odds"


class Reason(BaseModel):
    code: str = Field(description="Stable reason code of the feature (features/reasons.py), e.g. R01.")
    feature: str = Field(description="The feature that raised the risk.")
    text: str = Field(description='Code and sentence, e.g. "R01: number of previous loans (28)".')
    contribution: float = Field(gt=0, description="Its TreeSHAP contribution (log-odds).")


class PredictionItem(BaseModel):
    id: int = Field(description="Customer id.")
    probability: float = Field(ge=0.0, le=1.0, description="Probability of a bad loan.")
    label: Literal[0, 1] = Field(description="1 when probability >= threshold.")
    threshold: float = Field(ge=0.0, le=1.0, description="The model's decision threshold (from its metadata).")
    model_version: str = Field(description="Version of the model that scored the request.")
    features: Features
    feature_snapshot: FeatureSnapshot
    explanation: Explanation | None = Field(
        None,
        description="Only with explain: base value and one log-odds contribution per feature, adding up to logit(probability).",
    )
    reasons: list[Reason] | None = Field(
        None,
        description="Only with explain: the features that pushed the risk up, most first (positive contributions).",
    )


class Prediction(PredictionItem):
    request_id: str = Field(description="Also in the X-Request-ID header and the prediction log.")


class BatchPrediction(BaseModel):
    predictions: list[PredictionItem] = Field(description="One per id found, in the order asked.")
    not_found: list[int] = Field(description="Asked ids the feature snapshot lacks.")
    request_id: str


def batch_request_model(max_batch: int) -> type[BaseModel]:
    """The POST /predict body, its size limit from the settings (so the schema states it)."""
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        ids=(
            list[CustomerId],
            Field(
                min_length=1,
                max_length=max_batch,
                description=f"1 to {max_batch} customer ids.",
                examples=[[5008804, 5008805]],
            ),
        ),
        explain=(bool, Field(False, strict=True, description="Add explanation and reasons to every prediction.")),
    )


class ErrorBody(BaseModel):
    detail: str
    request_id: str


class Health(BaseModel):
    status: Literal["ok"]


class ReadyCheck(BaseModel):
    ok: bool
    detail: str


class Ready(BaseModel):
    ready: bool
    checks: dict[str, ReadyCheck]
    request_id: str
