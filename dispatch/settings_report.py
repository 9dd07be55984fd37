"""What `dispatch config` prints: every setting's effective value and where it came from (secrets masked), and
the README's table of settings, both from the one definition in `dispatch.config`."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic.fields import FieldInfo

from dispatch.config import SECRETS, Settings, env_name, extra, fields


def report(settings: Settings, env: Mapping[str, str], overrides: Collection[str]) -> list[dict[str, Any]]:
    rows = []
    for name, info in fields().items():
        variable = env_name(info)
        if name in overrides:
            source = f"flag {extra(info).get('flag') or name}"
        elif env.get(variable):
            source = "environment"
        else:
            source = "default"
        rows.append(
            {
                "variable": variable,
                "value": _masked(name, getattr(settings, name)),
                "source": source,
                "meaning": info.description,
            }
        )
    return rows


def _masked(name: str, value: Any) -> str:
    if name in SECRETS:
        return (
            "(not set: generated once into DATA_DIR/secret)"
            if value is None
            else f"(set, {len(value)} bytes)"
        )
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:g}"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def default_text(info: FieldInfo) -> str:
    shown = extra(info).get("shown")
    return str(shown) if shown is not None else _text(info.default)


def markdown_table() -> str:
    """The README's configuration table (a test checks that the README holds exactly this)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for info in fields().values():
        more = extra(info)
        if more.get("internal"):
            continue
        variable = f"`{env_name(info)}`"
        if more.get("flag"):
            flags = ", ".join(f"`{f}`" for f in str(more["flag"]).split("/"))
            variable += f" / {flags}"
        shown = more.get("shown")
        default = str(shown) if shown is not None else f"`{_text(info.default)}`"
        if shown is not None and not str(shown).startswith(("(", "generated", "now")):
            default = f"`{shown}`"
        lines.append(f"| {variable} | {default} | {info.description} |")
    return "\n".join(lines)
