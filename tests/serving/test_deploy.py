"""`python -m serving sagemaker deploy/delete` against a moto server: what moto received and what it holds.

The moto server runs as its own process with moto's request recorder on, so the test can
read every call the deploy made. moto 5.2 does not implement UpdateEndpoint: the update
test checks the calls up to and including UpdateEndpoint, and accepts either moto's
failure on it or (a later moto) success.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import httpx
import pytest

from tests.serving.conftest import REPO_ROOT, free_port, registry_with

BUCKET = "sparkmaker-models"
ROLE = "arn:aws:iam::123456789012:role/sparkmaker-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sparkmaker-serving:1.0"
ENDPOINT = "credit-risk-test"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moto")
    port = free_port()
    recording = tmp / "recording.jsonl"
    env = dict(os.environ, MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    with open(tmp / "moto.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp / "moto.log").read_text()
            time.sleep(0.2)
    yield url, recording
    process.terminate()
    process.wait(timeout=20)


def _aws_env(tmp: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_MAX_ATTEMPTS": "1",  # moto's 500 for what it lacks should not be retried ten times
        "AWS_RETRY_MODE": "standard",
    }


@pytest.fixture(scope="module")
def setup(moto, tmp_path_factory, model_a, model_b):
    url, recording = moto
    tmp = tmp_path_factory.mktemp("deploy")
    registry = registry_with(tmp / "registry", model_a, model_b)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SAGEMAKER_")) and (not k.startswith("SPARKMAKER_") or k == "SPARKMAKER_CONFIG")
    }
    env.update(_aws_env(tmp))
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "SPARKMAKER_PATHS__LAKE": str(tmp / "lake"),
            "SPARKMAKER_PATHS__STATE_DIR": str(tmp / "state"),
            "SPARKMAKER_TRAINING__REGISTRY_DIR": str(tmp / "registry"),
            "SPARKMAKER_AWS__ENDPOINT_URL": url,
            "SPARKMAKER_AWS__S3_BUCKET": BUCKET,
            "SPARKMAKER_SERVING__ROLE_ARN": ROLE,
        }
    )
    clients = {
        name: boto3.client(
            name,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "sagemaker")
    }
    clients["s3"].create_bucket(Bucket=BUCKET)
    return {"env": env, "registry": registry, "recording": recording, **clients}


def _serving(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", "sagemaker", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _calls(recording: Path) -> list[tuple[str, dict]]:
    """(operation, JSON body) of every SageMaker call moto received, in order."""
    calls = []
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        target = entry["headers"].get("X-Amz-Target", "")
        if target.startswith("SageMaker."):
            body = entry["body"]
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode()
            calls.append((target.split(".", 1)[1], json.loads(body or "{}")))
    return calls


def _s3_members(s3, url: str) -> dict[str, bytes]:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def test_deploy_creates_model_config_and_endpoint(setup, model_a):
    setup["recording"].write_text("")
    done = _serving(
        setup["env"],
        "deploy",
        "--model-version",
        "1",
        "--endpoint-name",
        ENDPOINT,
        "--image-uri",
        IMAGE,
        "--instance-type",
        "ml.c5.large",
        "--instance-count",
        "2",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["action"] == "created" and result["status"] == "InService"
    sm, s3 = setup["sagemaker"], setup["s3"]

    model = sm.describe_model(ModelName=result["model_name"])
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["Environment"]["SPARKMAKER_SERVING__MODEL_VERSION"] == "1"
    assert model["ExecutionRoleArn"] == ROLE
    # The full model directory, byte for byte as registered, went to S3.
    members = _s3_members(s3, container["ModelDataUrl"])
    assert members["xgboost-model"] == (model_a / "xgboost-model").read_bytes()
    assert "model-metadata.json" in members

    config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    (variant,) = config["ProductionVariants"]
    assert variant == {
        **variant,
        "VariantName": "version-1",
        "ModelName": result["model_name"],
        "InstanceType": "ml.c5.large",
        "InitialInstanceCount": 2,
    }
    endpoint = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == result["endpoint_config_name"]

    operations = [op for op, _ in _calls(setup["recording"])]
    for expected in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert expected in operations
    assert (
        operations.index("CreateModel") < operations.index("CreateEndpointConfig") < operations.index("CreateEndpoint")
    )


def test_deploy_of_an_existing_endpoint_is_a_new_config_and_update(setup, model_b):
    sm = setup["sagemaker"]
    before = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    setup["recording"].write_text("")
    done = _serving(setup["env"], "deploy", "--model-version", "2", "--endpoint-name", ENDPOINT, "--builtin-xgboost")
    calls = _calls(setup["recording"])
    operations = [op for op, _ in calls]
    assert "DeleteEndpoint" not in operations and "CreateEndpoint" not in operations

    (create_model,) = [body for op, body in calls if op == "CreateModel"]
    assert (
        create_model["PrimaryContainer"]["Image"]
        == "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.2-0"
    )
    # The managed image loads every file it finds as a model: it gets xgboost-model alone.
    assert _s3_members(setup["s3"], create_model["PrimaryContainer"]["ModelDataUrl"]) == {
        "xgboost-model": (model_b / "xgboost-model").read_bytes()
    }
    (create_config,) = [body for op, body in calls if op == "CreateEndpointConfig"]
    assert create_config["EndpointConfigName"] != before
    assert create_config["ProductionVariants"][0]["VariantName"] == "version-2"
    (update,) = [body for op, body in calls if op == "UpdateEndpoint"]
    assert update == {**update, "EndpointName": ENDPOINT, "EndpointConfigName": create_config["EndpointConfigName"]}
    if done.returncode != 0:  # moto 5.2 answers UpdateEndpoint with a 500 (not implemented)
        assert "UpdateEndpoint" in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
    else:
        assert json.loads(done.stdout)["action"].startswith("updated")
    # Both configs stay: a rollback is a deploy of the older version.
    assert {before, create_config["EndpointConfigName"]} <= {
        c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]
    }


def test_delete_removes_what_deploy_created_and_nothing_else(setup):
    sm = setup["sagemaker"]
    sm.create_model(ModelName=f"{ENDPOINT}-v9-not-ours", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    done = _serving(setup["env"], "delete", "--endpoint-name", ENDPOINT)
    assert done.returncode == 0, done.stderr
    deleted = json.loads(done.stdout)["deleted"]
    assert deleted["endpoint"] == [ENDPOINT]
    assert len(deleted["endpoint_configs"]) == 2 and len(deleted["models"]) == 2
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [f"{ENDPOINT}-v9-not-ours"]
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    with pytest.raises(sm.exceptions.ClientError):
        sm.describe_endpoint(EndpointName=ENDPOINT)
    again = _serving(setup["env"], "delete", "--endpoint-name", ENDPOINT)
    assert again.returncode == 2 and "nothing to delete" in again.stderr


@pytest.mark.parametrize(
    "args, env_changes, fragment",
    [
        (["--model-version", "9", "--image-uri", IMAGE], {}, "no model version '9'"),
        (["--model-version", "1"], {}, "no serving image"),
        (["--model-version", "1", "--image-uri", IMAGE], {"SPARKMAKER_AWS__S3_BUCKET": ""}, "aws.s3_bucket is empty"),
        (["--model-version", "1", "--image-uri", IMAGE], {"SPARKMAKER_SERVING__ROLE_ARN": ""}, "no execution role"),
        (["--model-version", "1", "--image-uri", IMAGE, "--endpoint-name", "bad_name!"], {}, "not valid for SageMaker"),
        (["--model-version", "1", "--builtin-xgboost", "--xgboost-version", "0.1"], {}, "no managed XGBoost image"),
    ],
)
def test_deploy_mistakes_are_one_line_errors(setup, args, env_changes, fragment):
    env = {k: v for k, v in {**setup["env"], **env_changes}.items() if v != ""}
    done = _serving(env, "deploy", *args)
    assert done.returncode == 2
    assert fragment in done.stderr and done.stderr.startswith("serving: error: ")
    assert done.stderr.count("\n") == 1, done.stderr
