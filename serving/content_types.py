"""The media types the server reads and writes, and `Accept` negotiation.

Both are data: a request's type is looked up in `decoder.DECODERS`, an answer's in
`encoder.ENCODERS`; anything absent is a 415 or a 406 before any model work is done.
"""

from __future__ import annotations

from serving.errors import NotAcceptable

CSV = "text/csv"
JSON = "application/json"

# What a request without Content-Type is read as, and what an answer without Accept (or
# with */*) is written as: SageMaker's managed XGBoost container defaults to CSV too.
DEFAULT_CONTENT_TYPE = CSV
DEFAULT_ACCEPT = CSV
ACCEPTABLE: tuple[str, ...] = (CSV, JSON)  # in order of preference when a wildcard matches several


def parse_media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """'text/csv; charset=UTF-8' -> ('text/csv', {'charset': 'utf-8'}); lower-cased, no quotes."""
    if not header:
        return "", {}
    parts = header.split(";")
    media = parts[0].strip().lower()
    params: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"').lower()
    return media, params


def negotiate(accept_header: str | None) -> str:
    """The media type to answer with, chosen from ACCEPTABLE by the client's Accept (RFC 9110 q-values).

    Raises NotAcceptable when nothing acceptable matches: this runs before predicting so
    that a 406 costs no model work.
    """
    if not accept_header or accept_header.strip() in ("*/*", ""):
        return DEFAULT_ACCEPT
    if accept_header in ACCEPTABLE:  # the common case, without parsing
        return accept_header
    ranges: list[tuple[str, float, int]] = []
    for item in accept_header.split(","):
        media, params = parse_media_type(item)
        if not media:
            continue
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        specificity = 0 if media == "*/*" else 1 if media.endswith("/*") else 2
        ranges.append((media, quality, specificity))
    best: tuple[float, str] | None = None
    for offered in ACCEPTABLE:
        # The most specific range that matches decides the quality of this type.
        matching = [(spec, q) for media, q, spec in ranges if _matches(media, offered)]
        if not matching:
            continue
        quality = max(matching)[1]
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, offered)
    if best is None:
        raise NotAcceptable(
            f"cannot answer with Accept: {accept_header.strip()[:200]}: ask for {' or '.join(ACCEPTABLE)}"
        )
    return best[1]


def _matches(media_range: str, offered: str) -> bool:
    if media_range == "*/*":
        return True
    if media_range.endswith("/*"):
        return offered.split("/", 1)[0] == media_range[:-2]
    return media_range == offered
