"""Feature job benchmark: Spark (the real job) against DuckDB computing the same contract, same CSV, same run.

    .venv/bin/python benchmarks/features_bench.py [--scales 1 10 30] [--modes local,standalone]
        [--rows 777715] [--work /tmp/featbench] [--keep] [--duckdb-memory 19GB] [--no-class-archive]

For each scale it writes the CSV under --work (scale 10 = ten copies of the base file with
shifted customer and loan ids; 30x is ~23 M rows, ~4 GB), then runs, each in its own
process so peak memory is its own:
  spark   python -m features (check, classify, count, write, publish: everything the job
          does), once per mode: `local` (local[2]) and `standalone` (a master and two
          one-core workers of stack.spark_cluster, started and stopped by this script on
          ports 24077-24082; peak memory then includes the executors)
  duckdb  the contract's validation, duplicate rule, training and latest features in SQL,
          written as Parquet (2 threads, like local[2]; memory_limit --duckdb-memory, by default
          DuckDB's own 80 % of RAM, with a temp_directory under --work, so it spills at 30x)
and prints wall time, rows/s, µs/row, peak RSS and the Spark/DuckDB ratio per mode. The
driver JVM maps Spark's class archive (features/class_archive.py, built first if missing)
unless --no-class-archive.
The two engines' outputs are compared (row counts and column sums) so the race is fair.
Generated CSVs are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import process_memory  # noqa: E402  (benchmarks/, the script's folder)

AS_OF = "2021-09-18"

DUCKDB_SQL = """
SET threads = 2;
SET memory_limit = '{memory}';
SET temp_directory = '{tmp}';
CREATE TEMP TABLE raw AS SELECT * FROM read_csv('{csv}', header = true, all_varchar = true, quote = '"', escape = '"');
CREATE TEMP TABLE parsed AS
SELECT *,
  CASE WHEN regexp_full_match(trim(id), '[+-]?[0-9]+') THEN TRY_CAST(trim(id) AS BIGINT) END AS _id,
  CASE WHEN regexp_full_match(trim(loan_id), '[+-]?[0-9]+') THEN TRY_CAST(trim(loan_id) AS BIGINT) END AS _loan_id,
  CASE WHEN regexp_full_match(trim(loan_date), '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN TRY_STRPTIME(trim(loan_date), '%Y-%m-%d')::DATE END AS _loan_date,
  TRY_CAST(trim(loan_amount) AS DOUBLE) AS _amount,
  CASE WHEN regexp_full_match(trim(birthday), '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN TRY_STRPTIME(trim(birthday), '%Y-%m-%d')::DATE END AS _birthday,
  CASE WHEN regexp_full_match(trim(job_start_date), '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN TRY_STRPTIME(trim(job_start_date), '%Y-%m-%d')::DATE END AS _job,
  CASE trim(flag_own_car) WHEN 'Y' THEN 1 WHEN 'N' THEN 0 END AS _car
FROM raw;
CREATE TEMP TABLE reasoned AS
SELECT *, CASE
  WHEN _id IS NULL THEN 'bad_id' WHEN _loan_id IS NULL THEN 'bad_loan_id'
  WHEN _loan_date IS NULL THEN 'bad_loan_date'
  WHEN _amount IS NULL OR isnan(_amount) OR isinf(_amount) OR _amount < 0 THEN 'bad_loan_amount'
  WHEN coalesce(trim(status) NOT IN ('0', '1'), true) THEN 'bad_status' END AS reason
FROM parsed;
CREATE TEMP TABLE classified AS
SELECT *, min(_h) OVER w <> max(_h) OVER w AS _differs, row_number() OVER w AS _copy
FROM (SELECT *, hash({columns}) AS _h FROM reasoned)
WINDOW w AS (PARTITION BY CASE WHEN reason IS NULL THEN _loan_id END);
CREATE TEMP TABLE loans AS
SELECT _id AS id, _loan_id AS loan_id, _loan_date AS loan_date, _amount AS loan_amount, _birthday AS birthday,
       _job AS job_start_date, _car AS flag_own_car, trim(status)::INT AS status
FROM classified WHERE reason IS NULL AND NOT _differs AND _copy = 1;
CREATE MACRO years(s, e) AS CASE WHEN s IS NOT NULL AND s <= e THEN
  year(e) - year(s) - CASE WHEN month(e) < month(s) OR (month(e) = month(s) AND day(e) < day(s)) THEN 1 ELSE 0 END END;
COPY (
  SELECT id, loan_id, loan_date,
    count(loan_amount) OVER w AS nb_previous_loans, avg(loan_amount) OVER w AS avg_amount_loans_previous,
    years(birthday, loan_date) AS age, years(job_start_date, loan_date) AS years_on_the_job, flag_own_car, status
  FROM loans WINDOW w AS (PARTITION BY id ORDER BY loan_date RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 DAY PRECEDING)
) TO '{out}/training' (FORMAT parquet, PER_THREAD_OUTPUT true);
COPY (
  SELECT id, DATE '{as_of}' AS as_of, count(*) AS nb_previous_loans, avg(loan_amount) AS avg_amount_loans_previous,
    years(arg_max_null(birthday, (loan_date, loan_id)), DATE '{as_of}') AS age,
    years(arg_max_null(job_start_date, (loan_date, loan_id)), DATE '{as_of}') AS years_on_the_job,
    arg_max_null(flag_own_car, (loan_date, loan_id)) AS flag_own_car
  FROM loans WHERE loan_date < DATE '{as_of}' GROUP BY id
) TO '{out}/latest' (FORMAT parquet, PER_THREAD_OUTPUT true);
COPY (SELECT {columns}, coalesce(reason, 'duplicate_loan_id') AS reason FROM classified
      WHERE reason IS NOT NULL OR _differs) TO '{out}/rejects' (FORMAT parquet, PER_THREAD_OUTPUT true);
"""


def run_measured(
    command: list[str], env: dict | None = None, also: Callable[[], list[psutil.Process]] = list
) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the process, all its children and the processes `also` names, and stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0.0
    peak_sample: process_memory.Sample | None = None
    doubled = 0  # samples in which a child shared its parent's memory (counted once)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_sample, doubled
        parent = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                taken = process_memory.resident([*process_memory.tree(parent), *also()])
            except psutil.Error:
                continue
            finally:
                time.sleep(0.1)
            doubled += bool(taken.shared)
            if taken.mb > peak:
                peak, peak_sample = taken.mb, taken

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate()
    except BaseException:  # Ctrl-C: do not leave the job running behind us
        proc.kill()
        proc.wait()
        raise
    stop.set()
    sampler.join()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{err[-3000:]}")
    # Which processes made the peak, and how often a spawning child's shared memory was not counted again.
    parts = ", ".join(
        f"{name} {pid} {mb:,.0f}"
        for name, pid, mb in sorted(peak_sample.parts if peak_sample else [], key=lambda p: -p[2])
        if mb >= 1
    )
    counted = (
        f"{doubled} samples held a child sharing its parent's memory"
        if process_memory.can_compare()
        else "kcmp refused: a spawning child's shared memory may be counted twice"
    )
    print(f"  peak {peak:,.0f} MB RSS: {parts}; {counted}", flush=True)
    return elapsed, peak, out + err


def make_csv(base: Path, scale: int, rows: int, folder: Path) -> Path:
    """The base file for scale 1; `scale` copies with shifted ids otherwise (distinct customers and loans)."""
    import pandas as pd

    from features.sample_data import generate, write

    if not base.exists():
        raw, truth = generate(rows, seed=7, dirty=0.001)
        write(raw, truth, base)
    if scale == 1:
        return base
    target = folder / f"loans_x{scale}.csv"
    if target.exists():
        return target
    frame = pd.read_csv(base, dtype=str, keep_default_na=False)
    numeric_id = pd.to_numeric(frame["id"], errors="coerce")
    numeric_loan = pd.to_numeric(frame["loan_id"], errors="coerce")
    with open(target, "w", encoding="utf-8") as handle:
        for k in range(scale):
            copy = frame.copy()
            # Keep broken values broken; shift the good ones so every copy is new customers and loans.
            copy["id"] = numeric_id.map(lambda v: f"{int(v) + k * 150_000}" if v == v else None).fillna(frame["id"])
            copy["loan_id"] = numeric_loan.map(lambda v: f"{int(v) + k * 10_000_000}" if v == v else None).fillna(
                frame["loan_id"]
            )
            copy.to_csv(handle, index=False, header=(k == 0))
    return target


def summarize(folder: Path) -> dict:
    import duckdb

    out = {}
    for name in ("training", "latest"):
        out[name] = duckdb.sql(
            f"SELECT count(*), sum(nb_previous_loans), sum(avg_amount_loans_previous), sum(age), "
            f"sum(years_on_the_job), sum(flag_own_car) FROM read_parquet('{folder}/{name}/*.parquet')"
        ).fetchall()[0]
    out["rejects"] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/rejects/*.parquet')").fetchall()[0]
    return out


def same_outputs(one: dict, other: dict) -> bool:
    """Counts and integer sums equal; the sum of a double column equal to 1e-12 relative: over 23 M rows the
    engines add the same values in another order (at 30x the two sums differed by 2e-2 in 1.4e11)."""
    if one.keys() != other.keys():
        return False
    for name in one:
        a, b = one[name], other[name]
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if isinstance(x, float) or isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-12):
                    return False
            elif x != y:
                return False
    return True


# The standalone cluster's ports, in this benchmark's block (24000-24999): master 24077 (UI 24080),
# workers 24078 and 24079 (UIs 24081 and 24082).
CLUSTER_PORTS = {"master_port": 24077, "worker_port": 24078, "master_ui_port": 24080, "worker_ui_port": 24081}
# The driver's own RPC and block manager ports (Spark tries the next 16 when one is taken).
DRIVER_CONF = '{"spark.driver.port": "24100", "spark.blockManager.port": "24120"}'


class Cluster:
    """stack.spark_cluster's master and two one-core workers, with a state folder of their own."""

    def __init__(self, state_dir: Path) -> None:
        from configuration.settings import load_settings

        s = load_settings()
        self.settings = s.model_copy(
            update={
                "paths": s.paths.model_copy(update={"state_dir": str(state_dir)}),
                "spark_cluster": s.spark_cluster.model_copy(update={**CLUSTER_PORTS, "workers": 2, "worker_cores": 1}),
            }
        )
        self.started = False

    def start(self) -> str:
        from stack import spark_cluster

        if not self.started:
            for line in spark_cluster.start(self.settings, workers=2):
                print(f"  {line}", flush=True)
            self.started = True
        return spark_cluster.master_url(self.settings)

    def executors(self) -> list[psutil.Process]:
        """The executor JVMs: children of the two worker processes."""
        from stack.local import Stack

        stack = Stack(self.settings)
        found = []
        for index in (1, 2):
            pid = stack.running_pid(f"spark-worker-{index}")
            if pid is not None:
                try:
                    found += psutil.Process(pid).children(recursive=True)
                except psutil.Error:
                    pass
        return found

    def stop(self) -> None:
        from stack import spark_cluster

        if self.started:
            for line in spark_cluster.stop(self.settings):
                print(f"  {line}", flush=True)
            self.started = False


def run_spark(csv: Path, lake: Path, manifest: Path, master: str | None, extra_env: dict, also) -> tuple[float, float]:
    command = [sys.executable, "-m", "features", "--input", str(csv), "--lake", str(lake), "--as-of", AS_OF]
    command += ["--manifest", str(manifest)] + (["--master", master] if master else [])
    seconds, peak, _ = run_measured(command, extra_env, also)
    return seconds, peak


def run_duckdb(csv: Path, out: Path, work: Path, memory: str) -> tuple[float, float]:
    out.mkdir(parents=True)
    spill = work / "duckdb-tmp"
    spill.mkdir(exist_ok=True)
    script = work / "duck.sql"
    header = open(csv, encoding="utf-8").readline().strip().split(",")
    script.write_text(
        DUCKDB_SQL.format(csv=csv, out=out, as_of=AS_OF, columns=", ".join(header), memory=memory, tmp=spill)
    )
    seconds, peak, _ = run_measured(
        [sys.executable, "-c", f"import duckdb; duckdb.connect().execute(open({str(script)!r}).read())"]
    )
    shutil.rmtree(spill, ignore_errors=True)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--modes", default="local", help="comma-separated: local, standalone (default: local)")
    parser.add_argument("--rows", type=int, default=777_715)
    parser.add_argument("--work", type=Path, default=Path("/tmp/featbench"), help="folder of the CSVs and lakes")
    parser.add_argument("--keep", action="store_true", help="keep the generated CSVs in --work for the next run")
    parser.add_argument(
        "--duckdb-memory",
        default=f"{int(psutil.virtual_memory().total * 0.8 / 2**30)}GB",
        help="DuckDB memory_limit (it spills beyond it); default DuckDB's own, 80%% of RAM",
    )
    parser.add_argument(
        "--no-class-archive",
        action="store_true",
        help="Spark's driver without the class archive (default: built first if missing, as start.sh does)",
    )
    parser.add_argument("--no-duckdb", action="store_true", help="Spark only (no reference, no output check)")
    parser.add_argument("--shuffle-partitions", type=int, help="override spark.shuffle_partitions")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"local", "standalone"})
    if unknown:
        raise SystemExit(f"--modes: unknown mode {', '.join(unknown)} (choose local, standalone)")

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    base = args.work / f"loans_{args.rows}.csv"
    made: list[Path] = [] if base.exists() else [base, base.with_suffix(".truth.parquet")]
    cluster = Cluster(work / "cluster-state") if "standalone" in modes else None
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARKMAKER_FEATURES__MATERIALIZE": "false"}
    env["SPARKMAKER_SPARK__EXTRA_CONF"] = DRIVER_CONF
    if args.no_class_archive:
        env["SPARKMAKER_SPARK__CLASS_ARCHIVE"] = "false"
    else:
        from configuration.settings import load_settings
        from features import class_archive

        settings = load_settings()
        class_archive.build(settings, class_archive.default_folder(settings))
    if args.shuffle_partitions:
        env["SPARKMAKER_SPARK__SHUFFLE_PARTITIONS"] = str(args.shuffle_partitions)
    results = []
    try:
        for scale in args.scales:
            print(f"x{scale}: writing the CSV ...", flush=True)
            csv = make_csv(base, scale, args.rows, args.work)
            if scale != 1 and csv not in made:
                made.append(csv)
            rows = sum(1 for _ in open(csv, "rb")) - 1
            print(f"x{scale}: {rows:,} rows, {csv.stat().st_size / 1e9:.2f} GB; load {os.getloadavg()}", flush=True)
            duck = None
            if not args.no_duckdb:
                duck_out = work / f"duck_x{scale}"
                duck = run_duckdb(csv, duck_out, work, args.duckdb_memory)
                duck_summary = summarize(duck_out)
                shutil.rmtree(duck_out, ignore_errors=True)
                print(f"x{scale}: duckdb {duck[0]:.1f} s, peak {duck[1]:,.0f} MB", flush=True)
            for mode in modes:
                lake = work / f"lake_x{scale}_{mode}"
                manifest_path = work / "manifest.json"
                master = cluster.start() if cluster and mode == "standalone" else None
                also = cluster.executors if cluster and mode == "standalone" else list
                load = os.getloadavg()
                spark_s, spark_mb = run_spark(csv, lake, manifest_path, master, env, also)
                manifest = json.loads(manifest_path.read_text())
                same = None
                if duck is not None:
                    spark_summary = summarize(Path(manifest["outputs"]["training"]["uri"]).parent)
                    same = same_outputs(spark_summary, duck_summary)
                    if not same:
                        print(f"  spark  {spark_summary}\n  duckdb {duck_summary}")
                results.append(
                    {
                        "scale": scale,
                        "mode": mode,
                        "rows": rows,
                        "spark_s": spark_s,
                        "spark_mb": spark_mb,
                        "duck": duck,
                        "same": same,
                        "stages": manifest["stage_seconds"],
                        "load": load,
                    }
                )
                print(
                    f"x{scale} {mode}: spark {spark_s:.1f} s ({spark_s / rows * 1e6:.2f} µs/row), peak {spark_mb:,.0f} MB, "
                    f"outputs equal: {same}; stages "
                    + ", ".join(f"{k} {v:.1f}" for k, v in manifest["stage_seconds"].items()),
                    flush=True,
                )
                shutil.rmtree(lake, ignore_errors=True)
            if not args.keep and scale != 1:
                csv.unlink(missing_ok=True)
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            for path in made:
                path.unlink(missing_ok=True)

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}; DuckDB memory_limit {args.duckdb_memory}; Spark driver JVM "
        + ("without" if args.no_class_archive else "with")
        + " the class archive"
    )
    for mode in modes:
        print(f"\n{mode}:")
        print(
            "| rows | Spark s | Spark rows/s | Spark µs/row | Spark peak MB | DuckDB s | DuckDB µs/row | DuckDB peak MB "
            "| Spark/DuckDB | same outputs | load at start |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---|")
        for r in (r for r in results if r["mode"] == mode):
            rows, spark_s, duck = r["rows"], r["spark_s"], r["duck"]
            duck_cells = (
                f"{duck[0]:.1f} | {duck[0] / rows * 1e6:.2f} | {duck[1]:,.0f} | {spark_s / duck[0]:.2f}x"
                if duck
                else "- | - | - | -"
            )
            same = {True: "yes", False: "NO", None: "-"}[r["same"]]
            print(
                f"| {rows:,} | {spark_s:.1f} | {rows / spark_s:,.0f} | {spark_s / rows * 1e6:.2f} | {r['spark_mb']:,.0f} "
                f"| {duck_cells} | {same} | {' '.join(f'{x:.1f}' for x in r['load'])} |"
            )
        for r in (r for r in results if r["mode"] == mode):
            print(f"Spark stages at x{r['scale']}: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items()))


if __name__ == "__main__":
    main()
