"""SigV4 signing (``logfwd.plugins.out_opensearch.sigv4``) against AWS's published test suite.

The vectors are facts of the AWS Signature Version 4 test suite: access key
``AKIDEXAMPLE``, secret ``wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY``, region ``us-east-1``,
service ``service``, time 2015-08-30T12:36:00Z, host ``example.amazonaws.com``.
"""

from __future__ import annotations

import calendar
import hashlib
from pathlib import Path

import pytest

from logfwd.plugins.out_opensearch import credentials, sigv4

CREDS = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
DATE = "20150830T123600Z"
HOST = "example.amazonaws.com"
SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# name: (method, path, query, extra headers, signed header names, signature)
VECTORS = {
    "get-vanilla": ("GET", "/", "", {}, "host;x-amz-date",
                    "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    "post-vanilla": ("POST", "/", "", {}, "host;x-amz-date",
                     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    "get-vanilla-query-order-key-case": ("GET", "/", "Param2=value2&Param1=value1", {}, "host;x-amz-date",
                                         "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    "post-header-value-case": ("POST", "/", "", {"My-Header1": "VALUE1"}, "host;my-header1;x-amz-date",
                               "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
    "get-header-value-trim": ("GET", "/", "", {"My-Header1": " value1", "My-Header2": '"a   b   c"'},
                              "host;my-header1;my-header2;x-amz-date",
                              "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    "get-unreserved": ("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "", {},
                       "host;x-amz-date", "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_aws_test_suite_vector(name: str) -> None:
    method, path, query, extra, signed, signature = VECTORS[name]
    headers = {"Host": HOST, **extra, "X-Amz-Date": DATE}
    got = sigv4.authorization(CREDS, "us-east-1", "service", method, path, query, headers, EMPTY)
    assert got == f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={signed}, Signature={signature}"


def test_get_vanilla_intermediate_steps() -> None:
    """The canonical request and string to sign of ``get-vanilla``, as the suite gives them."""
    creq = sigv4.canonical_request("GET", "/", "", {"Host": HOST, "X-Amz-Date": DATE}, EMPTY)
    assert creq == f"GET\n/\n\nhost:{HOST}\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY}"
    sts = sigv4.string_to_sign(DATE, "us-east-1", "service", creq)
    assert sts.splitlines() == ["AWS4-HMAC-SHA256", DATE, "20150830/us-east-1/service/aws4_request",
                                "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"]
    query = sigv4.canonical_query("Param2=value2&Param1=value1")
    creq = sigv4.canonical_request("GET", "/", "Param2=value2&Param1=value1", {"Host": HOST, "X-Amz-Date": DATE},
                                   EMPTY)
    assert query == "Param1=value1&Param2=value2"
    assert hashlib.sha256(creq.encode()).hexdigest() == \
        "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"


def test_sign_adds_date_body_hash_and_token() -> None:
    """What the output adds to a bulk request: the body hash is signed, the session token too."""
    epoch = calendar.timegm((2015, 8, 30, 12, 36, 0))
    body = b'{"create":{"_index":"x"}}\n{"a":1}\n'
    temp = sigv4.Credentials(CREDS.access_key, CREDS.secret_key, "TOKEN/with+chars")
    h = sigv4.sign(temp, "eu-west-1", "es", "POST", "/_bulk", "pipeline=p1", "search.example:443", body, epoch)
    assert h["x-amz-date"] == DATE
    assert h["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert h["x-amz-security-token"] == "TOKEN/with+chars"
    assert h["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/es/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=")
    # Recomputed from the parts: any change of host, query or body changes the signature.
    again = sigv4.authorization(temp, "eu-west-1", "es", "POST", "/_bulk", "pipeline=p1",
                                {"host": "search.example:443", **{k: v for k, v in h.items() if k != "authorization"}},
                                h["x-amz-content-sha256"])
    assert again == h["authorization"]
    other = sigv4.sign(temp, "eu-west-1", "es", "POST", "/_bulk", "pipeline=p1", "search.example:443",
                       body + b" ", epoch)
    assert other["authorization"] != h["authorization"]
    assert "secret" not in repr(temp).lower() or "***" in repr(temp)
    assert CREDS.secret_key not in repr(CREDS)


# ------------------------------------------------------------------ credentials


def test_credentials_from_environment_win(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "ST",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "nope")}
    assert credentials.load("default", env) == sigv4.Credentials("AK", "SK", "ST")


def test_credentials_from_shared_file_profile(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = D1\naws_secret_access_key = D2\n\n"
        "[ship]\naws_access_key_id = S1\naws_secret_access_key = S2\naws_session_token = S3\n")
    env = {"HOME": str(tmp_path)}
    assert credentials.load("default", env) == sigv4.Credentials("D1", "D2", None)
    assert credentials.load("ship", env) == sigv4.Credentials("S1", "S2", "S3")
    with pytest.raises(credentials.CredentialsError, match=r"profile \[other\]"):
        credentials.load("other", env)


def test_incomplete_profile_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    path.write_text("[default]\naws_access_key_id = D1\n")
    with pytest.raises(credentials.CredentialsError, match="lacks aws_access_key_id or aws_secret_access_key"):
        credentials.load("default", {"AWS_SHARED_CREDENTIALS_FILE": str(path)})
