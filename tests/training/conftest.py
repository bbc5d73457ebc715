"""Fixtures of the training tests: tiny real models, built with XGBoost, in the artifact format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.contract import FEATURE_COLUMNS


def _make_model_dir(path: Path, seed: int = 0, threshold: float = 0.5, roc_auc: float = 0.75, run_id: str = "run-1") -> Path:
    import xgboost

    from training import artifact

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(FEATURE_COLUMNS)))
    y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "tree_method": "hist", "seed": seed},
        xgboost.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS)),
        num_boost_round=3,
    )
    path.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(booster, path)
    artifact.write_metadata(
        path,
        {
            "threshold": threshold,
            "metrics": {"roc_auc": roc_auc, "pr_auc": 0.5, "log_loss": 0.4, "brier": 0.1, "precision": 0.5,
                        "recall": 0.5, "confusion_matrix": {"tp": 1, "fp": 1, "tn": 1, "fn": 1}, "ceiling_roc_auc": None},
            "hyperparameters": {"num_round": 3},
            "training_data": {"run_id": run_id, "uri": "/lake/x", "rows_train": 150, "rows_validation": 50, "split": "test"},
            "code_version": "unknown",
            "created_at": "2024-01-01T00:00:00Z",
        },
    )
    return path


@pytest.fixture
def make_model_dir():
    """Factory: make_model_dir(path, seed=0, threshold=0.5, roc_auc=0.75, run_id="run-1") -> path."""
    return _make_model_dir


@pytest.fixture
def model_tar(tmp_path, make_model_dir):
    """Factory: model_tar(seed=0, **kw) -> (tar path, metadata) of a fresh tiny model."""
    from training import artifact

    def build(seed: int = 0, **kwargs):
        directory = make_model_dir(tmp_path / f"model-{seed}-{len(list(tmp_path.iterdir()))}", seed=seed, **kwargs)
        tar = artifact.pack(directory, directory.with_suffix(".tar.gz"))
        return tar, artifact.read_metadata(directory)

    return build
