"""Soak: the local stack under steady open-loop load while models are promoted and feature snapshots switched.

What it does, in a scratch folder of its own (own lake, state and free ports; the platform's are untouched):
  1. generates a sample CSV and starts the stack on it (`python -m stack start`, what ./start.sh runs);
  2. trains a second model, so that promotions alternate between two registered versions;
  3. runs `--minutes` of open-loop load (benchmarks/loadgen.py: GET /predict/{random customer}
     at `--rate` per second, latency from the scheduled time) in 10-second rounds, while
       - every `--promote-every` seconds the other model is promoted (`python -m training promote`),
       - every `--switch-every` seconds the feature job runs again (a new snapshot, its Hive
         tables and online store switched while the API serves; the same CSV, so that every
         customer the load asks for exists in every snapshot: another file would answer 404s);
       - once, at `--outage-at` (a share of the run), the model server is killed (SIGKILL to its
         process group, as a crash would) and left down `--outage-seconds`, then brought back by
         `python -m stack start`, what a person runs: while it is down the API must answer 503
         with Retry-After, and nothing else;
  4. samples the RSS of every service (with its children) every 10 s;
  5. checks: zero failed requests outside the outage (in rounds overlapping it only 503s with
     Retry-After), flat memory (last fifth's median within 10% or 40 MB of the first fifth's,
     per service), and a prediction log holding exactly the requests answered 200.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 40] [--rows 20000] [--outage-seconds 30] [--keep]

Prints one line per round and a summary; exits 1 when a check fails. Results go to
benchmarks/results/soak-<time>.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configuration.network import free_port  # noqa: E402
from loadgen import open_loop  # noqa: E402  (benchmarks/, the script's folder)
import process_memory  # noqa: E402

SERVICES = ("metastore", "mlflow", "model-server", "api", "thrift-server", "airflow")


def say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Soak:
    def __init__(self, folder: Path, rows: int, airflow: bool) -> None:
        self.folder = folder
        self.rows = rows
        self.airflow = airflow
        self.ports = {name: free_port() for name in ("api", "serving", "metastore", "thrift", "mlflow", "airflow")}
        self.env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARKMAKER_PATHS__LAKE": str(folder / "lake"),
            "SPARKMAKER_PATHS__STATE_DIR": str(folder / "state"),
            "SPARKMAKER_API__PORT": str(self.ports["api"]),
            "SPARKMAKER_SERVING__PORT": str(self.ports["serving"]),
            "SPARKMAKER_STACK__METASTORE_PORT": str(self.ports["metastore"]),
            "SPARKMAKER_STACK__THRIFT_PORT": str(self.ports["thrift"]),
            "SPARKMAKER_MLFLOW__PORT": str(self.ports["mlflow"]),
            "SPARKMAKER_AIRFLOW__PORT": str(self.ports["airflow"]),
            # Airflow runs (the whole stack is soaked) but only when triggered: the soak makes the changes itself.
            "SPARKMAKER_AIRFLOW__SCHEDULE": "none",
        }
        # What the stack hands its own stages: the shared metastore, the stack's model server.
        self.stage_env = {
            **self.env,
            "SPARKMAKER_METASTORE__KIND": "thrift",
            "SPARKMAKER_METASTORE__URIS": f"thrift://127.0.0.1:{self.ports['metastore']}",
        }
        self.csv = folder / "loans.csv"
        self.events: list[dict] = []
        self.failures: list[str] = []
        self.probes = 0  # the soak's own GETs that check a change is served
        self.outage: tuple[float, float] | None = None  # monotonic (killed, serving again)

    def run(self, command: list[str], what: str, env: dict | None = None, timeout: float = 1800) -> str:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            env=env or self.stage_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
        return proc.stdout

    def setup(self) -> None:
        self.run(
            [
                sys.executable,
                "-m",
                "features.sample_data",
                "--rows",
                str(self.rows),
                "--seed",
                "7",
                "--out",
                str(self.csv),
            ],
            "sample data",
        )
        started = time.monotonic()
        # `python -m stack`, what ./start.sh runs, without its venv check: the soak already runs in the venv.
        start = [sys.executable, "-m", "stack", "start", "--input", str(self.csv)]
        out = self.run(start + (["--no-scheduler"] if not self.airflow else []), "start", env=self.env)
        say(f"stack started in {time.monotonic() - started:.0f} s")
        self.key = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("API key: "))
        self.run([sys.executable, "-m", "training", "local", "--no-truth"], "training a second model")
        self.versions = self.registered_versions()
        say(f"models registered: {', '.join(self.versions)} (production first)")
        self.customers = self.customer_ids()

    def registered_versions(self) -> list[str]:
        code = (
            "from configuration.settings import load_settings; from training.registry import open_registry; "
            "r = open_registry(load_settings()); "
            "print(r.alias() or '-', ' '.join(v.version for v in r.versions()))"
        )
        production, *versions = self.run([sys.executable, "-c", code], "listing models").split()
        # Production first, so that the first promotion (versions[1]) really changes the model served.
        two = versions[-2:]
        return sorted(two, key=lambda v: v != production)

    def settings(self):
        """The settings the soaked stack runs with (its scratch lake, state and ports)."""
        from configuration.settings import load_settings

        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SPARKMAKER_")})
        return load_settings()

    def customer_ids(self) -> list[int]:
        import pyarrow.parquet as pq

        from features import lake

        manifest = lake.read_manifest(self.settings())
        return pq.read_table(manifest["outputs"]["latest"]["uri"], columns=["id"]).column("id").to_pylist()

    def pid_of(self, name: str) -> int | None:
        try:
            return json.loads((self.folder / "state" / "pids" / f"{name}.pid").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def rss_mb(self) -> dict[str, float]:
        figures = {}
        for name in SERVICES:
            pid = self.pid_of(name)
            if pid is None:  # not started: psutil.Process(None) would be this very process
                figures[name] = float("nan")
                continue
            try:
                figures[name] = process_memory.resident(process_memory.tree(psutil.Process(pid))).mb
            except (psutil.Error, TypeError, ValueError):
                figures[name] = float("nan")
        return figures

    def log_rows(self) -> int:
        from api.prediction_log import sqlite_log_path

        path = sqlite_log_path(self.settings())  # where the stack's API writes it
        if not path.exists():
            return 0
        with sqlite3.connect(path, timeout=10) as conn:
            return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]

    def answer(self) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['api']}/predict/{self.customers[0]}",
            headers={"Authorization": f"Bearer {self.key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.probes += 1  # answered and logged like the load's requests: counted in the log check
            return json.loads(response.read())

    def wait_served(self, done, timeout: float = 60.0) -> float:
        """Seconds until the API's answers show a change (the new model, the new snapshot); fails after `timeout`."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if done(self.answer()):
                return round(time.monotonic() - began, 1)
            time.sleep(0.5)
        raise RuntimeError(f"the API did not show the change within {timeout:g} s")

    def model_server_outage(self, seconds: float, elapsed: float) -> None:
        """Kill the model server as a crash would, keep it down, bring it back the way a person does."""
        pid = self.pid_of("model-server")
        if pid is None:
            raise RuntimeError("no model server PID file: cannot stage the outage")
        killed = time.monotonic()
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        say(f"outage: model server (pid {pid}) killed, down for {seconds:g} s")
        time.sleep(seconds)
        again = [sys.executable, "-m", "stack", "start"] + (["--no-scheduler"] if not self.airflow else [])
        self.run(again, "stack start after the outage", env=self.env)
        self.outage = (killed, time.monotonic())
        took = self.outage[1] - killed
        self.events.append(
            {"at_s": round(elapsed), "event": "model server killed and restarted", "seconds": round(took)}
        )
        say(f"outage over: model server back after {took:.0f} s")

    def changes(
        self, stop: threading.Event, promote_every: float, switch_every: float, outage_at: float, outage_seconds: float
    ) -> None:
        """Promotions, snapshot switches and the one outage on their own clocks, while the load runs."""
        begin = time.monotonic()
        promoted, promotions, switched, outage_done = 0, 0, 0, outage_seconds <= 0
        while not stop.is_set():
            elapsed = time.monotonic() - begin
            try:
                if not outage_done and elapsed >= outage_at:
                    outage_done = True
                    self.model_server_outage(outage_seconds, elapsed)
                    continue
                if elapsed >= (promoted + 1) * promote_every:
                    promoted = int(elapsed // promote_every)  # no burst of promotions after a long feature run
                    promotions += 1  # alternation by count: a long step in between must not skip the other model
                    version = self.versions[promotions % len(self.versions)]
                    self.run([sys.executable, "-m", "training", "promote", version], "promote")
                    served = self.wait_served(lambda answer: answer["model_version"] == version)
                    self.events.append(
                        {"at_s": round(elapsed), "event": f"promoted {version}", "served_after_s": served}
                    )
                    say(f"promoted model {version}, served after {served} s")
                if elapsed >= (switched + 1) * switch_every:
                    switched = int(elapsed // switch_every)
                    took = time.monotonic()
                    before = self.answer()["feature_snapshot"]["run_id"]
                    self.run([sys.executable, "-m", "features", "--input", str(self.csv)], "feature job")
                    self.wait_served(lambda answer: answer["feature_snapshot"]["run_id"] != before)
                    self.events.append(
                        {"at_s": round(elapsed), "event": "new snapshot", "seconds": round(time.monotonic() - took)}
                    )
                    say(f"new snapshot published and materialized in {time.monotonic() - took:.0f} s")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                # Recorded and failed at the end, but the changes go on: one bad step must not end them.
                self.failures.append(f"{type(exc).__name__}: {exc}")
                say(f"change failed: {exc}")
            stop.wait(2)

    def load(
        self,
        minutes: float,
        rate: float,
        connections: int,
        promote_every: float,
        switch_every: float,
        outage_at: float,
        outage_seconds: float,
    ) -> dict:
        request_head = f"Authorization: Bearer {self.key}\r\nHost: 127.0.0.1\r\n\r\n".encode()

        def make_request() -> bytes:
            return f"GET /predict/{random.choice(self.customers)} HTTP/1.1\r\n".encode() + request_head

        rows_before = self.log_rows()
        stop = threading.Event()
        changer = threading.Thread(
            target=self.changes, args=(stop, promote_every, switch_every, outage_at, outage_seconds), daemon=True
        )
        changer.start()
        rounds, memory = [], []
        deadline = time.monotonic() + minutes * 60
        try:
            while time.monotonic() < deadline:
                began = time.monotonic()
                result = asyncio.run(open_loop("127.0.0.1", self.ports["api"], make_request, rate, 10, connections))
                result["window"] = (began, time.monotonic())
                rss = self.rss_mb()
                rounds.append(result)
                memory.append(rss)
                say(
                    f"{result['requests']} requests, {result['errors']} failed {result['statuses']}, "
                    f"p99 {result['p99_ms']:.1f} ms, "
                    f"max {result['max_ms']:.0f} ms; RSS MB " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items())
                )
        finally:
            stop.set()
            changer.join(timeout=1800)
        time.sleep(3)  # the log writer flushes every 200 ms
        answered = sum(r["requests"] - r["errors"] for r in rounds)
        during = [r for r in rounds if self.overlaps_outage(r["window"])]
        for r in rounds:
            r["during_outage"] = r in during
            r["window"] = [round(t - rounds[0]["window"][0], 1) for t in r["window"]]
        documented = sum(r["statuses"].get(503, 0) - r["unavailable_without_retry_after"] for r in during)
        return {
            "rounds": rounds,
            "memory": memory,
            "answered": answered,
            "failed": sum(r["errors"] for r in rounds) - documented,
            "outage_503": documented,
            "outage_rounds": len(during),
            "log_rows": self.log_rows() - rows_before,
            "probes": self.probes,
        }

    def overlaps_outage(self, window: tuple[float, float]) -> bool:
        # One round on either side: the restart's health wait ends before the last 503 is counted.
        return self.outage is not None and window[0] <= self.outage[1] + 1 and window[1] >= self.outage[0] - 1

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "stack", "stop"], cwd=ROOT, env=self.env, capture_output=True, timeout=300
        )


def memory_growth(memory: list[dict[str, float]]) -> dict[str, dict]:
    fifth = max(1, len(memory) // 5)
    verdicts = {}
    for name in SERVICES:
        if all(m[name] != m[name] for m in memory):  # NaN throughout: not started (Airflow with --no-airflow)
            continue
        # A sample taken while a service was down (the outage) is NaN: the medians skip it.
        first = statistics.median(m[name] for m in memory[:fifth] if m[name] == m[name])
        last = statistics.median(m[name] for m in memory[-fifth:] if m[name] == m[name])
        verdicts[name] = {
            "first_mb": round(first, 1),
            "last_mb": round(last, 1),
            "flat": last - first <= max(40.0, 0.10 * first),
        }
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (default 40)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of each sample CSV (default 20,000)")
    parser.add_argument("--promote-every", type=float, default=180.0, help="seconds between promotions (default 180)")
    parser.add_argument(
        "--switch-every", type=float, default=300.0, help="seconds between snapshot switches (default 300)"
    )
    parser.add_argument(
        "--outage-at", type=float, default=0.5, help="when the model server is killed, as a share of the run (0.5)"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=30.0, help="how long it stays down (default 30; 0: no outage)"
    )
    parser.add_argument(
        "--no-airflow",
        action="store_true",
        help="start the stack without Airflow (start.sh --no-scheduler): on a loaded machine its 300 s health wait can fail",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (and leave the stack running)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sparkmaker-soak-"))
    os.chmod(folder, 0o755)  # the SQL server's unprivileged user reads the lake
    soak = Soak(folder, args.rows, airflow=not args.no_airflow)
    say(f"scratch folder {folder}, ports {soak.ports}; load {load_line(args)}")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        soak.setup()
        result = soak.load(
            args.minutes,
            args.rate,
            args.connections,
            args.promote_every,
            args.switch_every,
            args.outage_at * args.minutes * 60,
            args.outage_seconds,
        )
    finally:
        if not args.keep:
            soak.stop()
    growth = memory_growth(result["memory"])
    checks = {
        "zero failed requests (but the outage's 503s with Retry-After)": result["failed"] == 0,
        "the outage was answered with 503s": args.outage_seconds <= 0 or result["outage_503"] > 0,
        "flat memory in every process": all(v["flat"] for v in growth.values()),
        "prediction log holds exactly the requests answered": result["log_rows"]
        == result["answered"] + result["probes"],
        "every promotion and switch succeeded": not soak.failures,
    }
    latencies = [r["p99_ms"] for r in result["rounds"]]
    summary = {
        "started_at": started_at,
        "minutes": args.minutes,
        "rate": args.rate,
        "connections": args.connections,
        "rows": args.rows,
        "requests": sum(r["requests"] for r in result["rounds"]),
        "failed": result["failed"],
        "outage_503": result["outage_503"],
        "outage_rounds": result["outage_rounds"],
        "log_rows": result["log_rows"],
        "probes": result["probes"],
        "worst_round_p99_ms": max(latencies) if latencies else None,
        "median_round_p99_ms": statistics.median(latencies) if latencies else None,
        "memory": growth,
        "events": soak.events,
        "change_failures": soak.failures,
        "load_average": os.getloadavg(),
        "checks": checks,
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({**summary, "rounds": result["rounds"], "rss": result["memory"]}, indent=1))
    say(json.dumps(summary))
    for name, ok in checks.items():
        say(f"{'PASS' if ok else 'FAIL'}: {name}")
    say(f"results in {out}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(checks.values()) else 1


def load_line(args) -> str:
    return (
        f"{args.rate:g} req/s for {args.minutes:g} min over {args.connections} connections, promotion every "
        f"{args.promote_every:g} s, snapshot switch every {args.switch_every:g} s, model server down "
        f"{args.outage_seconds:g} s at {args.outage_at:.0%} of the run"
    )


if __name__ == "__main__":
    sys.exit(main())
