"""Request bodies to rows of float32 values, in the model's recorded feature order.

Rows are lists of Python floats, each already rounded to float32 (what XGBoost reads), so
that a small request needs no numpy at all (serving.tree_eval) and a large one becomes a
float32 matrix in one step (serving.model). Decoders are data (`DECODERS`, by media type)
as in SageMaker's inference toolkit. Missing values become NaN, which XGBoost treats as
missing. Every problem is a BadRequest naming the row and the feature, so a client can fix
its payload from the message alone.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections.abc import Callable, Sequence

from serving.content_types import CSV, DEFAULT_CONTENT_TYPE, JSON, parse_media_type
from serving.errors import BadRequest, UnsupportedMediaType

NAN = math.nan
_INF = math.inf
_NEG_INF = -math.inf
_TEXT_CHARSETS = frozenset(("utf-8", "utf8", "us-ascii", "ascii"))
_MAX_SHOWN = 40  # characters of an offending value quoted back in a message
_FLOAT32_MAX = 3.4028234663852886e38  # XGBoost reads float32: anything beyond is infinity to it

Rows = list[list[float]]


def _float32_row(values: list[float]) -> list[float]:
    # Every value was checked to fit float32 (or is NaN) as it was read.
    return array("f", values).tolist()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _not_plain(text: str) -> bool:
    """float() also reads "1_000", full-width and other Unicode digits and spaces: a number here is plain ASCII."""
    return "_" in text or not text.isascii()


def _number(text: str, row: int, column: int, features: Sequence[str]) -> float:
    """A CSV field as a number; an empty (or blank) field is a missing value."""
    try:
        value: float | None = float(text)  # float() itself ignores surrounding spaces
    except ValueError:
        value = None
    if value is None or _not_plain(text):
        shown = text.strip(" \t\r")
        if not shown:
            return NAN
        hint = ""
        if row == 1 and shown.strip('"').lower() in features:
            hint = " (this looks like a header: send rows without one)"
        what = (
            "is not a number"
            if value is None
            else "is not a plain number (ASCII digits, sign, point and exponent only)"
        )
        raise BadRequest(f"row {row}, field {column + 1} ({features[column]}): {_shown(shown)} {what}{hint}")
    if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX and value == value:  # NaN is a missing value, not out of range
        what = "is not a finite number" if math.isinf(value) else "is out of range (beyond ±3.4e38)"
        raise BadRequest(f"row {row}, field {column + 1} ({features[column]}): {_shown(text.strip())} {what}")
    return value


def decode_csv(body: bytes, features: Sequence[str]) -> Rows:
    """One row per line, no header, fields in the model's order; an empty field is a missing value."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text (byte {exc.start}): send plain UTF-8 CSV") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BadRequest(f"the body holds no rows: send one line of {len(features)} comma-separated features per row")
    width = len(features)
    rows: list[list[float]] = []
    plain = not _not_plain(text)  # one scan of the body; otherwise every row is read field by field
    for number, line in enumerate(lines, start=1):
        # Quotes are legal CSV but rare for numbers: only pay for the csv module when present.
        fields = next(csv.reader([line])) if '"' in line else line.split(",")
        if len(fields) != width:
            what = "is empty" if not line.strip() else f"has {len(fields)} fields"
            raise BadRequest(
                f"row {number} {what}, the model takes {width}: {','.join(features)} "
                "(no header; an empty field is a missing value)"
            )
        try:
            # The common case in C: plain numbers, each within float32 (beyond, array() stores ±inf).
            row = array("f", map(float, fields)).tolist() if plain else None
        except ValueError:  # an empty field (a missing value) or not a number: read field by field
            row = None
        if row is None or _INF in row or _NEG_INF in row:
            row = _float32_row([_number(field, number, column, features) for column, field in enumerate(fields)])
        rows.append(row)
    return rows


def decode_json(body: bytes, features: Sequence[str]) -> Rows:
    """{"instances": [{name: value, ...}, ...]} or a list of rows ([[v1, ..., v5], ...]); null is a missing value."""
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("the JSON body is not UTF-8 text: send UTF-8 JSON") from None
    except ValueError as exc:
        reason = getattr(exc, "msg", str(exc))
        raise BadRequest(f'the body is not valid JSON ({reason}): send {{"instances": [{{...}}]}}') from None
    except RecursionError:
        raise BadRequest(
            'the JSON body is nested too deeply: send {"instances": [{...}]}, rows one level down'
        ) from None
    if isinstance(document, dict):
        extra = sorted(set(document) - {"instances"})
        if "instances" not in document or extra:
            raise BadRequest(
                'the JSON object must hold only "instances" '
                f"({'unexpected key ' + _shown(extra[0]) if extra else 'it is missing'}): "
                'send {"instances": [{"' + features[0] + '": ..., ...}]}'
            )
        instances = document["instances"]
    elif isinstance(document, list):
        instances = document
    else:
        raise BadRequest('the JSON body must be {"instances": [...]} or a list of rows')
    if not isinstance(instances, list) or not instances:
        raise BadRequest("instances must be a non-empty list of rows (objects by feature name, or lists of values)")
    width = len(features)
    position = {name: index for index, name in enumerate(features)}
    rows: list[list[float]] = []
    for number, instance in enumerate(instances):
        if isinstance(instance, dict):
            for name in instance:
                if name not in position:
                    raise BadRequest(
                        f"instance {number}: unknown feature {_shown(name)}: the model takes {', '.join(features)}"
                    )
            if len(instance) != width:
                absent = [name for name in features if name not in instance]
                raise BadRequest(
                    f"instance {number} lacks {', '.join(absent)}: give every feature (null for a missing value)"
                )
            values = [instance[name] for name in features]
        elif isinstance(instance, list):
            if len(instance) != width:
                raise BadRequest(
                    f"instance {number} has {len(instance)} values, the model takes {width}: {', '.join(features)}"
                )
            values = instance
        else:
            raise BadRequest(
                f"instance {number} is {_shown(instance)}, not an object by feature name or a list of {width} values"
                " (a single row is [[...]])"
            )
        row = []
        for column, value in enumerate(values):
            if value is None:
                row.append(NAN)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(
                    f"instance {number}, feature {features[column]}: {_shown(value)} is not a number "
                    "(null for a missing value)"
                )
            else:
                try:
                    number_value = float(value)
                except OverflowError:
                    number_value = math.inf
                if not -_FLOAT32_MAX <= number_value <= _FLOAT32_MAX and number_value == number_value:
                    what = "is not a finite number" if math.isinf(number_value) else "is out of range (beyond ±3.4e38)"
                    raise BadRequest(f"instance {number}, feature {features[column]}: {_shown(value)} {what}")
                row.append(number_value)
        rows.append(_float32_row(row))
    return rows


Decoder = Callable[[bytes, Sequence[str]], Rows]
DECODERS: dict[str, Decoder] = {CSV: decode_csv, JSON: decode_json}


def request_media_type(content_type_header: str | None) -> str:
    """The decodable media type of a request, or UnsupportedMediaType (415) before the body is read."""
    media, params = parse_media_type(content_type_header)
    media = media or DEFAULT_CONTENT_TYPE
    if media not in DECODERS:
        raise UnsupportedMediaType(
            f"cannot read Content-Type {_shown(content_type_header)[1:-1]}: send {' or '.join(DECODERS)}"
        )
    charset = params.get("charset")
    if charset is not None and charset not in _TEXT_CHARSETS:
        raise UnsupportedMediaType(f"cannot read charset {_shown(charset)[1:-1]}: send UTF-8")
    return media


def decode(body: bytes, media_type: str, features: Sequence[str]) -> Rows:
    if not body:
        raise BadRequest(f"the body is empty: send one row of {len(features)} features ({','.join(features)})")
    return DECODERS[media_type](body, features)
