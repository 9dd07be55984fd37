"""Who is calling: the bearer token of a request, verified against the app's secret and clock, and its
subject known to exist (checked once for every request by the `known_subject` middleware)."""

from __future__ import annotations

from aiohttp import web

from dispatch.api.keys import CLOCK, RUNTIME, SECRET, SETTINGS, SUBJECTS
from dispatch.auth import Principal, verify_token
from dispatch.errors import DispatchError
from dispatch.translate import translate


def verify(app: web.Application, token: str) -> Principal:
    return verify_token(app[SECRET], token, app[CLOCK].now(), app[SETTINGS].token_max_ttl_s)


async def ensure_known(app: web.Application, who: Principal) -> None:
    """401 `unknown_subject` when a resident, shop or courier token names one that does not exist."""
    try:
        await app[SUBJECTS].check(app[RUNTIME].services.pool, who)
    except DispatchError:
        raise
    except Exception as exc:  # PostgreSQL unreachable: 503, on HTTP and websocket alike
        error = translate(exc)
        if error is None:
            raise
        raise error from None
