"""Feature job benchmark: Spark (the real job) against DuckDB computing the same contract, same CSV, same run.

    .venv/bin/python benchmarks/features_bench.py [--scales 1 10] [--rows 777715] [--keep DIR]

For each scale it writes the CSV (scale 10 = ten copies of the base file with shifted
customer and loan ids), then runs, each in its own process so peak memory is its own:
  spark   python -m features (check, classify, count, write, publish: everything the job does)
  duckdb  the contract's validation, duplicate rule, training and latest features in SQL,
          written as Parquet (2 threads, like local[2])
and prints wall time, rows/s, peak RSS of the process tree and the Spark/DuckDB ratio.
The two engines' outputs are compared (row counts and column sums) so the race is fair.
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
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = "2021-09-18"

DUCKDB_SQL = """
SET threads = 2;
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


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the process and all its children, and stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{err[-3000:]}")
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
            f"SELECT count(*), sum(nb_previous_loans), round(sum(avg_amount_loans_previous), 2), sum(age), "
            f"sum(years_on_the_job), sum(flag_own_car) FROM read_parquet('{folder}/{name}/*.parquet')"
        ).fetchall()[0]
    out["rejects"] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/rejects/*.parquet')").fetchall()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rows", type=int, default=777_715)
    parser.add_argument("--keep", type=Path, help="folder to keep generated CSVs in between runs")
    parser.add_argument("--shuffle-partitions", type=int, help="override spark.shuffle_partitions")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="features-bench-"))
    data = args.keep or work
    data.mkdir(parents=True, exist_ok=True)
    base = data / f"loans_{args.rows}.csv"
    results = []
    try:
        for scale in args.scales:
            csv = make_csv(base, scale, args.rows, data)
            rows = sum(1 for _ in open(csv, "rb")) - 1
            lake = work / f"lake_x{scale}"
            env = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARKMAKER_FEATURES__MATERIALIZE": "false"}
            if args.shuffle_partitions:
                env["SPARKMAKER_SPARK__SHUFFLE_PARTITIONS"] = str(args.shuffle_partitions)
            spark_s, spark_mb, _ = run_measured(
                [
                    sys.executable,
                    "-m",
                    "features",
                    "--input",
                    str(csv),
                    "--lake",
                    str(lake),
                    "--as-of",
                    AS_OF,
                    "--manifest",
                    str(work / "manifest.json"),
                ],
                env,
            )
            manifest = json.loads((work / "manifest.json").read_text())
            duck_out = work / f"duck_x{scale}"
            duck_out.mkdir()
            script = work / "duck.sql"
            header = open(csv, encoding="utf-8").readline().strip().split(",")
            script.write_text(DUCKDB_SQL.format(csv=csv, out=duck_out, as_of=AS_OF, columns=", ".join(header)))
            duck_s, duck_mb, _ = run_measured(
                [sys.executable, "-c", f"import duckdb; duckdb.connect().execute(open({str(script)!r}).read())"]
            )
            spark_summary = summarize(Path(manifest["outputs"]["training"]["uri"]).parent)
            duck_summary = summarize(duck_out)
            same = spark_summary == duck_summary
            results.append((scale, rows, spark_s, spark_mb, duck_s, duck_mb, same, manifest["stage_seconds"]))
            print(f"x{scale}: spark {spark_s:.1f} s, duckdb {duck_s:.1f} s, outputs equal: {same}", flush=True)
            if not same:
                print(f"  spark  {spark_summary}\n  duckdb {duck_summary}")
            shutil.rmtree(lake, ignore_errors=True)
            shutil.rmtree(duck_out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}"
    )
    print(
        "| rows | Spark s | Spark rows/s | Spark peak MB | DuckDB s | DuckDB rows/s | DuckDB peak MB | Spark/DuckDB | same outputs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for _, rows, spark_s, spark_mb, duck_s, duck_mb, same, _ in results:
        print(
            f"| {rows:,} | {spark_s:.1f} | {rows / spark_s:,.0f} | {spark_mb:,.0f} | {duck_s:.1f} | {rows / duck_s:,.0f} "
            f"| {duck_mb:,.0f} | {spark_s / duck_s:.2f}x | {'yes' if same else 'NO'} |"
        )
    for scale, *_, stages in results:
        print(f"Spark stages at x{scale}: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    if len(results) >= 2:
        (_, r1, t1, *_), (_, r2, t2, *_) = results[0], results[-1]
        print(f"Spark time grows {t2 / t1:.2f}x for {r2 / r1:.1f}x the rows")


if __name__ == "__main__":
    main()
