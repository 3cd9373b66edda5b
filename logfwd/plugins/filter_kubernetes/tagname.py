"""Pod, namespace, container and container id from a name: the tag, or a journal entry's container name.

The kubelet links every container's log as
``/var/log/containers/<pod>_<namespace>_<container>-<container id>.log``; tail tags it
``kube.var.log.containers.<that name>``. After ``Kube_Tag_Prefix`` is cut off, Fluent
Bit's expression (or a ``Regex_Parser`` of the user's) splits the rest. With
``Use_Journal`` the same splitting applies to each record's ``CONTAINER_NAME`` with
another expression (``journal.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["TagInfo", "TagParser", "DEFAULT_REGEX"]

# Pod names are DNS subdomains; namespaces hold no '_'; the id is 64 hex digits.
DEFAULT_REGEX = re.compile(
    r"(?P<pod_name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)"
    r"_(?P<namespace_name>[^_]+)_(?P<container_name>.+)-(?P<docker_id>[a-z0-9]{64})\.log$"
)


@dataclass(frozen=True, slots=True)
class TagInfo:
    pod_name: str
    namespace_name: str
    container_name: str | None
    docker_id: str | None
    container_hash: str | None = None  # only a journal name (or a Regex_Parser) holds one


class TagParser:
    """Cuts the prefix and applies the default expression (``regex``) or a named regex parser.

    Results are memoised per name: a node has a few hundred containers, and every
    batch from one file carries the same tag (every entry of one container the same
    journal name).
    """

    def __init__(self, prefix: str, parser: Any = None, regex: re.Pattern[str] = DEFAULT_REGEX) -> None:
        self.prefix = prefix
        self.parser = parser
        self.regex = regex
        self._memo: dict[str, TagInfo | None] = {}

    def parse(self, tag: str) -> TagInfo | None:
        try:
            return self._memo[tag]
        except KeyError:
            pass
        info = self._parse(tag)
        if len(self._memo) > 8192:
            self._memo.clear()
        self._memo[tag] = info
        return info

    def _parse(self, tag: str) -> TagInfo | None:
        if not tag.startswith(self.prefix):
            return None
        rest = tag[len(self.prefix) :]
        if self.parser is None:
            m = self.regex.search(rest)
            fields: dict[str, Any] | None = m.groupdict() if m else None
        else:
            _, out = self.parser.parse_values([rest], 0, None)
            fields = out[0]
        if not fields or not fields.get("pod_name") or not fields.get("namespace_name"):
            return None
        return TagInfo(str(fields["pod_name"]), str(fields["namespace_name"]),
                       fields.get("container_name"), fields.get("docker_id"), fields.get("container_hash"))
