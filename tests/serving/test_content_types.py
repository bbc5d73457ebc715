"""Accept negotiation and media-type parsing (pure functions)."""

from __future__ import annotations

import pytest

from serving.content_types import ACCEPTABLE, CSV, JSON, negotiate, parse_media_type
from serving.decoder import DECODERS, request_media_type
from serving.encoder import ENCODERS
from serving.errors import NotAcceptable, UnsupportedMediaType


def test_the_media_types_are_those_of_the_managed_xgboost_container():
    # ../shared/NOTES.md: it reads text/csv (and libsvm, not served here) and answers text/csv or application/json
    # (jsonlines is not produced here); written out, not taken from the code's constants.
    assert set(ACCEPTABLE) == set(ENCODERS) == {"text/csv", "application/json"}
    assert set(DECODERS) == {"text/csv", "application/json"}
    assert (CSV, JSON) == ("text/csv", "application/json")


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, "text/csv"),
        ("", "text/csv"),
        ("*/*", "text/csv"),
        ("text/csv", "text/csv"),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ("text/*", "text/csv"),
        ("application/*", "application/json"),
        ("text/html, application/json;q=0.5", "application/json"),
        ("text/csv;q=0.2, application/json;q=0.9", "application/json"),
        ("text/csv;q=0, */*", "application/json"),
        ("TEXT/CSV", "text/csv"),
        ("application/xml, */*;q=0.1", "text/csv"),
    ],
)
def test_negotiate_picks_the_best_acceptable_type(header, expected):
    assert negotiate(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "text/html",
        "application/xml",
        "image/*",
        "text/csv;q=0",
        "application/jsonlines",
        "text/csv;q=0, application/json;q=0",
    ],
)
def test_negotiate_refuses_what_it_cannot_produce(header):
    with pytest.raises(NotAcceptable) as caught:
        negotiate(header)
    assert caught.value.status_code == 406
    assert "text/csv or application/json" in caught.value.message


def test_parse_media_type():
    assert parse_media_type('Text/CSV; Charset="UTF-8"; label_size=1') == (
        "text/csv",
        {"charset": "utf-8", "label_size": "1"},
    )
    assert parse_media_type(None) == ("", {})


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, "text/csv"),
        ("text/csv", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/json", "application/json"),
        ("application/json;charset=UTF-8", "application/json"),
    ],
)
def test_request_media_type(header, expected):
    assert request_media_type(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "text/libsvm",
        "application/octet-stream",
        "text/csv; charset=latin-1",
    ],
)
def test_request_media_type_refuses_unsupported_types(header):
    with pytest.raises(UnsupportedMediaType) as caught:
        request_media_type(header)
    assert caught.value.status_code == 415
