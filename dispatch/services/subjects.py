"""Token subjects that exist: a validly signed token for a resident, shop or courier that is not in the
database identifies nobody, and must not reach a handler (it would write, or cache, for nobody).

Checked once per (role, subject) and remembered for `TTL_S`; a subject verified before is still trusted
while PostgreSQL is unreachable (subjects are never deleted), so an outage does not lock out couriers whose
pings only need Redis."""

from __future__ import annotations

import time
from collections import OrderedDict

import asyncpg

from dispatch.auth import Principal, Role
from dispatch.errors import ServiceUnavailable, Unauthorized
from dispatch.translate import is_unreachable

TTL_S = 300.0
MAX_ENTRIES = 100_000
_TABLES = {Role.RESIDENT: "residents", Role.SHOP: "shops", Role.COURIER: "couriers"}


class KnownSubjects:
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._verified: OrderedDict[tuple[Role, str], float] = OrderedDict()

    async def check(self, pool: asyncpg.Pool, who: Principal) -> None:
        """Return if `who` exists (admins always do); 401 `unknown_subject` if not."""
        table = _TABLES.get(who.role)
        if table is None:
            return
        key = (who.role, who.subject)
        verified_at = self._verified.get(key)
        now = time.monotonic()
        if verified_at is not None and now - verified_at < self.ttl_s:
            self._verified.move_to_end(key)
            return
        try:
            found = await pool.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)", who.subject)
        except Exception as exc:
            if verified_at is not None and (is_unreachable(exc) or isinstance(exc, ServiceUnavailable)):
                return
            raise
        if not found:
            self._verified.pop(key, None)
            raise Unauthorized(
                f"the token's subject {who.subject!r} is not a known {who.role.value}", code="unknown_subject"
            )
        self._verified[key] = now
        self._verified.move_to_end(key)
        while len(self._verified) > self.max_entries:
            self._verified.popitem(last=False)
