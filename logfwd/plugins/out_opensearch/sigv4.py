"""AWS Signature Version 4, sans I/O: the hashes and HMACs that sign one HTTP request.

Amazon OpenSearch Service (service ``es``) and OpenSearch Serverless (``aoss``) accept
requests signed this way instead of basic auth. Nothing here touches the network, the
clock or the environment: the caller passes the request, the credentials and the time,
so the module is checked against AWS's published test suite vectors
(``tests/test_out_opensearch_sigv4.py``).

The canonical request is::

    METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n signed headers \\n payload hash

The canonical URI encodes each path segment (non-S3 services encode it twice, which
leaves the plain ASCII paths the bulk API uses unchanged), the query is sorted by
encoded name then value, header names are lower-cased and sorted and their values
trimmed with inner runs of spaces folded to one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key={self.access_key!r}, secret_key=***, session_token={'***' if self.session_token else None})"


def amz_date(epoch: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` (UTC), the form of ``x-amz-date``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def canonical_uri(path: str, double_encode: bool = True) -> str:
    """Each segment percent-encoded (twice for every service but S3)."""
    if not path:
        return "/"
    segments = [quote(unquote(seg), safe=_UNRESERVED) for seg in path.split("/")]
    if double_encode:
        segments = [quote(seg, safe=_UNRESERVED) for seg in segments]
    return "/".join(segments)


def canonical_query(query: str) -> str:
    """``name=value`` pairs, each side encoded, sorted; a name without ``=`` gets an empty value."""
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((quote(unquote(name), safe=_UNRESERVED), quote(unquote(value), safe=_UNRESERVED)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _fold(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: dict[str, str]) -> tuple[str, str]:
    """(canonical header block with its trailing newline, ``;``-joined signed header names)."""
    folded: dict[str, list[str]] = {}
    for name, value in headers.items():
        folded.setdefault(name.strip().lower(), []).append(_fold(value))
    names = sorted(folded)
    block = "".join(f"{n}:{','.join(folded[n])}\n" for n in names)
    return block, ";".join(names)


def canonical_request(method: str, path: str, query: str, headers: dict[str, str], payload_hash: str) -> str:
    block, signed = canonical_headers(headers)
    return "\n".join((method.upper(), canonical_uri(path), canonical_query(query), block, signed, payload_hash))


def scope(date: str, region: str, service: str) -> str:
    return f"{date[:8]}/{region}/{service}/aws4_request"


def string_to_sign(date: str, region: str, service: str, creq: str) -> str:
    return "\n".join((ALGORITHM, date, scope(date, region, service), hashlib.sha256(creq.encode()).hexdigest()))


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def authorization(creds: Credentials, region: str, service: str, method: str, path: str, query: str,
                  headers: dict[str, str], payload_hash: str) -> str:
    """The ``Authorization`` header for a request whose ``headers`` already hold ``x-amz-date``.

    Every header in ``headers`` is signed, so pass only those the request really carries.
    """
    date = next(v for k, v in headers.items() if k.lower() == "x-amz-date")
    creq = canonical_request(method, path, query, headers, payload_hash)
    sts = string_to_sign(date, region, service, creq)
    signature = hmac.new(signing_key(creds.secret_key, date, region, service), sts.encode(), hashlib.sha256)
    _, signed = canonical_headers(headers)
    return (f"{ALGORITHM} Credential={creds.access_key}/{scope(date, region, service)}, "
            f"SignedHeaders={signed}, Signature={signature.hexdigest()}")


def sign(creds: Credentials, region: str, service: str, method: str, path: str, query: str, host: str,
         body: bytes, epoch: float) -> dict[str, str]:
    """The headers to add to a request to sign it: ``x-amz-date``, ``x-amz-content-sha256``,
    ``x-amz-security-token`` (temporary credentials only) and ``authorization``.

    Signed: ``host`` (as sent, with a non-default port), those ``x-amz-*`` headers. The
    body hash is of the bytes on the wire (after gzip).
    """
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    added = {"x-amz-date": amz_date(epoch), "x-amz-content-sha256": payload_hash}
    if creds.session_token:
        added["x-amz-security-token"] = creds.session_token
    added["authorization"] = authorization(creds, region, service, method, path, query,
                                           {"host": host, **added}, payload_hash)
    return added
