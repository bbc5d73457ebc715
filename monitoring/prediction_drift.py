"""Prediction drift: the probabilities the API served recently against the production model's own validation scores.

The reference is what the model gave its validation rows at training time
(`validation-scores.parquet` in the model directory, training.artifact); the current sample
is every prediction the production version served in the last
`monitoring.prediction_window_hours`. Same PSI and KS as feature drift (monitoring.stats),
plus the share of positive labels served beside the share of validation rows at or above
the model's threshold (what the same threshold flagged at training).

Predictions served by other versions in the window (before a promotion) are left out and
counted in the note, not mixed in.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from configuration.settings import MonitoringSettings
from monitoring import stats
from monitoring.feature_drift import ALERT, NO_REFERENCE, OK, TOO_FEW_ROWS, WARN, level  # noqa: F401 (re-exported statuses)

NO_PREDICTIONS = "no_predictions"
PREDICTION_DRIFT_COLUMNS = (
    "snapshot_run_id",
    "model_version",
    "status",
    "psi",
    "ks_statistic",
    "ks_pvalue",
    "served_rows",
    "other_version_rows",
    "reference_rows",
    "served_positive_share",
    "reference_positive_share",
    "threshold",
    "window_start",
    "window_end",
    "bins_json",
    "note",
    "computed_at",
)


def compare(
    served: pd.DataFrame,
    reference: pd.DataFrame | None,
    model_version: str | None,
    threshold: float | None,
    settings: MonitoringSettings,
    why_no_reference: str = "",
) -> dict:
    """The prediction-drift row (without snapshot id and window), served = the window's predictions of every version."""
    row = {
        "model_version": model_version,
        "status": OK,
        "psi": None,
        "ks_statistic": None,
        "ks_pvalue": None,
        "served_rows": 0,
        "other_version_rows": 0,
        "reference_rows": 0 if reference is None else len(reference),
        "served_positive_share": None,
        "reference_positive_share": None,
        "threshold": threshold,
        "bins_json": None,
        "note": "",
    }
    if model_version is None or reference is None:
        row.update(status=NO_REFERENCE, note=why_no_reference)
        return row
    mine = served[served["model_version"] == str(model_version)]
    row["served_rows"] = len(mine)
    row["other_version_rows"] = int(len(served) - len(mine))
    others = f" ({row['other_version_rows']:,} served by other versions left out)" if row["other_version_rows"] else ""
    if len(mine) == 0:
        row.update(
            status=NO_PREDICTIONS,
            note=f"no prediction of model {model_version} in the window{others}: nothing to compare",
        )
        return row
    if len(mine) < settings.min_rows or len(reference) < settings.min_rows:
        row.update(
            status=TOO_FEW_ROWS,
            note=f"too few rows to compare: {len(reference):,} validation scores and {len(mine):,} served "
            f"(monitoring.min_rows is {settings.min_rows:,}){others}",
        )
        return row
    current = mine["probability"].to_numpy(np.float64)
    ref = reference["probability"].to_numpy(np.float64)
    bins = stats.binned(ref, current, settings.bins)
    psi_value = stats.psi_of_shares(np.array(bins.reference), np.array(bins.current))
    statistic, pvalue = stats.ks(ref, current)
    row.update(
        psi=psi_value,
        ks_statistic=statistic,
        ks_pvalue=pvalue,
        bins_json=json.dumps(bins.as_dict()),
        status=level(psi_value, settings.psi_warn, settings.psi_alert),
        served_positive_share=float((mine["label"] == 1).mean()),
        reference_positive_share=None if threshold is None else float((ref >= threshold).mean()),
        note=others.strip(" ()"),
    )
    return row
