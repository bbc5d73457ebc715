"""Realized quality: what the served predictions turned out to be worth once the outcomes arrived.

The matching rule. A prediction of customer `c` answered from a feature snapshot as of
day `a` (the log's `snapshot_as_of`: the features of a loan application made on `a`) gets
as its outcome the `status` of the first accepted loan of `c` dated on or after `a`
(earliest `loan_date`, then lowest `loan_id`) in a later input: the training table of the
snapshot being monitored, i.e. the validated loans of the newest credit file. A customer
scored several times from the same snapshot by the same model version counts once, with
the last probability served (that is the decision a loan was made on); scores from
different snapshots or versions are different predictions. Predictions with no such loan
yet are unmatched (their outcome has not arrived) and are left out, and counted.

Per model version: ROC-AUC, Brier score and calibration (mean predicted against observed
in ten groups of equal size by predicted probability), from training.metrics, the same
functions the model card uses, over the matched predictions. Fewer than
`monitoring.min_matched` matched predictions, or outcomes of one class only, are reported
as such, with no AUC.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from configuration.settings import MonitoringSettings
from training import metrics

OK, TOO_FEW_MATCHED, ONE_CLASS = "ok", "too_few_matched", "one_class"
QUALITY_COLUMNS = (
    "snapshot_run_id",
    "model_version",
    "status",
    "served_predictions",
    "distinct_predictions",
    "matched_predictions",
    "positives",
    "roc_auc",
    "brier",
    "calibration_json",
    "note",
    "computed_at",
)


def distinct_predictions(served: pd.DataFrame) -> pd.DataFrame:
    """One prediction per (model_version, customer_id, snapshot_as_of): the last served."""
    ordered = served.reset_index(drop=True).sort_values("ts", kind="mergesort")
    return ordered.drop_duplicates(["model_version", "customer_id", "snapshot_as_of"], keep="last")


def match(served: pd.DataFrame, loans: pd.DataFrame) -> pd.DataFrame:
    """The distinct predictions that have an outcome, with the loan that gave it (outcome_loan_id, outcome_date, outcome).

    served: ts, customer_id, probability, model_version, snapshot_as_of (ISO date);
    loans: id, loan_id, loan_date, status (the later input's accepted loans).
    """
    predictions = distinct_predictions(served).copy()
    predictions["as_of"] = pd.to_datetime(predictions["snapshot_as_of"]).astype("datetime64[ns]")
    first = (
        loans[["id", "loan_id", "loan_date", "status"]]
        .assign(loan_date=lambda f: pd.to_datetime(f["loan_date"]).astype("datetime64[ns]"))
        .sort_values(["id", "loan_date", "loan_id"], kind="mergesort")
        .drop_duplicates(["id", "loan_date"], keep="first")
        .rename(
            columns={
                "id": "customer_id",
                "loan_id": "outcome_loan_id",
                "loan_date": "outcome_date",
                "status": "outcome",
            }
        )
        .astype({"customer_id": "int64"})
    )
    if predictions.empty or first.empty:
        return predictions.iloc[0:0].assign(
            outcome_loan_id=pd.Series(dtype="int64"),
            outcome_date=pd.Series(dtype="datetime64[ns]"),
            outcome=pd.Series(dtype="int64"),
        )
    joined = pd.merge_asof(
        predictions.sort_values("as_of"),
        first.sort_values("outcome_date"),
        left_on="as_of",
        right_on="outcome_date",
        by="customer_id",
        direction="forward",
        allow_exact_matches=True,
    )
    matched = joined[joined["outcome"].notna()].copy()
    matched["outcome"] = matched["outcome"].astype("int64")
    matched["outcome_loan_id"] = matched["outcome_loan_id"].astype("int64")
    return (
        matched.drop(columns=["as_of"])
        .sort_values(["model_version", "customer_id", "snapshot_as_of"])
        .reset_index(drop=True)
    )


def version_key(version: str):
    return (0, int(version)) if str(version).isdigit() else (1, str(version))


def quality(served: pd.DataFrame, loans: pd.DataFrame, settings: MonitoringSettings) -> list[dict]:
    """One realized-quality row per model version that served a prediction (without snapshot id)."""
    matched = match(served, loans)
    distinct = distinct_predictions(served)
    rows = []
    for version in sorted(served["model_version"].unique(), key=version_key):
        mine = matched[matched["model_version"] == version]
        y = mine["outcome"].to_numpy(np.int64)
        p = mine["probability"].to_numpy(np.float64)
        row = {
            "model_version": str(version),
            "status": OK,
            "served_predictions": int((served["model_version"] == version).sum()),
            "distinct_predictions": int((distinct["model_version"] == version).sum()),
            "matched_predictions": len(mine),
            "positives": int(y.sum()),
            "roc_auc": None,
            "brier": None,
            "calibration_json": None,
            "note": "",
        }
        if len(mine) < settings.min_matched:
            row.update(
                status=TOO_FEW_MATCHED,
                note=(
                    f"model {version}: {len(mine):,} of {row['distinct_predictions']:,} predictions have an outcome yet "
                    f"(monitoring.min_matched is {settings.min_matched:,}): no quality figures"
                ),
            )
        elif y.min() == y.max():
            row.update(
                status=ONE_CLASS,
                brier=metrics.brier(y, p),
                note=(
                    f"model {version}: all {len(mine):,} matched outcomes are {int(y[0])}: ROC-AUC needs both classes"
                ),
            )
        else:
            row.update(
                roc_auc=metrics.roc_auc(y, p),
                brier=metrics.brier(y, p),
                calibration_json=json.dumps(metrics.calibration_bins(y, p, bins=10)),
            )
        rows.append(row)
    return rows
