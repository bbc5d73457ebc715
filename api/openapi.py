"""The API's public interface frozen in the repository: api/openapi.json.

    python -m api openapi            print the document the code makes now
    python -m api openapi --check    exit 1, naming what differs, when api/openapi.json is not that document
    python -m api openapi --write    rewrite api/openapi.json (an intended change of the interface)

The document is made from the tracked configuration only (configuration/sparkmaker.toml, no
local.toml and no SPARKMAKER_* variables), so that it is the same on every machine;
tests/api/test_openapi_frozen.py compares it with the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FROZEN = Path(__file__).resolve().parent / "openapi.json"


def current_document() -> dict[str, Any]:
    from api.main import create_app
    from configuration.settings import DEFAULT_CONFIG_FILES, load_settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("SPARKMAKER_")}
    for name in saved:
        del os.environ[name]
    os.environ["SPARKMAKER_CONFIG"] = str(DEFAULT_CONFIG_FILES[0])
    try:
        settings = load_settings(api={"auth_enabled": False})  # no key is needed to describe the routes
    finally:
        os.environ.pop("SPARKMAKER_CONFIG", None)
        os.environ.update(saved)
    return create_app(settings).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def differences(frozen: dict[str, Any], current: dict[str, Any], where: str = "") -> list[str]:
    """Paths (a/b/c) where the two documents differ, in order: what a reviewer reads first."""
    if isinstance(frozen, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(frozen) | set(current)):
            here = f"{where}/{key}"
            if key not in current:
                found.append(f"{here} removed")
            elif key not in frozen:
                found.append(f"{here} added")
            else:
                found.extend(differences(frozen[key], current[key], here))
        return found
    return [] if frozen == current else [f"{where or '/'} changed"]


def main(write: bool, check: bool) -> int:
    text = render(current_document())
    if write:
        FROZEN.write_text(text, encoding="utf-8")
        print(f"wrote {FROZEN}")
        return 0
    if check:
        frozen = json.loads(FROZEN.read_text(encoding="utf-8")) if FROZEN.is_file() else {}
        found = differences(frozen, json.loads(text))
        for line in found[:20]:
            print(line)
        if found:
            print(
                f"{len(found)} difference(s) from {FROZEN}: if intended, run python -m api openapi --write and commit it"
            )
            return 1
        print(f"{FROZEN} is current")
        return 0
    print(text, end="")
    return 0
