"""Console sessions: a signed, expiring token in an HttpOnly cookie, exchanged for an API key once.

    token = sessions.issue(key_digest)        after the key passed the API's own check
    sessions.valid(token, key_digests)        True while unexpired, correctly signed, and its key still accepted

The token is `<expires>.<key id>.<nonce>.<signature>`: no part of it is the key. The key id
is an HMAC of the key's sha256 digest under the session secret, so removing a key from
`api.api_key_hashes` ends its sessions too, and the cookie says nothing about the key to
whoever reads it. The signature is HMAC-SHA256 under the same secret: `console.session_secret`,
or a random one kept in `<state_dir>/console-session.key` (0600), which every worker of the
API reads, so that a session works whichever worker answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from collections.abc import Callable

from configuration.errors import UserError
from configuration.files import private_dir
from configuration.settings import Settings

COOKIE = "sparkmaker_console"
SECRET_FILE = "console-session.key"


def _secret_from_file(path: Path) -> bytes:
    """The shared secret, created once (atomically, 0600) by whichever process comes first."""
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 64:
            return bytes.fromhex(text)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the console's session key {path}: {exc}: delete it and restart the API") from None
    private_dir(path.parent)  # the state folder holds the prediction log too: 0700, as configuration.files makes it
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # fails if another worker was first: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def session_secret(settings: Settings) -> bytes:
    configured = settings.console.session_secret.get_secret_value()
    if configured:
        return hashlib.sha256(configured.encode("utf-8")).digest()
    return _secret_from_file(Path(settings.paths.state_dir) / SECRET_FILE)


class Sessions:
    """Issues and checks tokens; the secret is read on first use (nothing is touched when the app is built)."""

    def __init__(self, secret: bytes | Callable[[], bytes], lifetime_seconds: float) -> None:
        self._secret_source = secret
        self._secret_value: bytes | None = secret if isinstance(secret, bytes) else None
        self.lifetime_seconds = lifetime_seconds

    @property
    def _secret(self) -> bytes:
        if self._secret_value is None:
            self._secret_value = self._secret_source()  # type: ignore[operator]
        return self._secret_value

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def key_id(self, key_digest: str) -> str:
        return hmac.new(self._secret, b"key:" + key_digest.encode("ascii"), hashlib.sha256).hexdigest()[:24]

    def issue(self, key_digest: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.lifetime_seconds)
        payload = f"{expires}.{self.key_id(key_digest)}.{secrets.token_hex(8)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, token: str | None, key_digests: Iterable[str], now: float | None = None) -> bool:
        if not token or len(token) > 200 or not token.isascii():
            return False
        payload, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._sign(payload).encode("ascii")):
            return False
        expires, key_id, _ = (payload.split(".") + ["", "", ""])[:3]
        try:
            if int(expires) <= (now if now is not None else time.time()):
                return False
        except ValueError:
            return False
        return any(hmac.compare_digest(key_id, self.key_id(d)) for d in key_digests)
