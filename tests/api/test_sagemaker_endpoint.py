"""The SageMaker model endpoint: boto3's sagemaker-runtime invoke_endpoint against the model server's runtime route.

AWS cannot be reached from here; the project's server implements SageMaker Runtime's
`POST /endpoints/{name}/invocations` with its error shapes, so boto3 runs its real
request signing, parsing and error mapping against it (settings.aws.endpoint_url).
"""

from __future__ import annotations

import pytest

from tests.api.conftest import (
    CUSTOMERS,
    MODEL_VERSION,
    deploy,
    expected_features,
    reference_probabilities,
    serve_app,
    teardown_deployment,
)
from tests.api.test_errors import assert_clean_error, bare_model_app
from tests.online.conftest import closed_port


@pytest.fixture
def aws_env(monkeypatch):
    # boto3's own variables (the AWS contract): fake credentials, signed and then ignored by the local server.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def sagemaker_sections(endpoint_url: str, endpoint_name: str = "sparkmaker-credit-risk") -> dict:
    return {"aws": {"endpoint_url": endpoint_url, "region": "us-east-1"}, "serving": {"endpoint_name": endpoint_name}}


@pytest.mark.parametrize("store_kind, log_kind", [("sqlite", "sqlite"), ("redis", "postgres")])
def test_sagemaker_endpoint_scores_like_the_http_endpoint(
    request, tmp_path, model_server, model_dir, aws_env, store_kind, log_kind
):
    deployed = deploy(
        tmp_path,
        request,
        store_kind,
        log_kind,
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(model_server.url),
    )
    try:
        features = expected_features()
        one = deployed.get(f"/predict/{CUSTOMERS[8]}")
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["model_version"] == MODEL_VERSION  # from the custom-attributes header boto3 returns
        assert body["probability"] == pytest.approx(
            float(reference_probabilities(model_dir, [features[CUSTOMERS[8]]])[0]), abs=1e-6
        )
        assert body["threshold"] == 0.3 and body["label"] == int(body["probability"] >= 0.3)
        batch = deployed.post("/predict", {"ids": CUSTOMERS[:50]}).json()
        references = reference_probabilities(model_dir, [features[c] for c in CUSTOMERS[:50]])
        assert [p["probability"] for p in batch["predictions"]] == pytest.approx(
            [float(r) for r in references], abs=1e-6
        )
        assert deployed.get("/ready").json()["checks"]["model_endpoint"]["ok"] is True
    finally:
        teardown_deployment(deployed)


def test_an_unknown_sagemaker_endpoint_name_is_503(request, tmp_path, model_server, aws_env):
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(model_server.url, "no-such-endpoint"),
    )
    try:
        response = deployed.get(f"/predict/{CUSTOMERS[0]}")
        assert_clean_error(response, 503)
        assert response.headers["Retry-After"] == "7"
        assert deployed.get("/ready").status_code == 503
    finally:
        teardown_deployment(deployed)


def test_an_unreachable_sagemaker_endpoint_is_503(request, tmp_path, aws_env):
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(f"http://127.0.0.1:{closed_port()}"),
    )
    try:
        assert_clean_error(deployed.get(f"/predict/{CUSTOMERS[0]}"), 503)
    finally:
        teardown_deployment(deployed)


def test_a_slow_sagemaker_endpoint_is_504(request, tmp_path, aws_env):
    slow = serve_app(bare_model_app(delay=5.0))
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(slow.url),
        timeout_seconds=0.5,
    )
    try:
        assert_clean_error(deployed.get(f"/predict/{CUSTOMERS[0]}"), 504)
    finally:
        teardown_deployment(deployed)
        slow.stop()


def test_sagemaker_endpoint_without_credentials_is_503(request, tmp_path, model_server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(model_server.url),
    )
    try:
        assert_clean_error(deployed.get(f"/predict/{CUSTOMERS[0]}"), 503)
    finally:
        teardown_deployment(deployed)


def test_predictions_of_one_turn_share_one_invoke_endpoint_call(model_server, model_dir, aws_env):
    """api.model_batching over boto3: one invoke_endpoint for the turn's callers, each its own XGBoost value."""
    import asyncio

    from api.model_batching import BatchingEndpoint
    from api.model_endpoint import SageMakerModelEndpoint
    from features.contract import FEATURE_COLUMNS

    features = expected_features()
    calls = [[[features[c][name] for name in FEATURE_COLUMNS] for c in CUSTOMERS[i : i + 2]] for i in range(0, 8, 2)]

    shared: list[int] = []

    async def main():
        inner = SageMakerModelEndpoint("sparkmaker-credit-risk", "us-east-1", model_server.url, 5.0, 8)
        model = BatchingEndpoint(inner, 32, on_shared=shared.append)
        answers = await asyncio.gather(*(model.predict(rows) for rows in calls))
        await model.aclose()
        return answers

    answers = asyncio.run(main())
    assert shared == [4]  # one invoke_endpoint for the four callers
    references = reference_probabilities(model_dir, [features[c] for c in CUSTOMERS[:8]])
    assert [p for answer in answers for p in answer.probabilities] == pytest.approx(
        [float(r) for r in references], abs=1e-6
    )
    assert {answer.model_version for answer in answers} == {MODEL_VERSION}
