"""The model endpoint behind one small interface: the project's model server over HTTP, or SageMaker.

    endpoint = open_model_endpoint(settings)      # settings.api.model_endpoint: "http" | "sagemaker"
    answer = await endpoint.predict(rows)          # rows in the contract's feature order, None = missing
    answer.probabilities, answer.model_version, answer.threshold
    answer = await endpoint.predict(rows, explain=True)   # also answer.explanations: exact TreeSHAP per row

Both speak SageMaker's container contract: a `text/csv` body, one row per line in the
model's feature order (`features.contract.FEATURE_COLUMNS`; `training.artifact` refuses a
model recorded with any other order), an empty field for a missing value, and one
probability per line back (`Accept: text/csv`). The model version and the decision
threshold come from the answer itself, in SageMaker's custom-attributes header that the
project's server sets on every prediction (`model_version=7; threshold=0.25`), so the
label is always computed with the threshold of the very model that scored the row, even
while the server swaps models. An endpoint that does not send them (AWS's managed
XGBoost container) falls back to the registry's production model (`RegistryThresholds`).

With `explain=True` the call carries SageMaker's `X-Amzn-SageMaker-Enable-Explanations`
switch and reads Clarify's answer (serving.explain): the same probabilities plus, per row, a
base value and one log-odds contribution per feature (`Explanation`).

Failures are typed so the API can answer them: `ModelUnavailable` (503 + Retry-After:
refused connection, endpoint not ready or not found), `ModelTimeout` (504: no answer
within settings.api.timeout_seconds), `ModelFailed` (502: the endpoint answered an error).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api.http_client import Answer, ConnectTimeout, HttpClientError, HttpPool
from configuration.settings import Settings
from features.contract import FEATURE_COLUMNS

log = logging.getLogger("api.model")

CSV = "text/csv"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
EXPLANATIONS_HEADER = "X-Amzn-SageMaker-Enable-Explanations"
EXPLAIN_ALL = "`true`"  # the JMESPath constant SageMaker documents for "explain every record"
VERSION_HEADER = "X-Model-Version"


class ModelEndpointError(Exception):
    """A model call that did not produce probabilities; `reason` is for the log, not for clients."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModelUnavailable(ModelEndpointError):
    pass


class ModelTimeout(ModelEndpointError):
    pass


class ModelFailed(ModelEndpointError):
    pass


@dataclass(frozen=True, slots=True)
class Explanation:
    base_value: float  # log-odds
    contributions: dict[str, float]  # feature -> log-odds; base_value + sum = logit(probability)


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    probabilities: list[float]
    model_version: str
    threshold: float | None
    explanations: list[Explanation] | None = None  # one per row when asked (explain=True)


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def to_csv(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows -> SageMaker CSV: no header, one line per row, empty field = missing."""
    return "".join(",".join(_field(v) for v in row) + "\n" for row in rows).encode("ascii")


def parse_scores(body: bytes, expected: int) -> list[float]:
    """One probability per line (text/csv answer); ModelFailed when the count or a value is wrong."""
    try:
        scores = [float(line) for line in body.decode("ascii").split()]
    except (UnicodeDecodeError, ValueError):
        raise ModelFailed(f"the model answer is not one number per line: {body[:80]!r}") from None
    if len(scores) != expected:
        raise ModelFailed(f"the model answered {len(scores)} scores for {expected} rows")
    if not all(0.0 <= s <= 1.0 for s in scores):
        raise ModelFailed("the model answered a score outside [0, 1]: is it a binary:logistic model?")
    return scores


def parse_explained(body: bytes, expected: int) -> tuple[list[float], list[Explanation]]:
    """Clarify's JSON answer (serving.explain) -> the scores and one Explanation per row; ModelFailed when malformed."""
    import json

    try:
        document = json.loads(body)
        predictions = document["predictions"]
        scores = parse_scores(predictions["data"].encode("ascii"), expected)
        rows = document["explanations"]["kernel_shap"]
        bases = document["base_values"]
        explanations = [
            Explanation(
                float(base),
                {entry["feature_header"]: float(entry["attributions"][0]["attribution"][0]) for entry in row},
            )
            for base, row in zip(bases, rows, strict=True)
        ]
    except ModelFailed:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeEncodeError):
        raise ModelFailed(
            f"the model's explained answer is not Clarify's shape with base values: {body[:80]!r}"
        ) from None
    if len(explanations) != expected or any(set(e.contributions) != set(FEATURE_COLUMNS) for e in explanations):
        raise ModelFailed(
            f"the model explained {len(explanations)} rows of {expected}, or other features than the contract's"
        )
    return scores, explanations


def parse_custom_attributes(text: str | None) -> dict[str, str]:
    """'model_version=7; threshold=0.25' -> {'model_version': '7', 'threshold': '0.25'}."""
    attributes: dict[str, str] = {}
    for part in (text or "").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            attributes[key.strip()] = value.strip()
    return attributes


def _threshold(attributes: dict[str, str]) -> float | None:
    try:
        value = float(attributes["threshold"])
    except (KeyError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None


class ModelEndpoint(abc.ABC):
    kind = "abstract"

    @abc.abstractmethod
    async def predict(self, rows: Sequence[Sequence[Any]], explain: bool = False) -> ModelAnswer:
        """Score rows (feature order of the contract); one probability per row, in order (and explanations if asked)."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ModelUnavailable unless the endpoint can answer now."""

    async def aclose(self) -> None:
        pass

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the model is, for logs and /ready (no secrets)."""


class HttpModelEndpoint(ModelEndpoint):
    """The project's model server (`python -m serving`): POST /invocations over pooled keep-alive connections.

    The client is api.http_client's small HTTP/1.1 pool, made lazily in the serving event
    loop: measured side by side on the same two hops it costs a fraction of the CPU per call of
    aiohttp's client, and aiohttp a third of httpx's (benchmarks/README.md, API section). The
    request heads are built once here; a call writes one buffer and reads one answer.
    A connection the server closed while idle in the pool is retried once on a new one
    (scoring has no side effect), so a model-server restart is not a failed request.
    """

    kind = "http"

    def __init__(self, base_url: str, timeout_seconds: float, pool_size: int = 64) -> None:
        from urllib.parse import urlsplit

        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.pool_size = pool_size
        try:
            parts = urlsplit(self.base_url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"api.model_url {base_url!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"api.model_url {base_url!r} is not an http(s) URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"api.model_url {base_url!r}: give scheme, host, port and path only")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if port is None else f"{host}:{port}"
        prefix = parts.path.rstrip("/")
        common = f"Host: {authority}\r\n"
        predict = f"POST {prefix}/invocations HTTP/1.1\r\n{common}Content-Type: {CSV}\r\nAccept: {CSV}\r\n"
        self._predict_head = predict.encode("latin-1")
        self._explain_head = f"{predict}{EXPLANATIONS_HEADER}: {EXPLAIN_ALL}\r\n".encode("latin-1")
        self._ping_request = f"GET {prefix}/ping HTTP/1.1\r\n{common}\r\n".encode("latin-1")
        self._pool: HttpPool | None = None

    def describe(self) -> str:
        return f"model server {self.base_url}"

    def _client(self) -> HttpPool:
        if self._pool is None:
            self._pool = HttpPool(
                self._host, self._port, self.pool_size, connect_timeout=min(self.timeout_seconds, 1.0), tls=self._tls
            )
        return self._pool

    async def _send(self, request: bytes) -> Answer:
        """One exchange within api.timeout_seconds, its failures typed as the API answers them."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._client().request(request)
        except ConnectTimeout:
            raise ModelUnavailable(f"{self.describe()}: connection timed out") from None
        except TimeoutError:
            raise ModelTimeout(f"{self.describe()} did not answer within {self.timeout_seconds:g} s") from None
        except (HttpClientError, OSError) as exc:
            raise ModelUnavailable(f"{self.describe()} is unreachable: {type(exc).__name__}: {exc}") from None

    async def predict(self, rows: Sequence[Sequence[Any]], explain: bool = False) -> ModelAnswer:
        body = to_csv(rows)
        head = self._explain_head if explain else self._predict_head
        response = await self._send(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        if response.status in (429, 503):
            raise ModelUnavailable(f"{self.describe()} is not ready ({response.status}): {response.text.strip()[:200]}")
        if response.status != 200:
            raise ModelFailed(f"{self.describe()} answered {response.status}: {response.text.strip()[:200]}")
        headers = response.headers
        attributes = parse_custom_attributes(headers.get(_CUSTOM_ATTRIBUTES))
        version = headers.get(_VERSION) or attributes.get("model_version") or "unknown"
        if explain:
            scores, explanations = parse_explained(response.body, len(rows))
            return ModelAnswer(scores, version, _threshold(attributes), explanations)
        return ModelAnswer(parse_scores(response.body, len(rows)), version, _threshold(attributes))

    async def ping(self) -> None:
        try:
            response = await self._send(self._ping_request)
        except ModelTimeout as exc:
            raise ModelUnavailable(exc.reason) from None
        if response.status != 200:
            raise ModelUnavailable(f"{self.describe()} /ping answered {response.status}")

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


_CUSTOM_ATTRIBUTES, _VERSION = CUSTOM_ATTRIBUTES_HEADER.lower(), VERSION_HEADER.lower()  # the client's header names


# SageMaker Runtime's error codes, by what the API answers.
_SAGEMAKER_UNAVAILABLE = frozenset(
    {
        "ModelNotReadyException",
        "ServiceUnavailable",
        "ThrottlingException",
        "ValidationError",
        "InternalDependencyException",
    }
)


class SageMakerModelEndpoint(ModelEndpoint):
    """A SageMaker endpoint through boto3's `sagemaker-runtime` `invoke_endpoint` (endpoint_url: settings.aws.endpoint_url).

    boto3 is blocking: calls run on worker threads (at most `pool_size` at once, as many
    as botocore's connection pool holds). Retries are off: the API has its own deadline.
    """

    kind = "sagemaker"

    def __init__(
        self, endpoint_name: str, region: str, endpoint_url: str | None, timeout_seconds: float, pool_size: int = 64
    ) -> None:
        import anyio
        import boto3
        import botocore.config
        import botocore.exceptions

        self._errors = botocore.exceptions
        self.endpoint_name = endpoint_name
        self.endpoint_url = endpoint_url
        self.timeout_seconds = timeout_seconds
        self._limiter = anyio.CapacityLimiter(pool_size)
        self._client = boto3.session.Session().client(
            "sagemaker-runtime",
            region_name=region,
            endpoint_url=endpoint_url,
            config=botocore.config.Config(
                connect_timeout=min(timeout_seconds, 1.0),
                read_timeout=timeout_seconds,
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=pool_size,
            ),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"SageMaker endpoint {self.endpoint_name}{where}"

    def _invoke(self, body: bytes, explain: bool = False) -> dict:
        errors = self._errors
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType=CSV,
                Accept=CSV,
                Body=body,
                **({"EnableExplanations": EXPLAIN_ALL} if explain else {}),
            )
            return {**response, "Body": response["Body"].read()}
        except errors.ConnectTimeoutError:
            raise ModelUnavailable(f"{self.describe()}: connection timed out") from None
        except errors.ReadTimeoutError:
            raise ModelTimeout(f"{self.describe()} did not answer within {self.timeout_seconds:g} s") from None
        except (errors.EndpointConnectionError, errors.ConnectionClosedError) as exc:
            raise ModelUnavailable(f"{self.describe()} is unreachable: {exc}") from None
        except errors.NoCredentialsError:
            raise ModelUnavailable(
                f"{self.describe()}: no AWS credentials found (configure them as for the AWS CLI)"
            ) from None
        except errors.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _SAGEMAKER_UNAVAILABLE:
                raise ModelUnavailable(f"{self.describe()}: {code}: {message}") from None
            raise ModelFailed(f"{self.describe()}: {code}: {message}") from None
        except errors.BotoCoreError as exc:
            raise ModelUnavailable(f"{self.describe()}: {type(exc).__name__}: {exc}") from None

    async def _call(self, body: bytes, explain: bool = False) -> dict:
        import anyio.to_thread

        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await anyio.to_thread.run_sync(
                    self._invoke, body, explain, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise ModelTimeout(f"{self.describe()} did not answer within {self.timeout_seconds:g} s") from None

    async def predict(self, rows: Sequence[Sequence[Any]], explain: bool = False) -> ModelAnswer:
        response = await self._call(to_csv(rows), explain)
        attributes = parse_custom_attributes(response.get("CustomAttributes"))
        version = attributes.get("model_version") or response.get("InvokedProductionVariant") or "unknown"
        if explain:
            scores, explanations = parse_explained(response["Body"], len(rows))
            return ModelAnswer(scores, version, _threshold(attributes), explanations)
        return ModelAnswer(parse_scores(response["Body"], len(rows)), version, _threshold(attributes))

    async def ping(self) -> None:
        # The runtime has no ping: score one all-missing row, which every model answers.
        try:
            await self._call(to_csv([[None] * len(FEATURE_COLUMNS)]))
        except ModelTimeout as exc:
            raise ModelUnavailable(exc.reason) from None
        except ModelFailed as exc:
            raise ModelUnavailable(exc.reason) from None

    async def aclose(self) -> None:
        self._client.close()


class RegistryThresholds:
    """The decision threshold (and version) of the registry's production model, for endpoints that report neither.

    Read from the files the registry keeps beside its models, as the model server does: the
    production alias's one-line mirror (`<registry>/aliases/production`) and that version's local
    model directory (`model-metadata.json`, sha256-checked by `registry.model_dir`). So the API
    needs no MLflow client and no store query: the API image has no mlflow, which would add 59
    packages (~0.8 GB installed) to a 0.35 GB image. Only a version whose model directory is not
    on this machine asks the store, and that needs mlflow.
    Cached by the alias file's modification, so a promotion is seen without a restart.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: tuple[Any, str, float] | None = None

    def lookup(self) -> tuple[str, float] | None:
        try:
            from training import artifact
            from training.registry import PRODUCTION, open_registry
        except ImportError:
            return None
        try:
            registry = open_registry(self.settings)
            alias_path = registry.alias_path(PRODUCTION)  # type: ignore[attr-defined]  # both registries keep the mirror
            stamp = alias_path.stat().st_mtime_ns if alias_path.exists() else None
            if stamp is None:
                return None  # nothing promoted yet
            if self._cache and self._cache[0] == stamp:
                return self._cache[1], self._cache[2]
            version = alias_path.read_text(encoding="utf-8").strip()
            if not version:
                return None
            threshold = float(artifact.read_metadata(registry.model_dir(version))["threshold"])
        except Exception as exc:  # a registry problem must not become a 500: the caller answers 502
            log.warning("cannot read the production model's threshold from the registry: %s", exc)
            return None
        self._cache = (stamp, version, threshold)
        return version, threshold


def open_model_endpoint(settings: Settings, on_shared_call: Callable[[int], None] | None = None) -> ModelEndpoint:
    """The configured endpoint; with api.model_batch_rows > 1, the predictions of one event-loop turn share a call
    (`on_shared_call(callers)` after each such call)."""
    api = settings.api
    endpoint: ModelEndpoint
    if api.model_endpoint == "sagemaker":
        endpoint = SageMakerModelEndpoint(
            settings.serving.endpoint_name,
            settings.aws.region,
            settings.aws.endpoint_url,
            api.timeout_seconds,
            api.http_pool_size,
        )
    else:
        endpoint = HttpModelEndpoint(api.model_url, api.timeout_seconds, api.http_pool_size)
    if api.model_batch_rows <= 1:
        return endpoint
    from api.model_batching import BatchingEndpoint  # imports this module

    return BatchingEndpoint(endpoint, api.model_batch_rows, on_shared_call)
