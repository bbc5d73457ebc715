"""boto3's own sagemaker-runtime client against the server: answers and errors as against AWS."""

from __future__ import annotations

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config

from serving.environment import PAYLOAD_LIMIT_BYTES
from tests.serving.conftest import reference_predict, synthetic_features

ENDPOINT = "sparkmaker-credit-risk"  # serving.endpoint_name's default


@pytest.fixture(scope="module")
def runtime(dir_server):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=dir_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_invoke_endpoint_csv(runtime, model_a):
    matrix = synthetic_features(3, seed=21)
    body = "\n".join(",".join("" if np.isnan(v) else str(float(v)) for v in row) for row in matrix)
    answer = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=body, ContentType="text/csv")
    assert answer["ContentType"].startswith("text/csv")
    assert answer["InvokedProductionVariant"] == "version-7"
    assert answer["CustomAttributes"] == "model_version=7; threshold=0.25"
    values = [float(line) for line in answer["Body"].read().decode().splitlines()]
    np.testing.assert_allclose(values, reference_predict(model_a, matrix), atol=1e-6)


def test_invoke_endpoint_json(runtime):
    body = '{"instances": [[1, 2000, 40, 3, 1], [null, null, null, null, null]]}'
    answer = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, Body=body, ContentType="application/json", Accept="application/json"
    )
    import json

    assert len(json.loads(answer["Body"].read())["predictions"]) == 2


def test_unknown_endpoint_is_a_validation_error(runtime):
    with pytest.raises(runtime.exceptions.ValidationError) as caught:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"1,2,3,4,5", ContentType="text/csv")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "no-such-endpoint" in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"Body": b"1,2,x,4,5", "ContentType": "text/csv"}, 400, "'x' is not a number"),
        ({"Body": b"1,2,3", "ContentType": "text/csv"}, 400, "row 1 has 3 fields"),
        ({"Body": b"1,2,3,4,5", "ContentType": "text/plain"}, 415, "send text/csv or application/json"),
        ({"Body": b"1,2,3,4,5", "ContentType": "text/csv", "Accept": "text/html"}, 406, "ask for text/csv"),
    ],
)
def test_model_side_errors_are_model_errors(runtime, kwargs, status, fragment):
    with pytest.raises(runtime.exceptions.ModelError) as caught:
        runtime.invoke_endpoint(EndpointName=ENDPOINT, **kwargs)
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == status
    assert fragment in response["OriginalMessage"]
    assert f"error ({status}) from primary" in response["Error"]["Message"]


def test_oversize_body_is_a_validation_error(runtime):
    with pytest.raises(runtime.exceptions.ValidationError) as caught:
        runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=b"1" * (PAYLOAD_LIMIT_BYTES + 1), ContentType="text/csv")
    assert "over the" in caught.value.response["Error"]["Message"]


def test_error_wire_format(dir_server):
    answer = httpx.post(
        f"{dir_server.url}/endpoints/{ENDPOINT}/invocations", content=b"x", headers={"Content-Type": "text/csv"}
    )
    assert answer.status_code == 424
    assert answer.headers["x-amzn-errortype"] == "ModelError"
    assert answer.headers["x-amzn-requestid"]
    assert answer.json()["__type"] == "ModelError"
