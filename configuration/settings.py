"""The one settings object of sparkmaker.

Values come, lowest priority first, from the defaults below, then
`configuration/sparkmaker.toml`, then `configuration/local.toml` (untracked, for a
machine's own overrides) or the file named by `SPARKMAKER_CONFIG`, then environment
variables `SPARKMAKER_<SECTION>__<FIELD>` (e.g. `SPARKMAKER_SPARK__MASTER=local[4]`).

Entry points call `load_settings()` once and pass the object (or the section they need)
down; nothing else reads the environment. Relative paths in the files are resolved
against the repository root so that every process agrees on where the lake is,
whatever its working directory.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from configuration.errors import UserError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configuration"
DEFAULT_CONFIG_FILES = (CONFIG_DIR / "sparkmaker.toml", CONFIG_DIR / "local.toml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_uri(value: str) -> bool:
    return "://" in value


def resolve_path(value: str) -> str:
    """A local path relative to the repository root, or a URI unchanged."""
    if _is_uri(value) or value.startswith("/"):
        return value
    return str((REPO_ROOT / value).resolve())


class PathSettings(Section):
    lake: str = Field("lake", description="Root of the data lake: a local path, file://, hdfs:// or s3a:// URI.")
    state_dir: str = Field(".state", description="Local folder for logs, PID files, generated data and keys.")

    @model_validator(mode="after")
    def _resolve(self) -> "PathSettings":
        object.__setattr__(self, "lake", resolve_path(self.lake))
        object.__setattr__(self, "state_dir", resolve_path(self.state_dir))
        return self


# A feature run is a fresh JVM. It runs Spark's planning, Janino, Derby and the Hive client a few
# thousand times each, and its row loops millions of times. With Java's C2 thresholds (5,000 calls,
# or 600 calls with 15,000 calls plus loop turns) its compilers used 21 of its 36 CPU seconds.
# Ten times higher thresholds leave the lukewarm code to C1 and still give the row loops C2: 15 s
# of compiling, 1.5 s less wall time at 777,909 and at 7.8 M rows (benchmarks/README.md, Features,
# 2026-12-07 late night).
LUKEWARM_CODE_LEFT_TO_C1 = (
    "-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=20000 "
    "-XX:Tier4CompileThreshold=60000 -XX:Tier4BackEdgeThreshold=400000"
)


class SparkSettings(Section):
    master: str = Field("local[2]", description="Spark master URL used when the job is not launched by spark-submit.")
    shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions; a local master wants few.")
    driver_memory: str = Field("2g", description="spark.driver.memory (only applies when Python starts the JVM).")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = Field("WARN", description="Spark's own log level.")
    ui_enabled: bool = Field(False, description="Start the Spark web UI (port 4040).")
    java_options: str = Field(
        "-XX:+UseParallelGC " + LUKEWARM_CODE_LEFT_TO_C1,
        description="Options of the driver and executor JVMs. The parallel collector: on 2 cores G1's concurrent "
        "threads took ~2 of the feature job's ~37 s. C2 only for code called 10x more often than Java's default: "
        "in a fresh JVM the compilers used more than half of the job's CPU (benchmarks/README.md).",
    )
    class_archive: bool = Field(
        True,
        description="Start the driver JVMs that Python starts from the class-data-sharing archive of Spark's classes "
        "when one exists for this Java and these jars (python -m features class-archive builds it; start.sh does).",
    )
    extra_conf: dict[str, str] = Field(default_factory=dict, description="Any further spark.* settings, passed as is.")


class MetastoreSettings(Section):
    kind: Literal["embedded", "thrift", "jdbc"] = Field(
        "embedded",
        description="embedded: Derby under the lake (one JVM at a time); thrift: an external Hive metastore "
        "service; jdbc: a metastore database such as PostgreSQL.",
    )
    uris: str = Field("thrift://127.0.0.1:9083", description="hive.metastore.uris when kind = thrift.")
    derby_dir: str | None = Field(
        None,
        description="Folder of the embedded Derby database; default <lake>/_metastore (local lakes) "
        "or <state_dir>/metastore (remote lakes).",
    )
    jdbc_url: str = Field("", description="javax.jdo.option.ConnectionURL when kind = jdbc.")
    jdbc_driver: str = Field("org.postgresql.Driver", description="JDBC driver class when kind = jdbc.")
    jdbc_user: str = Field("", description="Metastore database user when kind = jdbc.")
    jdbc_password: SecretStr = Field(SecretStr(""), description="Metastore database password when kind = jdbc.")
    jdbc_jars: str = Field("/usr/share/java/postgresql.jar", description="Driver jar(s) added to Spark's classpath.")
    warehouse_dir: str | None = Field(None, description="spark.sql.warehouse.dir; default <lake>/_warehouse.")

    @model_validator(mode="after")
    def _check(self) -> "MetastoreSettings":
        if self.kind == "jdbc" and not self.jdbc_url:
            raise ValueError("metastore.kind is 'jdbc' but metastore.jdbc_url is empty: set it to the database URL")
        if self.derby_dir:
            object.__setattr__(self, "derby_dir", resolve_path(self.derby_dir))
        return self


class FeatureSettings(Section):
    database: str = Field("credit_risk", pattern=r"^[a-z_][a-z0-9_]*$", description="Hive database of the tables.")
    dataset: str = Field(
        "credit_risk", pattern=r"^[a-z_][a-z0-9_]*$", description="Folder of the snapshots under the lake."
    )
    max_reject_share: float = Field(
        0.05, ge=0.0, le=1.0, description="A run whose rejects exceed this share of the input fails."
    )
    materialize: bool = Field(True, description="Materialize the latest features into the online store after a run.")


class OnlineStoreSettings(Section):
    kind: Literal["sqlite", "redis"] = Field("sqlite", description="Backend of the online feature store.")
    sqlite_path: str | None = Field(
        None, description="SQLite file; default <lake>/online/features.sqlite (local lakes)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server when kind = redis.")
    key_prefix: str = Field(
        "sparkmaker", pattern=r"^[A-Za-z0-9_.-]+$", description="Prefix of every key the store writes (Redis)."
    )
    write_batch_rows: int = Field(5000, ge=1, description="Rows per write batch when materializing a snapshot.")
    timeout_seconds: float = Field(
        1.0, gt=0, description="Connect and read timeout of a store call (Redis, SQLite busy wait)."
    )


class TrainingSettings(Section):
    registry_dir: str | None = Field(
        None, description="Local side of the model registry (alias mirror, unpacked models); default <lake>/registry."
    )
    registry_backend: Literal["mlflow", "index"] = Field(
        "mlflow",
        description="mlflow: the MLflow model registry (mlflow.*); index: the old index.json registry "
        "in registry_dir (kept for reading; import it with python -m training registry import).",
    )
    image_uri: str = Field("", description="Training image for SageMaker jobs.")
    role_arn: str = Field("", description="IAM role SageMaker training jobs run as.")
    instance_type: str = Field("ml.m5.large", description="SageMaker training instance type.")


class MlflowSettings(Section):
    """MLflow tracking and the model registry (training/registry.py, training/mlflow_store.py)."""

    tracking_uri: str = Field(
        "",
        description="Tracking and registry store: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB or "
        "http://HOST:PORT; empty = sqlite:///<registry_dir>/mlflow/mlflow.db (default <lake>/registry/mlflow/mlflow.db), no server needed.",
    )
    artifact_location: str = Field(
        "",
        description="Where new experiments keep their artifacts (a folder or s3:// URI); "
        "empty = <registry_dir>/mlflow/artifacts (ignored when tracking_uri is an http:// server, which decides).",
    )
    experiment: str = Field("sparkmaker-credit-risk", min_length=1, description="Experiment of the training runs.")
    model_name: str = Field(
        "sparkmaker-credit-risk", min_length=1, description="Registered model holding the versions."
    )
    host: str = Field("127.0.0.1", description="Address of the browsable `mlflow server` the local stack starts.")
    port: int = Field(5000, ge=1, le=65535, description="Port of the browsable `mlflow server` the local stack starts.")
    sagemaker_mirror: bool = Field(
        False,
        description="Also mirror every version into SageMaker's Model Registry (a model package group; "
        "Approved while production, PendingManualApproval or Rejected otherwise).",
    )
    sagemaker_group: str = Field(
        "sparkmaker-credit-risk",
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="Model package group of the SageMaker mirror.",
    )
    sagemaker_image_uri: str = Field(
        "",
        description="Inference image the mirrored model packages name (default: serving's image, else training.image_uri).",
    )


class ServingSettings(Section):
    host: str = Field("127.0.0.1", description="Address the local model server binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the local model server.")
    workers: int = Field(1, ge=1, description="Model server worker processes.")
    admin_token: SecretStr = Field(SecretStr(""), description="Bearer token of the admin routes (model swap).")
    endpoint_name: str = Field("sparkmaker-credit-risk", description="SageMaker endpoint name.")
    instance_type: str = Field("ml.m5.large", description="SageMaker endpoint instance type.")
    instance_count: int = Field(1, ge=1, description="SageMaker endpoint instance count.")
    image_uri: str = Field(
        "", description="The serving image in ECR that `serving sagemaker deploy` hosts (bring your own container)."
    )
    role_arn: str = Field("", description="IAM role of the SageMaker model; empty: training.role_arn.")
    s3_prefix: str = Field("sparkmaker/models", description="Key prefix of model.tar.gz uploads in aws.s3_bucket.")
    model_dir: str | None = Field(
        None,
        description="Serve this model directory instead of the registry's production model (the container serves /opt/ml/model).",
    )
    model_version: str | None = Field(
        None,
        description="Version reported for a model served from a directory (deploy sets it in the container); default: from its sha256.",
    )
    control_dir: str | None = Field(
        None,
        description="Folder where an admin swap leaves the desired model for every worker; default <state_dir>/serving/port-<port>.",
    )
    watch_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="How often workers look at the production alias and the desired model."
    )
    batch_table: str = Field(
        "batch_predictions",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Hive table of batch scoring, in features.database.",
    )
    batch_engine: Literal["auto", "spark", "arrow"] = Field(
        "auto",
        description="Batch scoring's engine: spark (a Spark job), arrow (pyarrow and XGBoost in the driver process: "
        "local files and a local master only), or auto (arrow for local inputs of at most batch_arrow_max_rows rows "
        "on a local master, else spark).",
    )
    batch_arrow_max_rows: int = Field(
        10_000_000,
        ge=0,
        description="Largest input (rows) that batch_engine = auto scores in process rather than with Spark (on 2 "
        "cores the in-process engine was faster at 7.8 M rows too: benchmarks/README.md).",
    )
    target: Literal["local", "sagemaker"] = Field(
        "local",
        description="Where the pipeline's deploy step puts a promoted model: local (the model server follows the "
        "production alias) or sagemaker (serving.endpoint_name is updated through serving/deploy.py).",
    )

    @model_validator(mode="after")
    def _resolve(self) -> "ServingSettings":
        for name in ("model_dir", "control_dir"):
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, resolve_path(value))
        return self


class ApiSettings(Section):
    host: str = Field("127.0.0.1", description="Address the prediction API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the prediction API.")
    model_endpoint: Literal["http", "sagemaker"] = Field("http", description="How the API reaches the model.")
    model_url: str = Field(
        "http://127.0.0.1:8080",
        pattern=r"^https?://[^\s/]+",
        description="Model server base URL when model_endpoint = http.",
    )
    timeout_seconds: float = Field(2.0, gt=0, description="Model call timeout; slower answers are 504.")
    max_batch: int = Field(100, ge=1, description="Most ids one POST /predict may ask for.")
    max_body_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request body the API reads (bytes); a larger one is 413 before it is read whole.",
    )
    api_key_hashes: list[str] = Field(default_factory=list, description="sha256 hex digests of the accepted API keys.")
    auth_enabled: bool = Field(True, description="Require Authorization: Bearer <key>.")
    prediction_log: Literal["sqlite", "postgres"] = Field("sqlite", description="Backend of the prediction log.")
    prediction_log_sqlite: str | None = Field(
        None,
        description="SQLite file of the log; default <state_dir>/api/predictions.sqlite (a folder the API alone writes).",
    )
    prediction_log_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL DSN of the log."
    )
    prediction_log_table: str = Field(
        "predictions", pattern=r"^[a-z_][a-z0-9_]*$", description="Table of the prediction log (created if absent)."
    )
    log_flush_entries: int = Field(200, ge=1, description="The log writer flushes once this many entries wait.")
    log_flush_ms: int = Field(
        200, ge=1, description="The log writer flushes at least this often (ms): the loss window on a crash."
    )
    log_queue_max: int = Field(
        20000, ge=1, description="Entries waiting for the log writer; beyond this, new entries are dropped and counted."
    )
    retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After of a 503 (model endpoint or feature store unreachable)."
    )
    http_pool_size: int = Field(
        8,
        ge=1,
        description="Calls to the model endpoint at once: keep-alive connections to the model server (http), "
        "or concurrent SageMaker Runtime calls (sagemaker: raise it for a remote endpoint's network latency).",
    )
    model_batch_rows: int = Field(
        32,
        ge=1,
        description="Rows of the plain predictions that reach the model in one turn of the event loop, sent as one "
        "call (api.model_batching: nobody waits for company); 1 sends every prediction alone.",
    )
    workers: int = Field(1, ge=1, description="uvicorn worker processes of `python -m api`.")
    # Failed authentications (security): a client address that fails this often is refused with 429.
    auth_max_failures: int = Field(
        10, ge=1, description="Failed authentications one client address may make per window."
    )
    auth_failure_window_seconds: float = Field(
        60.0,
        gt=0,
        description="Window of auth_max_failures (s); a blocked address waits for the rest of it (Retry-After).",
    )
    auth_max_addresses: int = Field(
        10_000,
        ge=1,
        description="Client addresses the failure table remembers per worker (the oldest are forgotten first).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (10.0.0.5, 10.0.0.0/24; * for any) of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto the API believes: the client address of the failed-authentication "
        "limit, https for the console's Secure cookie. Empty: those headers are ignored, as a client could forge them.",
    )

    @model_validator(mode="after")
    def _check_hashes(self) -> "ApiSettings":
        for digest in self.api_key_hashes:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(
                    "api.api_key_hashes must hold sha256 hex digests (64 hex characters), not keys: "
                    "create one with python -m api keygen"
                )
        object.__setattr__(self, "api_key_hashes", [d.lower() for d in self.api_key_hashes])
        return self

    @model_validator(mode="after")
    def _check_proxies(self) -> "ApiSettings":
        for proxy in self.trusted_proxies:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(
                        f"api.trusted_proxies: {proxy!r} is not an IP address or network (10.0.0.5, 10.0.0.0/24) or *"
                    ) from None
        return self


class ConsoleSettings(Section):
    """The web console under /console (api.console): sign-in with an API key, then a session cookie."""

    enabled: bool = Field(True, description="Serve the console at /console on the API's port.")
    session_minutes: int = Field(
        480, ge=1, le=7 * 24 * 60, description="A console session expires this long after sign-in."
    )
    session_secret: SecretStr = Field(
        SecretStr(""),
        description="Key that signs session cookies; empty: a random one kept in <state_dir>/console-session.key (0600), "
        "shared by the API's workers.",
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the cookie Secure: auto = when the request came over https (behind a TLS proxy: one listed "
        "in api.trusted_proxies).",
    )
    rejects_sample_rows: int = Field(20, ge=1, le=500, description="Rejected rows the data page shows.")


class StackSettings(Section):
    metastore_port: int = Field(9083, ge=1, le=65535, description="Port of the local stack's Hive metastore service.")
    thrift_port: int = Field(
        10000, ge=1, le=65535, description="Port of the Spark Thrift server (HiveServer2 protocol)."
    )
    sample_rows: int = Field(
        777_715, ge=1, description="Rows of the sample data start.sh generates when no --input is given."
    )
    # Security: who may use the SQL server, and who it runs as.
    sql_user: str = Field(
        "sparkmaker",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="User name SQL clients log in with (password in <state_dir>/sql-password).",
    )
    service_user: str = Field(
        "sparkmaker",
        pattern=r"^([a-z_][a-z0-9_-]*)?$",
        description="Unprivileged system user the Hive metastore, the model server and the API run as when the stack "
        "is started as root (created if absent); empty: the starting user.",
    )
    sql_service_user: str = Field(
        "sparkmaker-sql",
        pattern=r"^([a-z_][a-z0-9_-]*)?$",
        description="Unprivileged system user the SQL server runs as when the stack is started as root (created if "
        "absent; another user than service_user, so that it cannot reach the API's files); empty: the starting user.",
    )


class SparkClusterSettings(Section):
    """A Spark standalone cluster on this machine (`python -m stack spark-cluster`): a master and N workers, loopback only."""

    master_port: int = Field(
        7077, ge=1, le=65535, description="Port of the standalone master (spark://127.0.0.1:PORT)."
    )
    master_ui_port: int = Field(
        8180, ge=1, le=65535, description="Web UI of the master; its /json/ page is the cluster's health check."
    )
    worker_port: int = Field(
        7078, ge=1, le=65535, description="Port of the first worker; worker i listens on worker_port + i."
    )
    worker_ui_port: int = Field(
        8181, ge=1, le=65535, description="Web UI of the first worker; worker i on worker_ui_port + i."
    )
    workers: int = Field(
        2, ge=1, le=16, description="Workers `spark-cluster start` starts unless --workers says otherwise."
    )
    worker_cores: int = Field(1, ge=1, description="Cores each worker offers.")
    worker_memory: str = Field(
        "1g", description="Memory each worker offers to executors (an executor takes 1g by default)."
    )


class NotebookSettings(Section):
    workdir: str | None = Field(
        None,
        description="Workspace of the notebooks: their sample data, own lake, metastore, registry and logs; "
        "default <state_dir>/notebooks (never the platform's lake).",
    )
    sample_rows: int = Field(20_000, ge=1_000, description="Rows of the sample data the notebooks generate.")
    seed: int = Field(7, ge=0, description="Seed of the notebooks' sample data.")
    dirty_share: float = Field(
        0.002, ge=0.0, lt=0.05, description="Share of sample rows planted to break a validation rule."
    )

    @model_validator(mode="after")
    def _resolve(self) -> "NotebookSettings":
        if self.workdir:
            object.__setattr__(self, "workdir", resolve_path(self.workdir))
        return self


class GateSettings(Section):
    """The pipeline's evaluation gate (pipeline/gate.py): challenger and champion scored on the same recent rows."""

    window_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="The comparison window: loans in this last share of the new snapshot's date range "
        "(and, where the snapshots overlap, after the champion's own training data ends).",
    )
    window_from: str | None = Field(
        None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="Start the window on this loan date instead (YYYY-MM-DD)."
    )
    min_rows: int = Field(200, ge=1, description="Refuse to judge on fewer rows in the window.")
    min_positives: int = Field(20, ge=1, description="Refuse to judge on fewer positives (status = 1) in the window.")
    min_auc: float = Field(0.55, ge=0, le=1, description="Absolute floor of the challenger's ROC-AUC, champion or not.")
    max_auc_drop: float = Field(
        0.005, ge=0, le=1, description="Most the challenger's ROC-AUC may fall below the champion's."
    )
    max_brier_rise: float = Field(
        0.05,
        ge=0,
        description="Most the challenger's Brier score may exceed the champion's, as a share of the champion's.",
    )
    min_brier_skill: float = Field(
        -0.05,
        le=1,
        description="Floor of the challenger's Brier skill score, 1 - Brier / (Brier of always predicting "
        "the window's own positive rate, which no model knows beforehand): -0.05 refuses a model more than 5 % worse "
        "than that constant, e.g. probabilities several times too high.",
    )


class PipelineSettings(Section):
    gate: GateSettings = GateSettings()


class AwsSettings(Section):
    region: str = Field("us-east-1", description="AWS region.")
    endpoint_url: str | None = Field(None, description="AWS API endpoint override (a local emulator such as moto).")
    s3_bucket: str = Field("", description="Bucket for model artifacts and published snapshots.")


class PsiThresholds(Section):
    warn: float = Field(0.1, ge=0, description="PSI at or above this is a warning.")
    alert: float = Field(0.25, ge=0, description="PSI at or above this is an alert (starts a retraining run).")


class MonitoringSettings(Section):
    psi_warn: float = Field(0.1, ge=0, description="Default PSI of a warning, per feature and comparison.")
    psi_alert: float = Field(0.25, ge=0, description="Default PSI of an alert (the lifecycle retrains on one).")
    feature_thresholds: dict[str, PsiThresholds] = Field(
        default_factory=dict, description="Per-feature PSI thresholds, e.g. {age = {warn = 0.2, alert = 0.4}}."
    )
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the reference (missing values get one more).")
    min_rows: int = Field(
        100, ge=1, description="Fewer rows than this on either side: reported as too few, not compared."
    )
    recent_days: int = Field(
        365, ge=1, description="A snapshot's most recent training rows: loans of its last this many days of loan dates."
    )
    prediction_window_hours: float = Field(
        24.0, gt=0, description="Served predictions of this recent window are compared."
    )
    min_realized_auc: float = Field(
        0.6, ge=0, le=1, description="A realized ROC-AUC of the production model below this is an alert."
    )
    min_matched: int = Field(
        30, ge=1, description="Fewer matched predictions than this: realized quality is not computed."
    )
    register_hive: bool = Field(
        True, description="Register the results as Hive tables (drift, prediction_drift, realized_quality)."
    )

    @model_validator(mode="after")
    def _check(self) -> "MonitoringSettings":
        if self.psi_alert < self.psi_warn:
            raise ValueError("monitoring.psi_alert must be at least monitoring.psi_warn")
        for name, limits in self.feature_thresholds.items():
            if limits.alert < limits.warn:
                raise ValueError(f"monitoring.feature_thresholds.{name}: alert must be at least warn")
        return self

    def thresholds(self, feature: str) -> PsiThresholds:
        return self.feature_thresholds.get(feature) or PsiThresholds(warn=self.psi_warn, alert=self.psi_alert)


class AirflowSettings(Section):
    """The Airflow DAG credit_risk_lifecycle and the Airflow the local stack runs (orchestration/)."""

    schedule: str = Field(
        "@daily",
        min_length=1,
        description="Schedule of the DAG: a cron expression, a preset such as @daily, or none (only when triggered).",
    )
    port: int = Field(8090, ge=1, le=65535, description="Port of the local stack's Airflow UI and API server.")
    log_server_port: int = Field(
        8793,
        ge=1,
        le=65535,
        description="Port of the server, on 127.0.0.1, that hands a running task's log to the Airflow UI "
        "(AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT).",
    )
    input_uri: str | None = Field(
        None,
        description="Raw CSV each DAG run ingests (path or s3:// URI); default: the local stack's "
        "<state_dir>/data/dataset_credit_risk.csv.",
    )
    parallelism: int = Field(
        2, ge=1, le=16, description="Tasks Airflow runs at once (AIRFLOW__CORE__PARALLELISM); small for 2 cores."
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed task, with exponential back-off.")
    retry_delay_seconds: float = Field(30.0, gt=0, description="Wait before the first retry; it doubles at each retry.")
    max_retry_delay_seconds: float = Field(600.0, gt=0, description="Longest wait between two retries.")
    batch_score: bool = Field(False, description="Add the optional batch-score task after deploy.")
    project_python: str | None = Field(
        None,
        description="Python of the project's venv that runs each task's CLI: a path, or a command name looked up "
        "on PATH; default <repo>/.venv/bin/python, or, without that venv, the Python running Airflow's server.",
    )
    home: str | None = Field(None, description="AIRFLOW_HOME of the local stack; default <state_dir>/airflow.")
    host: str = Field("127.0.0.1", description="Address Airflow's API server binds to (the compose cluster: 0.0.0.0).")
    database_url: SecretStr = Field(
        SecretStr(""),
        description="Airflow's metadata database (SQLAlchemy URL, e.g. postgresql+psycopg://...); "
        "default: SQLite under its home.",
    )

    @model_validator(mode="after")
    def _resolve(self) -> "AirflowSettings":
        for name in ("input_uri", "project_python", "home"):
            value = getattr(self, name)
            # A bare command name (`python3`) is looked up on PATH when run, as a shell would.
            if value and not (name == "project_python" and "/" not in value):
                object.__setattr__(self, name, resolve_path(value))
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPARKMAKER_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    paths: PathSettings = PathSettings()
    spark: SparkSettings = SparkSettings()
    metastore: MetastoreSettings = MetastoreSettings()
    features: FeatureSettings = FeatureSettings()
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    training: TrainingSettings = TrainingSettings()
    mlflow: MlflowSettings = MlflowSettings()
    serving: ServingSettings = ServingSettings()
    api: ApiSettings = ApiSettings()
    console: ConsoleSettings = ConsoleSettings()
    aws: AwsSettings = AwsSettings()
    stack: StackSettings = StackSettings()
    spark_cluster: SparkClusterSettings = SparkClusterSettings()
    notebooks: NotebookSettings = NotebookSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    airflow: AirflowSettings = AirflowSettings()
    pipeline: PipelineSettings = PipelineSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_files()))

    # Derived locations: one place decides where each thing lives under the lake.
    @property
    def lake_is_local(self) -> bool:
        return not _is_uri(self.paths.lake) or self.paths.lake.startswith("file://")

    def local_lake_path(self) -> Path | None:
        if not self.lake_is_local:
            return None
        return Path(self.paths.lake.removeprefix("file://"))

    def registry_dir(self) -> Path:
        if self.training.registry_dir:
            return Path(resolve_path(self.training.registry_dir))
        return (self.local_lake_path() or Path(self.paths.state_dir)) / "registry"

    def online_sqlite_path(self) -> Path:
        if self.online_store.sqlite_path:
            return Path(resolve_path(self.online_store.sqlite_path))
        return (self.local_lake_path() or Path(self.paths.state_dir)) / "online" / "features.sqlite"


class ConfigurationError(UserError):
    """The settings are invalid; the message says which value and why, in one line."""


def config_files() -> list[Path]:
    override = os.environ.get("SPARKMAKER_CONFIG")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ConfigurationError(f"SPARKMAKER_CONFIG names {path}, which is not a file: fix the path or unset it")
        return [DEFAULT_CONFIG_FILES[0], path]
    return [p for p in DEFAULT_CONFIG_FILES if p.is_file()]


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; raise ConfigurationError with a one-line reason."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigurationError(
            f"invalid configuration: {where}: {first['msg']} (check configuration/*.toml and SPARKMAKER_* variables)"
        ) from None
    except (OSError, ValueError) as exc:  # a malformed TOML file
        raise ConfigurationError(f"cannot read the configuration: {exc}") from None
