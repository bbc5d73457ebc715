"""The registry's operations on MLflow (SQLite) beside the old index.json registry, same machine, same run.

    .venv/bin/python benchmarks/registry_bench.py [--versions 10]

Prints seconds per register, promote, rollback, versions() and model_dir() (a local copy
already there, as serving's swap uses it), and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _model(folder: Path):
    import numpy as np
    import xgboost

    from features.contract import FEATURE_COLUMNS
    from training import artifact

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, len(FEATURE_COLUMNS)))
    booster = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, label=(x[:, 0] > 0).astype(int)), 20)
    folder.mkdir(parents=True)
    artifact.write_booster(booster, folder)
    artifact.write_metadata(
        folder,
        {
            "threshold": 0.5,
            "metrics": {"roc_auc": 0.7},
            "hyperparameters": {"num_round": 20},
            "training_data": {"run_id": "bench", "uri": "/nowhere"},
            "code_version": "bench",
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    return artifact.pack(folder, folder.with_suffix(".tar.gz")), artifact.read_metadata(folder)


def _time(call, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat


def measure(registry, tar, metadata, versions: int) -> dict[str, float]:
    figures = {"register": _time(lambda: registry.register(tar, metadata), versions)}
    numbers = [str(v) for v in range(1, versions + 1)]
    cycle = iter(numbers * 2)
    figures["promote"] = _time(lambda: registry.promote(next(cycle)), versions)
    figures["rollback"] = _time(registry.rollback, min(3, versions - 1))
    figures["versions()"] = _time(registry.versions, 10)
    figures["model_dir (local copy)"] = _time(lambda: registry.model_dir("1"), 20)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()
    from training.mlflow_registry import MlflowRegistry
    from training.registry import LocalRegistry

    with tempfile.TemporaryDirectory() as tmp:
        tar, metadata = _model(Path(tmp) / "model")
        started = time.perf_counter()
        mlflow = MlflowRegistry(Path(tmp) / "mlflow")
        mlflow.versions()
        first = time.perf_counter() - started
        results = {
            "index.json (reference)": measure(LocalRegistry(Path(tmp) / "index"), tar, metadata, args.versions),
            "MLflow on SQLite": measure(mlflow, tar, metadata, args.versions),
        }
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; MLflow import + new SQLite store: {first:.2f} s"
    )
    names = list(next(iter(results.values())))
    print(f"{'seconds per call':<24}" + "".join(f"{name:>26}" for name in results))
    for op in names:
        print(f"{op:<24}" + "".join(f"{figures[op]:>26.4f}" for figures in results.values()))


if __name__ == "__main__":
    main()
