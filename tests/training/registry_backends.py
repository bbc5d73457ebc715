"""How the registry tests build each backend, in this process or in a child (the concurrency tests).

A spec is JSON: {"kind": "mlflow" | "index", "root": DIR, "uri": tracking URI, "name": registered model}.
"""

from __future__ import annotations

import json
from pathlib import Path


def build(spec: dict | str):
    spec = json.loads(spec) if isinstance(spec, str) else spec
    if spec["kind"] == "index":
        from training.registry import LocalRegistry

        return LocalRegistry(Path(spec["root"]))
    from training.mlflow_registry import MlflowRegistry

    return MlflowRegistry(
        Path(spec["root"]),
        spec["uri"],
        artifact_location=str(Path(spec["root"]) / "artifacts"),
        experiment=f"exp-{spec['name']}",
        model_name=spec["name"],
    )
