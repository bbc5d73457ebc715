"""The feature job's last step: its new snapshot lands in the online store (features.materialize = true)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configuration.errors import UserError
from features.contract import FEATURE_COLUMNS, RAW_COLUMNS


def write_loans_csv(path: Path, customers: int = 40, loans_each: int = 3) -> None:
    rows = []
    loan_id = 1
    for c in range(customers):
        for k in range(loans_each):
            row = dict.fromkeys(RAW_COLUMNS, "")
            row.update(
                loan_id=str(loan_id),
                id=str(5_008_804 + c),
                flag_own_car="Y" if c % 2 else "N",
                status=str(int(c % 9 == 0)),
                birthday=f"{1960 + c % 30}-0{1 + k % 9}-15",
                job_start_date="3021-09-18" if c % 5 == 0 else f"{2005 + c % 10}-03-01",
                loan_date=f"2020-0{1 + k}-1{c % 9}",
                loan_amount=str(1000 + 37 * c + 11 * k),
            )
            rows.append(row)
            loan_id += 1
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(RAW_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def test_the_job_materializes_its_snapshot_as_its_last_step(spark, lake_settings, tmp_path, capsys):
    from features.cli import run_job
    from features.online import open_store

    source = tmp_path / "loans.csv"
    write_loans_csv(source)
    args = argparse.Namespace(input=str(source), as_of=None, manifest=None)
    assert lake_settings.features.materialize
    assert run_job(spark, lake_settings, args) == 0
    out = capsys.readouterr().out
    assert "online store: snapshot" in out and "40 customers" in out

    from features import lake

    manifest = lake.read_manifest(lake_settings)
    expected = {
        r["id"]: {n: r[n] for n in FEATURE_COLUMNS}
        for r in pq.read_table(manifest["outputs"]["latest"]["uri"]).to_pylist()
    }
    store = open_store(lake_settings)
    records = store.online_read(list(expected))
    assert {r.id: r.features for r in records} == expected
    assert {(r.run_id, r.as_of) for r in records} == {(manifest["run_id"], manifest["as_of"])}


def test_a_failed_materialization_says_the_lake_snapshot_is_current_and_how_to_retry(spark, lake_settings, tmp_path):
    from features.cli import run_job
    from tests.online.conftest import closed_port

    source = tmp_path / "loans.csv"
    write_loans_csv(source, customers=5)
    settings = lake_settings.model_copy(
        update={
            "online_store": lake_settings.online_store.model_copy(
                update={"kind": "redis", "redis_url": f"redis://127.0.0.1:{closed_port()}/15"}
            )
        }
    )
    args = argparse.Namespace(input=str(source), as_of=None, manifest=None)
    with pytest.raises(
        UserError,
        match=r"is current in the lake, but the online store was not updated .*retry with: python -m features materialize --snapshot ",
    ):
        run_job(spark, settings, args)
