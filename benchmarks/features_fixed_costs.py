"""Where the feature job's fixed costs go: one real run, every start-up step and metastore call timed.

    .venv/bin/python benchmarks/features_fixed_costs.py --input CSV [--lake DIR] [--runs 2]

Runs the job in this process the way `python -m features` does (same settings, same
session, same `job.run`) and times, from the process start (the kernel's start time of
this process), each step: Python imports, SparkSession ready (JVM start + SparkContext),
each Hive catalog call and SQL statement, the manifest and CURRENT writes, and the job's
stages. Each line shows wall seconds and the CPU seconds of this process and the JVM
(children included), which stay meaningful when other work loads the machine.

`--runs 2` runs the job twice on the same lake (the second run finds the database and
tables: the usual case); each run is a fresh process, as in production.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    """CPU time of this process and all its children (the JVM and its threads)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


class Clock:
    def __init__(self) -> None:
        import psutil

        self.start = psutil.Process().create_time()
        self.rows: list[tuple[str, float, float, float]] = []

    def mark(self, name: str, began_wall: float, began_cpu: float) -> None:
        now = time.time()
        self.rows.append((name, now - began_wall, cpu_seconds() - began_cpu, now - self.start))

    def timed(self, name, function):
        def wrapper(*args, **kwargs):
            wall, cpu = time.time(), cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                label = name(*args) if callable(name) else name
                self.mark(label, wall, cpu)

        return wrapper


def child(args: argparse.Namespace) -> None:
    clock = Clock()
    # Everything before main() ran: the interpreter and site packages.
    clock.rows.append(("interpreter start (before this script's code)", time.time() - clock.start, 0.0, 0.0))
    sys.path.insert(0, str(ROOT))
    wall, cpu = time.time(), cpu_seconds()
    import datetime as dt

    from features import cli

    clock.mark("import configuration + features.cli", wall, cpu)
    wall, cpu = time.time(), cpu_seconds()
    import pyspark.sql  # noqa: F401

    from features import hive, input_check, job, lake, session

    clock.mark("import pyspark.sql + features.job", wall, cpu)

    wall, cpu = time.time(), cpu_seconds()
    settings = cli._settings(argparse.Namespace(lake=args.lake))
    clock.mark("settings", wall, cpu)

    wall, cpu = time.time(), cpu_seconds()
    spark = session.build_session(settings, "fixed-costs", master=args.master)
    clock.mark("SparkSession ready (JVM + SparkContext)", wall, cpu)

    catalog = spark.catalog
    catalog.databaseExists = clock.timed(lambda db: f"hive: databaseExists({db})", catalog.databaseExists)
    catalog.tableExists = clock.timed(lambda t: f"hive: tableExists({t})", catalog.tableExists)
    spark.sql = clock.timed(lambda q: f"sql: {q.split(' LOCATION')[0][:60]}", spark.sql)
    spark.table = clock.timed(lambda t: f"hive: table({t}).schema", spark.table)
    job.code_version = clock.timed("git rev-parse (code_version)", job.code_version)
    input_check.InputCheck.result = clock.timed("input check result (sha256, header)", input_check.InputCheck.result)  # type: ignore[method-assign]
    lake.read_current = clock.timed("read CURRENT (previous snapshot)", lake.read_current)
    hive.register = clock.timed("hive.register (all tables)", hive.register)
    original_write = lake.LocalLake.write_text_atomic
    lake.LocalLake.write_text_atomic = clock.timed(  # type: ignore[method-assign]
        lambda _self, uri, _text="": f"write {uri.rsplit('/', 1)[-1]}", original_write
    )
    params = job.JobParams(input_uri=str(Path(args.input).resolve()), as_of=dt.date(2021, 9, 18))
    wall, cpu = time.time(), cpu_seconds()
    manifest = job.run(spark, settings, params)
    clock.mark("job.run (all stages)", wall, cpu)
    tracker = spark.sparkContext.statusTracker()
    spark_jobs = len(tracker.getJobIdsForGroup(manifest["run_id"])) + len(tracker.getJobIdsForGroup(None))
    wall, cpu = time.time(), cpu_seconds()
    spark.stop()
    clock.mark("spark.stop()", wall, cpu)
    print(f"{'step':<62} {'wall s':>7} {'cpu s':>7} {'at s':>7}")
    for name, seconds, cpu_s, at in clock.rows:
        print(f"{name:<62} {seconds:7.2f} {cpu_s:7.2f} {at:7.2f}")
    print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in manifest["stage_seconds"].items()))
    print(
        f"total from process start: {time.time() - clock.start:.2f} s, cpu {cpu_seconds():.2f} s, Spark jobs {spark_jobs}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True)
    parser.add_argument("--lake", help="lake folder (default: a fresh one under /tmp/featbench)")
    parser.add_argument("--master")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    lake = args.lake or f"/tmp/featbench/fixed-costs-lake-{os.getpid()}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARKMAKER_FEATURES__MATERIALIZE": "false"}
    for run in range(1, args.runs + 1):
        print(
            f"\n== run {run} on {lake} ({'fresh lake' if run == 1 else 'database and tables exist'}), load {os.getloadavg()}"
        )
        command = [sys.executable, __file__, "--child", "--input", args.input, "--lake", lake]
        if args.master:
            command += ["--master", args.master]
        subprocess.run(command, check=True, env=env, cwd=ROOT)
    if not args.lake:
        import shutil

        shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
