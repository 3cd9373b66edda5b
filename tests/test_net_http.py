"""The HTTP status table every HTTP output judges its answers by."""

from __future__ import annotations

import ssl

import pytest

from logfwd.net.http import Verdict, classify, describe_exception

TABLE = [
    (None, Verdict.RETRY),
    (200, Verdict.DELIVERED),
    (201, Verdict.DELIVERED),
    (204, Verdict.DELIVERED),
    (299, Verdict.DELIVERED),
    (100, Verdict.RETRY),
    (301, Verdict.RETRY),
    (400, Verdict.REFUSED),
    (401, Verdict.REFUSED),
    (403, Verdict.REFUSED),
    (404, Verdict.REFUSED),
    (408, Verdict.RETRY),
    (409, Verdict.REFUSED),
    (413, Verdict.SPLIT),
    (422, Verdict.REFUSED),
    (429, Verdict.RETRY),
    (500, Verdict.RETRY),
    (502, Verdict.RETRY),
    (503, Verdict.RETRY),
    (599, Verdict.RETRY),
]


@pytest.mark.parametrize(("status", "verdict"), TABLE)
def test_table(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_backend_retries_more() -> None:
    assert classify(401, retry=(401, 403, 404)) is Verdict.RETRY
    assert classify(404, retry=(401, 403, 404)) is Verdict.RETRY
    assert classify(400, retry=(401, 403, 404)) is Verdict.REFUSED
    assert classify(413, retry=(401,)) is Verdict.SPLIT  # the override is for refusals only


def test_describe_digs_out_the_cause() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as inner:
            raise RuntimeError("ConnectError") from inner
    except RuntimeError as e:
        text = describe_exception(e)
    assert "Connection refused" in text and "\n" not in text


def test_describe_tls() -> None:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_message = "self-signed certificate"
    assert describe_exception(e) == "TLS: self-signed certificate"


def test_describe_empty() -> None:
    assert describe_exception(ValueError()) == "ValueError"
