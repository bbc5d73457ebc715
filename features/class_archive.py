"""A class-data-sharing archive of Spark's classes for the driver JVMs that Python starts.

A JVM that maps its classes from an archive instead of reading, verifying and parsing them
from ~250 jars starts Spark faster: on 2 cores the feature job at 777,909 rows took
~31 s with it against ~35 s without (JVM and session start 2.8 s against 5.1 s, the Hive
client's start 2.8 s against 4.1 s; benchmarks/README.md). Java 17 writes such a "dynamic"
archive when a JVM run with `-XX:ArchiveClassesAtExit` exits: `build` runs the feature job
once on a small generated file for that, and later sessions map it (`java_option`).

The archive is valid for one Java and one set of jars only, so its file name is a hash of
both: after an upgrade of either, the old one is simply not found (no warning, no stale
classes) until `python -m features class-archive` builds the new one. It holds code the JVM
runs, so it lives where the compiled SQL-server classes live (java_extensions.default_cache:
root-owned when built as root) and is written once, whole, then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, Settings

# Classes from signed jars and a few that fail verification are left out by the JVM itself;
# what it archives is what the feature job loads (Spark SQL, CSV, Parquet, Hive, Derby).
BUILD_ROWS = 2_000
BUILD_TIMEOUT_SECONDS = 600.0


def java_binary() -> Path:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return Path(java_home, "bin", "java").resolve()
    found = shutil.which("java")
    if found is None:
        from features.session import JAVA_MISSING

        raise UserError(JAVA_MISSING)
    return Path(found).resolve()


def _fingerprint(path: Path) -> bytes:
    stat = path.stat()
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode()


def archive_key() -> str:
    """A hash of what the archive depends on: the Java binary and its VM library, and every jar of Spark."""
    from features.metastore import spark_home

    java = java_binary()
    digest = hashlib.sha256(_fingerprint(java))
    for vm in sorted(java.parent.parent.glob("lib/server/libjvm.so")):
        digest.update(_fingerprint(vm))
    for jar in sorted((spark_home() / "jars").glob("*.jar")):
        digest.update(_fingerprint(jar))
    return digest.hexdigest()[:16]


def default_folder(settings: Settings) -> Path:
    """Where the archive lives for these settings: beside the SQL server's compiled classes."""
    from features.java_extensions import default_cache

    return default_cache(Path(settings.paths.state_dir))


def archive_path(cache: Path) -> Path:
    return cache / "class-archive" / f"spark-{archive_key()}.jsa"


def java_option(cache: Path) -> str | None:
    """`-XX:SharedArchiveFile=...` when the archive for this Java and these jars exists, else None."""
    try:
        path = archive_path(cache)
    except (OSError, UserError):
        return None
    return f"-XX:SharedArchiveFile={path}" if path.is_file() else None


def build(settings: Settings, cache: Path, force: bool = False, say=print) -> Path:
    """Write the archive for this Java and these jars (a small feature job run once), unless it exists."""
    target = archive_path(cache)
    if target.is_file() and not force:
        say(f"class archive {target}: up to date")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    work = Path(tempfile.mkdtemp(prefix="class-archive-"))
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    started = time.monotonic()
    try:
        from features.sample_data import generate, write

        csv = work / "loans.csv"
        raw, truth = generate(BUILD_ROWS, seed=11, dirty=0.01)
        write(raw, truth, csv)
        env = {
            **os.environ,
            "SPARKMAKER_PATHS__LAKE": str(work / "lake"),
            "SPARKMAKER_PATHS__STATE_DIR": str(work / "state"),
            "SPARKMAKER_FEATURES__MATERIALIZE": "false",
            "SPARKMAKER_METASTORE__KIND": "embedded",
            "SPARKMAKER_SPARK__CLASS_ARCHIVE": "false",
            "SPARKMAKER_SPARK__JAVA_OPTIONS": f"{settings.spark.java_options} -XX:ArchiveClassesAtExit={partial}",
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
        say(f"class archive: running the feature job once on {BUILD_ROWS:,} generated rows to record its classes ...")
        # Its own session, so that the JVM, which writes the archive as it exits (after Python), can be waited for.
        proc = subprocess.Popen(
            [sys.executable, "-m", "features", "run", "--input", str(csv), "--as-of", "2021-09-18"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output, _ = proc.communicate(timeout=BUILD_TIMEOUT_SECONDS)
        _wait_for_session(proc.pid, started + BUILD_TIMEOUT_SECONDS)
        if proc.returncode != 0:
            last = [line for line in output.decode(errors="replace").splitlines() if line.strip()][-1:]
            raise UserError(
                f"cannot build the class archive (the feature job exited {proc.returncode}"
                + (f": {last[0][:300]}" if last else "")
                + "); Spark still runs without it"
            )
        if not partial.is_file() or partial.stat().st_size == 0:
            raise UserError(
                f"cannot build the class archive: {java_binary()} wrote none (a dynamic archive needs the JDK's "
                "base archive, lib/server/classes.jsa: java -Xshare:dump writes it); Spark still runs without it"
            )
        os.chmod(partial, 0o444)
        partial.replace(target)
        say(
            f"class archive {target}: built in {time.monotonic() - started:.0f} s "
            f"({target.stat().st_size / 2**20:,.0f} MB)"
        )
        return target
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        raise UserError(
            f"cannot build the class archive: the feature job ran over {BUILD_TIMEOUT_SECONDS:.0f} s"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def _session_members(sid: int) -> list[int]:
    import psutil

    members = []
    for process in psutil.process_iter():
        try:
            # A zombie has exited (its archive is written); it waits only for whoever adopted it to reap it.
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue
    return members


def _wait_for_session(sid: int, deadline: float) -> None:
    while _session_members(sid):
        if time.monotonic() > deadline:
            _kill_session(sid)
            raise UserError("cannot build the class archive: its JVM did not exit in time")
        time.sleep(0.2)


def _kill_session(sid: int) -> None:
    import signal

    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
