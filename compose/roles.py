#!/usr/bin/env python3
"""The roles of the sparkmaker-base image in docker-compose.yml: `sparkmaker-container ROLE [options]`.

Long-running services (each replaces itself with its server process, so signals reach it):
    spark-master, spark-worker, metastore, thrift-server, mlflow, jupyter (and api, though the
    compose file runs the API from its own image, api/Dockerfile)
One-shot stages, in order (each idempotent: docker-compose runs them again on every `up`):
    features   sample data when no CSV is mounted, then the pipeline's ingest, features and
               materialize steps (pipeline/: the feature job unless the current snapshot came
               from the same CSV and as_of; the online store brought up to date)
    train      the pipeline's drift, train, evaluate and promote steps on the same run record:
               a challenger when there is reason to train, promoted when the gate says so
               (--retrain yes: train and promote regardless)
    publish    copies the lake's snapshots to the S3 emulator and registers the production
               model with its SageMaker API
And `healthcheck http URL | tcp HOST:PORT` for the compose health checks.

Settings come from the SPARKMAKER_* variables that docker-compose.yml sets; the options here
are only what the compose file passes on its command lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if (_REPO / "configuration" / "settings.py").is_file():  # run from a checkout; the image sets PYTHONPATH
    sys.path.insert(0, str(_REPO))

from configuration.errors import UserError, run_cli  # noqa: E402

PYTHON = sys.executable


def say(text: str) -> None:
    print(f"sparkmaker-container: {text}", flush=True)


def spark_class(*args: str) -> list[str]:
    return [str(Path(os.environ.get("SPARK_HOME", "/opt/spark")) / "bin" / "spark-class"), *args]


def run(command: list[str], what: str) -> None:
    """Run a stage with its output on ours; a failure stops the container with the stage's name."""
    code = subprocess.run(command).returncode
    if code != 0:
        raise UserError(f"{what} failed with exit code {code} (its own message is above)")


# --- long-running services ---------------------------------------------------------------


def spark_master(args: argparse.Namespace) -> int:
    os.execvp(
        *_argv(
            spark_class(
                "org.apache.spark.deploy.master.Master",
                "--host",
                args.host,
                "--port",
                str(args.port),
                "--webui-port",
                str(args.webui_port),
            )
        )
    )


def spark_worker(args: argparse.Namespace) -> int:
    # The work folder holds executor logs and files; the wheel's own folder is not writable.
    os.execvp(
        *_argv(
            spark_class(
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                args.host,
                "--cores",
                str(args.cores),
                "--memory",
                args.memory,
                "--work-dir",
                "/tmp/spark-work",
                "--webui-port",
                str(args.webui_port),
                args.master,
            )
        )
    )


def metastore(args: argparse.Namespace) -> int:
    # Every interface of its container: the cluster's network reaches it there (no port is published).
    os.execvp(*_argv([PYTHON, "-m", "features", "metastore", "--host", "0.0.0.0", "--port", str(args.port)]))


def thrift_server(args: argparse.Namespace) -> int:
    """The Spark Thrift server (HiveServer2 protocol) as an application of the standalone cluster."""
    from configuration.settings import load_settings
    from stack.supervisor import thrift_server_command

    from features.java_extensions import compiled_classes, sql_server_credentials_env

    settings = load_settings()
    # The password comes from .env (SQL_PASSWORD); the server process gets only its salted hash.
    password = os.environ.pop("SPARKMAKER_SQL_PASSWORD", "")
    if not password:
        raise UserError("SPARKMAKER_SQL_PASSWORD is empty: set SQL_PASSWORD in .env (./start.sh --compose makes one)")
    os.environ.update(sql_server_credentials_env(settings.stack.sql_user, password))
    classes = compiled_classes(Path(settings.paths.state_dir) / "java")
    os.execvp(*_argv(thrift_server_command(settings, args.port, settings.spark.master, classes, bind_host="0.0.0.0")))


def mlflow(args: argparse.Namespace) -> int:
    """`mlflow server` on PostgreSQL (MLFLOW_BACKEND_STORE_URI) with its artifacts in S3 (the emulator), made first."""
    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if destination.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket = destination[5:].split("/", 1)[0]
        s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)
            say(f"created the artifact bucket {bucket}")
    # The login: the basic-auth app creates its admin from MLFLOW_AUTH_ADMIN_PASSWORD in a user store of this
    # container's (made again, from the same .env, when the container is).
    if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise UserError(
            "MLFLOW_AUTH_ADMIN_PASSWORD is empty: set MLFLOW_PASSWORD in .env (./start.sh --compose makes one)"
        )
    from configuration.files import private_dir
    from stack.security import write_mlflow_auth_config

    folder = private_dir(Path(tempfile.gettempdir()) / "mlflow-auth")
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(write_mlflow_auth_config(folder))
    os.environ.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))  # signs its CSRF tokens
    # The store URI (with its password), the destination and the allowed hosts come from MLFLOW_* variables,
    # which `mlflow server` reads itself: not on a command line.
    server = ["mlflow", "server", "--host", "0.0.0.0", "--port", str(args.port), "--workers", "1"]
    os.execvp(*_argv([*server, "--app-name", "basic-auth"]))


def api(args: argparse.Namespace) -> int:
    os.execvp(*_argv([PYTHON, "-m", "api", "serve", "--host", "0.0.0.0", "--port", str(args.port)]))


def jupyter(args: argparse.Namespace) -> int:
    notebooks = Path(args.notebook_dir)
    if notebooks.is_dir() and not os.access(notebooks, os.W_OK):
        say(
            f"{notebooks} is not writable by uid {os.getuid()}: notebooks open but cannot be saved "
            "(set JUPYTER_USER=root in .env, or make the notebooks folder writable)"
        )
    command = [
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=0.0.0.0",
        f"--port={args.port}",
        f"--ServerApp.root_dir={notebooks}",
    ]
    if os.getuid() == 0:
        command.append("--allow-root")
    # The token comes from JUPYTER_TOKEN, which Jupyter reads itself: not on a command line.
    os.execvp(*_argv(command))


def _argv(command: list[str]) -> tuple[str, list[str]]:
    say(" ".join(command if "--conf" not in command else command[:8] + ["..."]))
    return command[0], command


# --- one-shot stages -----------------------------------------------------------------------

COMPOSE_RUN_KEY = "compose"  # the features and training roles share one run record (state_dir is on the lake volume)


def lifecycle_steps(names: tuple[str, ...], params) -> None:
    """Steps of the pipeline (pipeline.lifecycle), in order, on the compose run record: the decisions are made there."""
    from configuration.settings import load_settings
    from pipeline import lifecycle
    from pipeline.record import RunRecord

    settings = load_settings()
    record = RunRecord.open(settings, COMPOSE_RUN_KEY)
    for name in names:
        lifecycle.run_step(settings, record, name, params, say)


def features(args: argparse.Namespace) -> int:
    from pipeline.lifecycle import Params

    if args.input_file:
        csv = Path(args.input_dir) / args.input_file
        if not csv.is_file():
            raise UserError(
                f"input {args.input_file} is not a file in the mounted folder {args.input_dir}: "
                "set SPARKMAKER_INPUT_DIR to the folder holding it, or leave SPARKMAKER_INPUT_FILE empty for sample data"
            )
    else:
        csv = Path(args.data_dir) / f"sample-{args.sample_rows}.csv"
        if csv.exists():
            say(f"sample data {csv} is there")
        else:
            generate_sample(csv, args.sample_rows)
    # The sample data's loans end in 2021-09: its extraction day is its natural as_of.
    from features.sample_data import EXTRACTION_DATE

    as_of = None if args.input_file else dt.date.fromisoformat(str(EXTRACTION_DATE))
    lifecycle_steps(
        ("ingest", "features", "materialize"), Params(input=str(csv), as_of=as_of, force_features=args.refresh)
    )
    return 0


def generate_sample(csv: Path, rows: int) -> None:
    """Sample data into a temporary folder first: a killed run leaves no half CSV to be taken as input."""
    tmp = csv.parent / f".tmp-{csv.stem}"
    tmp.mkdir(parents=True, exist_ok=True)
    say(f"no input CSV mounted: generating {rows:,} rows of sample data")
    run(
        [PYTHON, "-m", "features.sample_data", "--rows", str(rows), "--dirty", "0.001", "--out", str(tmp / csv.name)],
        "generating the sample data",
    )
    for produced in tmp.iterdir():  # the CSV and its .truth.parquet; the CSV last, as it marks completion
        if produced.suffix != ".csv":
            produced.replace(csv.parent / produced.name)
    (tmp / csv.name).replace(csv)
    tmp.rmdir()


def train(args: argparse.Namespace) -> int:
    """Drift, a challenger when there is reason to train, the gate, promotion: the pipeline's steps."""
    from pipeline.lifecycle import Params

    lifecycle_steps(("drift", "train", "evaluate", "promote"), Params(force=args.retrain == "yes"))
    return 0


def publish(args: argparse.Namespace) -> int:
    from configuration.settings import load_settings

    settings = load_settings()
    if not settings.aws.endpoint_url or not settings.aws.s3_bucket:
        raise UserError(
            "publish needs aws.endpoint_url and aws.s3_bucket (SPARKMAKER_AWS__ENDPOINT_URL, SPARKMAKER_AWS__S3_BUCKET)"
        )
    uploaded, kept = publish_snapshots(settings, args.prefix)
    say(f"S3: {uploaded} files uploaded, {kept} already there, under s3://{settings.aws.s3_bucket}/{args.prefix}/")
    if args.sagemaker == "yes":
        register_model(settings)
    return 0


def publish_snapshots(settings, prefix: str) -> tuple[int, int]:
    """Every snapshot of the lake under s3://<bucket>/<prefix>/, the same layout; CURRENT.json last.

    Snapshots never change once written, so a file already in the bucket with the same size
    is kept. URIs inside manifest.json and CURRENT.json are rewritten to s3a:// so that the
    copy is a lake of its own for a Spark that has the S3A connector.
    """
    import boto3
    from botocore.exceptions import ClientError

    from features import lake

    s3 = boto3.client("s3", endpoint_url=settings.aws.endpoint_url, region_name=settings.aws.region)
    bucket = settings.aws.s3_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
    root = settings.local_lake_path()
    if root is None:
        raise UserError(f"publish copies a local lake; {settings.paths.lake} is not one")
    dataset = Path(lake.dataset_uri(settings))
    s3_root = f"s3a://{bucket}/{prefix}"

    def rewrite(value):
        if isinstance(value, str) and value.startswith(str(root) + "/"):
            return s3_root + value[len(str(root)) :]
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    existing: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        existing.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    uploaded = kept = 0
    snapshots = dataset / "snapshots"
    for path in sorted(snapshots.rglob("*")) if snapshots.is_dir() else []:
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(".crc"):
            continue
        key = f"{prefix}/{path.relative_to(root)}"
        if path.name == "manifest.json":
            body = (json.dumps(rewrite(json.loads(path.read_text())), indent=2) + "\n").encode()
        else:
            body = None
        size = len(body) if body is not None else path.stat().st_size
        if existing.get(key) == size:
            kept += 1
            continue
        if body is not None:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        else:
            s3.upload_file(str(path), bucket, key)
        uploaded += 1
    current = lake.read_current(settings)
    if current:
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{dataset.relative_to(root)}/CURRENT.json",
            Body=(json.dumps(rewrite(current), indent=2) + "\n").encode(),
            ContentType="application/json",
        )
        uploaded += 1
    return uploaded, kept


def register_model(settings) -> None:
    """The production model as a SageMaker Model + EndpointConfig + Endpoint on the emulator.

    Skipped when the endpoint already serves that version. The emulator (moto 5) has no
    UpdateEndpoint, so a different version replaces the endpoint there (real SageMaker
    would be updated in place by `serving sagemaker deploy`).
    """
    import boto3
    from botocore.exceptions import ClientError

    from serving.model import variant_name
    from training.registry import open_registry

    version = open_registry(settings).alias("production")
    if version is None:
        say("SageMaker: no production model to register")
        return
    name = settings.serving.endpoint_name
    client = boto3.client("sagemaker", endpoint_url=settings.aws.endpoint_url, region_name=settings.aws.region)
    try:
        endpoint = client.describe_endpoint(EndpointName=name)
    except ClientError:
        endpoint = None
    if endpoint:
        variants = [v.get("VariantName") for v in endpoint.get("ProductionVariants", [])]
        if variant_name(version) in variants:
            say(f"SageMaker: endpoint {name} already serves model {version}")
            return
        run(
            [PYTHON, "-m", "serving", "sagemaker", "delete", "--endpoint-name", name],
            "deleting the emulator's endpoint",
        )
    run(
        [PYTHON, "-m", "serving", "sagemaker", "deploy", "--model-version", version, "--endpoint-name", name],
        "registering the model with the SageMaker API",
    )


# --- health checks -------------------------------------------------------------------------


def healthcheck(args: argparse.Namespace) -> int:
    try:
        if args.kind == "tcp":
            host, _, port = args.target.rpartition(":")
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
                return 0
        with urllib.request.urlopen(args.target, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {args.target}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparkmaker-container", description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)

    p = roles.add_parser("spark-master", help="the Spark standalone master")
    p.add_argument("--host", default="spark-master", help="name the workers and applications reach it by")
    p.add_argument("--port", type=int, default=7077)
    p.add_argument("--webui-port", type=int, default=8080)
    p.set_defaults(run=spark_master)

    p = roles.add_parser("spark-worker", help="a Spark standalone worker")
    p.add_argument("--master", default="spark://spark-master:7077")
    p.add_argument("--host", default="spark-worker", help="name the master and the drivers reach it by")
    p.add_argument("--cores", type=int, default=2, help="cores offered to applications (may exceed the machine's)")
    p.add_argument("--memory", default="2g", help="memory offered to executors")
    p.add_argument("--webui-port", type=int, default=8081)
    p.set_defaults(run=spark_worker)

    p = roles.add_parser("metastore", help="the Hive metastore service (database: metastore.jdbc_url)")
    p.add_argument("--port", type=int, default=9083)
    p.set_defaults(run=metastore)

    p = roles.add_parser("thrift-server", help="the Spark Thrift server (HiveServer2) on the cluster")
    p.add_argument("--port", type=int, default=10000)
    p.set_defaults(run=thrift_server)

    p = roles.add_parser("mlflow", help="the MLflow tracking server and model registry (PostgreSQL, S3 artifacts)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(run=mlflow)

    p = roles.add_parser("api", help="the prediction API")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=api)

    p = roles.add_parser("jupyter", help="JupyterLab (token: JUPYTER_TOKEN)")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--notebook-dir", default="/home/sparkmaker/notebooks")
    p.set_defaults(run=jupyter)

    p = roles.add_parser("features", help="sample data if needed, the feature job if needed, the online store")
    p.add_argument("--input-dir", default="/input", help="mounted folder of the raw CSV")
    p.add_argument("--input-file", default="", help="the raw CSV in --input-dir; empty: generated sample data")
    p.add_argument("--data-dir", default="/data", help="where generated sample data is kept")
    p.add_argument("--sample-rows", type=int, default=20_000, help="rows of generated sample data")
    p.add_argument("--refresh", choices=("yes", "no"), default="no", help="run the job even if the snapshot is current")
    p.set_defaults(run=features)

    p = roles.add_parser("train", help="train and promote a model when none is in production")
    p.add_argument("--retrain", choices=("yes", "no"), default="no", help="train and promote even if one is")
    p.set_defaults(run=train)

    p = roles.add_parser("publish", help="snapshots to S3, the production model to the SageMaker API (the emulator)")
    p.add_argument("--prefix", default="lake", help="key prefix of the lake's copy in aws.s3_bucket")
    p.add_argument("--sagemaker", choices=("yes", "no"), default="yes", help="register the production model too")
    p.set_defaults(run=publish)

    p = roles.add_parser("healthcheck", help="exit 0 when a URL answers 200 or a port accepts connections")
    p.add_argument("kind", choices=("http", "tcp"))
    p.add_argument("target", help="http://HOST:PORT/PATH or HOST:PORT")
    p.set_defaults(run=healthcheck)

    args = parser.parse_args(argv)
    if args.role == "features":
        args.refresh = args.refresh == "yes"
    return args.run(args)


if __name__ == "__main__":
    run_cli(main, "sparkmaker-container")
