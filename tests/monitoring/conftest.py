"""Fixtures of the monitoring tests: a lake of their own in the shared Spark session, real feature runs."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from configuration.settings import Settings
from features import job
from features.progress import Progress


def own_settings(spark_settings: Settings, root: Path, **sections) -> Settings:
    """The shared session's settings with a lake, state folder and Hive database of this test's own."""
    update = {
        "paths": spark_settings.paths.model_copy(update={"lake": str(root / "lake"), "state_dir": str(root / "state")}),
        "features": spark_settings.features.model_copy(update={"database": f"monitoring_{uuid.uuid4().hex[:8]}"}),
    }
    for name, values in sections.items():
        update[name] = getattr(spark_settings, name).model_copy(update=values)
    return spark_settings.model_copy(update=update)


def run_features(spark, settings: Settings, csv: Path, as_of: dt.date) -> dict:
    params = job.JobParams(input_uri=str(csv), as_of=as_of)
    return job.run(spark, settings, params, Progress("test", stream=open(os.devnull, "w")))


def shifted(raw: pd.DataFrame, years: int = 15, amount_factor: float = 3.0) -> pd.DataFrame:
    """The same loans by customers `years` older, of `amount_factor` times the amounts."""
    out = raw.copy()
    born = pd.to_datetime(out["birthday"]) - pd.DateOffset(years=years)
    out["birthday"] = born.dt.strftime("%Y-%m-%d")
    out["loan_amount"] = np.round(out["loan_amount"].astype(float) * amount_factor, 2).astype(str)
    return out
