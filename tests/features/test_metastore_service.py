"""Several Spark processes at once through a standalone Hive Metastore service (metastore.kind = thrift)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time

import pytest

from configuration.network import free_port
from configuration.settings import REPO_ROOT
from features.sample_data import generate, write


def start_metastore(env: dict, lake: str, port: int) -> subprocess.Popen:
    """`python -m features metastore` on `port`, once it listens (fails the test if it never does)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "features", "metastore", "--lake", lake, "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the metastore service exited: {proc.stderr.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("the metastore service did not listen within 180 s")


@pytest.fixture
def metastore_service(tmp_path):
    port = free_port()
    env = {**os.environ, "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state")}
    proc = start_metastore(env, str(tmp_path / "lake"), port)
    yield {**env, "SPARKMAKER_METASTORE__KIND": "thrift", "SPARKMAKER_METASTORE__URIS": f"thrift://127.0.0.1:{port}"}
    proc.terminate()
    proc.wait(timeout=30)


def features_cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "features", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_job_and_two_concurrent_queries_share_the_metastore(metastore_service, tmp_path):
    csv = tmp_path / "loans.csv"
    raw, truth = generate(4_000, seed=21)
    write(raw, truth, csv)
    lake = str(tmp_path / "lake")
    run = features_cli(metastore_service, "--input", str(csv), "--lake", lake, "--as-of", "2021-09-18")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err

    queries = [
        features_cli(metastore_service, "sql", "--lake", lake, "SELECT count(*) AS n FROM training_features")
        for _ in range(2)
    ]
    for query in queries:
        out, err = query.communicate(timeout=300)
        assert query.returncode == 0, err
        assert out.splitlines() == ["n", "4000"]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port`, read from the kernel (/proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = bytes.fromhex(address)
                    ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                    found.add(str(ip.ipv4_mapped or ip))  # Java binds IPv4 as ::ffff:a.b.c.d
    return found


def test_the_service_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = {**os.environ, "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state")}
    proc = start_metastore(env, str(tmp_path / "lake"), port)
    try:
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
