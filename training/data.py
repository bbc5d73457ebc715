"""Reading the channels: Parquet files in any sub-folder layout, checked against the contract.

A channel folder may hold one file, Spark's `part-*.parquet` files with `_SUCCESS` and
`.crc` companions, Hive-style `key=value/` sub-folders, or any nesting of those (SageMaker
File mode copies S3 keys below the channel prefix as sub-folders). Names starting with
`_` or `.` are skipped as Spark and Hadoop do; other files are taken when they are Parquet
(by their `PAR1` magic bytes, whatever their name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from configuration.errors import UserError
from features.contract import FEATURE_COLUMNS, LABEL_COLUMN

PARQUET_MAGIC = b"PAR1"
DATE_COLUMN = "loan_date"
LOAN_ID = "loan_id"


class ChannelError(UserError):
    """A channel is missing, empty, or holds data that breaks the contract."""


@dataclass
class Frame:
    """One channel's rows, as the learner wants them."""

    features: np.ndarray  # float32 [rows, len(FEATURE_COLUMNS)], NaN = missing
    label: np.ndarray  # int8 0/1
    loan_date: np.ndarray | None  # datetime64[D]
    loan_id: np.ndarray | None  # int64

    def __len__(self) -> int:
        return len(self.label)

    def take(self, mask: np.ndarray) -> "Frame":
        return Frame(
            features=self.features[mask],
            label=self.label[mask],
            loan_date=None if self.loan_date is None else self.loan_date[mask],
            loan_id=None if self.loan_id is None else self.loan_id[mask],
        )


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def discover_parquet(folder: Path) -> list[Path]:
    """Every Parquet file under `folder`, sorted; skips `_*` and `.*` names (files and folders)."""
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(("_", ".")) for part in relative.parts):
            continue
        if path.is_file() and _is_parquet(path):
            found.append(path)
    return found


def channel_files(name: str, folder: Path) -> list[Path]:
    if not folder.exists():
        raise ChannelError(f"channel {name!r} is missing: {folder} does not exist")
    if folder.is_file():
        if _is_parquet(folder):
            return [folder]
        raise ChannelError(f"channel {name!r} is {folder}, which is not a Parquet file")
    files = discover_parquet(folder)
    if not files:
        others = [p.name for p in sorted(folder.rglob("*")) if p.is_file()][:3]
        seen = f" (it holds {', '.join(others)}{', …' if len(others) == 3 else ''})" if others else ""
        raise ChannelError(
            f"channel {name!r} at {folder} holds no Parquet files{seen}: point it at the feature job's training output"
        )
    return files


def _dataset(name: str, folder: Path, files: list[Path]) -> ds.Dataset:
    base = folder if folder.is_dir() else folder.parent
    try:
        return ds.dataset([str(f) for f in files], format="parquet", partitioning="hive", partition_base_dir=str(base))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ChannelError(f"channel {name!r}: cannot read its Parquet files together ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _numeric(name: str, column: str, array: pa.ChunkedArray) -> np.ndarray:
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), np.nan, dtype=np.float32)
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    ):
        raise ChannelError(
            f"channel {name!r}: column {column} is {kind}, not a number: rebuild the data with the feature job"
        )
    as_float = pc.cast(array, pa.float64(), safe=False)
    # NULL stays a missing value for the learner, never a zero.
    return pc.fill_null(as_float, np.nan).to_numpy().astype(np.float32)


def _dates(name: str, array: pa.ChunkedArray) -> np.ndarray:
    kind = array.type
    try:
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_timestamp(kind)
            or pa.types.is_date64(kind)
        ):
            array = pc.cast(array, pa.date32())
        elif not pa.types.is_date32(kind):
            raise ChannelError(f"channel {name!r}: column {DATE_COLUMN} is {kind}, not a date")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ChannelError(
            f"channel {name!r}: column {DATE_COLUMN} holds values that are not dates ({_first_line(exc)})"
        ) from None
    if array.null_count:
        raise ChannelError(
            f"channel {name!r}: {array.null_count} rows have no {DATE_COLUMN}: every row needs its loan date"
        )
    return array.to_numpy().astype("datetime64[D]")


def read_channel(name: str, folder: Path, need_dates: bool, need_loan_id: bool) -> Frame:
    """Read the model's columns of one channel; raise ChannelError with one sentence on any problem."""
    files = channel_files(name, folder)
    dataset = _dataset(name, folder, files)
    present = set(dataset.schema.names)
    wanted = [*FEATURE_COLUMNS, LABEL_COLUMN]
    missing = [c for c in wanted if c not in present]
    if need_dates and DATE_COLUMN not in present:
        missing.append(DATE_COLUMN)
    if need_loan_id and LOAN_ID not in present:
        missing.append(LOAN_ID)
    if missing:
        raise ChannelError(
            f"channel {name!r} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "it must hold the feature job's training table"
        )
    columns = wanted + [c for c in (DATE_COLUMN, LOAN_ID) if c in present]
    try:
        table = dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ChannelError(f"channel {name!r}: cannot read its Parquet files ({_first_line(exc)})") from None
    if table.num_rows == 0:
        raise ChannelError(f"channel {name!r} at {folder} is empty: its Parquet files hold no rows")

    features = np.column_stack([_numeric(name, c, table.column(c)) for c in FEATURE_COLUMNS])
    label_array = table.column(LABEL_COLUMN)
    if label_array.null_count:
        raise ChannelError(
            f"channel {name!r}: {label_array.null_count} rows have no {LABEL_COLUMN}: every training row needs its label"
        )
    label = _numeric(name, LABEL_COLUMN, label_array)
    bad = ~np.isin(label, (0.0, 1.0))
    if bad.any():
        raise ChannelError(
            f"channel {name!r}: {int(bad.sum())} rows have {LABEL_COLUMN} other than 0 or 1 (e.g. {label[bad][0]:g})"
        )
    loan_date = _dates(name, table.column(DATE_COLUMN)) if DATE_COLUMN in table.column_names else None
    loan_id = None
    if LOAN_ID in table.column_names:
        ids = table.column(LOAN_ID)
        loan_id = (
            pc.fill_null(pc.cast(ids, pa.int64(), safe=False), -1).to_numpy() if pa.types.is_integer(ids.type) else None
        )
        if loan_id is None and need_loan_id:
            raise ChannelError(f"channel {name!r}: column {LOAN_ID} is {ids.type}, not an integer")
    return Frame(features=features, label=label.astype(np.int8), loan_date=loan_date, loan_id=loan_id)


def read_truth(folder: Path) -> dict[str, np.ndarray]:
    """The generator's truth file (loan_id, p_true) from the `truth` channel."""
    files = channel_files("truth", folder)
    dataset = _dataset("truth", folder, files)
    missing = [c for c in (LOAN_ID, "p_true") if c not in dataset.schema.names]
    if missing:
        raise ChannelError(
            f"channel 'truth' lacks {', '.join(missing)}: give the <csv>.truth.parquet file sample_data wrote"
        )
    table = dataset.to_table(columns=[LOAN_ID, "p_true"]).drop_null()
    return {
        LOAN_ID: pc.cast(table.column(LOAN_ID), pa.int64()).to_numpy(),
        "p_true": pc.cast(table.column("p_true"), pa.float64()).to_numpy(),
    }
