"""Load generation shared by the HTTP benchmarks: an open-loop generator, wrk's result line, CPU pinning.

Open loop: requests are scheduled at a fixed rate and sent over keep-alive connections;
latency counts from the scheduled time, so a server that stalls is charged for every
request that waited behind the stall (a closed-loop tool such as wrk would send fewer
requests instead and hide it). Each benchmark runs it in its own process (`--loadgen`),
pinned to the load core.

wrk: the benchmarks' Lua scripts end with a `done` function printing one `RESULT {json}`
line (requests, duration, errors, non-2xx, latency percentiles in µs); `wrk_result` reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path


def uvicorn_command(
    app: str, port: int, workers: int = 1, proxy_headers: bool = True, server_header: bool = True
) -> list[str]:
    """A bare ASGI app of benchmarks/ (`module:app`) under uvicorn on 127.0.0.1:port, with the options the
    project's servers run with (httptools, uvloop, no access log); proxy and server headers as the
    server the floor stands beside has them (the model server turns both off, the API neither)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(__file__).parent),
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        *([] if proxy_headers else ["--no-proxy-headers"]),
        *([] if server_header else ["--no-server-header"]),
    ]


def pinned(cpu: str, command: list[str]) -> list[str]:
    """The command run on one CPU (taskset), so that servers and load generators do not share a core."""
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else command


async def open_loop(
    host: str, port: int, make_request: Callable[[], bytes], rate: float, seconds: float, connections: int
) -> dict:
    """Send rate x seconds requests made by `make_request` at a fixed rate; latency percentiles in ms."""
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    unavailable_without_retry_after = 0  # a 503 must say when to come back
    loop = asyncio.get_running_loop()

    closed = 0

    async def worker() -> None:
        nonlocal errors, closed, unavailable_without_retry_after
        reader, writer = await asyncio.open_connection(host, port)
        while True:
            scheduled = await queue.get()
            if scheduled is None:
                writer.close()
                return
            try:
                writer.write(make_request())
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                retry_after = False
                for line in head.split(b"\r\n"):
                    lowered = line.lower()
                    if lowered.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    elif lowered.startswith(b"retry-after:"):
                        retry_after = True
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed the connection (e.g. its keep-alive timeout fired while it was
                # starved of CPU): an error, counted; the request's time still counts, on a new connection.
                errors += 1
                closed += 1
                latencies.append(loop.time() - scheduled)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors += 1
                if status == 503 and not retry_after:
                    unavailable_without_retry_after += 1
            latencies.append(loop.time() - scheduled)

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.3)  # let every connection open before the clock starts
    begin = loop.time()
    for index in range(int(rate * seconds)):
        due = begin + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - begin
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "rate": rate,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "p999_ms": percentile(99.9),
        "max_ms": latencies[-1] * 1000,
        "errors": errors,
        "closed_connections": closed,
        "requests": len(latencies),
        "statuses": statuses,
        "unavailable_without_retry_after": unavailable_without_retry_after,
    }


def wrk_result(output: str, connections: int) -> dict:
    """The `RESULT {...}` line of a wrk run as rps, latency percentiles in ms and errors (transport + non-2xx)."""
    line = next(text for text in output.splitlines() if text.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    seconds = result["duration_us"] / 1e6
    figures = {
        "connections": connections,
        "requests": result["requests"],
        "rps": result["requests"] / seconds,
        "errors": result["errors"] + result["non2xx"],
    }
    for key in ("p50", "p90", "p99"):
        if f"{key}_us" in result:
            figures[f"{key}_ms"] = result[f"{key}_us"] / 1000
    return figures
