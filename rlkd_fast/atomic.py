"""Directories written all at once, for checkpoints and cached models.

``write_dir(final, build)`` builds the new copy under ``.tmp-<name>-<pid>`` beside ``final``,
writes a manifest (``COMPLETE``: every file and its size) last, flushes files and directories to
disk, and only then renames it into place. Replacing an existing copy moves the old one aside
(``.old-<name>-<pid>``) first and deletes it after the new one is in place, so at every moment a
complete copy exists under one of the three names:

    1. build .tmp-<name>-<pid>, write COMPLETE, fsync      (final: old copy or none)
    2. rename final -> .old-<name>-<pid>                   (final missing; tmp and old complete)
    3. rename .tmp-<name>-<pid> -> final, fsync the parent (final: new copy)
    4. delete .old-<name>-<pid>

A process killed between 2 and 3 leaves ``final`` missing: ``recover(final)`` moves a complete
hidden copy back. Hidden entries of processes that are gone (``.tmp-``, ``.old-``, ``.del-``
followed by the name and the pid) are removed by the next write into the same directory.
A directory counts as complete only when its manifest is there and every file it lists has the
listed size (``is_complete``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

MANIFEST = "COMPLETE"
_HIDDEN = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)$")
_STARTED = time.time()  # an entry of our own pid older than this was left by an earlier process
_FULL_BYTES = 1 << 20  # a write failed with less free space than this: the disk was full
_NO_SPACE = os.strerror(errno.ENOSPC).lower()  # "no space left on device"


def write_dir(final: str | Path, build: Callable[[Path], None], replace: bool = False) -> Path:
    """Write the directory ``final`` through ``build(tmp)`` so that no reader and no kill ever
    sees it half-written (the order is in the module docstring).

    Args:
        final: the directory to write.
        build: fills the empty directory it is given.
        replace: replace an existing ``final``; otherwise an existing one is kept as it is (a
            cache entry, or another process that built the same one first).

    Returns ``final``. Raises ``OSError(ENOSPC)`` naming ``final`` when the disk fills up while
    building, after removing the partial copy; any other error of ``build`` propagates, also
    after removing it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent)
    recover(final)
    if final.exists() and not replace:
        return final
    tmp = _hidden(final, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        _write_manifest(tmp)
        fsync_tree(tmp)
    except BaseException as err:
        full = _disk_full(err, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {final} "
                          "(the partial copy was removed; free some space and retry)") from err
        raise
    aside = None
    if final.exists():
        if not replace:  # another process finished the same entry meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        aside = _hidden(final, "old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:  # put the old copy back before giving up
            os.replace(aside, final)
            raise
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another process won the race
            return final
        raise
    fsync_dir(final.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


def write_text(path: str | Path, text: str) -> None:
    """Replace the small file ``path`` by rename: readers see the old text or the new one."""
    path = Path(path)
    tmp = _hidden(path, "tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_dir(path: str | Path) -> None:
    """Delete a directory so that its name disappears at once (rename first, then delete): a
    kill midway leaves a hidden ``.del-`` entry for the next writer to remove, never a
    half-deleted directory under the real name."""
    path = Path(path)
    doomed = _hidden(path, "del")
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def is_complete(path: str | Path) -> bool:
    """True when ``path`` holds a manifest and every file it lists, each of the listed size."""
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        return all((path / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def recover(final: str | Path) -> bool:
    """When ``final`` is missing or incomplete and a complete hidden copy of it left by a
    process that is gone exists, move that copy into place (the newer ``.tmp-`` one first).
    Returns True when it did."""
    final = Path(final)
    if is_complete(final):
        return False
    copies = [p for kind in ("tmp", "old") for p in _hidden_entries(final.parent, kind, final.name)
              if is_complete(p)]
    if not copies:
        return False
    if final.exists():
        remove_dir(final)
    os.replace(copies[0], final)
    fsync_dir(final.parent)
    warnings.warn(f"{final} was missing or incomplete; restored the complete copy "
                  f"{copies[0].name} left by an interrupted write", stacklevel=2)
    return True


def remove_stale(parent: str | Path) -> list[Path]:
    """Remove the hidden ``.tmp-``/``.old-``/``.del-`` entries in ``parent`` whose writer is
    gone (its pid is dead, or is ours but the entry predates this process). Returns them."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _HIDDEN.match(entry.name)
        if match is None or not _writer_gone(int(match.group(3)), entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def fsync_tree(path: str | Path) -> None:
    """Flush every file below ``path``, then every directory (deepest first), to disk."""
    path = Path(path)
    dirs = [path]
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            continue
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in reversed(dirs):
        fsync_dir(d)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- helpers
def _hidden(path: Path, kind: str) -> Path:
    return path.with_name(f".{kind}-{path.name}-{os.getpid()}")


def _hidden_entries(parent: Path, kind: str, name: str) -> list[Path]:
    """Hidden copies of ``name`` of the given kind whose writer is gone, newest first."""
    out = []
    for entry in parent.glob(f".{kind}-{name}-*"):
        match = _HIDDEN.match(entry.name)
        if match and match.group(2) == name and _writer_gone(int(match.group(3)), entry):
            out.append(entry)
    return sorted(out, key=lambda p: p.stat().st_mtime, reverse=True)


def _writer_gone(pid: int, entry: Path) -> bool:
    if pid == os.getpid():  # a container restarts with the same pid: compare times
        try:
            return entry.lstat().st_mtime < _STARTED
        except FileNotFoundError:
            return False
    return not _alive(pid)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _write_manifest(path: Path) -> None:
    files = {str(p.relative_to(path)): p.stat().st_size
             for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}
    with open(path / MANIFEST, "w") as f:
        json.dump({"files": files, "written": time.time()}, f, indent=0)


def _disk_full(err: BaseException, path: Path) -> bool:
    """Whether ``err`` came from a full disk: an ENOSPC/EDQUOT (or its text) anywhere in its
    chain, or (for libraries that report it as something else, e.g. torch's ``unexpected pos``)
    almost no free space left where it was writing."""
    seen: BaseException | None = err
    for _ in range(32):  # chains are short; a bound guards against cycles
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _NO_SPACE in str(seen).lower():  # e.g. safetensors' "I/O error: No space left ..."
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not a write failure
        return False
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BYTES
