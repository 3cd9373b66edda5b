"""The opensearch output's options: Fluent Bit's ``opensearch`` output's, built from the es table.

Fluent Bit's two outputs share most options; its opensearch output has no ``Cloud_ID``,
``Cloud_Auth`` or ``HTTP_API_Key`` (Elastic-only), adds the ``AWS_*`` options for SigV4,
and defaults ``Tag_Key`` to ``_flb-key``. Every other option, default and meaning is the
es output's (``logfwd.plugins._es.settings``), so both stay one table.
"""

from __future__ import annotations

import dataclasses

from logfwd.options import Option
from logfwd.plugins._es.settings import OPTIONS as ES_OPTIONS

_ELASTIC_ONLY = frozenset({"cloud_id", "cloud_auth", "http_api_key"})

_DEFAULTS = {"tag_key": "_flb-key", "workers": "1"}  # Fluent Bit's opensearch output has no workers by default

_HELP = {"suppress_type_name": "omit the mapping type; unset: ask the server once (GET /), omit for OpenSearch "
                               "and Elasticsearch 7+"}

AWS_OPTIONS: tuple[Option, ...] = (
    Option("AWS_Auth", "bool", "off", "sign every request with AWS SigV4 (Amazon OpenSearch Service / Serverless)"),
    Option("AWS_Region", "str", None, "AWS region of the domain or collection (required with AWS_Auth)"),
    Option("AWS_Service_Name", "str", "es", "service signed for: es (OpenSearch Service) or aoss (Serverless)",
           choices=("es", "aoss")),
    Option("AWS_Profile", "str", "default",
           "profile of the shared credentials file, used when AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set"),
    Option("AWS_Role_ARN", "str", None, "IAM role to assume",
           unsupported="STS assume-role is not built: give the role's credentials through the environment "
                       "or the shared credentials file"),
    Option("AWS_External_ID", "str", None, "external id for AWS_Role_ARN",
           unsupported="STS assume-role is not built (see AWS_Role_ARN)"),
    Option("AWS_STS_Endpoint", "str", None, "custom STS endpoint for AWS_Role_ARN",
           unsupported="STS assume-role is not built (see AWS_Role_ARN)"),
)


def _opensearch(option: Option) -> Option:
    text = _HELP.get(option.key) or option.help.replace("Elasticsearch", "OpenSearch")
    return dataclasses.replace(option, default=_DEFAULTS.get(option.key, option.default), help=text)


OPTIONS: tuple[Option, ...] = (
    *(_opensearch(o) for o in ES_OPTIONS if o.key not in _ELASTIC_ONLY),
    *AWS_OPTIONS,
)
