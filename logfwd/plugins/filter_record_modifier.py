"""record_modifier: append fixed fields, drop or allow-list keys (Fluent Bit's ``record_modifier``).

``Remove_key`` and ``Allowlist_key`` (old name ``Whitelist_key``) compare key
names case-insensitively, as Fluent Bit does, and a trailing ``*`` makes them a
prefix match; they exclude each other. ``Record KEY VALUE`` fields are added after
the removal (overwriting a key of the same name), and ``Uuid_key`` adds a random
UUID per record. ``${VAR}`` in a Record value is the environment variable (normally
already expanded by the config loader; expanded here when it was not).
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from logfwd.plugin import Batch, ConfigValueError, Filter, Option

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _KeySet:
    """Key names (case-insensitive) and prefixes (``name*``)."""

    def __init__(self, names: list[str]) -> None:
        self.exact = {n.lower() for n in names if not n.endswith("*")}
        self.prefixes = tuple(n[:-1].lower() for n in names if n.endswith("*"))

    def __contains__(self, key: object) -> bool:
        k = str(key).lower()
        return k in self.exact or (bool(self.prefixes) and k.startswith(self.prefixes))


class RecordModifierFilter(Filter):
    name = "record_modifier"
    description = "append fields, remove keys or keep only allow-listed keys"
    options = (
        Option("Record", "str", None, "KEY VALUE: append a field (repeatable)", multi=True),
        Option("Remove_key", "str", None, "remove this key; 'prefix*' for a prefix (repeatable)", multi=True),
        Option("Allowlist_key", "str", None, "keep only these keys; 'prefix*' for a prefix (repeatable)",
               multi=True),
        Option("Whitelist_key", "str", None, "old name of Allowlist_key", multi=True),
        Option("Uuid_key", "str", None, "add a random UUID under this key"),
    )

    def setup(self) -> None:
        self.records: list[tuple[str, str]] = []
        for value in self.config.get("record") or []:
            parts = str(value).strip().split(None, 1)
            if len(parts) != 2:
                raise ConfigValueError("record", f"expected 'KEY VALUE', got {value!r}")
            key, val = parts
            val = _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(0)), val)
            self.records.append((key, val))
        remove = [str(v).strip() for v in self.config.get("remove_key") or [] if str(v).strip()]
        allow = [str(v).strip() for v in (self.config.get("allowlist_key") or []) + (
            self.config.get("whitelist_key") or []) if str(v).strip()]
        if remove and allow:
            raise ConfigValueError("remove_key", "Remove_key and Allowlist_key cannot be used together")
        self.remove = _KeySet(remove) if remove else None
        self.allow = _KeySet(allow) if allow else None
        self.uuid_key: str | None = self.config.get("uuid_key") or None
        if not (self.records or self.remove or self.allow or self.uuid_key):
            raise ConfigValueError("record", "record_modifier needs Record, Remove_key, Allowlist_key or Uuid_key")

    def filter(self, batch: Batch) -> Batch | None:
        records = batch.records
        remove, allow, extra, ukey = self.remove, self.allow, self.records, self.uuid_key
        for i, rec in enumerate(records):
            if remove is not None:
                drop = [k for k in rec if k in remove]
                for k in drop:
                    del rec[k]
            elif allow is not None:
                drop = [k for k in rec if k not in allow]
                for k in drop:
                    del rec[k]
            for k, v in extra:
                rec[k] = v
            if ukey:
                rec[ukey] = str(uuid.uuid4())
            records[i] = rec
        return batch


PLUGIN = RecordModifierFilter
__all__: list[Any] = ["PLUGIN"]
