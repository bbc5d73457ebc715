"""An optional mirror of the MLflow registry into SageMaker's Model Registry (`mlflow.sagemaker_mirror`, off by default).

For teams whose deployment reads from SageMaker: every registered version becomes a model
package in the group `mlflow.sagemaker_group` (its tarball uploaded to
`s3://<aws.s3_bucket>/<serving.s3_prefix>/registry/<version>/model.tar.gz`, the inference
image `mlflow.sagemaker_image_uri`, else `serving.image_uri`, else `training.image_uri`),
`PendingManualApproval`. After each promotion or rollback the production version's package
is `Approved` and a package that was approved before is `Rejected`; the others stay pending.
MLflow stays the truth: a failed mirror call leaves the MLflow change made and says how to
re-sync (promote the production version again).
"""

from __future__ import annotations

from typing import Any

from configuration.errors import UserError
from training.aws import explain, session
from training.registry import PRODUCTION

PACKAGE_TAG = "sagemaker_model_package_arn"
APPROVED, PENDING, REJECTED = "Approved", "PendingManualApproval", "Rejected"


class MirrorError(UserError):
    """The SageMaker mirror could not follow a change made in MLflow."""


class SageMakerMirror:
    def __init__(self, settings) -> None:
        if not settings.aws.s3_bucket:
            raise MirrorError(
                "mlflow.sagemaker_mirror is on but aws.s3_bucket is empty: set the bucket the model packages' tarballs go to"
            )
        self.group = settings.mlflow.sagemaker_group
        self.bucket = settings.aws.s3_bucket
        self.prefix = settings.serving.s3_prefix.strip("/")
        self.image = settings.mlflow.sagemaker_image_uri or settings.serving.image_uri or settings.training.image_uri
        if not self.image:
            raise MirrorError(
                "mlflow.sagemaker_mirror is on but no inference image is set: set mlflow.sagemaker_image_uri or serving.image_uri"
            )
        self._session = session(settings)

    def __call__(self, registry, action: str, version: str) -> None:
        try:
            if action == "register":
                self.add(registry, version)
            else:
                self.approve(registry, registry.alias(PRODUCTION))
        except MirrorError:
            raise
        except Exception as exc:  # boto3's errors, one line
            raise MirrorError(
                f"{action} of version {version} is done in MLflow, but the SageMaker mirror failed: "
                f"{explain(exc, 'update the model package group ' + self.group)}; "
                f"re-sync with python -m training promote <the production version>"
            ) from None

    @property
    def client(self):
        return self._session.client("sagemaker")

    def _ensure_group(self) -> None:
        client = self.client
        try:
            client.describe_model_package_group(ModelPackageGroupName=self.group)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
                raise
            client.create_model_package_group(
                ModelPackageGroupName=self.group,
                ModelPackageGroupDescription="sparkmaker's credit-risk model (mirror of MLflow)",
            )

    def add(self, registry, version: str) -> str:
        """Upload the version's tarball and create its model package (PendingManualApproval)."""
        self._ensure_group()
        mv = registry.get(version)
        key = f"{self.prefix}/registry/{version}/model.tar.gz"
        self._session.client("s3").upload_file(str(registry.model_tar(version)), self.bucket, key)
        arn = self.client.create_model_package(
            ModelPackageGroupName=self.group,
            ModelPackageDescription=f"MLflow {registry.model_name} version {version}",
            InferenceSpecification={
                "Containers": [{"Image": self.image, "ModelDataUrl": f"s3://{self.bucket}/{key}"}],
                "SupportedContentTypes": ["text/csv", "application/json"],
                "SupportedResponseMIMETypes": ["text/csv", "application/json"],
            },
            ModelApprovalStatus=PENDING,
            CustomerMetadataProperties={
                "mlflow_model": registry.model_name,
                "mlflow_version": str(version),
                "mlflow_run_id": registry.run_of(version) or "",
                "model_sha256": mv.model_sha256,
                "snapshot_run_id": mv.run_id or "",
            },
        )["ModelPackageArn"]
        registry.client.set_model_version_tag(registry.model_name, str(version), PACKAGE_TAG, arn)
        return arn

    def packages(self, registry) -> dict[str, str]:
        """MLflow version -> model package ARN, for the mirrored versions."""
        return {
            v.version: tags[PACKAGE_TAG]
            for v, tags in (
                (v, registry.client.get_model_version(registry.model_name, v.version).tags or {})
                for v in registry.versions()
            )
            if PACKAGE_TAG in tags
        }

    def approve(self, registry, production: str | None) -> dict[str, str]:
        """Approved for the production version, Rejected for one approved before; returns version -> status."""
        client = self.client
        statuses: dict[str, str] = {}
        for version, arn in self.packages(registry).items():
            current = client.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
            wanted = APPROVED if version == production else (REJECTED if current == APPROVED else current)
            if wanted != current:
                client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=wanted)
            statuses[version] = wanted
        return statuses


def mirror_for(settings) -> Any:
    """The on_change hook open_registry gives the MLflow registry when mlflow.sagemaker_mirror is on."""
    return SageMakerMirror(settings)
