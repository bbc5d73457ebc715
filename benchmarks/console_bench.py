"""Console lookup and explained-prediction latency, beside the plain prediction measured in the same run.

What runs: the model server (`python -m serving`, a synthetic model shaped as training's
defaults make it: 240 trees of depth 2) and the API with the console, in one uvicorn
process, on a lake snapshot of `--customers` customers (default 36,500, the size of the
real latest table) in a SQLite online store. One client, one request at a time, random
known ids, in rounds that alternate the three kinds so that other load on a shared machine
hits each alike:
  - plain      GET /predict/{id}                   (the reference)
  - explained  GET /predict/{id}?explain=true     (TreeSHAP in the model server, reasons)
  - console    GET /console/customer?id={id}       (explained + percentiles + the page)
and the console's first lookup of a snapshot, which reads the population once.

    .venv/bin/python benchmarks/console_bench.py [--requests 300] [--customers 36500]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--customers", type=int, default=36_500)
    args = parser.parse_args()
    os.environ.setdefault("SPARKMAKER_CONFIG", str(REPO / "configuration" / "sparkmaker.toml"))

    import httpx

    from api.main import create_app
    from features.online.materialize import materialize
    from tests.api.conftest import API_KEY, AS_OF, RUN_ID, api_settings, serve_app, start_model_server
    from tests.online.conftest import feature_rows, publish_lake_snapshot
    from tests.serving.conftest import make_model_dir

    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    customers = list(range(5_000_000, 5_000_000 + args.customers))
    publish_lake_snapshot(work / "lake", RUN_ID, AS_OF, feature_rows(customers))
    model = make_model_dir(work / "model", seed=7, rounds=240, depth=2, threshold=0.2)
    server = start_model_server(work / "serving", model)
    settings = api_settings(
        work,
        {"kind": "sqlite", "sqlite_path": str(work / "online.sqlite"), "write_batch_rows": 5000},
        {"prediction_log": "sqlite", "prediction_log_sqlite": str(work / "state" / "log.sqlite")},
        server.url,
    )
    materialize(settings, RUN_ID)
    api = serve_app(create_app(settings))
    try:
        client = httpx.Client(base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"})
        client.post("/console/sign-in", data={"key": API_KEY})
        kinds = {
            "plain": lambda c: f"/predict/{c}",
            "explained": lambda c: f"/predict/{c}?explain=true",
            "console": lambda c: f"/console/customer?id={c}",
        }
        started = time.perf_counter()
        assert client.get(kinds["console"](customers[0])).status_code == 200
        first = (time.perf_counter() - started) * 1000
        times: dict[str, list[float]] = {k: [] for k in kinds}
        rng = random.Random(7)
        for _ in range(20):  # warm-up
            for path in kinds.values():
                client.get(path(rng.choice(customers)))
        for _ in range(args.requests):
            for kind, path in kinds.items():
                started = time.perf_counter()
                answer = client.get(path(rng.choice(customers)))
                times[kind].append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, answer.text[:200]
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at the end; {args.customers:,} customers, model 240 trees depth 2"
        )
        print(f"console's first lookup of the snapshot (reads the population): {first:.1f} ms")
        print("kind       |  p50 ms |  p99 ms | mean ms | vs plain (p50)")
        base = statistics.median(times["plain"])
        for kind, values in times.items():
            p50 = statistics.median(values)
            print(
                f"{kind:10} | {p50:7.2f} | {percentile(values, 0.99):7.2f} | {statistics.mean(values):7.2f} | {p50 / base:5.2f}x"
            )
        client.close()
    finally:
        api.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
