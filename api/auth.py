"""API keys: `Authorization: Bearer <key>`, checked against sha256 digests kept in the settings.

Keys are never stored or logged: the settings hold `sha256(key)` in hex
(`api.api_key_hashes`), a presented key is hashed and compared with every digest with
`hmac.compare_digest` (constant time, no early exit). A plain sha256 is enough here
because the keys are 256-bit random tokens, not passwords: nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Sequence
from pathlib import Path

from configuration.errors import UserError

KEY_PREFIX = "smk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyChecker:
    def __init__(self, digests: Sequence[str], enabled: bool = True) -> None:
        self.enabled = enabled
        self._digests = [bytes.fromhex(d) for d in digests]

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
        raise UserError(f"{config_path} sets api values without an [api] table: add the hash to api.api_key_hashes by hand: {digest}")
    else:
        section_end = re.search(r"(?m)^\[", text[header.end():])
        end = header.end() + section_end.start() if section_end else len(text)
        section = text[header.end():end]
        existing = re.search(r"(?ms)^api_key_hashes\s*=\s*\[.*?\]", section)
        if existing:
            section = section[: existing.start()] + line + section[existing.end():]
        else:
            section = "\n" + line + section
        new_text = text[: header.end()] + section + text[end:]
    try:
        written = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        written = {}
    if written.get("api", {}).get("api_key_hashes") != hashes:
        raise UserError(f"cannot add the key to {config_path} automatically: add this hash to api.api_key_hashes by hand: {digest}")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    tmp.replace(config_path)
