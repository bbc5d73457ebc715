"""Building the SparkSession: Java check, local defaults, Hive metastore and lake connectors.

The one place that turns settings into Spark configuration, so the feature job, the
`sql` command, batch scoring and the tests all see the same metastore.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, Settings

JAVA_MISSING = (
    "Java 17 is required by Spark and was not found: install it "
    "(Debian: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
)

LOG4J_OPTION = f"-Dlog4j2.configurationFile={REPO_ROOT / 'configuration' / 'log4j2.properties'}"
# Masters whose executors run on this machine (local mode, or a standalone cluster on loopback
# such as stack.spark_cluster's): they can run this very interpreter.
_SAME_MACHINE_MASTERS = ("local", "spark://127.0.0.1:", "spark://localhost:")
_DERBY_IN_USE = ("Another instance of Derby may have already booted the database", "XSDB6")


def require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return
    if shutil.which("java") is None:
        raise UserError(JAVA_MISSING)


def derby_dir(settings: Settings) -> Path:
    if settings.metastore.derby_dir:
        return Path(settings.metastore.derby_dir)
    local = settings.local_lake_path()
    return local / "_metastore" if local else Path(settings.paths.state_dir) / "metastore"


def warehouse_dir(settings: Settings) -> str:
    if settings.metastore.warehouse_dir:
        return settings.metastore.warehouse_dir
    return settings.paths.lake.rstrip("/") + "/_warehouse"


def metastore_conf(settings: Settings) -> dict[str, str]:
    """spark.* settings that point Spark's Hive catalog at the configured metastore."""
    ms = settings.metastore
    conf = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": warehouse_dir(settings),
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
    }
    if ms.kind == "embedded":
        folder = derby_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={folder / 'metastore_db'};create=true"
        )
        # derby.log goes beside the database instead of the working directory.
        conf["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={folder}"
    elif ms.kind == "thrift":
        conf["spark.hadoop.hive.metastore.uris"] = ms.uris
    else:
        conf.update(
            {
                "spark.hadoop.javax.jdo.option.ConnectionURL": ms.jdbc_url,
                "spark.hadoop.javax.jdo.option.ConnectionDriverName": ms.jdbc_driver,
                "spark.hadoop.javax.jdo.option.ConnectionUserName": ms.jdbc_user,
                "spark.hadoop.javax.jdo.option.ConnectionPassword": ms.jdbc_password.get_secret_value(),
                # The metastore client loads the driver from the JVM's own classpath, not spark.jars.
                "spark.driver.extraClassPath": ms.jdbc_jars,
            }
        )
    return conf


def session_conf(settings: Settings) -> dict[str, str]:
    sp = settings.spark
    conf = {
        "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
        "spark.driver.memory": sp.driver_memory,
        "spark.ui.enabled": str(sp.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        # Parquet timestamps and dates as every other reader (pyarrow, DuckDB, Hive) expects them.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    metastore = metastore_conf(settings)
    driver_options = [LOG4J_OPTION, metastore.pop("spark.driver.extraJavaOptions", ""), sp.java_options]
    conf["spark.driver.extraJavaOptions"] = " ".join(option for option in driver_options if option)
    if sp.java_options:
        conf["spark.executor.extraJavaOptions"] = sp.java_options
    conf.update(metastore)
    conf.update(sp.extra_conf)
    return conf


def with_class_archive(conf: dict[str, str], settings: Settings) -> dict[str, str]:
    """conf with the driver JVM mapping the class archive (features.class_archive), when there is one to map.

    Not with extra driver classpath entries (a JDBC metastore's driver jar): they go before
    Spark's jars, and the JVM refuses an archive whose classpath is not a prefix of its own."""
    if not settings.spark.class_archive or conf.get("spark.driver.extraClassPath"):
        return conf
    from features.class_archive import default_folder, java_option

    option = java_option(default_folder(settings))
    if option is None:
        return conf
    return {**conf, "spark.driver.extraJavaOptions": f"{conf['spark.driver.extraJavaOptions']} {option}"}


def build_session(settings: Settings, app_name: str, master: str | None = None):
    """Start (or join, under spark-submit) a Hive-enabled SparkSession configured from settings."""
    require_java()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    launched_by_submit = SparkConf().contains("spark.master")
    chosen_master = master or (None if launched_by_submit else settings.spark.master)
    if chosen_master and chosen_master.startswith(_SAME_MACHINE_MASTERS):
        # Spark would otherwise bind its driver to the machine's first non-loopback address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers (pandas UDFs, mapInPandas) must run this interpreter, with its packages,
        # not whichever python3 comes first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = SparkSession.builder.appName(app_name)
    if chosen_master:
        builder = builder.master(chosen_master)
    for key, value in with_class_archive(session_conf(settings), settings).items():
        builder = builder.config(key, value)
    try:
        spark = builder.enableHiveSupport().getOrCreate()
    except Exception as exc:  # the JVM failed to start: say why in one line
        raise UserError(f"cannot start Spark: {str(exc).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    # PySpark logs every failed query with its JVM stack trace; callers turn those into one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    return spark


def explain_metastore_error(exc: BaseException, settings: Settings) -> UserError | None:
    """A one-line UserError for a metastore that cannot be opened, or None if exc is something else."""
    text = str(exc)
    if any(marker in text for marker in _DERBY_IN_USE) or (
        settings.metastore.kind == "embedded" and "Unable to instantiate" in text
    ):
        return UserError(
            f"the embedded Hive metastore in {derby_dir(settings)} is in use by another Spark process "
            "(a Thrift server or a notebook?): stop it, or run a metastore service and set metastore.kind = thrift"
        )
    if settings.metastore.kind == "jdbc" and (
        "No suitable driver" in text or "Failed initialising database" in text or "JDOFatalDataStoreException" in text
    ):
        cause = next(
            (line.strip() for line in text.splitlines() if "SQLException" in line or "PSQLException" in line), ""
        )
        return UserError(
            f"cannot open the metastore database {settings.metastore.jdbc_url}: {cause or 'see the log above'} "
            f"(check metastore.jdbc_url, jdbc_user, jdbc_password and that {settings.metastore.jdbc_jars} exists)"
        )
    if settings.metastore.kind == "thrift" and (
        "Could not connect to meta store" in text or "TTransportException" in text
    ):
        return UserError(
            f"cannot reach the Hive metastore at {settings.metastore.uris}: start it or fix metastore.uris"
        )
    return None


def require_filesystem(spark, uri: str) -> None:
    """Fail before any work when Spark has no connector for the URI's scheme (s3a without hadoop-aws)."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme == "file":
        return
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, hadoop_conf)
    except Exception:
        hint = ""
        if scheme in ("s3a", "s3", "s3n"):
            version = jvm.org.apache.hadoop.util.VersionInfo.getVersion()
            hint = (
                f": Spark has no S3A connector on its classpath; add it with "
                f'spark.extra_conf."spark.jars.packages" = "org.apache.hadoop:hadoop-aws:{version}" '
                "(needs Maven access) or put hadoop-aws and the AWS SDK bundle jars in spark.jars"
            )
        raise UserError(f"no filesystem connector for {scheme}:// ({uri}){hint}") from None
