"""Use_Journal: which container each journal entry comes from, by its ``CONTAINER_NAME`` field.

Docker's ``journald`` log driver writes a container's lines to the journal instead of a
file, with ``CONTAINER_NAME`` set to the container's Docker name; the kubelet (dockershim)
names a pod's containers ``k8s_<container>[.<hash>]_<pod>_<namespace>_<pod uid>_<attempt>``.
Fluent Bit's expression (or ``Regex_Parser``) splits that name as the tag is split in
file mode; the tag itself is not used.

Unlike a tailed file, whose batches all come from one container, one batch of the
systemd input mixes entries of many pods (and of the host's own services), so the
records are grouped by name and each group is looked up on its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from .tagname import TagInfo, TagParser

__all__ = ["JOURNAL_REGEX", "NAME_FIELD", "JournalGroups"]

NAME_FIELD = "CONTAINER_NAME"

# Fluent Bit's KUBE_JOURNAL_TO_REGEX: prefix ("k8s"), container with an optional
# ".<hash>", pod, namespace, then the pod's uid and the restart count (not kept).
JOURNAL_REGEX = re.compile(
    r"^(?P<name_prefix>[^_]+)_(?P<container_name>[^._]+)(?:\.(?P<container_hash>[^_]+))?"
    r"_(?P<pod_name>[^_]+)_(?P<namespace_name>[^_]+)_[^_]+_[^_]+$"
)

_WARNED_MAX = 1024


class JournalGroups:
    """Splits a batch's records by container, from each record's ``CONTAINER_NAME``.

    A record without the field (the host's own services, dockerd itself) or whose name
    the expression does not split (a container Kubernetes did not start) cannot be
    placed in a pod; it is left as it is and counted (``journal_unnamed_records``,
    ``journal_unmatched_records``), and each such name is logged once.
    """

    def __init__(self, parser: Any, log: logging.Logger, metrics: Any) -> None:
        self.names = TagParser("", parser, JOURNAL_REGEX)
        self.log = log
        self.metrics = metrics
        self._warned: set[str] = set()

    def split(self, records: Sequence[dict[str, Any]]) -> list[tuple[TagInfo, list[int]]]:
        """(container, indices of its records) for each container named in ``records``, in order of appearance."""
        by_name: dict[str, list[int]] = {}
        unnamed = 0
        for i, r in enumerate(records):
            name = r.get(NAME_FIELD)
            if type(name) is str and name:
                by_name.setdefault(name, []).append(i)
            else:
                unnamed += 1
        if unnamed:
            self.metrics.inc("journal_unnamed_records", unnamed)
        groups: list[tuple[TagInfo, list[int]]] = []
        for name, idx in by_name.items():
            info = self.names.parse(name)
            if info is not None:
                groups.append((info, idx))
            else:
                self._unmatched(name, len(idx))
        return groups

    def _unmatched(self, name: str, n: int) -> None:
        self.metrics.inc("journal_unmatched_records", n)
        if name in self._warned:
            return
        if len(self._warned) >= _WARNED_MAX:
            self._warned.clear()
        self._warned.add(name)
        self.log.warning("%s %r is not a Kubernetes container name (Use_Journal): its records pass without "
                         "metadata", NAME_FIELD, name)
