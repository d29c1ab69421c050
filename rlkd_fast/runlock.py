"""One run at a time in an output directory.

Two runs writing into the same ``output_dir`` would interleave ``metrics.jsonl`` and overwrite
each other's checkpoints. The trainer holds ``RunLock(output_dir)`` for the whole run: an
exclusive ``flock`` on ``<output_dir>/.lock``. The kernel drops the lock when its holder exits,
however it dies, so the file a killed run leaves behind never blocks the next one; the file's
text names the holder (pid, host, start time, command) for the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
import warnings
from pathlib import Path

LOCK_FILE = ".lock"


class OutputDirBusy(RuntimeError):
    """Another live process holds the output directory's lock."""


class RunLock:
    """Holds ``<output_dir>/.lock`` until ``release()`` (or until the process ends).

    Raises ``OutputDirBusy`` naming the holder when another process holds it."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputDirBusy(
                f"output_dir {self.path.parent} is in use by another run ({holder}); wait for "
                f"it to end or stop it, or choose another output_dir") from None
        except OSError as err:  # a file system without locks (some network/FUSE mounts)
            warnings.warn(f"cannot lock {self.path} ({err.strerror}): nothing stops a second "
                          "run from writing into the same output_dir", stacklevel=2)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join([os.path.basename(sys.executable), *sys.argv])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: "
                      f"{command}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let go of the lock (idempotent)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # cleared while still held: no one reads a stale holder
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
