"""Deploying a registered model to a SageMaker endpoint, and deleting it (SDK v3 `sagemaker.core.resources`).

deploy: upload the model's tarball to S3, create a Model (the image + the tarball), a new
EndpointConfig with one production variant named after the version
(`serving.model.variant_name`, which is what InvokeEndpoint reports as
InvokedProductionVariant), then create the endpoint or, when it exists, point it at the new
config with UpdateEndpoint: SageMaker swaps the instances behind it without downtime, and
the endpoint is never deleted. Older configs and models stay (a rollback is a deploy of
the older version); `delete` removes the endpoint and everything this tool created for it.

Two images:
- this project's serving image (`--image-uri`, serving.image_uri): the full model
  directory, and the container reports the version (SPARKMAKER_SERVING__MODEL_VERSION);
- AWS's managed XGBoost image (`--builtin-xgboost`): it loads every file of the model
  directory as a booster, so it gets a tarball holding `xgboost-model` alone.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.settings import Settings
from serving.model import variant_name

log = logging.getLogger("serving")

DEFAULT_XGBOOST_VERSION = "3.2-0"  # the managed image matching the xgboost this project trains with
TAG_ENDPOINT = "sparkmaker:endpoint"
TAG_VERSION = "sparkmaker:model-version"
_NAME_LIMIT = 63


def aws_session(settings: Settings):
    """A boto3 session; with aws.endpoint_url set (a local emulator), every client it makes goes there."""
    import boto3

    if not settings.aws.endpoint_url:
        return boto3.Session(region_name=settings.aws.region)
    endpoint_url = settings.aws.endpoint_url

    class EmulatorSession(boto3.Session):
        # The SDK creates its clients from the session it is given and has no endpoint
        # option of its own: this is where the override can reach them.
        def client(self, *args, **kwargs):
            kwargs.setdefault("endpoint_url", endpoint_url)
            return super().client(*args, **kwargs)

    session = EmulatorSession(region_name=settings.aws.region)
    session.events.register("after-call.sagemaker", _drop_empty_structures)
    return session


def _drop_empty_structures(parsed=None, **_: Any) -> None:
    """Remove `{}` members from an emulator's answers, in place.

    AWS leaves an unset structure out of a Describe* answer; moto sends it as `{}` (e.g.
    `DataCaptureConfig: {}`), which SDK v3's typed resources reject as missing required
    fields. Only registered for an emulator endpoint (aws.endpoint_url).
    """
    if isinstance(parsed, dict):
        for key in [k for k, v in parsed.items() if v == {} and k != "ResponseMetadata"]:
            del parsed[key]
        for value in parsed.values():
            _drop_empty_structures(value)
    elif isinstance(parsed, list):
        for item in parsed:
            _drop_empty_structures(item)


def resource_name(endpoint_name: str, version: str, stamp: str) -> str:
    """`<endpoint>-v<version>-<stamp>` within SageMaker's 63 characters and alphabet."""
    suffix = f"-v{re.sub(r'[^A-Za-z0-9]+', '-', version)}-{stamp}"
    return endpoint_name[: _NAME_LIMIT - len(suffix)].rstrip("-") + suffix


def _check_endpoint_name(name: str) -> str:
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
        raise UserError(f"endpoint name {name!r} is not valid for SageMaker: letters, digits and hyphens, at most 63")
    return name


def builtin_image_uri(region: str, xgboost_version: str) -> str:
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve("xgboost", region, version=xgboost_version)
    except ValueError as exc:
        raise UserError(
            f"no managed XGBoost image {xgboost_version} for {region}: {str(exc).splitlines()[0]}"
        ) from None


def xgboost_only_tar(model_dir: Path, target: Path) -> Path:
    """A model.tar.gz holding `xgboost-model` alone, for the managed XGBoost image."""
    data = (Path(model_dir) / "xgboost-model").read_bytes()
    with tarfile.open(target, "w:gz") as archive:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(data)
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))
    return target


def _client_error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    operation = getattr(exc, "operation_name", None)
    message = (error.get("Message") or str(exc)).strip().splitlines() or [""]
    where = f" (in {operation})" if operation else ""
    return f"{error.get('Code', type(exc).__name__)}{where}: {message[0][:300]}"


def _find_endpoint(name: str, session, region: str):
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint

    try:
        return Endpoint.get(endpoint_name=name, session=session, region=region)
    except ClientError as exc:
        code = (exc.response.get("Error") or {}).get("Code", "")
        message = (exc.response.get("Error") or {}).get("Message", "")
        if code in ("ValidationException", "ResourceNotFound") and (
            "not find" in message or "not found" in message.lower()
        ):
            return None
        raise


def deploy(
    settings: Settings,
    *,
    version: str,
    endpoint_name: str | None = None,
    image_uri: str | None = None,
    builtin_xgboost: bool = False,
    xgboost_version: str = DEFAULT_XGBOOST_VERSION,
    instance_type: str | None = None,
    instance_count: int | None = None,
    role_arn: str | None = None,
    wait: bool = True,
    wait_timeout_seconds: int = 1800,
) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from training.registry import open_registry

    serving = settings.serving
    endpoint_name = _check_endpoint_name(endpoint_name or serving.endpoint_name)
    region = settings.aws.region
    registry = open_registry(settings)
    model_version = registry.get(version)  # RegistryError names the known versions
    version = model_version.version
    bucket = settings.aws.s3_bucket
    if not bucket:
        raise UserError("aws.s3_bucket is empty: set it (SPARKMAKER_AWS__S3_BUCKET) to the bucket for model artifacts")
    role = role_arn or serving.role_arn or settings.training.role_arn
    if not role:
        raise UserError("no execution role for the SageMaker model: pass --role-arn or set serving.role_arn")
    if builtin_xgboost:
        image = builtin_image_uri(region, xgboost_version)
    else:
        image = image_uri or serving.image_uri
        if not image:
            raise UserError(
                "no serving image: pass --image-uri (this project's image pushed to ECR, built from serving/Dockerfile), "
                "set serving.image_uri, or use --builtin-xgboost"
            )
    instance_type = instance_type or serving.instance_type
    instance_count = instance_count or serving.instance_count
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = resource_name(endpoint_name, version, stamp)
    flavour = "xgboost-only" if builtin_xgboost else "full"
    key = f"{serving.s3_prefix.strip('/')}/{version}-{model_version.model_sha256[:12]}/{flavour}/model.tar.gz"
    session = aws_session(settings)

    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant, Tag

    tags = [Tag(key=TAG_ENDPOINT, value=endpoint_name), Tag(key=TAG_VERSION, value=version)]
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tar = (
                xgboost_only_tar(registry.model_dir(version), Path(scratch) / "model.tar.gz")
                if builtin_xgboost
                else registry.model_tar(version)
            )
            session.client("s3").upload_file(str(tar), bucket, key)
        model_data_url = f"s3://{bucket}/{key}"
        log.info("uploaded %s", model_data_url)
        environment = (
            {}
            if builtin_xgboost
            else {"SPARKMAKER_SERVING__MODEL_VERSION": version, "SPARKMAKER_SERVING__ENDPOINT_NAME": endpoint_name}
        )
        Model.create(
            model_name=name,
            primary_container=ContainerDefinition(image=image, model_data_url=model_data_url, environment=environment),
            execution_role_arn=role,
            tags=tags,
            session=session,
            region=region,
        )
        EndpointConfig.create(
            endpoint_config_name=name,
            production_variants=[
                ProductionVariant(
                    variant_name=variant_name(version),
                    model_name=name,
                    initial_instance_count=instance_count,
                    instance_type=instance_type,
                    initial_variant_weight=1.0,
                )
            ],
            tags=tags,
            session=session,
            region=region,
        )
        endpoint = _find_endpoint(endpoint_name, session, region)
        if endpoint is None:
            endpoint = Endpoint.create(
                endpoint_name=endpoint_name, endpoint_config_name=name, tags=tags, session=session, region=region
            )
            action = "created"
        else:
            previous_config = endpoint.endpoint_config_name
            endpoint.endpoint_config_name = name
            endpoint.update()  # UpdateEndpoint: a new config, instances replaced without downtime
            action = f"updated (was {previous_config})"
        if wait:
            endpoint.wait_for_status("InService", poll=10, timeout=wait_timeout_seconds)
        endpoint.refresh()
    except (ClientError, BotoCoreError) as exc:
        raise UserError(
            f"SageMaker deploy of version {version} to {endpoint_name} failed: {_client_error_message(exc)}"
        ) from None
    return {
        "endpoint_name": endpoint_name,
        "action": action,
        "status": str(endpoint.endpoint_status),
        "model_name": name,
        "endpoint_config_name": name,
        "variant_name": variant_name(version),
        "image": image,
        "model_data_url": model_data_url,
        "instance_type": instance_type,
        "instance_count": instance_count,
    }


def delete(settings: Settings, *, endpoint_name: str | None = None) -> dict[str, Any]:
    """Delete the endpoint, then every endpoint config and model this tool created for it (by name prefix and tag)."""
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint_name = _check_endpoint_name(endpoint_name or settings.serving.endpoint_name)
    region = settings.aws.region
    session = aws_session(settings)
    client = session.client("sagemaker")
    deleted: dict[str, list[str]] = {"endpoint": [], "endpoint_configs": [], "models": []}
    prefix = f"{endpoint_name}-v"
    try:
        endpoint = _find_endpoint(endpoint_name, session, region)
        if endpoint is not None:
            endpoint.delete()
            deleted["endpoint"].append(endpoint_name)
        for config in _names(client, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", prefix):
            if _created_for(client, config, "endpoint-config", endpoint_name):
                client.delete_endpoint_config(EndpointConfigName=config)
                deleted["endpoint_configs"].append(config)
        for model in _names(client, "list_models", "Models", "ModelName", prefix):
            if _created_for(client, model, "model", endpoint_name):
                client.delete_model(ModelName=model)
                deleted["models"].append(model)
    except (ClientError, BotoCoreError) as exc:
        raise UserError(f"SageMaker delete of {endpoint_name} failed: {_client_error_message(exc)}") from None
    if not any(deleted.values()):
        raise UserError(
            f"nothing to delete: no endpoint {endpoint_name} and no models or configs created for it in {region}"
        )
    return {"endpoint_name": endpoint_name, "deleted": deleted}


def _names(client, operation: str, key: str, field: str, prefix: str) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        kwargs = {"NameContains": prefix, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = getattr(client, operation)(**kwargs)
        names += [item[field] for item in page.get(key, []) if item[field].startswith(prefix)]
        token = page.get("NextToken")
        if not token:
            return names


def _created_for(client, name: str, kind: str, endpoint_name: str) -> bool:
    """Only what carries this tool's tag for this endpoint is deleted: a lookalike name is left alone."""
    describe = client.describe_model if kind == "model" else client.describe_endpoint_config
    arn_key = "ModelArn" if kind == "model" else "EndpointConfigArn"
    argument = {"ModelName": name} if kind == "model" else {"EndpointConfigName": name}
    arn = describe(**argument)[arn_key]
    tags = client.list_tags(ResourceArn=arn).get("Tags", [])
    return any(tag["Key"] == TAG_ENDPOINT and tag["Value"] == endpoint_name for tag in tags)
