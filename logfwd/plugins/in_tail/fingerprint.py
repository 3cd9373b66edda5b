"""File identity beyond the inode.

Filesystems reuse inode numbers as soon as a file is deleted, so after
rotation a brand-new log can show up with the inode of one we recorded in the
offsets database. Reading it from the stored offset would skip its beginning.
We therefore store, with the inode, a hash of the file's first bytes (up to
``HEAD_BYTES``) and how many bytes that hash covers; a file matches a record
only if the hash of the same number of its first bytes is equal.

The record also carries a stable ``key id`` used to build per-record origin
keys (``<key id>:<end offset>``) that outputs such as Elasticsearch turn into
document ids, so a replay after a crash overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import os

HEAD_BYTES = 256


def head_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def read_head(fd: int, n: int = HEAD_BYTES) -> bytes:
    """Up to ``n`` bytes from the start of the file (pread: the read offset is untouched)."""
    try:
        return os.pread(fd, n, 0)
    except OSError:
        return b""


def head_matches(fd: int, head_len: int, expected: str | None) -> bool:
    """Whether the file's first ``head_len`` bytes hash to ``expected``.

    A record without a hash (an offsets DB written by Fluent Bit) matches by inode
    alone, as Fluent Bit itself does.
    """
    if expected is None:
        return True
    data = read_head(fd, head_len)
    return len(data) == head_len and head_hash(data) == expected


def make_key_id(dev: int, ino: int, head: bytes, discovered_ns: int) -> str:
    """A stable id of one file's content stream.

    With a full head the id is deterministic (content + inode), so re-reading the
    same file without a DB yields the same keys. With a short head (a new, small
    file) the discovery time is mixed in, so that two different files that reuse
    an inode and start with the same few bytes cannot share keys; the id is then
    kept stable across restarts by the offsets DB.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{dev}:{ino}:".encode())
    h.update(head)
    if len(head) < HEAD_BYTES:
        h.update(b"@" + str(discovered_ns).encode())
    return h.hexdigest()
