"""Origin keys that become strings only when something reads them.

Every tail record carries an origin key, ``<file key id>:<end offset>``, so that an
output can derive an idempotent id from it (the es output's ``Id_Mode derived``) and
the filesystem storage can keep it with the record. Most pipelines never read a key:
formatting a million of them and freeing them again cost about a tenth of the whole
docker → null pipeline. ``OriginKeys`` holds the shared prefix and the offsets and
makes a key string when one is asked for; ``KeyColumn`` is a chunk's keys, one part per
batch, flattened into a list the first time it is indexed.

Both are read-only ``Sequence``s, so code that indexes, slices, iterates or takes
``len`` of a batch's or chunk's keys works with them and with plain lists alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

__all__ = ["OriginKeys", "KeyColumn", "take", "as_list"]


class OriginKeys(Sequence[str]):
    """``f"{prefix}:{offset}"`` for each offset, made on demand."""

    __slots__ = ("prefix", "offsets")

    def __init__(self, prefix: str, offsets: list[int]) -> None:
        self.prefix = prefix
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> OriginKeys: ...

    def __getitem__(self, i: int | slice) -> str | OriginKeys:
        if isinstance(i, slice):
            return OriginKeys(self.prefix, self.offsets[i])
        return f"{self.prefix}:{self.offsets[i]}"

    def __iter__(self) -> Iterator[str]:
        p = self.prefix
        return (f"{p}:{o}" for o in self.offsets)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OriginKeys):
            return self.prefix == other.prefix and self.offsets == other.offsets
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable offsets, like a list

    def __repr__(self) -> str:
        return f"OriginKeys({self.prefix!r}, {len(self.offsets)} offsets)"

    def take(self, indices: Sequence[int]) -> OriginKeys:
        offs = self.offsets
        return OriginKeys(self.prefix, [offs[i] for i in indices])


class KeyColumn(Sequence["str | None"]):
    """A chunk's keys: the batches' key sequences (None: a batch without keys) in order.

    Appending a batch costs nothing per record; the first index, iteration or
    comparison flattens the parts into one list, kept for later reads.
    """

    __slots__ = ("_parts", "_len", "_flat")

    def __init__(self, keys: Sequence[str | None] | None = None) -> None:
        self._parts: list[tuple[Sequence[str | None] | None, int]] = []
        self._len = 0
        self._flat: list[str | None] | None = None
        if keys is not None:
            self.add(keys, len(keys))

    def add(self, keys: Sequence[str | None] | None, n: int) -> None:
        """Append ``n`` records' keys (``keys`` None: those records have none)."""
        if self._flat is not None:
            self._flat.extend(keys if keys is not None else [None] * n)
        else:
            self._parts.append((keys, n))
        self._len += n

    def flat(self) -> list[str | None]:
        """The keys as one list (built once)."""
        if self._flat is None:
            out: list[str | None] = []
            for keys, n in self._parts:
                out.extend(keys if keys is not None else [None] * n)
            self._flat = out
            self._parts = []
        return self._flat

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | None | list[str | None]:
        return self.flat()[i]

    def __iter__(self) -> Iterator[str | None]:
        return iter(self.flat())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self.flat() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KeyColumn({self.flat()!r})"


def take(keys: Sequence[str | None], indices: Sequence[int]) -> Sequence[str | None]:
    """The keys at ``indices``, staying lazy for ``OriginKeys``."""
    if isinstance(keys, OriginKeys):
        return keys.take(indices)
    return [keys[i] for i in indices]


def as_list(keys: Sequence[str | None] | None) -> list[str | None] | None:
    """A plain list of the keys (for serializers that take lists only), or None."""
    if keys is None or isinstance(keys, list):
        return keys
    if isinstance(keys, KeyColumn):
        return keys.flat()
    return list(keys)
