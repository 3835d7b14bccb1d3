"""Per-item claims: any number of batch processes, Ray drivers and Slurm array tasks can share
one output folder, and each item is rendered once.

Before rendering an item, a process takes an exclusive ``flock`` on ``.KEY.lock`` in the output
folder, without waiting: if another process holds it, the item is left to that one. The
kernel drops the lock when its holder exits, even by ``kill -9``, so a claim never goes stale;
on NFS (v4, or v3 with lockd) and Lustre (``-o flock``) the lock is taken on the server, so
tasks on several hosts see each other's claims. The holder removes the lock file before
letting go; a claimer checks that the file it locked is still the one at that name (it may
have been removed meanwhile), and then that the item's PNG has not appeared, since finished
items are written before their claim ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_SUFFIX = ".lock"


def lock_name(key: str) -> str:
    """The lock file of an item: ``.KEY.lock``.

    Args:
        key: the item's key.
    """
    return f".{key}{LOCK_SUFFIX}"


class Claims:
    """The claims this process holds in one output folder.

    Args:
        folder: the output folder (it exists).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.held: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """Claim an item; False when another process holds it.

        Args:
            key: the item's key.
        """
        if key in self.held:
            return True
        path = self.folder / lock_name(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # its holder removed it between our open and lock
                same = False
            if same:
                self.held[key] = fd
                return True
            os.close(fd)  # a removed file: try the one at that name now

    def release(self, key: str) -> None:
        """Let go of an item's claim (removing its lock file first); no-op if not held.

        Args:
            key: the item's key.
        """
        fd = self.held.pop(key, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.folder / lock_name(key))
        os.close(fd)

    def held_elsewhere(self, key: str) -> bool:
        """True when another process holds the item's claim right now.

        Args:
            key: the item's key.
        """
        if key in self.held:
            return False
        if not (self.folder / lock_name(key)).exists():
            return False
        if self.take(key):
            self.release(key)  # a lock file left by a killed holder: removed now
            return False
        return True

    def close(self) -> None:
        """Release every claim still held."""
        for key in list(self.held):
            self.release(key)


__all__ = ["Claims", "lock_name", "LOCK_SUFFIX"]
