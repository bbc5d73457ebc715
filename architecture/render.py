"""The architecture of sparkmaker, drawn with the `diagrams` package (Graphviz underneath).

    python -m architecture [--out DIR] [--only NAME ...]

Three pictures, each a function below that draws into the current `Diagram`:

    local-stack.png      ./start.sh: every process on one machine, the embedded default
    compose-cluster.png  ./start.sh --compose: docker-compose.yml's services and volumes
    aws-deployment.png   the same stages on AWS managed services

The drawings are code so that a change of architecture is a reviewed diff. Keep them in
step with `stack/local.py`, `docker-compose.yml` and the components' READMEs.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

from configuration.errors import UserError

HERE = Path(__file__).resolve().parent
GRAPHVIZ_MISSING = "Graphviz's `dot` is not on PATH: install it (Debian: apt-get install -y graphviz) and rerun"

# Shared look: left to right, room for edge labels, curved edges (Graphviz's orthogonal
# edges cannot place edge labels).
GRAPH = {
    "splines": "spline",
    "pad": "0.6",
    "nodesep": "0.55",
    "ranksep": "1.0",
    "fontsize": "22",
    "labelloc": "t",
    "dpi": "96",
}
NODE = {"fontsize": "12"}
EDGE = {"fontsize": "11", "fontcolor": "#444444"}
CLUSTER = {"fontsize": "14", "margin": "18"}

# Edge styles: data written or read; a call made; "runs after", an image pulled, a secret read or an alternative.
DATA = {"color": "#1f77b4"}
CALL = {"color": "#d62728"}
ORDER = {"color": "#7f7f7f", "style": "dashed"}


def _edge(label: str = "", forward: bool = False, reverse: bool = False, **style: str):
    from diagrams import Edge

    return Edge(label=label, forward=forward, reverse=reverse, **style)


def local_stack() -> None:
    """./start.sh on one machine: processes, their ports and the files under the lake and state folder.

    Columns, left to right: input, one-shot stages, what they write, the services reading
    it, the clients. An edge against that flow is laid out forwards with its arrow reversed
    (`reverse=True`), or does not constrain the layout (`constraint="false"`).
    """
    from diagrams import Cluster
    from diagrams.generic.database import SQL
    from diagrams.generic.storage import Storage
    from diagrams.onprem.analytics import Hive, Spark
    from diagrams.onprem.client import Users
    from diagrams.programming.framework import Fastapi
    from diagrams.programming.language import Python

    csv = Storage("raw CSV\n(--input, or generated\nsample data)")
    with Cluster("the lifecycle: python -m pipeline (start.sh, the Airflow DAG)", graph_attr=CLUSTER):
        job = Spark("feature job\npython -m features\n(Spark, local[2])")
        train = Python("challenger, gate, promotion\npython -m training local\n(SageMaker contract)")
    with Cluster("lake/ (a local folder)", graph_attr=CLUSTER):
        snapshots = Storage("credit_risk/snapshots/\ntraining, latest, rejects\n(Parquet), manifest;\nCURRENT.json")
        online = SQL("online/\nonline store (SQLite)")
        registry = Storage("registry/\nMLflow store (SQLite),\nmodel copies, production alias")
    metastore = Hive("Hive metastore service\nthrift :9083 (Derby DB\nin lake/_metastore)")
    with Cluster("services (PIDs and logs in .state/)", graph_attr=CLUSTER):
        thrift = Spark("Spark Thrift server\nHiveServer2 :10000")
        api = Fastapi("prediction API :8000\nGET /predict/{id}")
        model = Python("model server :8080\n(SageMaker container\nand runtime API)")
        mlflow = Python("MLflow server :5000\nruns, versions, aliases")
        airflow = Python("Airflow :8090\nDAG credit_risk_lifecycle")
    sql = Users("SQL client\n(beeline, PyHive, JDBC)")
    http = Users("HTTP client\n(curl, Bearer key)")
    log = SQL("prediction log\n(SQLite, .state/)")

    csv >> _edge("read, validate", **DATA) >> job
    job >> _edge("then", constraint="false", **ORDER) >> train
    job >> _edge("write snapshot", **DATA) >> snapshots
    job >> _edge("materialize latest", **DATA) >> online
    job >> _edge("register tables", **CALL) >> metastore
    snapshots >> _edge("training table", constraint="false", **DATA) >> train
    train >> _edge("model.tar.gz", **DATA) >> registry
    snapshots - _edge("read Parquet", reverse=True, **DATA) - thrift
    metastore - _edge("catalog", reverse=True, **CALL) - thrift
    online - _edge("features by id", reverse=True, **CALL) - api
    registry >> _edge("follows production", **DATA) >> model
    api >> _edge("POST /invocations", constraint="false", **CALL) >> model
    thrift - _edge("jdbc:hive2://", reverse=True, **CALL) - sql
    api - _edge("GET /predict/{id}", reverse=True, **CALL) - http
    api >> _edge("log", **DATA) >> log
    registry - _edge("browse", reverse=True, **DATA) - mlflow
    airflow >> _edge("pipeline steps", constraint="false", **ORDER) >> job


def compose_cluster() -> None:
    """docker-compose.yml: the services, what each uses, the named volumes, the published ports.

    Columns: input volume, one-shot stages (in order), the cluster's backing services, the
    long-running services, the host. Same edge conventions as `local_stack`.
    """
    from diagrams import Cluster
    from diagrams.aws.general import General
    from diagrams.generic.storage import Storage
    from diagrams.onprem.analytics import Hive, Spark
    from diagrams.onprem.client import Users
    from diagrams.onprem.container import Docker
    from diagrams.onprem.database import Postgresql
    from diagrams.onprem.inmemory import Redis
    from diagrams.programming.framework import Fastapi
    from diagrams.programming.language import Python

    with Cluster("docker-compose project (./start.sh --compose)", graph_attr=CLUSTER):
        data = Storage("volume data\ninput CSV")
        # Numbered rather than chained: "then" edges would pull the stages into three columns.
        with Cluster("one-shot stages, run in order", graph_attr=CLUSTER):
            features = Spark("1. features\nsample data, feature job,\nonline store")
            training = Python("2. training\nthe pipeline: challenger,\ngate, promotion")
            publish = Python("3. publish\nsnapshots to S3,\nmodel to SageMaker API")
        with Cluster("Spark standalone", graph_attr=CLUSTER):
            master = Spark("spark-master :7077\nUI :8080 (published)")
            worker = Spark("spark-worker-1\n1 core")
            worker2 = Spark("spark-worker-2\n1 core")
        lake = Storage("volume lake\nsnapshots (Parquet),\nmodel registry")
        metastore = Hive("metastore\nHive metastore :9083")
        postgres = Postgresql("postgres\nmetastore DB,\nprediction log")
        redis = Redis("redis\nonline store")
        moto = General("moto\nS3 + SageMaker API\n(AWS emulator)")
        model = Docker("model-server\nserving image :8080")
        mlflow = Python("mlflow :5000\ntracking + registry\n(PostgreSQL, S3)")
        airflow = Python("airflow :8090\nDAG credit_risk_lifecycle")
        with Cluster("published on 127.0.0.1", graph_attr=CLUSTER):
            api = Fastapi("api :8000\nGET /predict/{id}")
            thrift = Spark("thrift-server :10000\nHiveServer2")
            jupyter = Python("jupyter :8888\nJupyterLab,\nnotebooks/ mounted")
    users = Users("browser, curl,\nSQL client")

    data >> _edge("CSV", **DATA) >> features
    features >> _edge("submit", **CALL) >> master
    master >> _edge(constraint="false", **CALL) >> worker
    master >> _edge(constraint="false", **CALL) >> worker2
    worker >> _edge("Parquet", constraint="false", **DATA) >> lake
    worker2 >> _edge("Parquet", constraint="false", **DATA) >> lake
    training >> _edge("runs, versions, aliases", **CALL) >> mlflow
    mlflow >> _edge("store, artifacts", constraint="false", **DATA) >> postgres
    airflow >> _edge("pipeline steps", **CALL) >> master
    airflow >> _edge("decisions", constraint="false", **CALL) >> mlflow
    features >> _edge("register tables", **CALL) >> metastore
    metastore >> _edge("JDBC", constraint="false", **DATA) >> postgres
    features >> _edge("materialize", **DATA) >> redis
    training >> _edge("training table in,\nmodel out", forward=True, reverse=True, **DATA) >> lake
    publish >> _edge("S3, CreateModel", **CALL) >> moto
    lake >> _edge("production model", **DATA) >> model
    redis - _edge("features", reverse=True, **CALL) - api
    api >> _edge("/invocations", constraint="false", **CALL) >> model
    postgres - _edge("prediction log", reverse=True, **DATA) - api
    metastore - _edge("catalog", reverse=True, **CALL) - thrift
    master - _edge("executors", reverse=True, **CALL) - thrift
    metastore - _edge("notebooks", reverse=True, **CALL) - jupyter
    api - _edge("Bearer key", reverse=True, **CALL) - users
    thrift - _edge("JDBC", reverse=True, **CALL) - users
    jupyter - _edge("token", reverse=True, **CALL) - users


def aws_deployment() -> None:
    """The same stages on AWS: what each local part becomes."""
    from diagrams import Cluster
    from diagrams.aws.analytics import EMR, Athena, Glue, GlueDataCatalog
    from diagrams.aws.compute import ECR, Fargate
    from diagrams.aws.database import ElasticacheForRedis, RDSPostgresqlInstance
    from diagrams.aws.general import Users
    from diagrams.aws.ml import SagemakerModel, SagemakerTrainingJob
    from diagrams.aws.network import ElbApplicationLoadBalancer
    from diagrams.aws.security import SecretsManager
    from diagrams.aws.storage import SimpleStorageServiceS3Bucket

    users = Users("API clients")
    analysts = Users("analysts (SQL)")
    with Cluster("AWS account, one region", graph_attr=CLUSTER):
        raw = SimpleStorageServiceS3Bucket("s3://…/raw/\ndataset_credit_risk.csv")
        with Cluster("features: the same Spark job", graph_attr=CLUSTER):
            emr = EMR("EMR step: spark-submit\npython -m features\n(lake on S3)")
            glue = Glue("or a Glue Spark job")
        with Cluster("lake and catalog", graph_attr=CLUSTER):
            lake = SimpleStorageServiceS3Bucket(
                "s3://…/lake/\nsnapshots (Parquet), manifests,\nCURRENT.json, model.tar.gz"
            )
            catalog = GlueDataCatalog("Glue Data Catalog\n(the Hive metastore;\nor a Hive metastore on RDS)")
        athena = Athena("Athena\n(or EMR's Thrift server)")
        with Cluster("SageMaker", graph_attr=CLUSTER):
            training = SagemakerTrainingJob("training job\n(training image)")
            endpoint = SagemakerModel("endpoint\n(serving image,\nmodel.tar.gz from S3)")
        ecr = ECR("ECR\ntraining and\nserving images")
        with Cluster("VPC", graph_attr=CLUSTER):
            alb = ElbApplicationLoadBalancer("ALB (HTTPS)")
            api = Fargate("prediction API\nECS on Fargate")
            redis = ElasticacheForRedis("ElastiCache Redis\nonline store")
            log = RDSPostgresqlInstance("RDS PostgreSQL\nprediction log")
        secrets = SecretsManager("Secrets Manager\nAPI key hashes,\nDB password")

    raw >> _edge("read", **DATA) >> emr
    emr >> _edge("write snapshot", **DATA) >> lake
    emr >> _edge("tables", **CALL) >> catalog
    emr >> _edge("materialize", **DATA) >> redis
    glue >> _edge("or", **ORDER) >> lake
    analysts >> _edge("SQL", **CALL) >> athena >> _edge(**CALL) >> catalog
    lake >> _edge("train channel", **DATA) >> training
    training >> _edge("model.tar.gz", **DATA) >> lake
    ecr >> _edge("images", **ORDER) >> training
    ecr >> _edge(**ORDER) >> endpoint
    lake >> _edge("serving sagemaker deploy", **DATA) >> endpoint
    users >> _edge("GET /predict/{id}", **CALL) >> alb >> _edge(**CALL) >> api
    api >> _edge("features", **CALL) >> redis
    api >> _edge("InvokeEndpoint", **CALL) >> endpoint
    api >> _edge("log", **DATA) >> log
    secrets >> _edge(**ORDER) >> api


DIAGRAMS: dict[str, tuple[str, Callable[[], None]]] = {
    "local-stack": ("sparkmaker: the local stack (./start.sh)", local_stack),
    "compose-cluster": ("sparkmaker: the docker-compose cluster (./start.sh --compose)", compose_cluster),
    "aws-deployment": ("sparkmaker on AWS", aws_deployment),
}


def require_graphviz() -> None:
    if shutil.which("dot") is None:
        raise UserError(GRAPHVIZ_MISSING)


def _diagram(name: str, filename: str = ""):
    from diagrams import Diagram

    title, _ = DIAGRAMS[name]
    return Diagram(
        title,
        filename=filename or name,
        outformat="png",
        show=False,
        direction="LR",
        graph_attr=GRAPH,
        node_attr=NODE,
        edge_attr=EDGE,
    )


def render(name: str, out_dir: Path) -> Path:
    """Draw one diagram to <out_dir>/<name>.png and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with _diagram(name, str(out_dir / name)):
        DIAGRAMS[name][1]()
    return out_dir / f"{name}.png"


def source(name: str) -> str:
    """The Graphviz source of one diagram, built without running Graphviz."""
    from diagrams import setdiagram

    diagram = _diagram(name)
    setdiagram(diagram)
    try:
        DIAGRAMS[name][1]()
    finally:
        setdiagram(None)
    return diagram.dot.source


def render_all(out_dir: Path, names: list[str] | None = None) -> list[Path]:
    require_graphviz()
    return [render(name, out_dir) for name in (names or list(DIAGRAMS))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m architecture",
        description="Render the architecture diagrams (local stack, compose cluster, AWS) to PNG. Needs Graphviz (dot).",
    )
    parser.add_argument("--out", type=Path, default=HERE, help=f"output folder (default: {HERE})")
    parser.add_argument(
        "--only", nargs="+", choices=list(DIAGRAMS), metavar="NAME", help=f"render only these: {', '.join(DIAGRAMS)}"
    )
    args = parser.parse_args(argv)
    for path in render_all(args.out, args.only):
        print(f"wrote {path}")
    return 0
