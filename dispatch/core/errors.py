"""Exceptions raised by the pure core.

Two kinds, both under `CoreError`, so the edges can translate them into the one JSON error shape:

- `CoreValidationError`: the input itself is wrong (HTTP 422); carries the field path.
- `TransitionError`: the input is fine but the state forbids the action (HTTP 409); carries a
  stable machine code such as ``offer_expired``, and optional details.

Contract violations by the calling code (a naive datetime, a negative quantity built by a service)
are programming errors and raise the built-in `ValueError`, not these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PathPart = str | int


class CoreError(Exception):
    """Base of every error the core reports to a caller."""


class CoreValidationError(CoreError):
    """Bad input, located by `path` (e.g. ``("weekly", "mon", 0, 1)``)."""

    code = "invalid"

    def __init__(self, path: Sequence[PathPart], message: str) -> None:
        self.path: tuple[PathPart, ...] = tuple(path)
        self.message = message
        where = ".".join(str(p) for p in self.path) or "<root>"
        super().__init__(f"{where}: {message}")


class TransitionError(CoreError):
    """An action refused because of the state of a job, stop or route, or who acts; `code` is stable and
    `details` (JSON-shaped, optional) say what the client needs to act on it."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{code}: {message}")
