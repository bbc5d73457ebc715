"""Feature drift: one row per model feature comparing a current sample with its reference.

Two comparisons per snapshot, like with like (a customer's latest row counts all their
loans, a training row only the earlier ones, so the two tables are different populations):

    training   the snapshot's most recent training rows (loans of its last
               `monitoring.recent_days` days of loan dates) against the same rows of the
               snapshot the production model was trained on: what the model learned from
    latest     the snapshot's latest table against the previous snapshot's: what the API serves

A row's `status`: ok, warn or alert (PSI against the feature's thresholds), too_few_rows
(either side under `monitoring.min_rows`), all_missing (either side has no value) or
no_reference (nothing to compare with: no production model, no previous snapshot). Only
ok/warn/alert rows carry numbers; the others say why in `note`. A feature that has values
in the reference and none now is an alert: the feed of that feature broke.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from configuration.settings import MonitoringSettings
from features.contract import FEATURE_COLUMNS
from monitoring import stats

COMPARISONS = ("training", "latest")
ALERT, WARN, OK = "alert", "warn", "ok"
TOO_FEW_ROWS, ALL_MISSING, NO_REFERENCE = "too_few_rows", "all_missing", "no_reference"
DRIFT_COLUMNS = (
    "snapshot_run_id",
    "comparison",
    "reference_run_id",
    "feature",
    "status",
    "psi",
    "ks_statistic",
    "ks_pvalue",
    "reference_rows",
    "current_rows",
    "reference_missing_share",
    "current_missing_share",
    "missing_share_change",
    "psi_warn",
    "psi_alert",
    "bins_json",
    "note",
    "computed_at",
)


def recent_training_rows(training: pd.DataFrame, days: int) -> pd.DataFrame:
    """The loans of the last `days` days of loan dates (relative to the newest loan, not to the run's day)."""
    if training.empty:
        return training
    dates = pd.to_datetime(training["loan_date"])
    return training[dates > dates.max() - pd.Timedelta(days=days)]


def level(psi_value: float, warn: float, alert: float) -> str:
    return ALERT if psi_value >= alert else WARN if psi_value >= warn else OK


def compare_feature(feature: str, reference: np.ndarray, current: np.ndarray, settings: MonitoringSettings) -> dict:
    """The drift row of one feature (without the snapshot's identifiers)."""
    limits = settings.thresholds(feature)
    row = {
        "feature": feature,
        "status": OK,
        "psi": None,
        "ks_statistic": None,
        "ks_pvalue": None,
        "reference_rows": len(reference),
        "current_rows": len(current),
        "reference_missing_share": None,
        "current_missing_share": None,
        "missing_share_change": None,
        "psi_warn": limits.warn,
        "psi_alert": limits.alert,
        "bins_json": None,
        "note": "",
    }
    if len(reference) < settings.min_rows or len(current) < settings.min_rows:
        row["status"] = TOO_FEW_ROWS
        row["note"] = (
            f"too few rows to compare: {len(reference):,} reference and {len(current):,} current "
            f"(monitoring.min_rows is {settings.min_rows:,})"
        )
        return row
    ref_missing, cur_missing = stats.missing_share(reference), stats.missing_share(current)
    row.update(
        reference_missing_share=ref_missing,
        current_missing_share=cur_missing,
        missing_share_change=cur_missing - ref_missing,
    )
    if ref_missing == 1.0 or cur_missing == 1.0:
        row["status"] = ALERT if cur_missing == 1.0 and ref_missing < 1.0 else ALL_MISSING
        side = (
            "both samples"
            if ref_missing == cur_missing == 1.0
            else "the current sample"
            if cur_missing == 1.0
            else "the reference"
        )
        row["note"] = f"{feature} is all missing in {side}: no distribution to compare"
        return row
    bins = stats.binned(reference, current, settings.bins)
    psi_value = stats.psi_of_shares(np.array(bins.reference), np.array(bins.current))
    statistic, pvalue = stats.ks(reference, current)
    row.update(
        psi=psi_value,
        ks_statistic=statistic,
        ks_pvalue=pvalue,
        status=level(psi_value, limits.warn, limits.alert),
        bins_json=json.dumps(bins.as_dict()),
    )
    return row


def compare(
    reference: pd.DataFrame | None, current: pd.DataFrame, settings: MonitoringSettings, why_no_reference: str = ""
) -> list[dict]:
    """One row per model feature; with no reference, every row is no_reference with the reason."""
    rows = []
    for feature in FEATURE_COLUMNS:
        cur = stats.as_array(current[feature].astype("float64"))
        if reference is None:
            limits = settings.thresholds(feature)
            rows.append(
                {
                    "feature": feature,
                    "status": NO_REFERENCE,
                    "psi": None,
                    "ks_statistic": None,
                    "ks_pvalue": None,
                    "reference_rows": 0,
                    "current_rows": len(cur),
                    "reference_missing_share": None,
                    "current_missing_share": stats.missing_share(cur) if len(cur) else None,
                    "missing_share_change": None,
                    "psi_warn": limits.warn,
                    "psi_alert": limits.alert,
                    "bins_json": None,
                    "note": why_no_reference,
                }
            )
            continue
        ref = stats.as_array(reference[feature].astype("float64"))
        rows.append(compare_feature(feature, ref, cur, settings))
    return rows
