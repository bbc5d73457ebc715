"""Batch scoring's in-process engine: a local Parquet table scored with pyarrow and XGBoost, no Spark job.

On a local master Spark adds about a second of fixed costs to a map-only job (planning, the
Python workers' round trip through Arrow, task scheduling) and brings no extra cores, so
`serving batch` scores inputs of up to `serving.batch_arrow_max_rows` rows here (serving.batch
decides). The arithmetic is the Spark engine's: the same casts (float32 by IEEE round to
nearest, as Spark's cast; integer keys as int64) and the same scoring step
(serving.batch_scoring), so both engines write the same rows, bit for bit (tested).

The output is Spark's layout (one part file and `_SUCCESS`) and its types, written into a new
folder that is removed again if anything fails, so a reader never finds half an output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError, excerpt
from serving.batch_scoring import scorer

# Rows per scoring call: large batches amortize XGBoost's per-call cost; 1 Mi rows of the
# key and feature columns is ~40 MB of Arrow and float32 matrix at a time.
BATCH_ROWS = 1 << 20


@dataclass(frozen=True)
class InputFacts:
    columns: list[str]
    rows: int
    castable: bool  # signed integer keys, signed integer or float32/64 features: casts made here as Spark makes them


def input_facts(path: Path, keys: list[str], feature_names: tuple[str, ...]) -> InputFacts | None:
    """What the engine choice needs, from the Parquet footers only; None when this engine should not read the
    input (no files, or partition folders: Spark reads those, or says why not). A file that is not Parquet is a
    UserError here, before Spark fails a job on it with pages of Java."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.types as types

    try:
        dataset = ds.dataset(path, format="parquet")  # ignores files named _* and .* as Spark does
        folder = path if path.is_dir() else path.parent
        if not dataset.files or any(Path(name).parent != folder for name in dataset.files):
            return None
        schema = dataset.schema
        rows = dataset.count_rows()
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read the input {path} as Parquet: {_first_line(exc)}") from None
    present = set(schema.names)
    # Signed integers and float32/float64 only: Spark reads unsigned 64-bit Parquet integers as decimals,
    # whose casts this engine does not copy.
    castable = all(types.is_signed_integer(schema.field(c).type) for c in keys if c in present) and all(
        types.is_signed_integer(kind) or types.is_float32(kind) or types.is_float64(kind)
        for kind in (schema.field(c).type for c in feature_names if c in present)
    )
    return InputFacts(columns=schema.names, rows=rows, castable=castable)


def new_output(output_path: Path) -> None:
    """The output folder, created empty; a UserError if it exists (an output is never overwritten) or cannot be made."""
    try:
        output_path.mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"cannot write {output_path}: it already exists (choose another --output)") from None
    except OSError as exc:
        raise UserError(f"cannot write {output_path}: {exc.strerror} (choose another --output)") from None


def score_to_parquet(
    input_path: Path,
    output_path: Path,
    model_bytes: bytes,
    model_sha256: str,
    keys: list[str],
    feature_names: tuple[str, ...],
    threshold: float,
    version: str,
    schema,
) -> tuple[int, int]:
    """Score every row of the input folder into the output folder new_output made; return (rows, positives).
    schema: the output's Arrow schema (the Spark engine's, serving.batch). On any failure the output
    folder is removed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    score = scorer(
        lambda: model_bytes,
        model_sha256,
        keys,
        len(feature_names),
        threshold,
        version,
        len(os.sched_getaffinity(0)),
    )
    part = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    rows = positives = 0
    try:
        model = score.booster()
        # A name Spark and pyarrow skip while it is written, the final one once complete.
        with pq.ParquetWriter(output_path / f".{part}.writing", schema, compression="snappy") as writer:
            scanner = ds.dataset(input_path, format="parquet").scanner(
                columns=[*keys, *feature_names], batch_size=BATCH_ROWS
            )
            for batch in scanner.to_batches():
                if batch.num_rows == 0:
                    continue
                prepared = pa.RecordBatch.from_arrays(
                    [
                        *(pc.cast(batch.column(c), pa.int64()) for c in keys),
                        # safe=False: round to nearest, as Spark's cast to float (an int64 above 2^24 is not exact in float32).
                        *(pc.cast(batch.column(c), pa.float32(), safe=False) for c in feature_names),
                    ],
                    names=[*keys, *feature_names],
                )
                scored = score.score_batch(prepared, model)
                writer.write_batch(scored)
                rows += scored.num_rows
                positives += pc.sum(scored.column("label")).as_py() or 0
        os.replace(output_path / f".{part}.writing", output_path / part)
        (output_path / "_SUCCESS").touch()
    except BaseException as exc:
        shutil.rmtree(output_path, ignore_errors=True)
        if isinstance(exc, pa.ArrowException):  # files that disagree, or one damaged after the footers were read
            raise UserError(f"cannot read the input {input_path} as Parquet: {_first_line(exc)}") from None
        raise
    return rows, positives


def _first_line(exc: BaseException) -> str:
    return excerpt(str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__, 300)
