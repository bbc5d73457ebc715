"""Model server and batch scoring speed, each beside a reference measured in the same run.

HTTP (single-row POST /invocations, text/csv):
  - the model server (`python -m serving`, 1 worker) and, as the HTTP floor of this machine,
    a bare uvicorn ASGI app that reads the body and returns a constant, with the same
    uvicorn options (httptools, uvloop, no access log, no proxy headers, no server header),
    and, since the model server answers its plain requests without ASGI (serving.fast_http),
    the leaner floor of that structure: uvicorn's httptools protocol answering a constant from
    its parser callbacks (`protocol`); each pinned to CPU 0;
  - load generator in a separate process pinned to CPU 1:
      * `wrk` (Debian's wrk 4.1, closed loop: each connection sends its next request when
        the answer arrives) for throughput and latency at several connection counts;
      * an open-loop generator in Python (benchmarks/loadgen.py, run as `--loadgen`: requests scheduled at a
        fixed rate over many connections, latency counted from the scheduled send time, so
        a stall is not hidden) at half of the model server's best wrk throughput, and at any
        `--open-loop-rates` given (an earlier run's half, to compare a tail at the same rate).
Batch scoring: `serving batch` (a Spark local[2] session) on latest-features-like Parquet tables
(default 777,715 rows), beside pyarrow + XGBoost (inplace_predict, all cores) on the same file:
the engine `auto` picks (the in-process arrow engine up to serving.batch_arrow_max_rows rows,
else Spark), and the Spark engine whatever the size.

    .venv/bin/python benchmarks/serving_bench.py [--duration 8] [--skip-batch]
    .venv/bin/python benchmarks/serving_bench.py --batch-only [--rows 777715,7777150] [--batch-baseline REF] [--batch-phases]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configuration.network import free_port  # noqa: E402
from loadgen import open_loop, pinned, uvicorn_command, wrk_result  # noqa: E402  (benchmarks/, the script's folder)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402

ROW = b"3,2500.5,41,7,1\n"
SERVER_CPU, LOAD_CPU = "0", "1"


# The HTTP floor: uvicorn with nothing behind it but reading the body.
async def floor_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
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


class FloorProtocol(HttpToolsProtocol):
    """The leaner floor: uvicorn's httptools protocol answering a constant from its parser callbacks, no ASGI.

    The model server answers its plain requests this way (serving.fast_http), so beside the bare
    ASGI app this is the floor that shares none of the ASGI cycle's cost: parsing, the keep-alive
    timer and the write, nothing else.
    """

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        parts = [b"HTTP/1.1 200 OK\r\n"]
        parts.extend(b"%s: %s\r\n" % header for header in self.server_state.default_headers)
        parts.append(b"content-type: text/csv\r\ncontent-length: 4\r\n\r\n0.5\n")
        self.transport.write(b"".join(parts))
        self.on_response_complete()


def run_protocol_floor(port: int) -> None:
    import uvicorn

    uvicorn.run(
        floor_app,
        host="127.0.0.1",
        port=port,
        http=FloorProtocol,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.post(url, content=ROW, headers={"Content-Type": "text/csv"}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


def start_floor(port: int, log) -> subprocess.Popen:
    command = uvicorn_command("serving_bench:floor_app", port, proxy_headers=False, server_header=False)
    return subprocess.Popen(pinned(SERVER_CPU, command), stdout=log, stderr=subprocess.STDOUT)


def start_protocol_floor(port: int, log) -> subprocess.Popen:
    command = [sys.executable, __file__, "--protocol-floor", str(port)]
    return subprocess.Popen(pinned(SERVER_CPU, command), stdout=log, stderr=subprocess.STDOUT)


def start_model_server(port: int, model_dir: Path, state: Path, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKMAKER_", "SAGEMAKER_"))}
    env.update(PYTHONPATH=str(ROOT), SPARKMAKER_PATHS__STATE_DIR=str(state), SPARKMAKER_SERVING__MODEL_VERSION="bench")
    command = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--port", str(port), "--workers", "1"]
    return subprocess.Popen(pinned(SERVER_CPU, command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = "3,2500.5,41,7,1\n"
wrk.headers["Content-Type"] = "text/csv"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_wrk(url: str, connections: int, duration: int, script: Path, server_pid: int | None = None) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(script), url]
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    output = subprocess.run(pinned(LOAD_CPU, command), capture_output=True, text=True, timeout=duration + 60).stdout
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    result = wrk_result(output, connections)
    # The server's own CPU time per request does not depend on how much of the core other
    # work left it: the steadier figure on a shared machine.
    result["cpu_us_per_request"] = cpu / max(result["requests"], 1) * 1e6
    return result


# The open-loop generator (benchmarks/loadgen.py) runs in its own process:
# `serving_bench.py --loadgen HOST PORT RATE SECONDS CONNECTIONS`.
def _invocation() -> bytes:
    return (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\nContent-Length: {len(ROW)}\r\n\r\n"
    ).encode() + ROW


def run_open_loop(port: int, rate: float, seconds: float, connections: int = 64) -> dict:
    command = [sys.executable, __file__, "--loadgen", "127.0.0.1", str(port), str(rate), str(seconds), str(connections)]
    output = subprocess.run(pinned(LOAD_CPU, command), capture_output=True, text=True, timeout=seconds + 120)
    if output.returncode != 0:
        raise SystemExit(output.stderr)
    return json.loads(output.stdout.strip().splitlines()[-1])


def make_model(path: Path, rounds: int, depth: int) -> Path:
    from tests.serving.conftest import make_model_dir

    return make_model_dir(path, seed=7, rounds=rounds, depth=depth, threshold=0.2)


def micro(model_dir: Path) -> dict:
    """In-process single-row prediction: the compiled fast path and XGBoost's inplace_predict."""
    import numpy as np

    from serving.model import ModelSource, load_model

    model = load_model(model_dir, ModelSource("dir", path=str(model_dir)), "bench")
    row = np.array([[3, 2500.5, 41, 7, 1]], dtype=np.float32)
    result = {}
    rows = row.tolist()
    for name, call in (
        ("fast_path_us", lambda: model.predict(rows)),
        ("xgboost_inplace_us", lambda: model.booster.inplace_predict(row, validate_features=False)),
    ):
        for _ in range(200):
            call()
        started = time.perf_counter()
        for _ in range(3000):
            call()
        result[name] = (time.perf_counter() - started) / 3000 * 1e6
    result["handler_us"] = handler_time(model_dir)
    result["protocol_us"], result["protocol_floor_us"] = protocol_times(model_dir)
    return result


def protocol_times(model_dir: Path, requests: int = 30_000) -> tuple[float, float]:
    """CPU µs per single-row request fed to the model server's protocol (serving.fast_http) in process, no
    network: parsing, the prediction and the answer's bytes; and the same for the protocol floor's."""
    import uvloop

    from configuration.settings import load_settings
    from serving.app import create_app
    from serving.fast_http import InvocationsProtocol
    from tests.serving.conftest import protocol_in_process

    request = _invocation()
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(paths={"state_dir": state, "lake": state}, serving={"model_dir": str(model_dir)})
        app = create_app(settings)
        app.state.watcher.check()

        async def per_request(protocol_class, asgi_app) -> float:
            protocol, transport, _ = protocol_in_process(asgi_app, protocol_class)
            for _ in range(1000):
                protocol.data_received(request)
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for _ in range(requests):
                    protocol.data_received(request)
                best = min(best, (time.process_time() - started) / requests * 1e6)
            protocol.connection_lost(None)
            assert len(transport.written) == 1000 + 3 * requests, "a request was not answered in process"
            return best

        async def both() -> tuple[float, float]:
            return await per_request(InvocationsProtocol, app), await per_request(FloorProtocol, floor_app)

        return uvloop.run(both())


SHAPES = ((240, 2), (300, 6), (30, 4))  # training's defaults' shape, a deep model, a small one


def micro_shapes(work: Path) -> list[dict]:
    """The fast path's time per call at 1 and 32 rows for three model shapes, beside XGBoost's inplace_predict."""
    import numpy as np

    from serving.model import ModelSource, load_model
    from tests.serving.conftest import synthetic_features

    results = []
    for rounds, depth in SHAPES:
        model_dir = make_model(work / f"model-{rounds}x{depth}", rounds=rounds, depth=depth)
        model = load_model(model_dir, ModelSource("dir", path=str(model_dir)), "bench")
        matrix = synthetic_features(32, seed=5).astype(np.float32)  # rows as the decoder gives them
        for count in (1, 32):
            rows, block = matrix[:count].tolist(), matrix[:count]
            figures = {
                "rounds": rounds,
                "depth": depth,
                "rows": count,
                "tables": model.fast.tables if model.fast else 0,
            }
            for name, call in (
                ("fast_us", lambda: model.fast.predict_rows(rows)),
                ("xgboost_us", lambda: model.booster.inplace_predict(block, validate_features=False)),
            ):
                calls = max(50, 3000 // count)
                best = float("inf")
                for _ in range(5):  # best of five: other work on a shared machine only adds time
                    started = time.process_time()
                    for _ in range(calls):
                        call()
                    best = min(best, (time.process_time() - started) / calls * 1e6)
                figures[name] = best
            results.append(figures)
    return results


def handler_time(model_dir: Path) -> float:
    """The server's own time for one single-row POST /invocations: the ASGI app called in-process, no network."""
    from configuration.settings import load_settings
    from serving.app import create_app

    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(paths={"state_dir": state, "lake": state}, serving={"model_dir": str(model_dir)})
        app = create_app(settings)
        app.state.watcher.check()  # load the model as the lifespan would
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/invocations",
            "headers": [(b"content-type", b"text/csv"), (b"content-length", str(len(ROW)).encode())],
        }
        statuses = []

        async def receive():
            return {"type": "http.request", "body": ROW, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def loop(count: int) -> float:
            started = time.perf_counter()
            for _ in range(count):
                await app(scope, receive, send)
            return (time.perf_counter() - started) / count * 1e6

        asyncio.run(loop(300))
        elapsed = asyncio.run(loop(3000))
        assert set(statuses) == {200}, statuses[:3]
        return elapsed


def bench_http(args, work: Path) -> dict:
    """Both servers up at once (idle while the other is measured); runs alternate floor/model and
    each figure is the best of `--repeat` runs, so that other load on a shared machine
    penalizes neither side more than the other."""
    model_dir = args.model_dir or make_model(work / "model", rounds=args.rounds, depth=args.depth)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    names = ("floor", "protocol", "model")
    results: dict = {"model_dir": str(model_dir), "micro": micro(model_dir), **{name: [] for name in names}}
    ports = {name: free_port() for name in names}
    processes = {}
    with open(work / "floor.log", "wb") as floor_log, open(work / "model.log", "wb") as model_log:
        processes["floor"] = start_floor(ports["floor"], floor_log)
        processes["protocol"] = start_protocol_floor(ports["protocol"], floor_log)
        processes["model"] = start_model_server(ports["model"], model_dir, work / "state", model_log)
    urls = {name: f"http://127.0.0.1:{port}/invocations" for name, port in ports.items()}
    try:
        for name in names:
            wait_ready(urls[name], processes[name])
            run_wrk(urls[name], 4, 2, script)  # warm-up
        for connections in args.connections:
            runs: dict[str, list] = {name: [] for name in names}
            for _ in range(args.repeat):
                for name in names:
                    runs[name].append(run_wrk(urls[name], connections, args.duration, script, processes[name].pid))
            for name in names:
                results[name].append(max(runs[name], key=lambda r: r["rps"]))
        best = max(r["rps"] for r in results["model"])
        rates = [round(best / 2), *args.open_loop_rates]
        results["open_loop"] = []
        for rate in rates:
            open_runs: dict[str, list] = {name: [] for name in names}
            for _ in range(args.repeat):
                for name in names:
                    open_runs[name].append(run_open_loop(ports[name], rate, args.duration))
            results["open_loop"].append({name: min(open_runs[name], key=lambda r: r["p99_ms"]) for name in names})
    finally:
        for process in processes.values():
            stop(process)
    return results


def write_features_table(folder: Path, rows: int) -> Path:
    """A latest-features-like table as one Parquet file written by pyarrow (one row group per 1 Mi rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.contract import FEATURE_COLUMNS
    from tests.serving.conftest import synthetic_features

    matrix = synthetic_features(rows, seed=3)
    table = {
        "id": pa.array(np.arange(rows) + 5_000_000, pa.int64()),
        "as_of": pa.array(np.full(rows, np.datetime64("2024-06-01"), dtype="datetime64[D]"), pa.date32()),
    }
    for index, name in enumerate(FEATURE_COLUMNS):
        column = matrix[:, index]
        if name == "avg_amount_loans_previous":
            table[name] = pa.array(column.astype(np.float64), pa.float64(), from_pandas=True)
        else:
            table[name] = pa.array(
                np.where(np.isnan(column), 0, column).astype(np.int32), pa.int32(), mask=np.isnan(column)
            )
    folder.mkdir(parents=True)
    pq.write_table(pa.table(table), folder / "part-0.parquet")
    return folder


def batch_reference(source: Path, model_dir: Path) -> tuple[float, dict]:
    """The best plain Python does here: pyarrow reads the file, features straight into a float32
    matrix (no pandas), one inplace_predict on all cores (XGBoost's default nthread)."""
    import numpy as np
    import pyarrow.parquet as pq
    import xgboost

    from features.contract import FEATURE_COLUMNS

    started = time.perf_counter()
    table = pq.read_table(source, columns=["id", *FEATURE_COLUMNS])
    booster = xgboost.Booster()
    booster.load_model(bytearray((Path(model_dir) / "xgboost-model").read_bytes()))
    matrix = np.empty((table.num_rows, len(FEATURE_COLUMNS)), dtype=np.float32)
    for index, name in enumerate(FEATURE_COLUMNS):
        matrix[:, index] = table.column(name).to_numpy()  # nulls -> NaN (integers arrive as float64)
    probabilities = booster.inplace_predict(matrix, validate_features=False)
    seconds = time.perf_counter() - started
    return seconds, {"id": table.column("id").to_numpy(), "probability": probabilities}


def load_baseline(ref: str):
    """serving/batch.py as it was at a git ref, as a module (the same run measures before and after)."""
    import importlib.util

    text = subprocess.run(
        ["git", "show", f"{ref}:serving/batch.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="batch-baseline-")) / "baseline_batch.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("baseline_batch", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch_phases(spark, source: Path, model_dir: Path, work: Path) -> list[tuple[str, float]]:
    """Each part of the scoring job alone, in the warm session: where the time goes."""
    from features.contract import FEATURE_COLUMNS
    from serving import batch

    model_bytes = (Path(model_dir) / "xgboost-model").read_bytes()
    frame = spark.read.parquet(str(source))
    phases = []

    def timed(name, action):
        started = time.perf_counter()
        action()
        phases.append((name, time.perf_counter() - started))

    def noop(data):
        data.write.format("noop").mode("overwrite").save()

    timed("list + read the schema", lambda: spark.read.parquet(str(source)).schema)
    plan = batch.core_plan(spark, frame)
    timed(f"busy-partition probe (footers only): {plan}", lambda: batch.core_plan(spark, frame))
    cast = frame.select("id", *[frame[c].cast("float").alias(c) for c in FEATURE_COLUMNS])
    timed("scan + cast, no output (noop sink)", lambda: noop(cast))

    def keys_only(batches):
        for data in batches:
            yield data.select([0])

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch.ARROW_BATCH_ROWS))
    timed("+ Arrow to and from Python (mapInArrow, ids back)", lambda: noop(cast.mapInArrow(keys_only, "id bigint")))
    scored = batch.score_frame(frame, model_bytes, FEATURE_COLUMNS, 0.2, "1", plan)
    timed("+ predict (the whole scoring, noop sink)", lambda: noop(scored))
    single = batch.score_frame(frame, model_bytes, FEATURE_COLUMNS, 0.2, "1", batch.Plan(1, None))
    timed("  the same with 1 thread per task", lambda: noop(single))
    spread = batch.score_frame(
        frame, model_bytes, FEATURE_COLUMNS, 0.2, "1", batch.Plan(1, spark.sparkContext.defaultParallelism)
    )
    timed("  the same, 1 thread, hash repartition instead", lambda: noop(spread))
    output = work / "phases-scores"
    timed("+ Parquet write (the whole job)", lambda: scored.write.parquet(str(output)))
    spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    shutil.rmtree(output, ignore_errors=True)
    return phases


def bench_batch(args, work: Path, model_dir: Path | None) -> dict:
    """`run_batch` in one session built beforehand (JVM start excluded, reported apart), timed
    from outside around the whole call (model check, read, score, write, Hive registration,
    counts); the first call pays the session's warm-up and is reported apart too. Then,
    alternating: the baseline code (--batch-baseline), the current code, the reference.
    Each figure is the best of --batch-repeat runs."""
    import numpy as np
    import pyarrow.parquet as pq

    from configuration.settings import load_settings
    from features import session
    from serving import batch as current_batch
    from tests.serving.conftest import registry_with

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    model_dir = model_dir or make_model(work / "model", rounds=args.rounds, depth=args.depth)
    settings = load_settings(
        paths={"lake": str(work / "lake"), "state_dir": str(work / "state")},
        spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "2g"},
        metastore={"kind": "embedded", "derby_dir": str(work / "metastore")},
    )
    registry_with(settings.registry_dir(), model_dir).promote("1")
    baseline = load_baseline(args.batch_baseline) if args.batch_baseline else None
    started = time.perf_counter()
    spark = session.build_session(settings, "sparkmaker-batch-bench")
    results: dict = {"session_seconds": time.perf_counter() - started, "sizes": []}
    outputs = iter(range(1_000_000))

    def timed_run(module, **engine) -> tuple[float, dict, Path]:
        output = work / f"scores-{next(outputs)}"
        started = time.perf_counter()
        summary = module.run_batch(settings, input_uri=str(source), output_uri=str(output), spark=spark, **engine)
        return time.perf_counter() - started, summary, output

    def compare(output: Path, summary: dict, reference: dict, rows: int) -> tuple[float, int]:
        """Every row against the reference: (max |difference|, rows differing)."""
        scored = pq.read_table(output, columns=["id", "probability", "label"])
        order = np.argsort(scored.column("id").to_numpy())
        expected_order = np.argsort(reference["id"])
        assert scored.num_rows == rows == summary["rows"]
        assert np.array_equal(scored.column("id").to_numpy()[order], reference["id"][expected_order])
        got = scored.column("probability").to_numpy()[order]
        want = reference["probability"][expected_order].astype(np.float64)
        return float(np.abs(got - want).max()), int((got != want).sum())

    try:
        for rows in args.rows:
            source = write_features_table(work / f"latest-{rows}", rows)
            size: dict = {"rows": rows, "current": [], "spark": [], "baseline": [], "reference": []}
            if not results["sizes"]:
                seconds, summary, output = timed_run(current_batch)
                results["first_call_seconds"] = seconds
                results["first_call_timings"] = summary["timings"]
            for _ in range(args.batch_repeat):
                if baseline:
                    seconds, _, output = timed_run(baseline)
                    size["baseline"].append(seconds)
                seconds, summary, output = timed_run(current_batch)
                size["current"].append(seconds)
                size["summary"] = summary
                reference_seconds, reference = batch_reference(source, model_dir)
                size["reference"].append(reference_seconds)
                size["max_difference"], size["rows_differing"] = compare(output, summary, reference, rows)
                if summary["engine"] != "spark":
                    seconds, spark_summary, output = timed_run(current_batch, engine="spark")
                    size["spark"].append(seconds)
                    size["spark_summary"] = spark_summary
                    size["spark_max_difference"], size["spark_rows_differing"] = compare(
                        output, spark_summary, reference, rows
                    )
            if args.batch_phases:
                size["phases"] = batch_phases(spark, source, model_dir, work)
            results["sizes"].append(size)
            shutil.rmtree(source)
    finally:
        spark.stop()
    return results


def print_batch(batch: dict, baseline_ref: str | None) -> None:
    print(
        f"\nbatch scoring (Spark local[2], one session: JVM and session start {batch['session_seconds']:.1f} s, "
        f"not counted; the first run_batch call in it {batch['first_call_seconds']:.1f} s: {batch['first_call_timings']})"
    )
    for size in batch["sizes"]:
        rows, current, reference = size["rows"], min(size["current"]), min(size["reference"])
        summary = size["summary"]
        line = (
            f"{rows:>10,} rows: serving batch ({summary['engine']} engine) {current:.2f} s = {rows / current:,.0f} rows/s "
            f"(threads per task {summary['threads_per_task']}, repartition {summary['repartitioned_to']}, "
            f"its timings {summary['timings']}); "
            f"pyarrow + XGBoost all cores {reference:.2f} s = {rows / reference:,.0f} rows/s; "
            f"ratio {current / reference:.2f}x (target <= 2x)"
        )
        if size["spark"]:
            spark_seconds, spark_summary = min(size["spark"]), size["spark_summary"]
            line += (
                f"; --engine spark {spark_seconds:.2f} s = {spark_seconds / reference:.2f}x "
                f"(threads per task {spark_summary['threads_per_task']}, its timings {spark_summary['timings']}, "
                f"rows differing from the reference {size['spark_rows_differing']})"
            )
        if size["baseline"]:
            baseline = min(size["baseline"])
            line += f"; baseline {baseline_ref} {baseline:.2f} s = {baseline / reference:.1f}x"
        print(line)
        print(
            f"{'':>16}every row compared: max |difference| {size['max_difference']:.1e}, "
            f"rows differing {size['rows_differing']}; runs (s): current {[round(s, 2) for s in size['current']]}, "
            f"spark engine {[round(s, 2) for s in size['spark']]}, "
            f"baseline {[round(s, 2) for s in size['baseline']]}, reference {[round(s, 2) for s in size['reference']]}"
        )
        for name, seconds in size.get("phases", []):
            print(f"{'':>16}{name:<70} {seconds:6.2f} s")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.1f} at start"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        host, port, rate, seconds, connections = (
            sys.argv[2],
            int(sys.argv[3]),
            float(sys.argv[4]),
            float(sys.argv[5]),
            int(sys.argv[6]),
        )
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(json.dumps(asyncio.run(open_loop(host, port, _invocation, rate, seconds, connections))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--protocol-floor":
        run_protocol_floor(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per load run")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64])
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="model to serve (default: synthetic, shaped as training's defaults make it: 240 trees of depth 2)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per figure, alternating floor and model; the best is kept"
    )
    parser.add_argument("--rounds", type=int, default=240)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument(
        "--rows",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[777_715],
        help="rows of the batch scoring table(s), comma-separated (e.g. 777715,7777150)",
    )
    parser.add_argument(
        "--batch-repeat", type=int, default=2, help="batch runs per figure, alternating; the best is kept"
    )
    parser.add_argument("--batch-baseline", metavar="GITREF", help="also time serving/batch.py as of this git ref")
    parser.add_argument("--batch-phases", action="store_true", help="also time each part of the scoring job alone")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--shapes", action="store_true", help="only the fast path's in-process cost per call for three model shapes"
    )
    parser.add_argument("--batch-only", action="store_true", help="the batch part only (same as --skip-http)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument(
        "--open-loop-rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[],
        help="open-loop rates (req/s) to measure besides half of the model's max, e.g. 9000 (an earlier half)",
    )
    args = parser.parse_args()
    args.skip_http = args.skip_http or args.batch_only
    if not args.skip_http and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or run with --skip-http)")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        work = Path(scratch)
        if args.shapes:
            print("in-process fast path (CPU time per call, best of 5) beside XGBoost inplace_predict (1 thread)")
            for r in micro_shapes(work):
                print(
                    f"{r['rounds']:>4} trees depth {r['depth']}, {r['rows']:>2} rows: fast path {r['fast_us']:8.1f} us "
                    f"({'tables: ' + str(r['tables']) if r['tables'] else 'generated ifs'}), XGBoost {r['xgboost_us']:8.1f} us"
                )
            return
        if not args.skip_http:
            http = bench_http(args, work)
            print(f"\nmodel: {args.model_dir or f'synthetic, {args.rounds} trees, depth {args.depth}'}")
            print(
                f"in-process single-row predict: compiled fast path {http['micro']['fast_path_us']:.1f} us, "
                f"XGBoost inplace_predict {http['micro']['xgboost_inplace_us']:.0f} us; "
                f"whole /invocations handler (ASGI call, no network) {http['micro']['handler_us']:.0f} us; "
                f"a request fed to the server's protocol (parsing, prediction, answer; no network) "
                f"{http['micro']['protocol_us']:.1f} us CPU, to the protocol floor's {http['micro']['protocol_floor_us']:.1f} us"
            )
            print("\nsingle-row POST /invocations, wrk closed loop, 1 server worker on CPU 0, wrk on CPU 1")
            print(
                "floor: a bare ASGI app under uvicorn; protocol: uvicorn's httptools protocol answering a constant, no ASGI"
            )
            print(
                f"{'conns':>5} | {'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us/req':>10} | "
                f"{'protocol rps':>12} {'cpu us/req':>10} | "
                f"{'model rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us/req':>10} | {'model/floor rps':>15} {'cpu':>5} | "
                f"{'model/protocol rps':>18} {'cpu':>5} | errors"
            )
            for floor, protocol, model in zip(http["floor"], http["protocol"], http["model"]):
                print(
                    f"{floor['connections']:>5} | {floor['rps']:>9.0f} {floor['p50_ms']:>7.2f} {floor['p99_ms']:>7.2f} "
                    f"{floor['cpu_us_per_request']:>10.0f} | {protocol['rps']:>12.0f} {protocol['cpu_us_per_request']:>10.0f} | "
                    f"{model['rps']:>9.0f} {model['p50_ms']:>7.2f} {model['p99_ms']:>7.2f} "
                    f"{model['cpu_us_per_request']:>10.0f} | {model['rps'] / floor['rps']:>15.2f} "
                    f"{floor['cpu_us_per_request'] / model['cpu_us_per_request']:>5.2f} | "
                    f"{model['rps'] / protocol['rps']:>18.2f} "
                    f"{protocol['cpu_us_per_request'] / model['cpu_us_per_request']:>5.2f} | "
                    f"{floor['errors']}/{protocol['errors']}/{model['errors']}"
                )
            best = {name: max(r["rps"] for r in http[name]) for name in ("floor", "protocol", "model")}
            print(
                f"max throughput: floor {best['floor']:.0f} rps, protocol {best['protocol']:.0f} rps, model "
                f"{best['model']:.0f} rps ({best['model'] / best['floor']:.0%} of the floor, "
                f"{best['model'] / best['protocol']:.0%} of the protocol floor; target >= 70% of the floor at every "
                "connection count)"
            )
            for index, runs in enumerate(http["open_loop"]):
                for name in ("model", "floor", "protocol"):
                    o = runs[name]
                    print(
                        f"open loop at {o['rate']:.0f} rps ({'half the model' + chr(39) + 's max' if index == 0 else 'as asked'}), "
                        f"{name}: achieved {o['achieved_rps']:.0f} rps, p50 {o['p50_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, "
                        f"p99.9 {o['p999_ms']:.2f} ms, errors {o['errors']}"
                    )
        if not args.skip_batch:
            print_batch(bench_batch(args, work, args.model_dir), args.batch_baseline)


if __name__ == "__main__":
    main()
