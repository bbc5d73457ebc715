"""Probabilities to response bodies; encoders are data (`ENCODERS`, by media type).

The formats are the managed XGBoost container's: text/csv one value per line,
application/json {"predictions": [{"score": p}, ...]}. Values are float32 probabilities
written as Python writes the float (the container does the same via numpy's `tolist()`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from serving.content_types import CSV, JSON


def encode_csv(probabilities: Sequence[float]) -> bytes:
    if len(probabilities) == 1:
        return f"{probabilities[0]}\n".encode("ascii")
    return "".join(f"{p}\n" for p in probabilities).encode("ascii")


def encode_json(probabilities: Sequence[float]) -> bytes:
    return json.dumps({"predictions": [{"score": p} for p in probabilities]}).encode("ascii")


ENCODERS: dict[str, Callable[[Sequence[float]], bytes]] = {CSV: encode_csv, JSON: encode_json}


def encode(probabilities: Sequence[float], media_type: str) -> bytes:
    return ENCODERS[media_type](probabilities)
