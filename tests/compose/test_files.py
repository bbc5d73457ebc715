"""The compose files as written: what the issue asks of them, checked without an engine.

The cluster itself runs in test_cluster.py (needs an engine); these keep the files honest in
every ./test.sh run.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.compose.conftest import ONE_SHOTS, PUBLISHED, REPO_ROOT

COMPOSE_SH = REPO_ROOT / "compose" / "compose.sh"


def test_only_five_services_are_published_and_only_on_loopback(compose):
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published.setdefault(name, []).append(str(port))
    assert set(published) == PUBLISHED
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


def test_every_long_running_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOTS:
            assert service.get("restart") == "no" and "healthcheck" not in service, name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no health check"
        if test[0] == "CMD":
            # podman 4.3 splits a CMD argument with spaces into words: CMD-SHELL for those.
            assert all(" " not in part for part in test[1:]), f"{name}: a CMD argument with spaces"


def test_one_shots_run_in_order_and_services_wait_for_them(compose):
    services = compose["services"]

    def condition(service, dependency):
        return services[service]["depends_on"][dependency]["condition"]

    assert condition("training", "features") == "service_completed_successfully"
    assert condition("publish", "training") == "service_completed_successfully"
    assert condition("model-server", "training") == "service_completed_successfully"
    assert condition("api", "features") == "service_completed_successfully"
    assert condition("api", "model-server") == "service_healthy"
    assert condition("metastore", "postgres") == "service_healthy"
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
            expected = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == expected, (name, dependency)


def test_state_is_in_named_volumes(compose):
    named = set(compose["volumes"])
    assert {"lake", "postgres-data", "redis-data"} <= named
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("./", "${")):
                assert source in named, f"{name} mounts {source}, which is not a named volume"


def test_no_secret_is_written_in_the_compose_file():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN|API_KEY_HASH)\w*:", line):
            assert "${" in line, f"a secret written in docker-compose.yml: {line.strip()}"
    assert not re.search(r"[0-9a-f]{64}", text), "a key hash written in docker-compose.yml"


def test_env_example_names_every_required_variable():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == {"POSTGRES_PASSWORD", "JUPYTER_TOKEN", "API_KEY_HASH", "SQL_PASSWORD", "MLFLOW_PASSWORD"}
    example = (REPO_ROOT / ".env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    assert required | optional <= names, f".env.example lacks {(required | optional) - names}"
    for name in required:  # no value shipped for a secret
        assert re.search(rf"^{name}=$", example, re.M), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["start", "--input", "/nonexistent/loans.csv"], "--input /nonexistent/loans.csv is not a file"),
        (["start", "--rows", "many"], "--rows many is not a positive number"),
        (["start", "--frobnicate"], "unknown option --frobnicate"),
        (["reset", "--now"], "unknown option --now"),
    ],
)
def test_compose_sh_refuses_bad_arguments_in_one_line(args, message):
    result = subprocess.run([str(COMPOSE_SH), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("sparkmaker: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_compose_sh_without_an_engine_says_so_in_one_line(tmp_path):
    env_file = tmp_path / "cluster.env"
    env_file.write_text("COMPOSE_PROJECT_NAME=sparkmaker-none\n")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "SPARKMAKER_ENGINE_UP": "/nonexistent/engine-up.sh",
        "SPARKMAKER_COMPOSE_ENV_FILE": str(env_file),
    }
    result = subprocess.run([str(COMPOSE_SH), "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert (
        "no Docker engine answers at unix:///nonexistent/docker.sock" in result.stderr
        or "docker-compose (1.29 or later) is not installed" in result.stderr
    ), result.stderr


def test_mlflow_runs_on_postgres_with_s3_artifacts_and_the_pipeline_roles_use_it(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://sparkmaker:${POSTGRES_PASSWORD")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert (
        env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://") and env["MLFLOW_S3_ENDPOINT_URL"] == "http://moto:5000"
    )
    assert {"mlflow", "mlflow:5000", "127.0.0.1:5000"} <= set(env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","))
    assert mlflow["command"][:2] == ["sparkmaker-container", "mlflow"]
    assert set(mlflow["depends_on"]) == {"postgres", "moto"}
    assert "CREATE DATABASE mlflow;" in (REPO_ROOT / "compose" / "postgres-init" / "20-mlflow.sql").read_text()
    for role in ("features", "training", "publish"):
        role_env = services[role]["environment"]
        assert role_env["SPARKMAKER_MLFLOW__TRACKING_URI"] == "http://mlflow:5000", role
        assert role_env["SPARKMAKER_PATHS__STATE_DIR"] == "/lake/.state", role  # one run record for both roles
    assert services["training"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_the_image_holds_the_pipeline_and_stack_packages_the_roles_import():
    dockerfile = (REPO_ROOT / "compose" / "Dockerfile").read_text()
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for package in ("pipeline", "stack", "monitoring"):
        assert f"COPY {package}/ {package}/" in dockerfile and f"!{package}/" in ignore


def test_airflow_runs_the_dag_on_the_clusters_postgresql(compose):
    """Airflow's metadata on the cluster's PostgreSQL, its database created at init, the DAG's tasks Spark clients."""
    airflow = compose["services"]["airflow"]
    env = airflow["environment"]
    assert airflow["command"] == ["python3", "-m", "orchestration", "serve"]
    assert env["SPARKMAKER_AIRFLOW__DATABASE_URL"].startswith("postgresql+psycopg://sparkmaker:${POSTGRES_PASSWORD:?")
    assert env["SPARKMAKER_AIRFLOW__DATABASE_URL"].endswith("@postgres:5432/airflow")
    assert env["SPARKMAKER_METASTORE__URIS"] == "thrift://metastore:9083"
    assert env["SPARKMAKER_SPARK__MASTER"] == "spark://spark-master:7077"
    assert airflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    # the same MLflow and run records as the pipeline's roles
    assert env["SPARKMAKER_MLFLOW__TRACKING_URI"] == "http://mlflow:5000"
    assert env["SPARKMAKER_PATHS__STATE_DIR"] == "/lake/.state"
    assert airflow["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "lake:/lake" in airflow["volumes"]
    assert airflow["build"]["target"] == "airflow"
    init = (REPO_ROOT / "compose" / "postgres-init" / "30-airflow.sql").read_text()
    assert "CREATE DATABASE airflow;" in init


def test_the_airflow_image_installs_its_venv_from_the_hashed_lock():
    """The same script as the local venv, given compose/airflow.lock (tests/configuration/test_lock.py checks the lock)."""
    dockerfile = (REPO_ROOT / "compose" / "Dockerfile").read_text()
    stage = dockerfile.split("FROM base AS airflow", 1)[1]
    assert "SPARKMAKER_AIRFLOW_LOCK=/tmp/locks/airflow.lock scripts/ensure_airflow_venv.sh" in stage
    # The stamp the script writes is of these two files: `orchestration serve` then finds the venv current.
    for copied in ("orchestration/airflow-requirements.txt orchestration/airflow-constraints.txt", "orchestration/"):
        assert copied in stage
    allowed = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert {"!orchestration/", "!scripts/ensure_airflow_venv.sh", "!compose/airflow.lock"} <= set(allowed)


def test_the_build_context_holds_every_file_the_dockerfiles_copy():
    """The root .dockerignore is an allowlist: a COPY source it leaves out fails the build."""
    import fnmatch

    allowed = [line[1:] for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for dockerfile in ("compose/Dockerfile", "api/Dockerfile", "serving/Dockerfile", "training/Dockerfile"):
        for line in re.findall(r"(?m)^COPY (?!--from)(.+)$", (REPO_ROOT / dockerfile).read_text()):
            for source in line.split()[:-1]:
                ok = any(
                    fnmatch.fnmatch(source, a) or source.startswith(a.rstrip("/") + "/") or source == a.rstrip("/")
                    for a in allowed
                )
                assert ok, f"{dockerfile} copies {source}, which .dockerignore leaves out of the build context"
                assert list(REPO_ROOT.glob(source.rstrip("/"))), f"{dockerfile} copies {source}, which does not exist"


def test_mlflow_asks_for_a_login_whose_password_the_env_file_keeps_and_the_pipeline_sends(compose):
    """As the local stack's: without it, anything reaching the published port could move the production alias."""
    services = compose["services"]
    assert str(services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]).startswith("${MLFLOW_PASSWORD:?")
    for name in ("features", "training", "publish", "airflow"):  # every client of http://mlflow:5000
        env = services[name]["environment"]
        assert env["SPARKMAKER_MLFLOW__TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert str(env["MLFLOW_TRACKING_PASSWORD"]).startswith("${MLFLOW_PASSWORD:?"), name
    assert re.search(r"(?m)^MLFLOW_PASSWORD=$", (REPO_ROOT / ".env.example").read_text())
    assert "MLFLOW_PASSWORD=$(random_token)" in COMPOSE_SH.read_text()


def test_the_sql_server_asks_for_a_password_kept_in_the_env_file(compose):
    """The compose SQL server logs clients in (password from .env, which compose.sh fills), like the local stack."""
    env = compose["services"]["thrift-server"]["environment"]
    assert str(env["SPARKMAKER_SQL_PASSWORD"]).startswith("${SQL_PASSWORD:?")
    assert re.search(r"(?m)^SQL_PASSWORD=$", (REPO_ROOT / ".env.example").read_text())
    assert "SQL_PASSWORD=$(random_token)" in COMPOSE_SH.read_text()
    # The role and the local stack build the same command; spark-submit takes --hiveconf only after --class.
    from configuration.settings import load_settings
    from stack.supervisor import thrift_server_command

    command = thrift_server_command(
        load_settings(), 10000, "spark://spark-master:7077", REPO_ROOT / "classes", bind_host="0.0.0.0"
    )
    assert command.index("--class") < command.index("--hiveconf")
    assert "hive.server2.authentication=CUSTOM" in command and "hive.server2.thrift.bind.host=0.0.0.0" in command
    # The runtime image has no javac: the classes are compiled in a build stage into the folder looked in first.
    dockerfile = (REPO_ROOT / "compose" / "Dockerfile").read_text()
    assert "COPY --from=java-classes /opt/sparkmaker-java /opt/sparkmaker-java" in dockerfile


def test_the_same_sql_server_arguments_as_the_local_stack():
    from features.java_extensions import sql_server_arguments

    arguments = " ".join(sql_server_arguments(REPO_ROOT / "classes"))
    for expected in (
        "spark.sql.runSQLOnFiles=false",
        "spark.sql.extensions=sparkmaker.SqlGuard",
        "hive.server2.authentication=CUSTOM",
        "hive.server2.custom.authentication.class=sparkmaker.PasswordAuthenticator",
    ):
        assert expected in arguments
