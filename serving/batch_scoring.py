"""The one scoring step of batch scoring, shared by its two engines (serving.batch, serving.batch_arrow).

An Arrow batch of key columns then float32 feature columns (nulls are NaN, XGBoost's missing
value) becomes a batch of keys, `probability` (double), `label` (int) and `model_version`.

`scorer` builds the functions as closures on purpose: Spark pickles closures by value, so a
cluster's executors run them with pyarrow, numpy and xgboost only, without this project's code
(a module-level function would be pickled as a reference to this module). The imports are
inside for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

# A process-wide module (it survives from task to task in a reused Python worker, unlike
# the pickled function): the loaded Boosters, by model sha256.
WORKER_CACHE = "_sparkmaker_batch_boosters"


def output_names(keys: list[str]) -> list[str]:
    return [*keys, "probability", "label", "model_version"]


class Scorer(NamedTuple):
    booster: Callable[[], Any]  # the model as an xgboost.Booster, loaded once per process
    score_batch: Callable[[Any, Any], Any]  # (Arrow batch, Booster) -> scored Arrow batch
    score_batches: Callable[[Iterator[Any]], Iterator[Any]]  # mapInArrow's function


def scorer(
    model_bytes: Callable[[], bytes],
    model_sha256: str,
    keys: list[str],
    features: int,
    threshold: float,
    version: str,
    threads: int,
) -> Scorer:
    """The scoring functions of one model: one Arrow batch scored, and an iterator of them (mapInArrow's shape).

    model_bytes is called once per process at most (a Spark broadcast's value, or the bytes).
    """
    cache_name = WORKER_CACHE
    names = output_names(keys)
    version_bytes = version.encode()

    def booster():
        import sys
        import types

        import xgboost

        cache = sys.modules.get(cache_name)
        if cache is None:
            cache = sys.modules[cache_name] = types.ModuleType(cache_name)
        boosters = cache.__dict__.setdefault("boosters", {})
        loaded = boosters.get(model_sha256)
        if loaded is None:
            loaded = xgboost.Booster()
            loaded.load_model(bytearray(model_bytes()))
            boosters[model_sha256] = loaded
        loaded.set_param({"nthread": threads})
        return loaded

    def score_batch(batch, model):
        import numpy as np
        import pyarrow as pa

        rows = batch.num_rows
        matrix = np.empty((rows, features), dtype=np.float32)
        for index in range(features):
            matrix[:, index] = batch.column(len(keys) + index).to_numpy(zero_copy_only=False)
        probability = model.inplace_predict(matrix, validate_features=False).astype(np.float64)
        return pa.RecordBatch.from_arrays(
            [
                *(batch.column(index) for index in range(len(keys))),
                pa.array(probability, pa.float64()),
                pa.array((probability >= threshold).astype(np.int32), pa.int32()),
                # The one version string for every row, built from its buffers (no Python objects per row).
                pa.StringArray.from_buffers(
                    rows,
                    pa.py_buffer(np.arange(rows + 1, dtype=np.int32) * len(version_bytes)),
                    pa.py_buffer(version_bytes * rows),
                ),
            ],
            names=names,
        )

    def score_batches(batches):
        model = booster()
        for batch in batches:
            yield score_batch(batch, model)

    return Scorer(booster, score_batch, score_batches)
