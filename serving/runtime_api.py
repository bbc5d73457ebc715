"""SageMaker Runtime's error shapes, so boto3's `invoke_endpoint` raises what it raises against AWS.

botocore reads a rest-json error's code from the `x-amzn-ErrorType` header (else `__type`
or `code` in the body) and its message from `message`/`Message`; for a modelled error it
also fills the shape's members from the body (`OriginalStatusCode`, `OriginalMessage`
for ModelError). The runtime wraps any 4xx/5xx answer of the model container in a
ModelError (424) and rejects requests it never passes on with a ValidationError (400).
"""

from __future__ import annotations

import json
import uuid

from starlette.responses import Response

from serving.errors import InferenceError


def error_response(code: str, status: int, message: str, extra: dict | None = None) -> Response:
    request_id = str(uuid.uuid4())
    body = {"__type": code, "message": message, "Message": message, **(extra or {})}
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id},
    )


def validation_error(message: str) -> Response:
    return error_response("ValidationError", 400, message)


def endpoint_not_found(name: str) -> Response:
    return validation_error(f"Endpoint {name} of account local not found.")


def oversize_body(limit: int) -> Response:
    return validation_error(
        f"Request body is over the {limit} bytes InvokeEndpoint accepts: send fewer rows per request."
    )


def model_not_ready(message: str) -> Response:
    return error_response("ModelNotReadyException", 429, message)


def model_error(error: InferenceError) -> Response:
    """What the runtime answers when the container answered `error.status_code`."""
    kind = "client" if error.status_code < 500 else "server"
    message = (
        f'Received {kind} error ({error.status_code}) from primary with message "{error.message}". '
        "See the model server's log for more information."
    )
    return error_response(
        "ModelError",
        424,
        message,
        {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if kind == "client" else "SERVER_ERROR_FROM_MODEL",
            "OriginalStatusCode": error.status_code,
            "OriginalMessage": error.message,
            "LogStreamArn": "",
        },
    )
