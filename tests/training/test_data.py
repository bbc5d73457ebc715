"""Channel discovery (Parquet in any layout) and reading against the contract, with one-sentence failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import FEATURE_COLUMNS
from training.data import ChannelError, discover_parquet, read_channel, read_truth


@pytest.fixture(scope="module")
def table(synthetic):
    return synthetic(rows=600, seed=5)[0]


@pytest.fixture
def write_parts(parts_writer):
    return parts_writer


def _read(folder: Path, **kwargs):
    return read_channel(
        "train", folder, need_dates=kwargs.get("need_dates", True), need_loan_id=kwargs.get("need_loan_id", False)
    )


def test_spark_layout_skips_success_and_crc(tmp_path, table, write_parts):
    folder = write_parts(table, tmp_path / "training", parts=3)
    files = discover_parquet(folder)
    assert [f.name for f in files] == [f"part-{i:05d}-abc.snappy.parquet" for i in range(3)]
    frame = _read(folder)
    assert len(frame) == table.num_rows


def test_any_subfolder_layout_and_names_without_extension(tmp_path, table):
    root = tmp_path / "channel"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    pq.write_table(table.slice(0, 200), root / "a" / "b" / "one.parquet")
    pq.write_table(table.slice(200, 200), root / "c" / "two")  # as S3 keys often are: no extension
    pq.write_table(table.slice(400), root / "three.parquet")
    (root / "README.txt").write_text("not data")
    (root / "_temporary").mkdir()
    pq.write_table(table.slice(0, 10), root / "_temporary" / "half-written.parquet")
    (root / ".hidden.parquet").write_bytes(b"PAR1 junk")
    assert sorted(p.relative_to(root).as_posix() for p in discover_parquet(root)) == [
        "a/b/one.parquet",
        "c/two",
        "three.parquet",
    ]
    frame = _read(root)
    assert len(frame) == table.num_rows
    assert sorted(frame.loan_id.tolist()) == sorted(table.column("loan_id").to_pylist())


def test_hive_partition_folders(tmp_path, table):
    import pyarrow.dataset as ds

    ds.write_dataset(
        table, tmp_path / "parted", format="parquet", partitioning=["flag_own_car"], partitioning_flavor="hive"
    )
    assert any(p.name.startswith("flag_own_car=") for p in (tmp_path / "parted").iterdir())
    frame = _read(tmp_path / "parted")
    assert len(frame) == table.num_rows
    assert np.nansum(frame.features[:, FEATURE_COLUMNS.index("flag_own_car")]) == pytest.approx(
        np.nansum(table.column("flag_own_car").to_numpy(zero_copy_only=False).astype(float))
    )


def test_a_single_file_channel(tmp_path, table):
    pq.write_table(table, tmp_path / "only.parquet")
    assert len(_read(tmp_path / "only.parquet")) == table.num_rows


def test_nulls_stay_missing_not_zero(tmp_path, table, write_parts):
    folder = write_parts(table, tmp_path / "t", parts=1)
    frame = _read(folder)
    for index, column in enumerate(FEATURE_COLUMNS):
        nulls = np.asarray(table.column(column).is_null().to_numpy(zero_copy_only=False))
        assert np.array_equal(np.isnan(frame.features[:, index]), nulls), column
    assert frame.features.dtype == np.float32
    expected_age = table.column("age").to_numpy(zero_copy_only=False)
    mask = ~np.isnan(frame.features[:, FEATURE_COLUMNS.index("age")])
    np.testing.assert_array_equal(frame.features[mask, FEATURE_COLUMNS.index("age")], expected_age[mask])


def test_keys_are_never_features(tmp_path, table, write_parts):
    frame = _read(write_parts(table, tmp_path / "t", parts=1))
    assert frame.features.shape == (table.num_rows, len(FEATURE_COLUMNS))
    assert "id" not in FEATURE_COLUMNS and "loan_id" not in FEATURE_COLUMNS and "loan_date" not in FEATURE_COLUMNS


def test_dates_as_strings_or_timestamps(tmp_path, table):
    as_text = table.set_column(
        table.schema.get_field_index("loan_date"), "loan_date", table.column("loan_date").cast(pa.string())
    )
    pq.write_table(as_text, tmp_path / "text.parquet")
    frame = _read(tmp_path / "text.parquet")
    np.testing.assert_array_equal(frame.loan_date, table.column("loan_date").to_numpy().astype("datetime64[D]"))


@pytest.mark.parametrize(
    "make, sentence",
    [
        (lambda root, t: None, "channel 'train' is missing: "),
        (
            lambda root, t: root.mkdir(),
            "channel 'train' at {root} holds no Parquet files: point it at the feature job's training output",
        ),
        (
            lambda root, t: (root.mkdir(), (root / "data.csv").write_text("a,b\n")),
            "holds no Parquet files (it holds data.csv)",
        ),
        (
            lambda root, t: (root.mkdir(), pq.write_table(t.slice(0, 0), root / "empty.parquet")),
            "channel 'train' at {root} is empty: its Parquet files hold no rows",
        ),
        (
            lambda root, t: (root.mkdir(), pq.write_table(t.drop_columns(["age"]), root / "x.parquet")),
            "channel 'train' lacks the column age: it must hold the feature job's training table",
        ),
        (
            lambda root, t: (root.mkdir(), pq.write_table(t.drop_columns(["age", "status"]), root / "x.parquet")),
            "channel 'train' lacks the columns age, status",
        ),
        (
            lambda root, t: (root.mkdir(), pq.write_table(t.drop_columns(["loan_date"]), root / "x.parquet")),
            "channel 'train' lacks the column loan_date",
        ),
        (
            lambda root, t: (
                root.mkdir(),
                pq.write_table(t.set_column(5, "age", t.column("age").cast(pa.string())), root / "x.parquet"),
            ),
            "channel 'train': column age is string, not a number",
        ),
        (
            lambda root, t: (
                root.mkdir(),
                pq.write_table(t.set_column(8, "status", pa.array([2] * t.num_rows, pa.int32())), root / "x.parquet"),
            ),
            "channel 'train': 600 rows have status other than 0 or 1 (e.g. 2)",
        ),
        (
            lambda root, t: (
                root.mkdir(),
                pq.write_table(
                    t.set_column(8, "status", pa.array([None] * t.num_rows, pa.int32())), root / "x.parquet"
                ),
            ),
            "channel 'train': 600 rows have no status",
        ),
        (
            lambda root, t: (
                root.mkdir(),
                pq.write_table(t.set_column(2, "loan_date", pa.array(["soon"] * t.num_rows)), root / "x.parquet"),
            ),
            "channel 'train': column loan_date holds values that are not dates",
        ),
    ],
    ids=[
        "missing",
        "empty-folder",
        "only-csv",
        "zero-rows",
        "missing-column",
        "missing-columns",
        "no-dates",
        "text-feature",
        "bad-label",
        "null-label",
        "bad-dates",
    ],
)
def test_each_channel_problem_is_one_sentence(tmp_path, table, make, sentence):
    root = tmp_path / "train"
    make(root, table)
    with pytest.raises(ChannelError) as info:
        _read(root)
    message = str(info.value)
    assert sentence.format(root=root) in message
    assert "\n" not in message


def test_files_that_disagree_on_types(tmp_path, table):
    root = tmp_path / "train"
    root.mkdir()
    pq.write_table(table, root / "a.parquet")
    pq.write_table(table.set_column(5, "age", pa.array(["old"] * table.num_rows)), root / "b.parquet")
    with pytest.raises(ChannelError, match="channel 'train': cannot read its Parquet files"):
        _read(root)


def test_truth_file(tmp_path):
    truth = pa.table({"loan_id": pa.array([1, 2, None], pa.int64()), "p_true": [0.1, 0.2, 0.3]})
    (tmp_path / "truth").mkdir()
    pq.write_table(truth, tmp_path / "truth" / "data.truth.parquet")
    got = read_truth(tmp_path / "truth")
    assert got["loan_id"].tolist() == [1, 2] and got["p_true"].tolist() == [0.1, 0.2]
    pq.write_table(pa.table({"loan_id": [1]}), tmp_path / "truth" / "data.truth.parquet")
    with pytest.raises(ChannelError, match="channel 'truth' lacks p_true"):
        read_truth(tmp_path / "truth")
