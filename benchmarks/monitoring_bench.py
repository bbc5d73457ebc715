"""Monitoring benchmark: drift of a 777,715-row reference against a 36,500-row snapshot, beside the feature run it follows.

    .venv/bin/python benchmarks/monitoring_bench.py [--rows 777715] [--repeat 3] [--keep DIR]

In one temporary lake, in this order:
  features    python -m features on the generated CSV (the run drift follows), wall time
              and the job's own stage times from its manifest
  training    python -m training local --no-truth (a production model, so both comparisons run)
  core        read the reference's training table (777,715 rows) and the snapshot's latest
              table (36,500 rows) from Parquet, and compute PSI, KS and missing shares of the
              five features (monitoring.feature_drift.compare): the issue's sizes; median of --repeat after one
              untimed warm-up (imports, file cache)
  step        monitoring.step.drift_step in this process without Hive registration (both
              comparisons, prediction drift and realized quality on an empty log)
  cli         python -m monitoring drift: the same plus the JVM start and the Hive tables
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = "2021-09-18"


def timed_run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=777_715, help="rows of the generated CSV (default %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of the core computation (default %(default)s)"
    )
    parser.add_argument("--keep", type=Path, help="keep the lake in this folder instead of a temporary one")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="sparkmaker-monitoring-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARKMAKER_PATHS__LAKE": str(work / "lake"),
        "SPARKMAKER_PATHS__STATE_DIR": str(work / "state"),
        "SPARKMAKER_FEATURES__MATERIALIZE": "false",
        "SPARKMAKER_CONFIG": str(ROOT / "configuration" / "sparkmaker.toml"),
    }
    py = sys.executable
    csv = work / "loans.csv"
    load_before = os.getloadavg()
    try:
        timed_run([py, "-m", "features.sample_data", "--rows", str(args.rows), "--seed", "7", "--out", str(csv)], env)
        feature_seconds = timed_run([py, "-m", "features", "--input", str(csv), "--as-of", AS_OF], env)
        timed_run([py, "-m", "training", "local", "--no-truth"], env)

        os.environ.update({k: v for k, v in env.items() if k.startswith("SPARKMAKER_")})
        from configuration.settings import load_settings
        from features import lake
        from features.contract import FEATURE_COLUMNS
        from monitoring import feature_drift, store
        from monitoring.step import drift_step

        settings = load_settings()
        manifest = lake.read_manifest(settings)
        columns = list(FEATURE_COLUMNS)
        core, sizes = [], None
        for attempt in range(args.repeat + 1):  # the first, untimed, imports scipy and warms the file cache
            started = time.perf_counter()
            reference = store.read_columns(settings, manifest["outputs"]["training"]["uri"], columns)
            current = store.read_columns(settings, manifest["outputs"]["latest"]["uri"], columns)
            rows = feature_drift.compare(reference, current, settings.monitoring)
            if attempt:
                core.append(time.perf_counter() - started)
            sizes = (len(reference), len(current), {r["feature"]: round(r["psi"], 4) for r in rows})

        quiet = settings.model_copy(
            update={"monitoring": settings.monitoring.model_copy(update={"register_hive": False})}
        )
        started = time.perf_counter()
        outcome = drift_step(quiet, manifest["run_id"])
        step_seconds = time.perf_counter() - started
        cli_seconds = timed_run([py, "-m", "monitoring", "drift"], env)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    stages = manifest.get("stage_seconds", {})
    print(f"machine: {os.cpu_count()} cores, load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    print(
        f"feature run (python -m features, {manifest['rows_in']:,} rows): {feature_seconds:.1f} s wall; stages "
        + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    )
    print(
        f"core drift: {sizes[0]:,}-row reference against {sizes[1]:,}-row snapshot, 5 features: "
        f"median {statistics.median(core):.2f} s of {args.repeat} (min {min(core):.2f} s); PSI {json.dumps(sizes[2])}"
    )
    print(f"drift_step in process (both comparisons, no Hive): {step_seconds:.2f} s; {outcome.summary}")
    print(f"python -m monitoring drift (JVM start + Hive tables included): {cli_seconds:.1f} s")
    print(
        f"ratio: core drift / feature run = {statistics.median(core) / feature_seconds:.1%}; "
        f"CLI drift step / feature run = {cli_seconds / feature_seconds:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
