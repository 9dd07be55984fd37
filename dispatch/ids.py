"""Ids that are safe to show to clients: a kind prefix and 16 random base32 characters.

Random (not sequential) so they reveal nothing about volumes and cannot be guessed; prefixed so a log
line or a support ticket says what kind of thing an id names, and so ids of different kinds never
collide (an id can serve as an event recipient on its own).
"""

from __future__ import annotations

import base64
import re
import secrets

KINDS = ("shop", "res", "cou", "ord", "job", "rte", "stp")
_ID = re.compile(r"^(?:{})_[a-z2-7]{{16}}$".format("|".join(KINDS)))


def new_id(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown id kind {kind!r}")
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return f"{kind}_{raw}"


def is_valid_id(value: str, kind: str | None = None) -> bool:
    if not _ID.match(value):
        return False
    return kind is None or value.startswith(kind + "_")
