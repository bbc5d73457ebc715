"""AWS access for the runners: a boto3 session that honours `aws.endpoint_url`, and S3 copies.

`aws.endpoint_url` (settings) points every client at one endpoint, e.g. a local moto
server; unset, boto3 talks to AWS as usual. The sagemaker SDK v3 builds its clients from
the session it is given (`session.client("sagemaker", region)`), so handing it this
session is how the same launcher reaches an emulator.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from configuration.errors import UserError


class AwsError(UserError):
    """An AWS call failed in a way the user can act on."""


class EndpointSession(boto3.Session):
    """A boto3 session whose clients all use one endpoint URL (when one is set)."""

    def __init__(self, endpoint_url: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.endpoint_url = endpoint_url

    def client(self, service_name, region_name=None, *args, endpoint_url=None, **kwargs):  # noqa: D102
        return super().client(
            service_name, region_name, *args, endpoint_url=endpoint_url or self.endpoint_url, **kwargs
        )


def session(settings) -> EndpointSession:
    return EndpointSession(endpoint_url=settings.aws.endpoint_url, region_name=settings.aws.region)


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise AwsError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/")


def explain(exc: Exception, doing: str) -> AwsError:
    """One line for an AWS failure."""
    if isinstance(exc, NoCredentialsError):
        return AwsError(
            f"cannot {doing}: no AWS credentials found (configure a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return AwsError(
            f"cannot {doing}: {error.get('Code', 'error')}: {error.get('Message', '').strip() or 'no message'}"
        )
    if isinstance(exc, BotoCoreError):
        return AwsError(f"cannot {doing}: {exc}")
    return AwsError(f"cannot {doing}: {type(exc).__name__}: {exc}")


def download_prefix(s3, uri: str, dest: Path) -> int:
    """Copy every object under an S3 prefix into `dest`, as SageMaker's File mode does: the key
    minus the prefix becomes the path below `dest`. Returns the number of files."""
    bucket, prefix = split_s3(uri)
    count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker object
                relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                target = dest / relative
                if ".." in Path(relative).parts:
                    raise AwsError(f"the key {key!r} under {uri} would leave the channel folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
                count += 1
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"download {uri}") from None
    if count == 0:
        raise AwsError(f"there are no objects under {uri}: check the URI")
    return count


def download_object(s3, uri: str, dest: Path) -> Path:
    bucket, key = split_s3(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(bucket, key, str(dest))
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"download {uri}") from None
    return dest
