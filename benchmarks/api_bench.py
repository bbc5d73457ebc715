"""Prediction API speed and memory, beside the two-hop HTTP floor measured in the same run.

What runs (every server is a separate process pinned to CPU 0, the load generator to CPU 1):
  - the API: `python -m api` (1 worker; SQLite store, then Redis store), calling
    `python -m serving` (1 worker) over HTTP: two hops, as in production; the predictions of one
    event-loop turn share a model call (api.model_batching), so with the first store the same
    API also runs with every prediction its own call (`api-<store>-alone`), as the floor's are;
  - the floor: the same two hops with nothing else in them: a bare ASGI endpoint
    `GET /predict/{id}` that POSTs one CSV row to a bare ASGI backend answering "0.5", both
    under uvicorn with the API's options (httptools, uvloop, no access log); the front hop is
    measured with each client (`--floor-clients`: httpx's pooled transport, aiohttp's pooled
    client, a minimal keep-alive HTTP/1.1 client on asyncio streams) and the fastest is the floor;
  - load generators, in their own process on CPU 1:
      * `wrk` (Debian's wrk 4.1, closed loop) with a Lua script that picks a random known
        customer id per request and sends the Authorization header, at several connection
        counts: throughput and latency percentiles;
      * an open-loop generator (benchmarks/loadgen.py, run as `--loadgen`: requests scheduled at a fixed rate,
        latency counted from the scheduled time so a stall is not hidden) at half of the
        API's best wrk throughput, for the p99 target and for the memory run;
  - memory: the API's RSS sampled every 5 s over a `--memory-seconds` (default 300) open-loop
    run at that same half rate;
  - with `--workers 1,2`: the API with 2 workers, and beside it the reference for that scaling,
    the floor with 2 front workers under the API's own supervisor (`floor-2w`), both on CPUs 0-1
    beside wrk (on CPU 1): what the bare hops gain from a second worker is what this machine
    gives one once the load generator takes its share (wrk's CPU per request is printed).
  - paired rounds (`--paired-rounds`, default 3): after the first store's sweep, the floor and
    that API swept alternately, the same processes each time; the API's share of the floor in
    each round and the median. A VM's speed drifts over minutes, so the ratio of neighbouring
    sweeps is the one to judge the target by, not the ratio of the two best sweeps.
Also: materializing 36,500 customers from Parquet into each store.

    .venv/bin/python benchmarks/api_bench.py [--duration 8] [--memory-seconds 300] [--stores sqlite,redis]

Results are printed and written to benchmarks/results/api-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configuration.network import free_port  # noqa: E402
from loadgen import open_loop, pinned, uvicorn_command, wrk_result  # noqa: E402  (benchmarks/, the script's folder)

SERVER_CPU, LOAD_CPU = "0", "1"
CUSTOMERS = 36_500
FIRST_ID = 5_008_804
API_KEY = "smk_benchmark-key-0123456789abcdef"


# The floor: two bare ASGI apps, run by uvicorn as `api_bench:floor_backend` / `api_bench:floor_frontend`.
async def _lifespan(receive, send, on_start=None, on_stop=None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start:
                await on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_stop:
                await on_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def floor_backend(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/csv"), (b"content-length", b"4")],
        }
    )
    await send({"type": "http.response.body", "body": b"0.5\n"})


_floor_client = None
FLOOR_BODY = b"3,2500.5,41,7,1\n"
FLOOR_CLIENTS = ("httpx", "aiohttp", "streams")


class _StreamsClient:
    """The least an HTTP/1.1 keep-alive client can do: a pool of asyncio stream connections,
    one request per connection at a time, Content-Length bodies only (what the backend sends)."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.request = (
            f"POST /invocations HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: text/csv\r\n"
            f"Accept: text/csv\r\nContent-Length: {len(FLOOR_BODY)}\r\n\r\n"
        ).encode() + FLOOR_BODY
        self.idle: list = []

    async def post(self) -> bytes:
        reused = bool(self.idle)
        reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
        writer.write(self.request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            # The backend closed it while idle (uvicorn's 5 s keep-alive): once more on a new one,
            # as any keep-alive client must (the API's does the same).
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return body

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _floor_start() -> None:
    global _floor_client
    from configuration.settings import load_settings

    pool = load_settings().api.http_pool_size  # the API's own pool size: the same client, sized the same
    kind, backend = os.environ.get("FLOOR_CLIENT", "httpx"), os.environ["FLOOR_BACKEND"]
    if kind == "httpx":
        import httpx

        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool))
        extensions = {"timeout": httpx.Timeout(2.0).as_dict()}

        async def post() -> bytes:
            request = httpx.Request(
                "POST",
                backend + "/invocations",
                content=FLOOR_BODY,
                headers=[("Content-Type", "text/csv"), ("Accept", "text/csv")],
                extensions=extensions,
            )
            answer = await transport.handle_async_request(request)
            try:
                return await answer.aread()
            finally:
                await answer.aclose()

        _floor_client = (post, transport.aclose)
    elif kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, keepalive_timeout=30.0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=1.0),
            skip_auto_headers=("User-Agent",),
        )
        url, headers = backend + "/invocations", {"Content-Type": "text/csv", "Accept": "text/csv"}

        async def post() -> bytes:
            async with session.post(url, data=FLOOR_BODY, headers=headers) as answer:
                return await answer.read()

        _floor_client = (post, session.close)
    else:
        client = _StreamsClient(backend)
        _floor_client = (client.post, client.aclose)


async def _floor_stop() -> None:
    await _floor_client[1]()


async def floor_frontend(scope, receive, send):
    """GET /predict/{id} -> one POST to the backend -> a small JSON answer; the backend call made by
    the client FLOOR_CLIENT names (httpx's pooled transport, aiohttp, or bare asyncio streams)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, _floor_start, _floor_stop)
    ident = scope["path"].rsplit("/", 1)[-1]
    answer = await _floor_client[0]()
    body = json.dumps({"id": int(ident), "probability": float(answer)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Processes ---------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKMAKER_", "SAGEMAKER_"))}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def wait_ready(url: str, process: subprocess.Popen, headers: dict | None = None, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, headers=headers or {}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


def start(command: list[str], log, env: dict[str, str], cpus: str = SERVER_CPU) -> subprocess.Popen:
    return subprocess.Popen(pinned(cpus, command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def retire(processes: list[subprocess.Popen], *done: subprocess.Popen) -> None:
    """Stop `done` and drop them from `processes`, the list the run's `finally` stops."""
    for process in done:
        stop(process)
        processes.remove(process)


def start_api(
    config: Path, log, first_id: int, workers: int = 1, cpus: str = SERVER_CPU, **env: str
) -> tuple[subprocess.Popen, int]:
    """`python -m api` with this config (and extra environment), once it answers a prediction: (process, port)."""
    port = free_port()
    api = start(
        [sys.executable, "-m", "api", "--port", str(port), "--workers", str(workers)],
        log,
        clean_env(SPARKMAKER_CONFIG=str(config), **env),
        cpus,
    )
    wait_ready(f"http://127.0.0.1:{port}/predict/{first_id}", api, {"Authorization": f"Bearer {API_KEY}"})
    return api, port


# Load: wrk ------------------------------------------------------------------------------------
def wrk_script(path: Path, ids: list[int], auth: bool) -> Path:
    header = f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n' if auth else ""
    path.write_text(
        "local ids = {"
        + ",".join(map(str, ids))
        + "}\n"
        + header
        + r"""
local n = #ids
setup = function(thread) math.randomseed(os.time() + math.random(1000)) end
request = function()
  return wrk.format("GET", "/predict/" .. ids[math.random(n)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""
    )
    return path


def run_wrk(url: str, connections: int, duration: int, script: Path) -> dict:
    """wrk's figures, and the CPU time wrk itself spent (`wrk_cpu_s`): on two cores the load generator's
    share is CPU the servers of a two-worker run do not get."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(pinned(LOAD_CPU, command), capture_output=True, text=True, timeout=duration + 60).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk_result(output, connections)
    result["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


# Load: open loop (benchmarks/loadgen.py, in its own process:
# `api_bench.py --loadgen PORT RATE SECONDS CONNECTIONS IDS_FILE AUTH`) -------------------------
def predict_requests(ids: list[int], auth: bool):
    """GET /predict/{id} for a random known id each time (the same seed every run)."""
    auth_line = f"Authorization: Bearer {API_KEY}\r\n" if auth else ""
    rng = random.Random(1)
    return lambda: f"GET /predict/{rng.choice(ids)} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth_line}\r\n".encode()


def run_open_loop(
    port: int, rate: float, seconds: float, ids_file: Path, auth: bool, connections: int = 64
) -> subprocess.Popen:
    command = [
        sys.executable,
        __file__,
        "--loadgen",
        str(port),
        str(rate),
        str(seconds),
        str(connections),
        str(ids_file),
        str(int(auth)),
    ]
    return subprocess.Popen(pinned(LOAD_CPU, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def open_loop_result(process: subprocess.Popen, timeout: float) -> dict:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise SystemExit(err)
    return json.loads(out.strip().splitlines()[-1])


# Data and model -----------------------------------------------------------------------------
def make_model(path: Path) -> Path:
    import numpy as np
    import xgboost

    from features.contract import FEATURE_COLUMNS
    from training import artifact

    rng = np.random.default_rng(0)
    rows = 20_000
    x = np.column_stack(
        [
            rng.poisson(20, rows),
            rng.gamma(2.0, 1500.0, rows),
            rng.integers(18, 80, rows),
            rng.integers(0, 40, rows),
            rng.integers(0, 2, rows),
        ]
    ).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(0.05 * x[:, 0] - 0.03 * x[:, 2] - 2)))).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 5, "eta": 0.1, "nthread": 1},
        xgboost.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS)),
        num_boost_round=100,
    )
    path.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(booster, path)
    artifact.write_metadata(
        path,
        {
            "threshold": 0.05,
            "metrics": {},
            "hyperparameters": {"max_depth": 5, "num_round": 100},
            "training_data": {"run_id": "bench", "uri": "-", "rows_train": rows, "rows_validation": 0, "split": "none"},
            "code_version": "bench",
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    return path


def make_lake(lake: Path) -> list[int]:
    """A snapshot in the feature job's layout with 36,500 customers (latest Parquet, manifest, CURRENT)."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    ids = np.arange(FIRST_ID, FIRST_ID + CUSTOMERS, dtype=np.int64)
    n = len(ids)
    avg = rng.gamma(2.0, 1500.0, n)
    table = pa.table(
        {
            "id": ids,
            "as_of": pa.array([dt.date(2021, 9, 18)] * n, pa.date32()),
            "nb_previous_loans": pa.array(rng.poisson(20, n), pa.int32()),
            "avg_amount_loans_previous": pa.array(avg, mask=rng.random(n) < 0.02),
            "age": pa.array(rng.integers(21, 70, n), pa.int32()),
            "years_on_the_job": pa.array(rng.integers(0, 40, n), pa.int32(), mask=rng.random(n) < 0.16),
            "flag_own_car": pa.array(rng.integers(0, 2, n), pa.int32()),
        }
    )
    run_id = "20210918T000000Z-bench0"
    snapshot = lake / "credit_risk" / "snapshots" / run_id
    (snapshot / "latest").mkdir(parents=True)
    pq.write_table(table, snapshot / "latest" / "part-0.parquet")
    manifest = {
        "run_id": run_id,
        "as_of": "2021-09-18",
        "outputs": {"latest": {"uri": str(snapshot / "latest"), "rows": n, "table": "credit_risk.latest_features"}},
    }
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    (lake / "credit_risk" / "CURRENT.json").write_text(
        json.dumps({"run_id": run_id, "as_of": "2021-09-18", "manifest": str(snapshot / "manifest.json")})
    )
    return ids.tolist()


def write_config(path: Path, work: Path, store: str, model_url: str, redis_prefix: str) -> Path:
    from api.auth import hash_key

    path.write_text(
        f'[paths]\nlake = "{work / "lake"}"\nstate_dir = "{work / "state"}"\n\n'
        f'[online_store]\nkind = "{store}"\nredis_url = "redis://127.0.0.1:6379/15"\nkey_prefix = "{redis_prefix}"\n\n'
        f'[api]\nmodel_url = "{model_url}"\napi_key_hashes = ["{hash_key(API_KEY)}"]\n'
    )
    return path


def materialize_into(config: Path) -> dict:
    """`python -m features materialize` as a user runs it; its own timing line, plus wall time with start-up."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "features", "materialize"],
        cwd=ROOT,
        env=clean_env(SPARKMAKER_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    seconds = float(done.stdout.split(" customers in ")[1].split(" s")[0])
    return {
        "customers": CUSTOMERS,
        "seconds": seconds,
        "wall_seconds_with_python_start": time.perf_counter() - started,
        "line": done.stdout.strip(),
    }


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


# The runs -------------------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> list[float]:
    import psutil

    def total(pid: int) -> float:  # a server and its worker processes (uvicorn --workers N)
        process = psutil.Process(pid)
        times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
        return sum(t.user + t.system for t in times)

    return [total(pid) for pid in pids]


def model_calls(url: str) -> tuple[float, float] | None:
    """(predictions, model calls) so far, from the API's /metrics (of the one worker that answers it)."""
    import httpx

    try:
        text = httpx.get(f"{url}metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5).text
    except httpx.HTTPError:
        return None
    names = ("api_predictions_total", "api_model_shared_calls_total", "api_model_shared_predictions_total")
    found = {name: float(value) for name, value in re.findall(r"(?m)^(api_\w+_total) (\S+)$", text) if name in names}
    if len(found) < 3:
        return None
    predictions, shared_calls, shared = (found[name] for name in names)
    return predictions, shared_calls + predictions - shared  # a prediction not in a shared call made its own


def sweep(
    url: str,
    levels: list[int],
    duration: int,
    script: Path,
    pids: list[int],
    port_of_workers: int | None = None,
    api_metrics: bool = False,
) -> list[dict]:
    """wrk at each connection count; with the CPU time each server process spent per request
    (front hop, back hop), a figure that other work on a shared machine does not distort.
    With `port_of_workers`, also how wrk's connections were shared among the workers of pids[0].
    With `api_metrics`, also how many predictions shared a model call, on average (the API's /metrics)."""
    run_wrk(url, 4, 2, script)  # warm-up: pools filled, code paths compiled
    runs = []
    for connections in levels:
        calls_before = model_calls(url) if api_metrics else None
        before = cpu_seconds(pids)
        shares: list[list[int]] = []
        if port_of_workers is not None:
            # Sampled mid-run: wrk opens its connections at the start and keeps them.
            timer = threading.Timer(duration / 2, lambda: shares.append(connection_shares(pids[0], port_of_workers)))
            timer.start()
        run = run_wrk(url, connections, duration, script)
        after = cpu_seconds(pids)
        requests = run["rps"] * duration
        run["cpu_us_per_request"] = [round((a - b) / requests * 1e6) for a, b in zip(after, before)]
        run["wrk_cpu_us_per_request"] = round(run["wrk_cpu_s"] / requests * 1e6)
        if port_of_workers is not None:
            timer.join()
            run["connections_per_worker"] = shares[0] if shares else None
        calls_after = model_calls(url) if api_metrics else None
        if calls_before and calls_after and calls_after[1] > calls_before[1]:
            run["predictions_per_model_call"] = round(
                (calls_after[0] - calls_before[0]) / (calls_after[1] - calls_before[1]), 2
            )
        runs.append(run)
    return runs


def paired_rounds(rounds: int, floor: Callable[[], list[dict]], api: Callable[[], list[dict]]) -> dict:
    """The floor's sweep and the API's, one after the other, `rounds` times: the API's share of the
    floor at each connection count in each round, and its median.

    This machine's speed drifts by a fifth over minutes (other tenants of the host: the same API
    process gave 3,800-4,400 req/s in consecutive 4 s runs); a ratio of two sweeps made minutes
    apart carries that drift, a ratio of neighbours much less of it."""
    shares: dict[int, list[float]] = {}
    rows = []
    for _ in range(rounds):
        floor_runs, api_runs = floor(), api()
        rows.append({"floor": floor_runs, "api": api_runs})
        for f, a in zip(floor_runs, api_runs):
            shares.setdefault(f["connections"], []).append(round(a["rps"] / f["rps"], 3))
    return {
        "rounds": rows,
        "shares": {str(c): v for c, v in shares.items()},
        "median": {str(c): statistics.median(v) for c, v in shares.items()},
    }


def connection_shares(supervisor: int, port: int) -> list[int]:
    """The client connections each worker of `supervisor` holds on `port`, most first."""
    import psutil

    shares = []
    for child in psutil.Process(supervisor).children():
        held = [c for c in child.net_connections("tcp") if c.laddr.port == port]
        if any(c.status == "LISTEN" for c in held):
            shares.append(sum(c.status == "ESTABLISHED" for c in held))
    return sorted(shares, reverse=True)


def bench(args, work: Path, results: dict) -> dict:
    """The whole run; `results` is filled as it goes (what was measured is kept if a later phase fails)."""
    import psutil

    ids = make_lake(work / "lake")
    ids_file = work / "ids.json"
    ids_file.write_text(json.dumps(ids))
    model_dir = make_model(work / "model")
    logs = open(work / "servers.log", "ab")
    results.update(
        {
            "machine": machine(),
            "levels": args.levels,
            "duration_s": args.duration,
            "runs": {},
            "materialize": {},
            "loadavg": {"start": os.getloadavg()},
        }
    )
    processes: list[subprocess.Popen] = []
    try:
        # The floor: the same bare backend, the front hop with each client; the fastest is the floor.
        backend_port = free_port()
        backend = start(uvicorn_command("api_bench:floor_backend", backend_port), logs, clean_env())
        processes.append(backend)
        floor_script = wrk_script(work / "floor.lua", ids, auth=False)
        fronts = {}
        for client in args.floor_clients:
            frontend_port = free_port()
            front = start(
                uvicorn_command("api_bench:floor_frontend", frontend_port),
                logs,
                clean_env(FLOOR_BACKEND=f"http://127.0.0.1:{backend_port}", FLOOR_CLIENT=client),
            )
            processes.append(front)
            wait_ready(f"http://127.0.0.1:{frontend_port}/predict/{ids[0]}", front)
            print(f"floor (bare endpoint -> bare backend) with {client} ...", flush=True)
            results["runs"][f"floor-{client}"] = sweep(
                f"http://127.0.0.1:{frontend_port}/", args.levels, args.duration, floor_script, [front.pid, backend.pid]
            )
            results["loadavg"][f"floor-{client}"] = os.getloadavg()
            fronts[client] = (front, frontend_port)
        best_client = max(args.floor_clients, key=lambda c: sum(r["rps"] for r in results["runs"][f"floor-{c}"]))
        results["floor_client"] = best_client
        results["runs"]["floor"] = results["runs"][f"floor-{best_client}"]
        for client, (front, _) in fronts.items():
            if client != best_client:
                retire(processes, front)
        frontend_port = fronts[best_client][1]
        # The fastest floor stays up (idle) for the open-loop reference at the API's half rate below.

        # The model server, shared by every API run.
        model_port = free_port()
        model = start(
            [
                sys.executable,
                "-m",
                "serving",
                "--model-dir",
                str(model_dir),
                "--port",
                str(model_port),
                "--workers",
                "1",
            ],
            logs,
            clean_env(SPARKMAKER_PATHS__STATE_DIR=str(work / "state"), SPARKMAKER_SERVING__MODEL_VERSION="bench"),
        )
        processes.append(model)
        wait_ready(f"http://127.0.0.1:{model_port}/ping", model)
        api_script = wrk_script(work / "api.lua", ids, auth=True)

        for store in args.stores:
            if store == "redis" and not redis_up():
                print("redis: not running at 127.0.0.1:6379, skipped", flush=True)
                continue
            prefix = f"apibench-{os.getpid()}"
            config = write_config(work / f"{store}.toml", work, store, f"http://127.0.0.1:{model_port}", prefix)
            results["materialize"][store] = materialize_into(config)
            print(f"materialize into {store}: {results['materialize'][store]['line']}", flush=True)
            api, api_port = start_api(config, logs, ids[0])
            processes.append(api)
            print(f"API, {store} store ...", flush=True)
            runs = sweep(
                f"http://127.0.0.1:{api_port}/",
                args.levels,
                args.duration,
                api_script,
                [api.pid, model.pid],
                api_metrics=True,
            )
            results["runs"][f"api-{store}"] = runs
            results["loadavg"][f"api-{store}"] = os.getloadavg()
            if store == args.stores[0] and args.paired_rounds > 0:
                print(f"the floor and the API, {args.paired_rounds} alternating rounds ...", flush=True)
                results["paired"] = paired_rounds(
                    args.paired_rounds,
                    lambda: sweep(
                        f"http://127.0.0.1:{frontend_port}/",
                        args.levels,
                        args.duration,
                        floor_script,
                        [fronts[best_client][0].pid, backend.pid],
                    ),
                    lambda: sweep(
                        f"http://127.0.0.1:{api_port}/", args.levels, args.duration, api_script, [api.pid, model.pid]
                    ),
                )
                results["loadavg"]["paired"] = os.getloadavg()
            if store == args.stores[0] and args.open_loop_repeats > 0:
                best = max(r["rps"] for r in runs)
                rate = round(best / 2)
                print(f"open loop at {rate} req/s (half of {best:.0f}) ...", flush=True)
                # Alternating with the same schedule against the floor (what this shared machine's tail
                # is without the API in the path); the median of the repeats is reported.
                for _ in range(args.open_loop_repeats):
                    for key, port, auth in (
                        ("open_loop_half_max", api_port, True),
                        ("open_loop_floor_same_rate", frontend_port, False),
                    ):
                        loadgen = run_open_loop(port, rate, args.duration * 2, ids_file, auth=auth)
                        results.setdefault(key + "_runs", []).append(open_loop_result(loadgen, args.duration * 2 + 120))
                for key in ("open_loop_half_max", "open_loop_floor_same_rate"):
                    runs = sorted(results[key + "_runs"], key=lambda r: r["p99_ms"])
                    results[key] = runs[len(runs) // 2]
                results["loadavg"]["open_loop"] = os.getloadavg()
                if args.memory_seconds > 0:
                    print(f"memory: {args.memory_seconds} s at {rate} req/s, RSS every 5 s ...", flush=True)
                    results["memory"] = memory_run(api, model, api_port, rate, args.memory_seconds, ids_file, psutil)
                    results["loadavg"]["memory"] = os.getloadavg()
            retire(processes, api)
            if store == args.stores[0]:
                # The same API with every prediction its own model call (api.model_batch_rows = 1), as the
                # floor makes them: what the shared calls (api.model_batching) are worth, side by side.
                alone, api_port = start_api(config, logs, ids[0], SPARKMAKER_API__MODEL_BATCH_ROWS="1")
                processes.append(alone)
                print(f"API, {store} store, every prediction its own model call ...", flush=True)
                results["runs"][f"api-{store}-alone"] = sweep(
                    f"http://127.0.0.1:{api_port}/", args.levels, args.duration, api_script, [alone.pid, model.pid]
                )
                results["loadavg"][f"api-{store}-alone"] = os.getloadavg()
                retire(processes, alone)
            if store == "redis":
                subprocess.run(["redis-cli", "-n", "15", "--scan", "--pattern", f"{prefix}:*"], capture_output=True)
                subprocess.run(
                    [
                        "sh",
                        "-c",
                        f"redis-cli -n 15 --scan --pattern '{prefix}:*' | xargs -r -n 1000 redis-cli -n 15 unlink > /dev/null",
                    ]
                )
        for workers in [w for w in args.workers if w > 1]:
            # The reference for the workers' scaling: the floor's two bare hops with `workers` front
            # processes, under the API's own supervisor (configuration/workers.py, a socket each), on
            # the same CPUs and beside the same wrk. What they gain over the one-worker floor is what
            # this machine gives a second worker once the load generator takes its share.
            floor_cpus = f"0-{workers - 1}"
            wide_backend_port, wide_front_port = free_port(), free_port()
            wide_backend = start(
                uvicorn_command("api_bench:floor_backend", wide_backend_port), logs, clean_env(), floor_cpus
            )
            processes.append(wide_backend)
            wide_front = start(
                [sys.executable, __file__, "--floor-server", str(wide_front_port), str(workers)],
                logs,
                clean_env(FLOOR_BACKEND=f"http://127.0.0.1:{wide_backend_port}", FLOOR_CLIENT=best_client),
                floor_cpus,
            )
            processes.append(wide_front)
            wait_ready(f"http://127.0.0.1:{wide_front_port}/predict/{ids[0]}", wide_front)
            print(f"floor with {best_client}, {workers} front workers on CPUs {floor_cpus} ...", flush=True)
            results["runs"][f"floor-{workers}w"] = sweep(
                f"http://127.0.0.1:{wide_front_port}/",
                args.levels,
                args.duration,
                floor_script,
                [wide_front.pid, wide_backend.pid],
                port_of_workers=wide_front_port,
            )
            results["loadavg"][f"floor-{workers}w"] = os.getloadavg()
            retire(processes, wide_front, wide_backend)

            # API against API: the same sweep with `workers` API processes, all servers on CPUs
            # 0..workers-1; wrk stays on CPU 1, which the second worker shares. The model server keeps
            # one worker (--model-workers), as behind the one-worker API, so only the API's count
            # changes: at 9,000 req/s it uses ~30 % of a core, and a second one only added processes
            # to wake (1.26-1.57x at 32 connections against 1.81-1.89x with one, same session).
            # Its reference is the one-worker API above; the floor's own gain, just above, is what
            # this machine allows.
            store = args.stores[0]
            cpus = f"0-{workers - 1}"
            wide_model_port = free_port()
            wide_model = start(
                [
                    sys.executable,
                    "-m",
                    "serving",
                    "--model-dir",
                    str(model_dir),
                    "--port",
                    str(wide_model_port),
                    "--workers",
                    str(args.model_workers),
                ],
                logs,
                clean_env(SPARKMAKER_PATHS__STATE_DIR=str(work / "state"), SPARKMAKER_SERVING__MODEL_VERSION="bench"),
                cpus,
            )
            processes.append(wide_model)
            wait_ready(f"http://127.0.0.1:{wide_model_port}/ping", wide_model)
            prefix = f"apibench-{os.getpid()}-w{workers}"
            config = write_config(
                work / f"{store}-w{workers}.toml", work, store, f"http://127.0.0.1:{wide_model_port}", prefix
            )
            if store == "redis":
                materialize_into(config)
            api, api_port = start_api(config, logs, ids[0], workers, cpus)
            processes.append(api)
            print(f"API, {store} store, {workers} workers on CPUs {cpus} ...", flush=True)
            results["runs"][f"api-{store}-{workers}w"] = sweep(
                f"http://127.0.0.1:{api_port}/",
                args.levels,
                args.duration,
                api_script,
                [api.pid, wide_model.pid],
                port_of_workers=api_port,
                api_metrics=True,
            )
            results["loadavg"][f"api-{store}-{workers}w"] = os.getloadavg()
            retire(processes, api, wide_model)
    finally:
        for process in processes:
            stop(process)
        logs.close()
        kept = ROOT / "benchmarks" / "results" / f"api-{time.strftime('%Y%m%dT%H%M%S')}-servers.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "servers.log", kept)  # the servers' own lines, for a run that went wrong
    return results


def memory_run(api, model, port: int, rate: float, seconds: float, ids_file: Path, psutil) -> dict:
    api_process, model_process = psutil.Process(api.pid), psutil.Process(model.pid)
    loadgen = run_open_loop(port, rate, seconds, ids_file, auth=True)
    samples = []
    started = time.monotonic()
    while loadgen.poll() is None:
        samples.append(
            {
                "t": round(time.monotonic() - started, 1),
                "api_rss_mb": api_process.memory_info().rss / 2**20,
                "model_rss_mb": model_process.memory_info().rss / 2**20,
            }
        )
        time.sleep(5)
    load = open_loop_result(loadgen, 120)
    api_rss = [s["api_rss_mb"] for s in samples]
    settled = api_rss[len(api_rss) // 5 :]  # after the first fifth: pools and caches are warm
    return {
        "rate": rate,
        "seconds": seconds,
        "load": load,
        "samples": samples,
        "api_rss_first_mb": api_rss[0],
        "api_rss_last_mb": api_rss[-1],
        "api_rss_max_mb": max(api_rss),
        "api_rss_growth_after_warmup_mb": settled[-1] - settled[0] if settled else 0.0,
    }


def profile(args, work: Path) -> None:
    """The API's own CPU per request, in process: the ASGI app driven directly (no HTTP server in
    front, so uvicorn's parsing, the same in the floor, is left out), against the real model server,
    SQLite store and SQLite log; then the same requests under cProfile, the top functions printed."""
    import cProfile
    import pstats

    ids = make_lake(work / "lake")
    model_dir = make_model(work / "model")
    logs = open(work / "servers.log", "ab")
    model_port = free_port()
    model = start(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--port", str(model_port), "--workers", "1"],
        logs,
        clean_env(SPARKMAKER_PATHS__STATE_DIR=str(work / "state"), SPARKMAKER_SERVING__MODEL_VERSION="bench"),
    )
    try:
        wait_ready(f"http://127.0.0.1:{model_port}/ping", model)
        config = write_config(work / "sqlite.toml", work, "sqlite", f"http://127.0.0.1:{model_port}", "unused")
        materialize_into(config)
        for name in [k for k in os.environ if k.startswith(("SPARKMAKER_", "SAGEMAKER_"))]:
            del os.environ[name]
        os.environ["SPARKMAKER_CONFIG"] = str(config)
        from api.main import create_app
        from api.observability import configure_logging
        from configuration.settings import load_settings

        stderr, sys.stderr = (
            sys.stderr,
            open(work / "api.log", "w"),
        )  # the access log goes to a file, as under the bench
        try:
            configure_logging()
            app = create_app(load_settings())
            import uvloop

            uvloop.run(_drive(app, ids, args.profile, args.profile_concurrency, cProfile, pstats, stderr))
        finally:
            sys.stderr.close()
            sys.stderr = stderr
    finally:
        stop(model)
        logs.close()


async def _drive(app, ids: list[int], requests: int, concurrency: int, cProfile, pstats, out) -> None:
    startup: asyncio.Queue = asyncio.Queue()
    sent: asyncio.Queue = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, sent.put)
    )
    assert (await sent.get())["type"] == "lifespan.startup.complete"
    rng = random.Random(1)
    auth = (b"authorization", f"Bearer {API_KEY}".encode())
    statuses: dict[int, int] = {}

    async def one() -> None:
        path = f"/predict/{rng.choice(ids)}"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 40000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), auth],
            "state": {},
        }

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def run(n: int) -> float:
        async def worker(count: int) -> None:
            for _ in range(count):
                await one()

        began = time.process_time()
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
        return (time.process_time() - began) / (n // concurrency * concurrency) * 1e6

    await run(max(200, requests // 10))  # warm-up
    cpu = [round(await run(requests)) for _ in range(3)]
    profiler = cProfile.Profile(time.process_time)  # CPU time: an await costs nothing while it waits
    profiler.enable()
    await run(requests)
    profiler.disable()
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan
    print(
        f"API in process, {concurrency} concurrent, {requests} requests x 3: CPU us/request {cpu}; statuses {statuses}",
        file=out,
    )
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(35)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def report(results: dict) -> None:
    print(
        f"\nGET /predict/{{id}}, random known ids of {CUSTOMERS:,}; wrk closed loop, servers on CPU 0, wrk on CPU 1; {results['machine']}"
    )
    names = list(results["runs"])
    print(f"{'connections':>11} " + " ".join(f"{n:>30}" for n in names))
    print(f"{'':>11} " + " ".join(f"{'req/s    p50 ms   p99 ms':>30}" for _ in names))
    for index, connections in enumerate(results["levels"]):
        cells = []
        for name in names:
            r = results["runs"][name][index]
            cells.append(
                f"{r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
                + (f" err {r['errors']}" if r["errors"] else "")
            )
        print(f"{connections:>11} " + " ".join(f"{c:>30}" for c in cells))
    print(
        "CPU time per request (front hop + back hop, and the load generator wrk's own; microseconds), at each connection count:"
    )
    for name in names:
        print(
            f"  {name:<12} "
            + "  ".join(
                f"c={r['connections']}: {r['cpu_us_per_request'][0]}+{r['cpu_us_per_request'][1]}"
                + (f" (wrk {r['wrk_cpu_us_per_request']})" if "wrk_cpu_us_per_request" in r else "")
                for r in results["runs"][name]
            )
        )
    shared = [name for name in names if any("predictions_per_model_call" in r for r in results["runs"][name])]
    if shared:
        print(
            "predictions per model call (api.model_batching; from the API's /metrics, one worker's), at each connection count:"
        )
        for name in shared:
            print(
                f"  {name:<12} "
                + "  ".join(
                    f"c={r['connections']}: {r.get('predictions_per_model_call')}" for r in results["runs"][name]
                )
            )
    floor = max(r["rps"] for r in results["runs"]["floor"])
    print(
        f"the floor: the front hop with {results.get('floor_client', 'httpx')}, the fastest of "
        + ", ".join(n.removeprefix("floor-") for n in names if n.removeprefix("floor-") in FLOOR_CLIENTS)
    )
    for name in names:
        if not name.startswith("floor"):
            best = max(r["rps"] for r in results["runs"][name])
            print(f"{name}: best {best:.0f} req/s = {best / floor:.0%} of the floor's best {floor:.0f} req/s")
    if "paired" in results:
        for connections, shares in results["paired"]["shares"].items():
            print(
                f"the API's share of the floor in alternating rounds at c={connections}: "
                + ", ".join(f"{share:.0%}" for share in shares)
                + f"; median {results['paired']['median'][connections]:.0%}"
            )
    for name in names:
        if name.endswith("w") and name.rsplit("-", 1)[0] in results["runs"]:
            one = results["runs"][name.rsplit("-", 1)[0]]
            for wide, narrow in zip(results["runs"][name], one):
                print(
                    f"{name} against 1 worker at c={wide['connections']}: {wide['rps']:.0f} / {narrow['rps']:.0f} req/s = "
                    f"{wide['rps'] / narrow['rps']:.2f}x; wrk's connections per worker {wide.get('connections_per_worker')}"
                )
    for key, label in (("open_loop_half_max", "API"), ("open_loop_floor_same_rate", "floor")):
        if key in results:
            o = results[key]
            every = ", ".join(f"{r['p99_ms']:.1f}" for r in results[key + "_runs"])
            print(
                f"open loop at {o['rate']:.0f} req/s, {label:<5} (median of {len(results[key + '_runs'])} by p99): "
                f"achieved {o['achieved_rps']:.0f}, p50 {o['p50_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, "
                f"p99.9 {o['p999_ms']:.2f} ms, max {o['max_ms']:.1f} ms, errors {o['errors']}; every p99: {every} ms"
            )
    if "memory" in results:
        m = results["memory"]
        print(
            f"memory over {m['seconds']:.0f} s at {m['rate']:.0f} req/s ({m['load']['requests']:,} requests, p99 {m['load']['p99_ms']:.2f} ms): "
            f"API RSS {m['api_rss_first_mb']:.1f} -> {m['api_rss_last_mb']:.1f} MB (max {m['api_rss_max_mb']:.1f}), "
            f"growth after warm-up {m['api_rss_growth_after_warmup_mb']:+.1f} MB"
        )
        print("  samples (s: MB): " + ", ".join(f"{s['t']:.0f}: {s['api_rss_mb']:.1f}" for s in m["samples"]))
    print(
        "load average (1, 5, 15 min) of the machine at each phase: "
        + "; ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}/{v[2]:.1f}" for k, v in results["loadavg"].items())
    )
    for store, m in results["materialize"].items():
        print(
            f"materialize {store}: {m['customers']:,} customers in {m['seconds']:.1f} s ({m['wall_seconds_with_python_start']:.1f} s with Python start)"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        port, rate, seconds, connections, ids_file, auth = sys.argv[2:8]
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        ids = json.loads(Path(ids_file).read_text())
        requests = predict_requests(ids, auth == "1")
        print(
            json.dumps(
                asyncio.run(open_loop("127.0.0.1", int(port), requests, float(rate), float(seconds), int(connections)))
            )
        )
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-server":
        # The floor's front app with N workers under the API's supervisor: `--floor-server PORT N`.
        import uvicorn

        from configuration.workers import serve

        port, workers = int(sys.argv[2]), int(sys.argv[3])
        sys.path.insert(0, str(Path(__file__).parent))  # the workers import api_bench:floor_frontend
        config = uvicorn.Config(
            "api_bench:floor_frontend",
            host="127.0.0.1",
            port=port,
            workers=workers,
            http="httptools",
            loop="uvloop",
            access_log=False,
            log_level="warning",
        )
        raise SystemExit(serve(config))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--levels", default="1,8,32,64", help="wrk connection counts (default 1,8,32,64)")
    parser.add_argument(
        "--stores", default="sqlite,redis", help="online stores to run the API with (default sqlite,redis)"
    )
    parser.add_argument(
        "--memory-seconds", type=int, default=300, help="length of the memory run, 0 to skip (default 300)"
    )
    parser.add_argument(
        "--open-loop-repeats",
        type=int,
        default=3,
        help="open-loop runs of the API and of the floor, alternating (default 3)",
    )
    parser.add_argument(
        "--floor-clients",
        default=",".join(FLOOR_CLIENTS),
        help=f"clients of the floor's front hop, the fastest is the floor (default {','.join(FLOOR_CLIENTS)})",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="API worker counts (default 1); each count over 1 is an extra sweep, servers on CPUs 0..N-1",
    )
    parser.add_argument(
        "--model-workers",
        type=int,
        default=1,
        help="model-server workers behind the API of several workers (default 1, as behind the one-worker API)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead of the run: the API's CPU per request in process over N requests, and a cProfile of them",
    )
    parser.add_argument(
        "--paired-rounds",
        type=int,
        default=3,
        help="after the first store's sweep, the floor and the API swept alternately this many times: "
        "the API's share of the floor per round and its median (default 3, 0 to skip)",
    )
    parser.add_argument("--profile-concurrency", type=int, default=8, help="requests in flight while profiling")
    args = parser.parse_args()
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="api-profile-") as tmp:
            profile(args, Path(tmp))
        return
    args.levels = [int(x) for x in args.levels.split(",")]
    args.workers = [int(x) for x in args.workers.split(",") if x]
    args.floor_clients = [c for c in args.floor_clients.split(",") if c]
    if not args.floor_clients or set(args.floor_clients) - set(FLOOR_CLIENTS):
        raise SystemExit(f"--floor-clients: choose among {', '.join(FLOOR_CLIENTS)}")
    args.stores = [s for s in args.stores.split(",") if s]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    results: dict = {}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"api-{time.strftime('%Y%m%dT%H%M%S')}.json"
    try:
        with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
            bench(args, Path(tmp), results)
        report(results)
    finally:
        path.write_text(json.dumps(results, indent=2))
        print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
