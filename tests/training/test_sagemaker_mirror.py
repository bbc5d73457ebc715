"""The optional mirror of the MLflow registry into SageMaker's Model Registry, against moto in server mode."""

from __future__ import annotations

import boto3
import pytest

from training.registry import open_registry
from training.sagemaker_mirror import MirrorError

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sparkmaker-serving:test"


def _settings(tmp_path, moto_url, mirror: bool = True, bucket: str = "models"):
    from configuration.settings import load_settings

    return load_settings(
        paths={"lake": str(tmp_path / "lake")},
        aws={"endpoint_url": moto_url, "region": "us-east-1", "s3_bucket": bucket},
        mlflow={"sagemaker_mirror": mirror, "sagemaker_group": "credit-risk-test", "sagemaker_image_uri": IMAGE},
    )


def _statuses(sagemaker) -> dict[str, str]:
    packages = sagemaker.list_model_packages(ModelPackageGroupName="credit-risk-test")["ModelPackageSummaryList"]
    out = {}
    for summary in packages:
        described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        # (moto keeps no CustomerMetadataProperties: the description names the version too)
        out[described["ModelPackageDescription"].rsplit(" ", 1)[-1]] = described["ModelApprovalStatus"]
    return out


def test_versions_are_mirrored_and_follow_promotion_and_rollback(tmp_path, moto_url, model_tar):
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name="us-east-1")
    registry = open_registry(_settings(tmp_path, moto_url))
    tar1, meta1 = model_tar(seed=1)
    tar2, meta2 = model_tar(seed=2)
    registry.register(tar1, meta1)
    registry.register(tar2, meta2)
    assert _statuses(sagemaker) == {"1": "PendingManualApproval", "2": "PendingManualApproval"}
    described = sagemaker.describe_model_package(
        ModelPackageName=sagemaker.list_model_packages(ModelPackageGroupName="credit-risk-test")[
            "ModelPackageSummaryList"
        ][0]["ModelPackageArn"]
    )
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == IMAGE
    bucket, _, key = container["ModelDataUrl"].removeprefix("s3://").partition("/")
    version = described["ModelPackageDescription"].rsplit(" ", 1)[-1]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == registry.model_tar(version).read_bytes()

    registry.promote("1")
    assert _statuses(sagemaker) == {"1": "Approved", "2": "PendingManualApproval"}
    registry.promote("2")
    assert _statuses(sagemaker) == {"1": "Rejected", "2": "Approved"}
    assert registry.rollback() == "1"
    assert _statuses(sagemaker) == {"1": "Approved", "2": "Rejected"}


def test_the_mirror_is_off_by_default(tmp_path, moto_url, model_tar):
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name="us-east-1")
    registry = open_registry(_settings(tmp_path, moto_url, mirror=False))
    tar, meta = model_tar()
    registry.register(tar, meta)
    registry.promote("1")
    assert sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_the_mirror_needs_a_bucket(tmp_path, moto_url):
    with pytest.raises(MirrorError, match="aws.s3_bucket is empty"):
        open_registry(_settings(tmp_path, moto_url, bucket=""))


def test_a_failing_mirror_says_mlflow_holds_the_change(tmp_path, moto_url, model_tar):
    registry = open_registry(_settings(tmp_path, moto_url, bucket="no-such-bucket"))
    tar, meta = model_tar()
    with pytest.raises(
        MirrorError, match="register of version 1 is done in MLflow, but the SageMaker mirror failed: cannot "
    ) as caught:
        registry.register(tar, meta)
    assert "\n" not in str(caught.value)
    assert [v.version for v in registry.versions()] == ["1"]
