"""Training benchmark: the training entry point on the feature job's output, next to the generator's ceiling.

    .venv/bin/python benchmarks/training_bench.py [--rows 777715] [--seed 7] [--work DIR] [--variants default auto]

1. writes the sample CSV and its truth file (`python -m features.sample_data`),
2. runs the feature job on it (`python -m features`) into a lake of its own,
3. runs the training entry point (`python -m training train`, the container contract, each
   run its own process so peak memory is its own) on that snapshot's training table, with
   the truth file as the `truth` channel, for each variant:
     default  the shipped hyperparameters
     auto     scale_pos_weight=auto (positives weighted by negatives/positives of the training part)
4. fits scikit-learn's HistGradientBoostingClassifier on the same split as a reference learner,

and prints wall time, peak RSS, ROC-AUC and the ceiling (the AUC of the true probabilities
on the same validation rows) side by side. Steps 1 and 2 are skipped when --work already
holds their output for the same rows and seed. Results also go to benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 60.0
TARGET_GAP = 0.02
VARIANTS = {"default": {}, "auto": {"scale_pos_weight": "auto"}}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SPARKMAKER_"))}
    env.update(PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1", **extra)
    return env


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB of that process, exit status), via wait4 on that one child."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024.0, child.returncode


def prepare(work: Path, rows: int, seed: int) -> dict:
    """CSV + truth + feature snapshot for (rows, seed); reused when already there."""
    stamp = work / f"prepared-{rows}-{seed}.json"
    if stamp.is_file():
        prepared = json.loads(stamp.read_text())
        if Path(prepared["training_uri"]).is_dir():
            print(f"reusing {prepared['training_uri']}")
            return prepared
    csv = work / f"loans-{rows}-{seed}.csv"
    lake = work / f"lake-{rows}-{seed}"
    subprocess.run(
        [sys.executable, "-m", "features.sample_data", "--rows", str(rows), "--seed", str(seed), "--out", str(csv)],
        cwd=ROOT,
        env=_env(),
        check=True,
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "features", "--input", str(csv), "--lake", str(lake), "--as-of", "2021-09-18"],
        cwd=ROOT,
        env=_env(SPARKMAKER_FEATURES__MATERIALIZE="false"),
        check=True,
    )
    feature_seconds = time.perf_counter() - started
    current = json.loads((lake / "credit_risk" / "CURRENT.json").read_text())
    manifest = json.loads(Path(current["manifest"].removeprefix("file://")).read_text())
    prepared = {
        "csv": str(csv),
        "truth": str(csv.with_name(csv.name[:-4] + ".truth.parquet")),
        "training_uri": manifest["outputs"]["training"]["uri"].removeprefix("file://"),
        "rows": manifest["outputs"]["training"]["rows"],
        "run_id": manifest["run_id"],
        "feature_job_seconds": round(feature_seconds, 1),
    }
    stamp.write_text(json.dumps(prepared, indent=2))
    return prepared


def train_variant(prepared: dict, name: str, hyperparameters: dict[str, str], work: Path, keep: bool = False) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=work))
    for folder in ("input/config", "input/data/truth", "model", "output/data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "input" / "data" / "train").symlink_to(prepared["training_uri"], target_is_directory=True)
    os.symlink(prepared["truth"], root / "input" / "data" / "truth" / "truth.parquet")
    hps = {"data_run_id": prepared["run_id"], "data_uri": prepared["training_uri"], **hyperparameters}
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    env = _env(
        SM_INPUT_DIR=str(root / "input"),
        SM_MODEL_DIR=str(root / "model"),
        SM_OUTPUT_DIR=str(root / "output"),
        OMP_WAIT_POLICY="PASSIVE",
    )
    seconds, peak_mb, status = run_measured([sys.executable, "-m", "training", "train"], env)
    if status != 0:
        raise SystemExit(f"training variant {name} failed: {(root / 'output' / 'failure').read_text().strip()}")
    metadata = json.loads((root / "model" / "model-metadata.json").read_text())
    if not keep:
        shutil.rmtree(root)
    return {
        "variant": name,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "roc_auc": metadata["metrics"]["roc_auc"],
        "ceiling_roc_auc": metadata["metrics"]["ceiling_roc_auc"],
        "pr_auc": metadata["metrics"]["pr_auc"],
        "log_loss": metadata["metrics"]["log_loss"],
        "rounds": metadata["hyperparameters"]["rounds_trained"],
        "rows_train": metadata["training_data"]["rows_train"],
        "rows_validation": metadata["training_data"]["rows_validation"],
        "validation_from": metadata["training_data"]["validation_from"],
        "model_dir": str(root / "model") if keep else None,
    }


REFERENCE = r"""
import json, sys, time
import numpy as np, pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from features.contract import FEATURE_COLUMNS
uri, cutoff, out = sys.argv[1], sys.argv[2], sys.argv[3]
frame = pd.read_parquet(uri)
later = frame["loan_date"] >= pd.Timestamp(cutoff).date()
x = frame[list(FEATURE_COLUMNS)].astype("float64")
started = time.perf_counter()
model = HistGradientBoostingClassifier(random_state=0).fit(x[~later], frame["status"][~later])
p = model.predict_proba(x[later])[:, 1]
open(out, "w").write(json.dumps({"fit_seconds": time.perf_counter() - started, "roc_auc": roc_auc_score(frame["status"][later], p)}))
"""


def reference(prepared: dict, cutoff: str, work: Path) -> dict:
    out = work / "reference.json"
    seconds, peak_mb, status = run_measured(
        [sys.executable, "-c", REFERENCE, prepared["training_uri"], cutoff, str(out)],
        _env(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE"),
    )
    if status != 0:
        raise SystemExit("the reference learner failed")
    figures = json.loads(out.read_text())
    return {
        "variant": "sklearn HistGradientBoosting (reference)",
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "roc_auc": figures["roc_auc"],
        "fit_seconds": round(figures["fit_seconds"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=777_715)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "training",
        help="folder for the CSV, the lake and the model directories (default: benchmarks/results/training)",
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["default", "auto"])
    parser.add_argument("--no-reference", action="store_true", help="skip the scikit-learn reference learner")
    parser.add_argument("--keep-models", action="store_true", help="keep each variant's /opt/ml tree under --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    load = os.getloadavg()
    prepared = prepare(args.work.resolve(), args.rows, args.seed)
    results = [
        train_variant(prepared, name, VARIANTS[name], args.work.resolve(), args.keep_models) for name in args.variants
    ]
    if not args.no_reference:
        results.append(reference(prepared, results[0]["validation_from"], args.work.resolve()))
    ceiling = results[0]["ceiling_roc_auc"]

    print()
    print(
        f"training on {prepared['rows']:,} rows ({results[0]['rows_train']:,} train / {results[0]['rows_validation']:,} "
        f"validation from {results[0]['validation_from']}); {os.cpu_count()} CPUs, load average before {load[0]:.1f}"
    )
    print(f"{'variant':<42} {'wall s':>7} {'peak MB':>8} {'ROC-AUC':>8} {'ceiling':>8} {'gap':>7} {'rounds':>7}")
    for row in results:
        gap = ceiling - row["roc_auc"]
        print(
            f"{row['variant']:<42} {row['seconds']:>7.1f} {row['peak_rss_mb']:>8} {row['roc_auc']:>8.4f} "
            f"{ceiling:>8.4f} {gap:>7.4f} {row.get('rounds', '-'):>7}"
        )
    default = results[0]
    verdict_time = "meets" if default["seconds"] < TARGET_SECONDS else "MISSES"
    verdict_auc = "meets" if ceiling - default["roc_auc"] <= TARGET_GAP else "MISSES"
    print(f"target: < {TARGET_SECONDS:.0f} s ({verdict_time}), AUC within {TARGET_GAP} of the ceiling ({verdict_auc})")

    out = ROOT / "benchmarks" / "results" / "training.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "load_before": load,
                "prepared": prepared,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
