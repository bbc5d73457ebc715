"""Reading `name==version` pins, for the tests that check each image pins what the repository pins."""

from __future__ import annotations

import re
from pathlib import Path


def pins(path: Path) -> dict[str, str]:
    """Normalized name (PEP 503) -> version of every `name==version` line; extras and comments dropped."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#;]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return found
