"""API keys: `Authorization: Bearer <key>`, checked against sha256 digests kept in the settings.

Keys are never stored or logged: the settings hold `sha256(key)` in hex
(`api.api_key_hashes`), a presented key is hashed and compared with every digest with
`hmac.compare_digest` (constant time, no early exit). A plain sha256 is enough here
because the keys are 256-bit random tokens, not passwords: nothing to brute-force.

Guessing is still slowed down: `KeyChecker.check` counts the failed attempts of each client
address in a `FailureLimiter` and answers 429 with `Retry-After` once an address has failed
`api.auth_max_failures` times within `api.auth_failure_window_seconds`, for the rest of that
window, whatever key it presents (a right key answered 200 there would tell a hit from a
miss). The table holds at most `api.auth_max_addresses` addresses and forgets the oldest
first, so a flood of addresses costs bounded memory; each worker process keeps its own.
`check` is the one key check of the API and of anything else signing in with an API key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from api.errors import ApiError
from configuration.errors import UserError

KEY_PREFIX = "smk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new API key: 256 random bits, URL-safe. The one generator of start.sh and `python -m api keygen`."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class FailureLimiter:
    """Failed authentications per client address in fixed windows, in a bounded table (oldest out first)."""

    def __init__(
        self, max_failures: int, window_seconds: float, max_addresses: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._table: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address -> (window start, failures)

    def __len__(self) -> int:
        return len(self._table)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until the address may try again, or None when it may try now."""
        entry = self._table.get(address)
        if entry is None:
            return None
        started, failures = entry
        left = started + self.window - self._clock()
        if left <= 0:
            del self._table[address]
            return None
        return math.ceil(left) if failures >= self.max_failures else None

    def failed(self, address: str) -> None:
        now = self._clock()
        started, failures = self._table.pop(address, (now, 0))
        if now - started >= self.window:
            started, failures = now, 0
        self._table[address] = (started, failures + 1)
        while len(self._table) > self.max_addresses:
            self._table.popitem(last=False)


def _ignore() -> None:
    pass


class KeyChecker:
    def __init__(
        self,
        digests: Sequence[str],
        enabled: bool = True,
        limiter: FailureLimiter | None = None,
        on_failure: Callable[[], None] = _ignore,
        on_throttled: Callable[[], None] = _ignore,
    ) -> None:
        self.enabled = enabled
        self._digests = [bytes.fromhex(d) for d in digests]
        self.limiter = limiter if limiter is not None else FailureLimiter(10, 60.0, 10_000)
        self._on_failure = on_failure
        self._on_throttled = on_throttled

    def check(self, address: str, presented: str | None) -> None:
        """Let a request through, or raise ApiError 401 (missing or wrong key) or 429 (too many failures)."""
        if not self.enabled:
            return
        if presented is None:  # no key is no guess: 401 even from a throttled address
            raise ApiError(401, "missing API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
        wait = self.limiter.retry_after(address)
        if wait is not None:
            self._on_throttled()
            raise ApiError(
                429, f"too many failed authentications from this address: retry in {wait} s", {"Retry-After": str(wait)}
            )
        if not self.verify(presented):
            self.limiter.failed(address)
            self._on_failure()
            # Nothing of the key is logged or echoed: only that one was refused.
            raise ApiError(
                401,
                "wrong API key: send a key whose sha256 is in api.api_key_hashes",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    def verify(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def append_hash(config_path: Path, digest: str) -> None:
    """Add a digest to `api.api_key_hashes` in a TOML file, keeping the rest of the file as written."""
    text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    try:
        current = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{config_path} is not valid TOML ({exc}): fix it before adding a key") from None
    api = current.get("api", {})
    hashes = list(api.get("api_key_hashes", []))
    if digest in hashes:
        return
    hashes.append(digest)
    line = "api_key_hashes = [" + ", ".join(f'"{h}"' for h in hashes) + "]"
    header = re.search(r"(?m)^\[api\][ \t]*(#.*)?$", text)
    if "api" not in current:
        new_text = text + ("" if not text or text.endswith("\n") else "\n") + f"\n[api]\n{line}\n"
    elif header is None:
        raise UserError(
            f"{config_path} sets api values without an [api] table: add the hash to api.api_key_hashes by hand: {digest}"
        )
    else:
        section_end = re.search(r"(?m)^\[", text[header.end() :])
        end = header.end() + section_end.start() if section_end else len(text)
        section = text[header.end() : end]
        existing = re.search(r"(?ms)^api_key_hashes\s*=\s*\[.*?\]", section)
        if existing:
            section = section[: existing.start()] + line + section[existing.end() :]
        else:
            section = "\n" + line + section
        new_text = text[: header.end()] + section + text[end:]
    try:
        written = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        written = {}
    if written.get("api", {}).get("api_key_hashes") != hashes:
        raise UserError(
            f"cannot add the key to {config_path} automatically: add this hash to api.api_key_hashes by hand: {digest}"
        )
    config_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    tmp.replace(config_path)
