"""A cap on request bodies, checked before they are read whole (issue 13, item 3).

A pure-ASGI middleware: a Content-Length over the cap is answered 413 at once, without
reading a byte of the body; a body without one (chunked) is counted as it streams in, and
the read that passes the cap raises a 413 HTTPException, which the app's own handler turns
into the usual `{"detail", "request_id"}` body. Install it inside RequestMiddleware, so
that the answer carries the request id.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from api.observability import current_request_id


def too_large_detail(max_bytes: int) -> str:
    return f"the request body is over {max_bytes} bytes (api.max_body_bytes): send a smaller body"


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # uvicorn refuses a Content-Length that is not a number; another server may not.
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large_detail(self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": too_large_detail(self.max_bytes), "request_id": current_request_id()}).encode()
        # Connection: close: the unread body must not be taken for the next request.
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
