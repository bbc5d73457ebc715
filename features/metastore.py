"""A standalone Hive Metastore service from the PySpark wheel's own jars.

The embedded Derby metastore admits one JVM at a time; the local stack runs this
service over the same Derby database (or PostgreSQL) so the feature job, the Thrift
server, batch scoring and notebooks can all use the catalog at once, each pointing at
`thrift://127.0.0.1:<port>` (settings: metastore.kind = "thrift").

    python -m features metastore [--host 127.0.0.1] [--port 9083]     # runs in the foreground

Hive 2.3's own service (`HiveMetaStore`) listens on every interface and has no setting for
the address, so the service runs through `sparkmaker.BoundMetaStore` (features/java/), the
same handler behind a socket bound to `--host`: loopback unless asked otherwise (the
compose cluster binds its container's address).
"""

from __future__ import annotations

import html
from pathlib import Path

from configuration.settings import Settings
from features.session import LOG4J_OPTION, derby_dir, require_java, warehouse_dir


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def hive_site(settings: Settings, database_url: str | None = None) -> str:
    """hive-site.xml for the service: Derby under the lake unless a JDBC URL is configured."""
    ms = settings.metastore
    if database_url is None:
        database_url = ms.jdbc_url or f"jdbc:derby:;databaseName={derby_dir(settings) / 'metastore_db'};create=true"
    props = {
        "javax.jdo.option.ConnectionURL": database_url,
        "hive.metastore.warehouse.dir": warehouse_dir(settings),
        "datanucleus.schema.autoCreateAll": "true",
        "hive.metastore.schema.verification": "false",
    }
    if database_url.startswith("jdbc:postgresql"):
        props.update(
            {
                # DataNucleus creates most tables on first use, with their foreign keys, on a
                # second connection. On PostgreSQL the service's first CREATE TABLE then waits
                # forever: ALTER TABLE "TBL_PRIVS" ADD ... REFERENCES "TBLS" needs a lock that
                # the create's own open transaction holds. Tables and columns yes, constraints no.
                "datanucleus.schema.autoCreateAll": "false",
                "datanucleus.schema.autoCreateTables": "true",
                "datanucleus.schema.autoCreateColumns": "true",
                "datanucleus.schema.autoCreateConstraints": "false",
                "javax.jdo.option.ConnectionDriverName": ms.jdbc_driver,
                "javax.jdo.option.ConnectionUserName": ms.jdbc_user,
                "javax.jdo.option.ConnectionPassword": ms.jdbc_password.get_secret_value(),
            }
        )
    body = "\n".join(
        f"  <property><name>{html.escape(k)}</name><value>{html.escape(v)}</value></property>" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}\n</configuration>\n'


def service_command(
    settings: Settings, port: int, conf_dir: Path, database_url: str | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """The java command line of the service; writes its hive-site.xml into conf_dir."""
    from features.java_extensions import BOUND_METASTORE, compiled_classes, default_cache

    require_java()
    classes = compiled_classes(default_cache(Path(settings.paths.state_dir)))
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "hive-site.xml").write_text(hive_site(settings, database_url), encoding="utf-8")
    folder = derby_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    classpath = [str(conf_dir), str(classes), str(spark_home() / "jars" / "*")]
    if (database_url or settings.metastore.jdbc_url).startswith("jdbc:postgresql"):
        classpath.append(settings.metastore.jdbc_jars)
    return [
        "java",
        # Without this selector the service dies on a missing com.lmax.disruptor class.
        "-Dlog4j2.contextSelector=org.apache.logging.log4j.core.selector.ClassLoaderContextSelector",
        LOG4J_OPTION,
        f"-Dderby.system.home={folder}",
        "-cp",
        ":".join(classpath),
        BOUND_METASTORE,
        host,
        str(port),
    ]
