"""The docker-compose cluster, for real: compose.sh start, the pipeline, the published ports, reset.

Slow (a cold run builds the images) and needs a Docker-compatible engine, so it runs only with
SPARKMAKER_COMPOSE_TESTS=1 (compose/compose-test.sh). It uses a project of its
own (its own containers, volumes and free host ports) and an env file in a temp folder, so a
user's cluster and .env are left alone; `compose.sh reset --yes` (down -v) tears it down.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from configuration.network import free_port
from features.contract import FEATURE_COLUMNS
from tests.compose.conftest import PUBLISHED, REPO_ROOT

pytestmark = [
    pytest.mark.compose,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        os.environ.get("SPARKMAKER_COMPOSE_TESTS") != "1",
        reason="the docker-compose cluster test needs a Docker-compatible engine (here podman through "
        "../shared/containers/engine-up.sh): run it with SPARKMAKER_COMPOSE_TESTS=1 (compose/compose-test.sh)",
    ),
]

COMPOSE_SH = REPO_ROOT / "compose" / "compose.sh"
ROWS = int(os.environ.get("SPARKMAKER_COMPOSE_TEST_ROWS", "20000"))


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.project = f"sparkmaker-test-{uuid.uuid4().hex[:6]}"
        self.ports = {
            "API_PORT": free_port(),
            "JUPYTER_PORT": free_port(),
            "SPARK_UI_PORT": free_port(),
            "THRIFT_PORT": free_port(),
            "MLFLOW_PORT": free_port(),
            "AIRFLOW_PORT": free_port(),
        }
        self.key = "smk_" + secrets.token_urlsafe(24)
        self.jupyter_token = secrets.token_urlsafe(16)
        self.sql_password = secrets.token_urlsafe(32)
        self.mlflow_password = secrets.token_urlsafe(32)
        self.env_file = folder / "cluster.env"
        self.key_file = folder / "api-key"
        self.key_file.write_text(self.key + "\n")
        values = {
            "COMPOSE_PROJECT_NAME": self.project,
            "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
            "JUPYTER_TOKEN": self.jupyter_token,
            "SQL_PASSWORD": self.sql_password,
            "MLFLOW_PASSWORD": self.mlflow_password,
            "API_KEY_HASH": hashlib.sha256(self.key.encode()).hexdigest(),
            "SAMPLE_ROWS": str(ROWS),
            # No scheduled run in the middle of the checks: the Airflow test triggers its own.
            "AIRFLOW_SCHEDULE": "none",
            "AIRFLOW_INPUT_URI": f"/data/sample-{ROWS}.csv",
            **{name: str(port) for name, port in self.ports.items()},
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        # Only what compose.sh needs: no SPARKMAKER_* settings of this process leak in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKMAKER_", "COMPOSE_"))}
        self.env.update(
            {"SPARKMAKER_COMPOSE_ENV_FILE": str(self.env_file), "SPARKMAKER_COMPOSE_KEY_FILE": str(self.key_file)}
        )
        self.timings: dict[str, float] = {}

    def compose_sh(self, *args: str, timeout: float = 3000) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run([str(COMPOSE_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        label = " ".join(args)
        label = label if label not in self.timings else f"{label} (again)"
        self.timings[label] = time.monotonic() - started
        return result

    def docker_env(self) -> dict[str, str]:
        """The engine's variables, as compose.sh found them (engine-up.sh --env), for docker commands of the test."""
        engine_up = REPO_ROOT.parent / "shared" / "containers" / "engine-up.sh"
        env = dict(self.env)
        if "DOCKER_HOST" not in env and engine_up.exists():
            for line in subprocess.run(
                [str(engine_up), "--env"], capture_output=True, text=True, check=True
            ).stdout.splitlines():
                match = re.match(r"^(?:export )?([A-Z_]+)=['\"]?([^'\"]*)['\"]?$", line.strip())
                if match:
                    env[match.group(1)] = match.group(2)
        return env

    def dc(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        command = [
            "docker-compose",
            "--project-directory",
            str(REPO_ROOT),
            "-f",
            str(REPO_ROOT / "docker-compose.yml"),
            "--env-file",
            str(self.env_file),
            *args,
        ]
        return subprocess.run(
            command, env=self.docker_env(), capture_output=True, text=True, check=check, timeout=300, input=input
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("compose"))
    started = cluster.compose_sh("start")
    try:
        assert started.returncode == 0, f"compose.sh start failed:\n{started.stdout[-4000:]}\n{started.stderr[-4000:]}"
        cluster.start_output = started.stdout
        yield cluster
    finally:
        if started.returncode != 0:  # leave the reason in the test log
            print(cluster.dc("ps", check=False).stdout)
            print(cluster.dc("logs", "--no-color", "--tail", "60", check=False).stdout[-20000:])
        reset = cluster.compose_sh("reset", "--yes", timeout=600)
        print(f"timings (s): { {k: round(v) for k, v in cluster.timings.items()} }")
        assert reset.returncode == 0, reset.stderr
        left = subprocess.run(
            ["docker", "volume", "ls", "-q"], env=cluster.docker_env(), capture_output=True, text=True
        ).stdout
        assert cluster.project not in left, f"volumes left after reset: {left}"


def test_a_taken_port_stops_start_before_anything_starts(tmp_path):
    """Runs before the cluster fixture: another program holds the API port."""
    cluster = Cluster(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cluster.ports["API_PORT"]))
        holder.listen()
        result = cluster.compose_sh("start", timeout=600)
    assert result.returncode == 2
    assert f"sparkmaker: error: port {cluster.ports['API_PORT']} for api is taken by another program" in result.stderr
    assert not cluster.dc("ps", "-q").stdout.strip()  # nothing was created


def test_a_first_start_creates_the_env_file_with_fresh_secrets(tmp_path):
    """No env file: start writes one from .env.example (the key itself only in the 0600 key file).

    Another program holds the API port, so start stops right after, before building anything.
    """
    cluster = Cluster(tmp_path)
    cluster.env_file.unlink()
    cluster.key_file.unlink()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cluster.ports["API_PORT"]))
        holder.listen()
        cluster.env["API_PORT"] = str(cluster.ports["API_PORT"])
        result = cluster.compose_sh("start", timeout=600)
    assert result.returncode == 2 and "is taken by another program" in result.stderr, result.stderr
    values = dict(
        line.split("=", 1)
        for line in cluster.env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    key = cluster.key_file.read_text().strip()
    assert key.startswith("smk_") and key not in cluster.env_file.read_text()
    assert values["API_KEY_HASH"] == hashlib.sha256(key.encode()).hexdigest()
    assert len(values["POSTGRES_PASSWORD"]) >= 24 and len(values["JUPYTER_TOKEN"]) >= 24
    assert len(values["MLFLOW_PASSWORD"]) >= 24 and len(values["SQL_PASSWORD"]) >= 24
    assert (
        len({values[name] for name in ("POSTGRES_PASSWORD", "JUPYTER_TOKEN", "MLFLOW_PASSWORD", "SQL_PASSWORD")}) == 4
    )
    assert cluster.key_file.stat().st_mode & 0o777 == 0o600 and cluster.env_file.stat().st_mode & 0o077 == 0


def printed(cluster: Cluster, label: str) -> str:
    lines = [line for line in cluster.start_output.splitlines() if line.startswith(label)]
    assert lines, f"compose.sh start printed no '{label}' line:\n{cluster.start_output}"
    return lines[-1][len(label) :].strip()


def customer_id(cluster: Cluster) -> int:
    match = re.search(r"/predict/(\d+)$", printed(cluster, "Try:"))
    assert match, printed(cluster, "Try:")
    return int(match.group(1))


def test_start_prints_each_service_and_a_working_curl(cluster):
    assert printed(cluster, "API:") == cluster.url("API_PORT")
    assert printed(cluster, "API key:") == cluster.key
    assert (
        printed(cluster, "SQL (HiveServer2):") == f"jdbc:hive2://127.0.0.1:{cluster.ports['THRIFT_PORT']}/credit_risk"
    )
    assert printed(cluster, "JupyterLab:").startswith(cluster.url("JUPYTER_PORT"))
    curl = printed(cluster, "Try:")
    result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout)["id"] == customer_id(cluster), result.stdout


def test_predict_through_the_published_port_matches_the_lake_and_the_model(cluster):
    ident = customer_id(cluster)
    with httpx.Client(base_url=cluster.url("API_PORT"), timeout=10) as client:
        assert client.get(f"/predict/{ident}").status_code == 401
        response = client.get(f"/predict/{ident}", headers={"Authorization": f"Bearer {cluster.key}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == ident

    # The same customer's features through another path: Spark over the Thrift port, reading the lake's Parquet.
    from pyhive import hive

    with hive.connect(
        "127.0.0.1",
        port=cluster.ports["THRIFT_PORT"],
        database="credit_risk",
        username="sparkmaker",
        password=cluster.sql_password,
        auth="CUSTOM",
    ) as connection:
        cursor = connection.cursor()
        cursor.execute(f"SELECT {', '.join(FEATURE_COLUMNS)} FROM latest_features WHERE id = {ident}")
        rows = cursor.fetchall()
    assert len(rows) == 1
    from_sql = dict(zip(FEATURE_COLUMNS, rows[0]))
    assert set(body["features"]) == set(FEATURE_COLUMNS)
    for name in FEATURE_COLUMNS:
        if from_sql[name] is None:
            assert body["features"][name] is None, name
        else:
            assert body["features"][name] == pytest.approx(from_sql[name]), name

    # And the probability from the production model file scored by plain XGBoost, not the model server.
    import xgboost

    version = body["model_version"]
    model_file = (
        cluster.dc(
            "exec",
            "-T",
            "thrift-server",
            "python3",
            "-c",
            "import sys; from configuration.settings import load_settings; from training.registry import open_registry; "
            f"print(open_registry(load_settings()).model_dir('{version}'))",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    raw = subprocess.run(
        [
            "docker",
            "exec",
            "-i",
            cluster.dc("ps", "-q", "thrift-server").stdout.strip(),
            "cat",
            f"{model_file}/xgboost-model",
        ],
        env=cluster.docker_env(),
        capture_output=True,
        check=True,
    ).stdout
    booster = xgboost.Booster()
    booster.load_model(bytearray(raw))
    matrix = np.array([[np.nan if from_sql[c] is None else float(from_sql[c]) for c in FEATURE_COLUMNS]])
    expected = float(booster.predict(xgboost.DMatrix(matrix, feature_names=list(FEATURE_COLUMNS)))[0])
    assert body["probability"] == pytest.approx(expected, abs=1e-6)


def test_feature_tables_answer_over_the_thrift_port(cluster):
    from pyhive import hive

    with hive.connect(
        "127.0.0.1",
        port=cluster.ports["THRIFT_PORT"],
        database="credit_risk",
        username="sparkmaker",
        password=cluster.sql_password,
        auth="CUSTOM",
    ) as connection:
        cursor = connection.cursor()
        cursor.execute("SHOW TABLES")
        tables = {row[1] for row in cursor.fetchall()}
        cursor.execute("SELECT COUNT(*), COUNT(DISTINCT loan_id) FROM training_features")
        training_rows, distinct_loans = cursor.fetchone()
        cursor.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM latest_features")
        latest_rows, distinct_customers = cursor.fetchone()
    assert {"training_features", "latest_features", "rejects"} <= tables
    manifest = json.loads(
        cluster.dc(
            "exec",
            "-T",
            "thrift-server",
            "python3",
            "-c",
            "import json; from configuration.settings import load_settings; from features import lake; "
            "print(json.dumps(lake.read_manifest(load_settings())))",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    # The tables are the current snapshot's, and the sample data's loans are nearly all in (--dirty 0.001).
    assert training_rows == distinct_loans == manifest["outputs"]["training"]["rows"]
    assert latest_rows == distinct_customers == manifest["outputs"]["latest"]["rows"] > 0
    assert ROWS * 0.97 <= training_rows <= manifest["rows_in"]


def test_the_feature_job_ran_on_the_spark_cluster(cluster):
    state = httpx.get(f"{cluster.url('SPARK_UI_PORT')}/json/", timeout=10).json()
    assert state["aliveworkers"] == 2
    # Both workers ran tasks: every executor logs each task it starts ("Running task ...").
    for worker in ("spark-worker-1", "spark-worker-2"):
        logs = cluster.dc("exec", "-T", worker, "sh", "-c", "cat /tmp/spark-work/app-*/*/stderr").stdout
        assert logs.count("Running task") > 0, worker
    finished = [app["name"] for app in state["completedapps"]]
    running = [app["name"] for app in state["activeapps"]]
    assert any(name.startswith("sparkmaker-features") for name in finished), finished
    assert "sparkmaker-sql" in running


def test_snapshots_and_model_are_published_to_the_emulator(cluster):
    """S3 holds the current snapshot (its pointer names the run the API serves); SageMaker knows the production model."""
    script = (
        "import boto3, json; from configuration.settings import load_settings; s = load_settings(); "
        "s3 = boto3.client('s3', endpoint_url=s.aws.endpoint_url, region_name=s.aws.region); "
        "current = json.loads(s3.get_object(Bucket=s.aws.s3_bucket, Key='lake/credit_risk/CURRENT.json')['Body'].read()); "
        "keys = [o['Key'] for o in s3.list_objects_v2(Bucket=s.aws.s3_bucket, Prefix='lake/credit_risk/snapshots/' + current['run_id'])['Contents']]; "
        "sm = boto3.client('sagemaker', endpoint_url=s.aws.endpoint_url, region_name=s.aws.region); "
        "endpoint = sm.describe_endpoint(EndpointName=s.serving.endpoint_name); "
        "print(json.dumps({'current': current, 'keys': keys, 'variants': [v['VariantName'] for v in endpoint['ProductionVariants']], "
        "'status': endpoint['EndpointStatus']}))"
    )
    published = json.loads(cluster.dc("exec", "-T", "jupyter", "python3", "-c", script).stdout.strip().splitlines()[-1])
    with httpx.Client(base_url=cluster.url("API_PORT"), timeout=10) as client:
        body = client.get(f"/predict/{customer_id(cluster)}", headers={"Authorization": f"Bearer {cluster.key}"}).json()
    run_id = body["feature_snapshot"]["run_id"]
    assert published["current"]["run_id"] == run_id
    assert published["current"]["manifest"].startswith("s3a://")
    assert any(key.endswith("/manifest.json") for key in published["keys"])
    assert any("/latest/" in key and key.endswith(".parquet") for key in published["keys"])
    assert any(body["model_version"] in variant for variant in published["variants"]), published["variants"]


def test_jupyterlab_answers_with_the_token_and_sees_the_notebooks(cluster):
    with httpx.Client(base_url=cluster.url("JUPYTER_PORT"), timeout=10) as client:
        assert client.get("/api/contents").status_code in (401, 403)
        contents = client.get("/api/contents", params={"token": cluster.jupyter_token})
    assert contents.status_code == 200
    listed = {item["name"] for item in contents.json()["content"]}
    on_disk = {p.name for p in (REPO_ROOT / "notebooks").iterdir() if not p.name.startswith(".")}
    assert on_disk <= listed


def test_only_the_six_services_are_published_on_loopback(cluster):
    published = {}
    for service in cluster.dc("ps", "--services").stdout.split():
        ids = cluster.dc("ps", "-q", service).stdout.split()
        if not ids:
            continue
        inspect = json.loads(
            subprocess.run(
                ["docker", "inspect", ids[0]], env=cluster.docker_env(), capture_output=True, text=True, check=True
            ).stdout
        )[0]
        for bindings in (inspect["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                published.setdefault(service, set()).add((binding["HostIp"], int(binding["HostPort"])))
    assert set(published) == PUBLISHED
    assert {ip for bindings in published.values() for ip, _ in bindings} == {"127.0.0.1"}
    assert {port for bindings in published.values() for _, port in bindings} == set(cluster.ports.values())


def serving_state(cluster: Cluster) -> tuple[str, str, int]:
    """(snapshot run id and model version the API serves, number of registered models).

    The models are counted by the cluster's registry itself, MLflow, through its published port:
    a service container's own settings need not name the tracking server."""
    from configuration.settings import load_settings

    with httpx.Client(base_url=cluster.url("API_PORT"), timeout=10) as client:
        body = client.get(f"/predict/{customer_id(cluster)}", headers={"Authorization": f"Bearer {cluster.key}"}).json()
    name = load_settings().mlflow.model_name
    with httpx.Client(
        base_url=cluster.url("MLFLOW_PORT"), timeout=20, auth=("admin", cluster.mlflow_password)
    ) as client:
        found = client.get("/api/2.0/mlflow/model-versions/search", params={"filter": f"name = '{name}'"})
    assert found.status_code == 200, found.text
    return body["feature_snapshot"]["run_id"], body["model_version"], len(found.json().get("model_versions", []))


def test_a_second_start_changes_nothing_and_recomputes_nothing(cluster):
    before = serving_state(cluster)
    again = cluster.compose_sh("start")
    assert again.returncode == 0, again.stderr
    assert f"API key: {cluster.key}" in again.stdout
    # The same snapshot and model, and no second model trained: the one-shots found them current.
    assert serving_state(cluster) == before
    assert before[2] == 1


def test_the_sql_server_refuses_anonymous_clients_and_raw_files(cluster):
    from pyhive import hive

    with pytest.raises(Exception):  # noqa: B017 (PyHive raises transport, SASL or driver errors, by where the server hangs up)
        with hive.connect("127.0.0.1", port=cluster.ports["THRIFT_PORT"], database="credit_risk") as connection:
            connection.cursor().execute("SELECT 1")
    with hive.connect(
        "127.0.0.1",
        port=cluster.ports["THRIFT_PORT"],
        database="credit_risk",
        username="sparkmaker",
        password=cluster.sql_password,
        auth="CUSTOM",
    ) as connection:
        cursor = connection.cursor()
        with pytest.raises(Exception):  # noqa: B017 (PyHive raises transport, SASL or driver errors, by where the server hangs up)
            cursor.execute("SELECT value FROM text.`/etc/passwd`")
        with pytest.raises(Exception, match="refused by the sparkmaker SQL server"):
            cursor.execute("INSERT OVERWRITE DIRECTORY '/tmp/written-by-sql' USING csv SELECT 1")


def compose_file() -> dict:
    import yaml

    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def raw_model_file(cluster: Cluster, version: str) -> bytes:
    """The production model's file as the lake's registry keeps it (read in the Thrift server's container)."""
    model_dir = (
        cluster.dc(
            "exec",
            "-T",
            "thrift-server",
            "python3",
            "-c",
            "from configuration.settings import load_settings; from training.registry import open_registry; "
            f"print(open_registry(load_settings()).model_dir('{version}'))",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    container = cluster.dc("ps", "-q", "thrift-server").stdout.strip()
    return subprocess.run(
        ["docker", "exec", "-i", container, "cat", f"{model_dir}/xgboost-model"],
        env=cluster.docker_env(),
        capture_output=True,
        check=True,
    ).stdout


def test_mlflow_holds_the_production_model_on_postgresql_with_its_files_on_s3(cluster):
    """Through MLflow's published port, with its login: the production alias is the version the API serves, and its run's
    model file, read back from moto's S3, is byte for byte the file the lake's registry holds."""
    from configuration.settings import load_settings

    name = load_settings().mlflow.model_name
    with httpx.Client(base_url=cluster.url("MLFLOW_PORT"), timeout=20) as anonymous:  # only /health without the login
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/api/2.0/mlflow/registered-models/search").status_code == 401
        assert anonymous.get("/api/2.0/mlflow/registered-models/search", auth=("admin", "wrong")).status_code == 401
    with httpx.Client(
        base_url=cluster.url("MLFLOW_PORT"), timeout=20, auth=("admin", cluster.mlflow_password)
    ) as client:
        alias = client.get("/api/2.0/mlflow/registered-models/alias", params={"name": name, "alias": "production"})
        assert alias.status_code == 200, alias.text
        version = alias.json()["model_version"]
        run = client.get("/api/2.0/mlflow/runs/get", params={"run_id": version["run_id"]})
        assert run.status_code == 200, run.text
    with httpx.Client(base_url=cluster.url("API_PORT"), timeout=10) as client:
        body = client.get(f"/predict/{customer_id(cluster)}", headers={"Authorization": f"Bearer {cluster.key}"}).json()
    assert version["version"] == body["model_version"]
    # The server proxies artifacts (mlflow-artifacts:/<path>) to its --artifacts-destination on S3.
    artifact_uri = run.json()["run"]["info"]["artifact_uri"]
    destination = compose_file()["services"]["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    assert artifact_uri.startswith(("mlflow-artifacts:/", destination)), artifact_uri
    s3_uri = destination.rstrip("/") + "/" + artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    if artifact_uri.startswith(destination):
        s3_uri = artifact_uri
    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    script = (
        "import boto3, hashlib; from configuration.settings import load_settings; s = load_settings(); "
        "s3 = boto3.client('s3', endpoint_url=s.aws.endpoint_url, region_name=s.aws.region); "
        f"print(hashlib.sha256(s3.get_object(Bucket='{bucket}', Key='{prefix}/model/xgboost-model')['Body'].read()).hexdigest())"
    )
    on_s3 = cluster.dc("exec", "-T", "jupyter", "python3", "-c", script).stdout.strip().splitlines()[-1]
    assert on_s3 == hashlib.sha256(raw_model_file(cluster, body["model_version"])).hexdigest()
    # The backend store is the cluster's PostgreSQL: the version is a row of its mlflow database.
    rows = cluster.dc(
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "sparkmaker",
        "-d",
        "mlflow",
        "-tAc",
        f"SELECT version FROM model_versions WHERE name = '{name}'",
    ).stdout.split()
    assert body["model_version"] in rows


def task_log(cluster: Cluster, run_path: str, task: dict, token: str, lines: int = 60) -> str:
    """The last lines of a task instance's log (what a failed DAG run's assertion shows).

    Airflow 3 answers JSON: `content` is a list of structured entries (their `event` is the line)
    or, for older logs, one string."""
    with httpx.Client(base_url=cluster.url("AIRFLOW_PORT"), timeout=30) as client:
        response = client.get(
            f"{run_path}/taskInstances/{task['task_id']}/logs/{task.get('try_number') or 1}",
            params={"full_content": "true"},
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    content = response.json().get("content", "")
    if isinstance(content, list):
        text = []
        for entry in content:
            if not isinstance(entry, dict):
                text.append(str(entry))
                continue
            text.append(str(entry.get("event", entry)))
            for error in entry.get("error_detail") or []:  # an exception: its type and message, not its frames
                text.append(f"  {error.get('exc_type')}: {error.get('exc_value')}")
    else:
        text = str(content).splitlines()
    return "\n".join(text[-lines:])


def airflow_call(cluster: Cluster, path: str, token: str | None = None, body: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=cluster.url("AIRFLOW_PORT"), timeout=30) as client:
        response = (
            client.post(path, json=body, headers=headers) if body is not None else client.get(path, headers=headers)
        )
    return response.status_code, (response.json() if response.content else {})


def test_airflow_runs_the_lifecycle_dag_to_the_end_on_the_cluster(cluster):
    """Last (it may train and promote): log in with the generated password, trigger credit_risk_lifecycle,
    and every task succeeds, each a step of the pipeline run as a client of the cluster."""
    login = json.loads(
        cluster.dc("exec", "-T", "airflow", "cat", "/lake/.state/airflow/passwords.json")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert airflow_call(cluster, "/auth/token", body={"username": "admin", "password": "wrong"})[0] == 401
    status, token = airflow_call(cluster, "/auth/token", body={"username": "admin", "password": login["admin"]})
    assert status == 201, token
    token = token["access_token"]
    assert airflow_call(cluster, "/api/v2/dags/credit_risk_lifecycle")[0] == 401
    deadline = time.monotonic() + 180  # the DAG processor parses the folder first
    while (status := airflow_call(cluster, "/api/v2/dags/credit_risk_lifecycle", token)[0]) != 200:
        assert time.monotonic() < deadline, f"the DAG was not loaded: {status}"
        time.sleep(3)
    status, run = airflow_call(
        cluster,
        "/api/v2/dags/credit_risk_lifecycle/dagRuns",
        token,
        {"logical_date": "2026-10-01T00:00:00Z", "conf": {}},
    )
    assert status == 200, run
    run_path = f"/api/v2/dags/credit_risk_lifecycle/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 1500
    while (state := airflow_call(cluster, run_path, token)[1].get("state")) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the DAG run is still {state}"
        time.sleep(5)
    tasks = airflow_call(cluster, f"{run_path}/taskInstances", token)[1]["task_instances"]
    states = {task["task_id"]: task["state"] for task in tasks}
    failed = [task for task in tasks if task["state"] == "failed"]
    assert state == "success", "\n".join(
        [f"states: {states}"] + [f"{t['task_id']} log:\n{task_log(cluster, run_path, t, token)}" for t in failed]
    )
    assert states and set(states.values()) <= {"success", "skipped"}, states
