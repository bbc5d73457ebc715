"""An ASGI app answering its worker's pid, for the supervisor's tests (tests/configuration/test_workers.py)."""

import os


async def app(scope, receive, send):
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
