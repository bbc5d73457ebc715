"""Probabilities to response bodies; encoders are data (`ENCODERS`, by media type).

The formats are the managed XGBoost container's: text/csv one value per line,
application/json {"predictions": [{"score": p}, ...]}. Values are float32 probabilities
written as Python writes the float (the container does the same via `tolist()`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from serving.content_types import CSV, JSON


def encode_csv(probabilities: np.ndarray) -> bytes:
    values = probabilities.tolist()
    if len(values) == 1:
        return f"{values[0]}\n".encode("ascii")
    return "".join(f"{p}\n" for p in values).encode("ascii")


def encode_json(probabilities: np.ndarray) -> bytes:
    return json.dumps({"predictions": [{"score": p} for p in probabilities.tolist()]}).encode("ascii")


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {CSV: encode_csv, JSON: encode_json}


def encode(probabilities: np.ndarray, media_type: str) -> bytes:
    return ENCODERS[media_type](probabilities)
