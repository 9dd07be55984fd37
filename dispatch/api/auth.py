"""Who is calling: the bearer token of a request, verified against the app's secret and clock."""

from __future__ import annotations

from aiohttp import web

from dispatch.api.keys import CLOCK, SECRET
from dispatch.auth import Principal, Role, bearer_token, require_role, verify_token


def principal(request: web.Request, *roles: Role) -> Principal:
    """The caller; 401 without a valid token, 403 when its role is not one of `roles` (if given)."""
    who = verify_token(
        request.app[SECRET],
        bearer_token(request.headers.get("Authorization")),
        request.app[CLOCK].now(),
    )
    if roles:
        require_role(who, *roles)
    return who
