"""The ``opensearch`` output: Fluent Bit's output of that name, on the es output's code.

Everything about bulk bodies, server detection, per-item verdicts, retries and 413
splitting is ``EsOutput``'s (``logfwd.plugins._es``); this class changes the option
table (``settings.py``) and adds AWS SigV4 request signing (``AWS_Auth``) through the
client's request hook, so the signature covers the final Host header and the body bytes
as sent (after gzip).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from logfwd.plugin import ConfigValueError
from logfwd.plugins._es.client import RequestHook
from logfwd.plugins._es.plugin import EsOutput

from . import credentials, sigv4
from . import settings as opts


class OpenSearchOutput(EsOutput):
    name = "opensearch"
    description = "Send records to OpenSearch (self-hosted, Amazon OpenSearch Service or Serverless) with _bulk"
    options = opts.OPTIONS

    def setup(self) -> None:
        super().setup()
        s = self.settings
        self.aws_credentials: sigv4.Credentials | None = None
        if not s.aws_auth:
            return
        if not s.aws_region:
            raise ConfigValueError("aws_region", "required with AWS_Auth on")
        if self.auth_header:
            raise ConfigValueError("http_user", "AWS_Auth and HTTP_User cannot both sign the request")
        try:
            self.aws_credentials = credentials.load(s.aws_profile or "default")
        except credentials.CredentialsError as e:
            raise ConfigValueError("aws_auth", str(e)) from None
        if not self.use_tls:
            self.log.warning("AWS_Auth without TLS to %s:%s: requests are signed, not encrypted (set tls on)",
                             self.host, self.port)

    def request_hooks(self) -> list[RequestHook]:
        if self.aws_credentials is None:
            return []
        return [signing_hook(self.aws_credentials, self.settings.aws_region, self.settings.aws_service_name)]


def signing_hook(creds: sigv4.Credentials, region: str, service: str,
                 clock: Callable[[], float] = time.time) -> RequestHook:
    """An httpx request hook that adds the SigV4 headers to each request."""

    async def hook(request: httpx.Request) -> None:
        url = request.url
        headers = sigv4.sign(creds, region, service, request.method, url.raw_path.split(b"?")[0].decode("ascii"),
                             url.query.decode("ascii"), request.headers["host"], request.content, clock())
        request.headers.update(headers)

    return hook
