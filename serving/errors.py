"""Errors of an inference request, each carrying the HTTP status it answers with.

The message is one line that names the problem and, where it helps, what to send
instead; it never holds a traceback or internal detail.
"""

from __future__ import annotations


class InferenceError(Exception):
    status_code = 500
    phrase = "Internal Server Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(InferenceError):
    status_code = 400
    phrase = "Bad Request"


class PayloadTooLarge(InferenceError):
    status_code = 413
    phrase = "Payload Too Large"


class NotAcceptable(InferenceError):
    status_code = 406
    phrase = "Not Acceptable"


class UnsupportedMediaType(InferenceError):
    status_code = 415
    phrase = "Unsupported Media Type"


class ModelNotReady(InferenceError):
    status_code = 503
    phrase = "Service Unavailable"
