"""Splitting by time, fitting XGBoost, and scoring: the learning part of the entry point, free of I/O."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import xgboost

from configuration.errors import UserError
from features.contract import FEATURE_COLUMNS
from training.data import Frame
from training.hyperparameters import Hyperparameters


class DataError(UserError):
    """The data cannot give an honest model or evaluation (a split side empty, one class only)."""


@dataclass(frozen=True)
class Split:
    train: Frame
    validation: Frame
    description: str  # recorded in the metadata's training_data.split
    cutoff: str | None  # ISO date: validation rows are dated on or after it


def _iso(day: np.datetime64) -> str:
    return str(np.datetime_as_string(day, unit="D"))


def time_cutoff(dates: np.ndarray, fraction: float) -> np.datetime64:
    """The first loan date of the latest `fraction` of rows (all rows of that date go to the later side)."""
    ordered = np.sort(dates)
    return ordered[min(len(ordered) - 1, int(len(ordered) * (1.0 - fraction)))]


def split_by_time(frame: Frame, hps: Hyperparameters) -> Split:
    """Train on loans dated before a cutoff, validate on the rest (no validation channel given)."""
    if frame.loan_date is None:
        raise DataError(
            "the train channel has no loan_date column to split by time: add it or give a validation channel"
        )
    cutoff = (
        np.datetime64(hps.split_date, "D") if hps.split_date else time_cutoff(frame.loan_date, hps.validation_fraction)
    )
    later = frame.loan_date >= cutoff
    first, last = _iso(frame.loan_date.min()), _iso(frame.loan_date.max())
    if later.all() or not later.any():
        raise DataError(
            f"cannot split by loan_date at {_iso(cutoff)}: the train channel's loans run from {first} to {last}, "
            "so one side would be empty; set split_date inside that range or give a validation channel"
        )
    train, validation = frame.take(~later), frame.take(later)
    rule = "split_date" if hps.split_date else f"validation_fraction={hps.validation_fraction:g}"
    description = (
        f"time: train on loan_date < {_iso(cutoff)} ({len(train):,} rows, {first} to {_iso(frame.loan_date[~later].max())}), "
        f"validate on loan_date >= {_iso(cutoff)} ({len(validation):,} rows, up to {last}); {rule}"
    )
    return Split(train=train, validation=validation, description=description, cutoff=_iso(cutoff))


def given_split(train: Frame, validation: Frame) -> Split:
    return Split(
        train=train,
        validation=validation,
        description=f"channels: train {len(train):,} rows, validation channel {len(validation):,} rows",
        cutoff=None,
    )


def check_classes(frame: Frame, what: str) -> None:
    positives = int(frame.label.sum())
    if positives == 0 or positives == len(frame):
        only = "1" if positives else "0"
        raise DataError(
            f"the {what} ({len(frame):,} rows) hold only status = {only}: the model cannot be trained or judged; "
            "give more data or move the split"
        )


def positive_weight(frame: Frame, hps: Hyperparameters) -> float:
    """scale_pos_weight; 'auto' counts negatives/positives on the training part only (after the split)."""
    if hps.scale_pos_weight == "auto":
        positives = float(frame.label.sum())
        return (len(frame) - positives) / positives
    return float(hps.scale_pos_weight)


def dmatrix(frame: Frame, nthread: int) -> xgboost.DMatrix:
    return xgboost.DMatrix(
        frame.features, label=frame.label, missing=np.nan, feature_names=list(FEATURE_COLUMNS), nthread=nthread
    )


@dataclass(frozen=True)
class Fit:
    booster: xgboost.Booster
    rounds: int
    positive_weight: float
    early_stopping: str  # what happened, for the model card


def fit(train: Frame, hps: Hyperparameters, nthread: int) -> Fit:
    """Fit on the training part. Early stopping watches the latest slice of the training part by
    loan date, never the validation rows, so the validation metrics stay out-of-sample."""
    params = hps.learner_params(nthread)
    weight = positive_weight(train, hps)
    params["scale_pos_weight"] = weight
    rounds = hps.num_round
    note = f"off: {rounds} rounds"
    if hps.early_stopping_rounds and train.loan_date is not None:
        cutoff = time_cutoff(train.loan_date, hps.early_stopping_fraction)
        watch = train.loan_date >= cutoff
        fit_part, watch_part = train.take(~watch), train.take(watch)
        if len(fit_part) and 0 < int(watch_part.label.sum()) < len(watch_part) and 0 < int(fit_part.label.sum()):
            probe = xgboost.train(
                params,
                dmatrix(fit_part, nthread),
                num_boost_round=hps.num_round,
                evals=[(dmatrix(watch_part, nthread), "early_stopping")],
                early_stopping_rounds=hps.early_stopping_rounds,
                verbose_eval=False,
            )
            rounds = probe.best_iteration + 1
            note = (
                f"on: best AUC at round {rounds} on training rows dated >= {_iso(cutoff)} "
                f"({len(watch_part):,} rows), patience {hps.early_stopping_rounds}"
            )
            if not hps.refit:
                booster = _keep_rounds(probe, rounds)
                return Fit(
                    booster=_correct_prior(booster, weight), rounds=rounds, positive_weight=weight, early_stopping=note
                )
            note += "; refit on the whole training part"
        else:
            note = f"skipped (the early-stopping slice dated >= {_iso(cutoff)} lacks a class): {rounds} rounds"
    booster = xgboost.train(params, dmatrix(train, nthread), num_boost_round=rounds, verbose_eval=False)
    return Fit(booster=_correct_prior(booster, weight), rounds=rounds, positive_weight=weight, early_stopping=note)


def _keep_rounds(booster: xgboost.Booster, rounds: int) -> xgboost.Booster:
    return booster[:rounds] if booster.num_boosted_rounds() > rounds else booster


def _correct_prior(booster: xgboost.Booster, weight: float) -> xgboost.Booster:
    """Undo scale_pos_weight's shift of the predicted odds, inside the model file itself.

    Weighting positives by w multiplies the odds the loss is minimised at by w, so
    logit(p) = logit(p_weighted) - log(w). Moving XGBoost's base_score by that amount makes
    every consumer of the plain model file, SageMaker's own XGBoost container included,
    get probabilities on the real scale.
    """
    if weight == 1.0:
        return booster
    document = json.loads(bytes(booster.save_raw("json")))
    params = document["learner"]["learner_model_param"]
    raw = params["base_score"]
    base = float(raw.strip("[]").split(",")[0])
    margin = math.log(base / (1.0 - base)) - math.log(weight)
    corrected = 1.0 / (1.0 + math.exp(-margin))
    params["base_score"] = f"[{corrected:.9E}]" if raw.startswith("[") else f"{corrected:.9E}"
    fixed = xgboost.Booster()
    fixed.load_model(bytearray(json.dumps(document).encode("utf-8")))
    return fixed


def predict(booster: xgboost.Booster, frame: Frame, nthread: int) -> np.ndarray:
    return booster.predict(dmatrix(frame, nthread)).astype(np.float64)
