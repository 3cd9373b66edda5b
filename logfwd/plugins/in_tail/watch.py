"""File discovery (globs) and change notification (Linux inotify through ctypes).

Discovery expands ``Path`` globs (``**`` is recursive), drops ``Exclude_Path``
matches and keeps regular files. Notification uses inotify when available: one
watch per tailed file (``IN_MODIFY`` says there is data, ``IN_MOVE_SELF`` /
``IN_DELETE_SELF`` / ``IN_ATTRIB`` say it was rotated or deleted) and one per
directory a pattern can match in (a created or moved-in file triggers a rescan
at once instead of at the next ``Refresh_Interval``). Watches cost no file
descriptors, so a thousand idle files cost nothing until they change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import glob
import os
import struct

import trio

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
DIR_MASK = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR

_EVENT = struct.Struct("iIII")


class InotifyUnavailable(OSError):
    pass


class Inotify:
    """A non-blocking inotify instance read from the trio loop (no thread)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            self._init1 = libc.inotify_init1
            self._add = libc.inotify_add_watch
            self._rm = libc.inotify_rm_watch
        except (OSError, AttributeError) as e:
            raise InotifyUnavailable(errno.ENOSYS, f"inotify not available: {e}") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch descriptor, or -1 (errno in the log is not worth an exception: we poll anyway)."""
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            self.last_error = ctypes.get_errno()
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        if wd >= 0 and self.fd >= 0:
            self._rm(self.fd, wd)

    async def read_events(self) -> list[tuple[int, int, str]]:
        """Wait for and return pending events as (wd, mask, name)."""
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)
                continue
            break
        out = []
        off = 0
        n = len(buf)
        while off + _EVENT.size <= n:
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
            name = buf[off + _EVENT.size : off + _EVENT.size + length].rstrip(b"\0")
            out.append((wd, mask, os.fsdecode(name)))
            off += _EVENT.size + length
        return out

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                trio.lowlevel.notify_closing(fd)
            except Exception:  # noqa: BLE001 - not inside a trio run, or nobody waiting
                pass
            os.close(fd)


# ---------------------------------------------------------------- discovery


def normalize(pattern: str) -> str:
    return os.path.abspath(os.path.expanduser(pattern.strip()))


def is_excluded(path: str, excludes: list[str]) -> bool:
    """Fluent Bit's Exclude_Path: shell patterns matched on the whole path (``*`` crosses ``/``)
    or on the file name alone."""
    base = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, x) or fnmatch.fnmatchcase(base, x) for x in excludes)


def expand(patterns: list[str], excludes: list[str]) -> list[str]:
    """Absolute paths matched by ``patterns`` (globs, ``**`` recursive), minus excludes, sorted."""
    out: set[str] = set()
    for raw in patterns:
        p = normalize(raw)
        matches = glob.glob(p, recursive=True) if glob.has_magic(p) else ([p] if os.path.lexists(p) else [])
        for m in matches:
            if not is_excluded(m, excludes):
                out.add(m)
    return sorted(out)


def _static_prefix(pattern: str) -> tuple[str, list[str]]:
    parts = pattern.split("/")
    static: list[str] = []
    for comp in parts[:-1]:
        if glob.has_magic(comp):
            break
        static.append(comp)
    return ("/".join(static) or "/"), parts


def watch_dirs(patterns: list[str]) -> set[str]:
    """Directories in which a new file could match one of ``patterns``."""
    dirs: set[str] = set()
    for raw in patterns:
        p = normalize(raw)
        base, parts = _static_prefix(p)
        if os.path.isdir(base):
            dirs.add(base)
        if "**" in p:
            dirs.update(d.rstrip("/") for d in glob.glob(base.rstrip("/") + "/**/", recursive=True))
            continue
        nstatic = len(base.split("/")) if base != "/" else 1
        for k in range(nstatic, len(parts) - 1):
            prefix = "/".join(parts[: k + 1])
            dirs.update(d for d in glob.glob(prefix) if os.path.isdir(d))
    return dirs


def find_inode(directory: str, dev: int, ino: int) -> str | None:
    """A path in ``directory`` whose file has this inode (a file rotated under a new name)."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.inode() == ino and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if st.st_dev == dev:
                            return entry.path
                except OSError:
                    continue
    except OSError:
        return None
    return None
