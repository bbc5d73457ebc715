"""The project's own small Java classes (features/java/), compiled once per source hash.

- `sparkmaker.PasswordAuthenticator`: HiveServer2 CUSTOM authentication against a salted hash.
- `sparkmaker.SqlGuard`: spark.sql.extensions of the SQL server, refusing file writes and code loading.
- `sparkmaker.BoundMetaStore`: the Hive metastore service bound to one address (Hive 2.3 has no setting).

They are compiled with the JDK's `javac` against the PySpark wheel's jars into
`<cache>/<sha256 of the sources>/` (a few seconds, once): the classes change only when the
sources do. The cache is readable by every user (the SQL server runs as an unprivileged
user), writable by its owner only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from configuration.errors import UserError

SOURCES = Path(__file__).resolve().parent / "java"
PASSWORD_AUTHENTICATOR = "sparkmaker.PasswordAuthenticator"
SQL_GUARD = "sparkmaker.SqlGuard"
BOUND_METASTORE = "sparkmaker.BoundMetaStore"
PREBUILT = Path("/opt/sparkmaker-java")  # compiled into the compose image (compose/Dockerfile), which has no javac
PBKDF2_ITERATIONS = 200_000


def sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def sources_hash() -> str:
    digest = hashlib.sha256()
    for path in sources():
        digest.update(str(path.relative_to(SOURCES)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def default_cache(state_dir: Path) -> Path:
    """Where the classes go: a root-owned folder of their own when run as root, else under the state folder.

    Not under a service user's home: the SQL server's user runs these classes, and no other
    user (the API's and model server's `sparkmaker` included) may be able to replace them."""
    return Path("/var/lib/sparkmaker-java") if os.geteuid() == 0 else state_dir / "java"


def compiled_classes(cache: Path) -> Path:
    """The folder of the compiled classes (a classpath entry), compiling them if this source hash has none."""
    from features.metastore import spark_home

    if (PREBUILT / sources_hash() / "sparkmaker").is_dir():
        return PREBUILT / sources_hash()
    target = cache / sources_hash()
    if (target / "sparkmaker").is_dir():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise UserError(
            "javac (a JDK 17) is needed once to compile the SQL server's authentication and guards: "
            "apt-get install -y openjdk-17-jdk-headless"
        )
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, 0o755)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    try:
        proc = subprocess.run(
            [javac, "-nowarn", "-cp", str(spark_home() / "jars" / "*"), "-d", str(work), *map(str, sources())],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no output"])[0][:300]
            raise UserError(f"cannot compile {SOURCES}: {first}")
        for folder, _, files in os.walk(work):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(Path(folder) / name, 0o644)
        try:
            work.rename(target)
        except OSError:  # another start compiled the same sources first
            if not (target / "sparkmaker").is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def password_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<hash>` (base64): the format PasswordAuthenticator.java reads."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def sql_server_credentials_env(user: str, password: str) -> dict[str, str]:
    """What the SQL server's PasswordAuthenticator reads: the user name and a salted hash, never the password."""
    return {"SPARKMAKER_SQL_USER": user, "SPARKMAKER_SQL_PASSWORD_HASH": password_hash(password)}


def sql_server_arguments(classes: Path) -> list[str]:
    """spark-submit arguments of every Spark Thrift server of the project (local stack and compose):
    logins checked by PasswordAuthenticator, no SQL on raw files, SqlGuard's refusals.

    They go after `--class ...HiveThriftServer2`: spark-submit takes `--hiveconf` only once it
    knows the class is the Thrift server."""
    return [
        "--driver-class-path",
        str(classes),
        # `SELECT ... FROM text.`/any/file`` would read any file the server may read.
        "--conf",
        "spark.sql.runSQLOnFiles=false",
        "--conf",
        f"spark.sql.extensions={SQL_GUARD}",
        "--hiveconf",
        "hive.server2.authentication=CUSTOM",
        "--hiveconf",
        f"hive.server2.custom.authentication.class={PASSWORD_AUTHENTICATOR}",
        "--hiveconf",
        "hive.server2.enable.doAs=false",
    ]
