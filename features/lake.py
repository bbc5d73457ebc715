"""Small file operations on the lake, for local paths (plain Python) and Hadoop URIs (Spark's FileSystem).

The feature job needs only a handful: write a manifest, switch the CURRENT pointer
atomically, read them back, delete a failed snapshot. Components that run without
Spark (training, the API) use `LocalLake` on local lakes.

Lake layout (one dataset):
    <lake>/<dataset>/CURRENT.json                         the current snapshot: run_id, as_of, manifest URI
    <lake>/<dataset>/snapshots/<run_id>/manifest.json     the run manifest (contract section 5)
    <lake>/<dataset>/snapshots/<run_id>/{training,latest,rejects}/   Parquet
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from configuration.errors import UserError
from configuration.files import write_atomic
from configuration.settings import Settings


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


class Lake(Protocol):
    def exists(self, uri: str) -> bool: ...
    def read_text(self, uri: str) -> str: ...
    def write_text_atomic(self, uri: str, text: str) -> None: ...
    def delete(self, uri: str) -> None: ...


class LocalLake:
    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def read_text(self, uri: str) -> str:
        return local_path(uri).read_text(encoding="utf-8")

    def write_text_atomic(self, uri: str, text: str) -> None:
        write_atomic(local_path(uri), text)

    def delete(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class HadoopLake:
    """Through the JVM's Hadoop FileSystem: hdfs://, s3a:// and anything else Spark can reach."""

    def __init__(self, spark) -> None:
        self._jvm = spark.sparkContext._jvm
        self._gateway = spark.sparkContext._gateway
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, uri: str):
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str):
        return self._path(uri).getFileSystem(self._conf)

    def exists(self, uri: str) -> bool:
        return bool(self._fs(uri).exists(self._path(uri)))

    def read_text(self, uri: str) -> str:
        stream = self._fs(uri).open(self._path(uri))
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text_atomic(self, uri: str, text: str) -> None:
        # A rename with OVERWRITE through FileContext is atomic on HDFS; an object store's
        # single PUT of a small object is atomic by itself.
        jvm = self._jvm
        tmp = self._path(uri + ".tmp")
        stream = self._fs(uri).create(tmp, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(self._path(uri).toUri(), self._conf)
        rename_options = self._gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
        rename_options[0] = jvm.org.apache.hadoop.fs.Options.Rename.OVERWRITE
        context.rename(tmp, self._path(uri), rename_options)

    def delete(self, uri: str) -> None:
        self._fs(uri).delete(self._path(uri), True)


def lake_for(uri: str, spark=None) -> Lake:
    if is_local(uri):
        return LocalLake()
    if spark is None:
        raise UserError(f"the lake {uri} is not a local path: this command needs Spark to reach it")
    return HadoopLake(spark)


def parquet_rows(uri: str, spark=None) -> int:
    """Rows of a Parquet folder the job wrote: the sum of its files' footers on a local lake (no Spark
    jobs: counting through Spark costs a schema inference and a count job per folder), Spark's count
    elsewhere. Spark's own rule for what is data: names starting with `_` or `.` are not."""
    if is_local(uri):
        import pyarrow.parquet as pq

        files = sorted(p for p in local_path(uri).iterdir() if p.is_file() and not p.name.startswith(("_", ".")))
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if spark is None:
        raise UserError(f"{uri} is not a local path: counting its rows needs Spark")
    return int(spark.read.parquet(uri).count())


# Where things are, for every component.


def dataset_uri(settings: Settings) -> str:
    return join(settings.paths.lake, settings.features.dataset)


def snapshot_uri(settings: Settings, run_id: str) -> str:
    return join(dataset_uri(settings), "snapshots", run_id)


def current_pointer_uri(settings: Settings) -> str:
    return join(dataset_uri(settings), "CURRENT.json")


def read_current(settings: Settings, spark=None) -> dict | None:
    """The CURRENT pointer ({run_id, as_of, manifest}) or None before the first successful run."""
    uri = current_pointer_uri(settings)
    lake = lake_for(uri, spark)
    if not lake.exists(uri):
        return None
    return json.loads(lake.read_text(uri))


def read_manifest(settings: Settings, run_id: str | None = None, spark=None) -> dict:
    """The manifest of a snapshot (default: the current one). UserError if there is none."""
    if run_id is None:
        current = read_current(settings, spark)
        if current is None:
            raise UserError(
                f"no feature snapshot in {dataset_uri(settings)} yet: run the feature job first (python -m features --input CSV)"
            )
        run_id = current["run_id"]
    uri = join(snapshot_uri(settings, run_id), "manifest.json")
    lake = lake_for(uri, spark)
    if not lake.exists(uri):
        raise UserError(f"no snapshot {run_id} in {dataset_uri(settings)}: list them with python -m features snapshots")
    return json.loads(lake.read_text(uri))


LOCK_FILE = ".lock"


@contextmanager
def exclusive(settings: Settings, what: str) -> Iterator[None]:
    """Hold the dataset's lock on a local lake while `what` (a feature run, a prune) changes it.

    Two feature runs publishing at once could leave the Hive tables on one snapshot and
    CURRENT.json on the other. The lock is an flock on `<dataset>/.lock`: the kernel drops
    it when its process ends, however it ends, so a killed run never leaves it stale. On
    S3 or HDFS there is no such lock: schedule one writer per dataset there.
    """
    dataset = dataset_uri(settings)
    if not is_local(dataset):
        yield
        return
    path = local_path(dataset) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"cannot lock {path} ({exc.strerror}): check that the lake {settings.paths.lake} is a writable folder"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{dataset} is busy: {holder} holds {path}; wait for it to finish, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} (pid {os.getpid()}, since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
