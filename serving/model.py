"""A loaded, verified and probed model: what one worker predicts with.

Loading checks the model file's sha256 against its metadata (training.artifact), loads the
Booster, compiles the fast path for small requests (serving.tree_eval) and probes both: a
model that does not answer is refused here, before any swap, and a fast path that
disagrees with XGBoost on the probe rows is dropped (XGBoost then answers everything).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from configuration.errors import UserError
from serving.decoder import Rows
from serving.tree_eval import CompiledTrees, compile_trees
from training import artifact

log = logging.getLogger("serving")

_PROBE_ROWS = 512


class ModelRefused(UserError):
    """A model that cannot be served: missing, corrupt, or not answering its probe."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a registry version, or a model directory."""

    kind: str  # "registry" or "dir"
    version: str | None = None  # registry version
    path: str | None = None  # model directory

    def describe(self) -> str:
        return f"registry version {self.version}" if self.kind == "registry" else f"model directory {self.path}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "path": self.path}

    @classmethod
    def from_json(cls, data: Any) -> "ModelSource":
        if not isinstance(data, dict) or data.get("kind") not in ("registry", "dir"):
            raise ValueError("not a model source")
        return cls(kind=data["kind"], version=data.get("version"), path=data.get("path"))


def variant_name(version: str) -> str:
    """The SageMaker production variant name of a model version (what InvokedProductionVariant reports)."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", version).strip("-") or "unknown"
    return f"version-{cleaned}"[:63]


@dataclass(frozen=True)
class LoadedModel:
    version: str
    source: ModelSource
    model_dir: Path
    metadata: dict[str, Any]
    feature_names: tuple[str, ...]
    threshold: float
    sha256: str
    booster: Any  # xgboost.Booster
    fast: CompiledTrees | None
    fast_max_rows: int  # requests of at most this many rows are answered by `fast` (0: never)
    loaded_at: str
    load_seconds: float
    # Response headers, computed once per model rather than per request.
    headers: dict[str, str] = field(default_factory=dict)
    runtime_headers: dict[str, str] = field(default_factory=dict)
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # the same, as ASGI wants them
    raw_runtime_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def predict(self, rows: Rows) -> list[float]:
        """Probabilities of rows of float32 values in feature_names order, as float32 values in Python floats."""
        if len(rows) <= self.fast_max_rows:
            return self.fast.predict_rows(rows)  # type: ignore[union-attr]
        matrix = np.array(rows, dtype=np.float32)
        return self.booster.inplace_predict(matrix, validate_features=False).astype(np.float32, copy=False).tolist()

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source.as_json(),
            "model_sha256": self.sha256,
            "threshold": self.threshold,
            "feature_names": list(self.feature_names),
            "loaded_at": self.loaded_at,
            "fast_path": self.fast is not None,
            "fast_path_max_rows": self.fast_max_rows,
            "fast_path_in_c": self.fast is not None and self.fast.walk is not None,  # serving/ensemble.c
            "training_run_id": (self.metadata.get("training_data") or {}).get("run_id"),
        }


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def probe_rows(booster: Any, width: int, rows: int = _PROBE_ROWS) -> np.ndarray:
    """Rows that exercise the model: values on, just below and just above its split thresholds, and missing."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 50, size=(rows, width)).astype(np.float32)
    for column, values in enumerate(_split_values(booster, width)):
        if values.size:
            candidates = np.concatenate(
                [values, np.nextafter(values, np.float32(-np.inf)), np.nextafter(values, np.float32(np.inf))]
            )
            matrix[:, column] = rng.choice(candidates, size=rows)
    matrix[rng.random(size=matrix.shape) < 0.15] = np.nan
    matrix[0, :] = np.nan  # a row with every value missing must still get an answer
    return matrix


def _split_values(booster: Any, width: int) -> list[np.ndarray]:
    values: list[list[float]] = [[] for _ in range(width)]
    try:
        trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
        for tree in trees:
            for left, feature, condition in zip(tree["left_children"], tree["split_indices"], tree["split_conditions"]):
                if left != -1 and 0 <= feature < width:
                    values[feature].append(condition)
    except (KeyError, TypeError, ValueError):
        pass
    return [np.unique(np.asarray(v, dtype=np.float32)) for v in values]


def load_model(
    model_dir: Path, source: ModelSource, version: str | None = None, *, compile_fast_path: bool = True
) -> LoadedModel:
    """Verify, load, compile and probe; raise ModelRefused with a one-line reason on any failure.

    compile_fast_path=False: no compiled evaluator for small requests (serving.tree_eval, ~0.15 s
    for the default model), for callers that score large batches only."""
    started = time.perf_counter()
    model_dir = Path(model_dir)
    try:
        metadata = artifact.verify_model_dir(model_dir)  # the sha256 check, before anything is loaded
        booster = artifact.load_booster(model_dir)
    except UserError as exc:
        raise ModelRefused(str(exc)) from None
    features = tuple(metadata["feature_names"])
    if booster.num_features() != len(features):
        raise ModelRefused(
            f"{model_dir}: the booster takes {booster.num_features()} features, its metadata lists {len(features)}: retrain the model"
        )
    # One thread per worker: requests are small and the workers already use the cores.
    booster.set_param({"nthread": 1})
    sha256 = str(metadata["model_sha256"])
    label = version or f"sha256-{sha256[:12]}"

    probe = probe_rows(booster, len(features))
    try:
        reference = booster.inplace_predict(probe, validate_features=False)
    except Exception as exc:  # the C library's errors are not a fixed type
        raise ModelRefused(f"{model_dir}: the model fails its probe prediction ({str(exc).splitlines()[0]})") from None
    reference = np.asarray(reference)
    if (
        reference.shape != (probe.shape[0],)
        or not np.all(np.isfinite(reference))
        or reference.min() < 0
        or reference.max() > 1
    ):
        raise ModelRefused(
            f"{model_dir}: the model's probe predictions are not one probability per row (shape {reference.shape}): "
            "is it a binary:logistic model?"
        )
    fast = compile_trees(bytes(booster.save_raw("json"))) if compile_fast_path else None
    if fast is not None:
        if fast.num_features != len(features):
            fast = None
        else:
            # Bit for bit: a row's probability must not depend on the size of its request.
            answers = np.asarray(fast.predict_rows(probe.tolist()), dtype=np.float32)
            differing = int(np.count_nonzero(answers != reference.astype(np.float32)))
            if differing:
                log.warning(
                    "model %s: fast path differs from XGBoost on %d of %d probe rows; using XGBoost only",
                    label,
                    differing,
                    len(probe),
                )
                fast = None

    threshold = float(metadata["threshold"])
    custom = f"model_version={label}; threshold={threshold!r}"
    headers = {"X-Model-Version": label, "X-Amzn-SageMaker-Custom-Attributes": custom}
    runtime_headers = {**headers, "x-Amzn-Invoked-Production-Variant": variant_name(label)}
    return LoadedModel(
        version=label,
        source=source,
        model_dir=model_dir,
        metadata=metadata,
        feature_names=features,
        threshold=threshold,
        sha256=sha256,
        booster=booster,
        fast=fast,
        fast_max_rows=fast.max_rows if fast is not None else 0,
        loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        load_seconds=time.perf_counter() - started,
        headers=headers,
        runtime_headers=runtime_headers,
        raw_headers=_raw(headers),
        raw_runtime_headers=_raw(runtime_headers),
    )
