"""Local path or Hugging Face hub id: one rule for models and data sets.

A name is a local path when it exists on disk, starts with ``/``, ``.`` or ``~``, or holds a path
separator without being a hub id (``name`` or ``owner/name``); a local path that does not exist is
an error that says so, instead of the hub's "Repo id must be in the form ..." message. Before a
hub download, :func:`network_error` makes one request without retries, so an unreachable hub is
reported in a second rather than after the hub client's ~25 s of retries.

Importing this module is cheap (no torch, transformers or datasets).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

#: ``name`` or ``owner/name``: letters, digits, ``-``, ``_``, ``.``; no leading ``.`` or ``-``.
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?")
# Exception class names of the HTTP clients the hub libraries use (requests, httpx, urllib3)
# that mean "no connection", matched by name so no client needs importing here.
_NETWORK_ERRORS = {
    "ConnectError", "ConnectTimeout", "ConnectionError", "NetworkError", "NewConnectionError",
    "OfflineModeIsEnabled", "ProxyError", "ReadTimeout", "Timeout", "MaxRetryError",
}  # fmt: skip


class ModelFilesError(RuntimeError):
    """A model's local files are missing or do not match what they should be (the message names
    the file and how to restore it)."""


class HubUnreachable(RuntimeError):
    """The hub cannot be reached (no network, or ``HF_HUB_OFFLINE`` without a cached copy)."""


def is_local_path(name: str) -> bool:
    """True when ``name`` can only mean a local file or directory (see the module docstring)."""
    if name.startswith(("/", ".", "~")) or Path(name).expanduser().exists():
        return True
    has_sep = os.sep in name or (os.altsep is not None and os.altsep in name)
    return has_sep and _HUB_ID.fullmatch(name) is None


def missing_local_path(name: str, what: str) -> str | None:
    """An error message when ``name`` is a local path that does not exist, else None.

    ``what`` names the thing and where it was set, e.g. ``"student="`` or ``"--model"``."""
    if is_local_path(name) and not Path(name).expanduser().exists():
        return f"{what}: local path {name} does not exist"
    return None


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` is set (the hub libraries then read their local cache only)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) means the network is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if type(current).__name__ in _NETWORK_ERRORS:
            return True
        current = current.__cause__ or current.__context__
    return False


def network_error(repo_id: str, repo_type: str = "dataset", timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached for ``repo_id`` (one request, no retries), or None.

    Only a failed connection counts: a missing or gated repository is left for the loader to
    report in its own words."""
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.dataset_info if repo_type == "dataset" else api.model_info
    try:
        info(repo_id, timeout=timeout)
    except Exception as err:  # the client's errors differ between versions: classify by chain
        if is_connection_error(err):
            return f"{type(err).__name__}: {err}"
    return None
