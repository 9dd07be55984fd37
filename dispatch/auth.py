"""Signed bearer tokens (JWT, HS256) carrying a role and a subject, and the checks built on them.

Expiry is checked against the server's clock, not the wall clock, so a replay on a scaled clock and tests on a
manual clock see tokens expire when their clock says so.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import jwt

from dispatch.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32


class Role(StrEnum):
    RESIDENT = "resident"
    SHOP = "shop"
    COURIER = "courier"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def load_or_create_secret(explicit: str | None, data_dir: Path) -> str:
    """DISPATCH_SECRET if given, else a secret generated once and kept (mode 0600) under the data dir."""
    if explicit:
        if len(explicit.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"DISPATCH_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        return explicit
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    tmp.chmod(0o600)
    tmp.replace(path)
    return value


def issue_token(secret: str, role: Role, subject: str, ttl_s: int, now: datetime) -> str:
    iat = int(now.timestamp())
    claims = {"sub": subject, "role": role.value, "iat": iat, "exp": iat + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Verified tokens: a signature check costs ~0.4 ms and apps send the same token on every request.
# Keyed by (secret, token); the times are still checked on every use.
_VERIFIED: dict[tuple[str, str], tuple[Principal, _Times]] = {}
_VERIFIED_MAX = 50_000
ISSUED_AHEAD_LEEWAY_S = 60  # clock skew allowed between the issuer and this server


@dataclass(frozen=True)
class _Times:
    exp: int
    iat: float | None
    nbf: float | None


def verify_token(secret: str, token: str, now: datetime, max_lifetime_s: float | None = None) -> Principal:
    """The token's principal, or 401. With `max_lifetime_s` (DISPATCH_TOKEN_MAX_TTL), a token meant to live
    longer (exp - iat), or with longer still to live (exp - now), is refused: a leaked token must expire."""
    known = _VERIFIED.get((secret, token))
    if known is None:
        known = _verify(secret, token)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[(secret, token)] = known
    principal, times = known
    # On the server's clock, not the wall clock PyJWT would use: a replay or demo day runs it ahead.
    at = now.timestamp()
    if times.exp <= at:
        raise Unauthorized("token has expired", code="token_expired")
    if times.iat is not None and times.iat > at + ISSUED_AHEAD_LEEWAY_S:
        raise Unauthorized("token is not yet valid: issued in the future", code="invalid_token")
    if times.nbf is not None and times.nbf > at + ISSUED_AHEAD_LEEWAY_S:
        raise Unauthorized("token is not valid before its nbf time", code="token_not_yet_valid")
    if max_lifetime_s is not None:
        lifetime = times.exp - (times.iat if times.iat is not None else at)
        if lifetime > max_lifetime_s or times.exp - at > max_lifetime_s + ISSUED_AHEAD_LEEWAY_S:
            raise Unauthorized(
                f"token lives longer than the {max_lifetime_s:g} s this server accepts",
                code="token_lifetime_too_long",
                details={"max_lifetime_s": max_lifetime_s},
            )
    return principal


def _verify(secret: str, token: str) -> tuple[Principal, _Times]:
    """Signature and claims; the times are left to the caller."""
    if not token.isascii():  # header bytes that are not ASCII arrive as undecodable surrogates
        raise Unauthorized("token is not valid: not ASCII", code="invalid_token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "role", "exp"],
            },
        )
    except jwt.InvalidSignatureError:
        raise Unauthorized("token signature is not valid", code="invalid_token") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"token is not valid: {exc}", code="invalid_token") from None
    exp, sub, role = claims.get("exp"), claims.get("sub"), claims.get("role")
    iat, nbf = _time_claim(claims, "iat"), _time_claim(claims, "nbf")
    if (
        isinstance(exp, bool)
        or not isinstance(exp, int)
        or not isinstance(sub, str)
        or not sub
        or not isinstance(role, str)
    ):
        raise Unauthorized("token claims are malformed", code="invalid_token")
    try:
        return Principal(Role(role), sub), _Times(exp, iat, nbf)
    except ValueError:
        raise Unauthorized(f"token role {role!r} is not known", code="invalid_token") from None


def _time_claim(claims: dict[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise Unauthorized(f"token claim {name} must be a number", code="invalid_token")
    return float(value)


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization: Bearer token", code="missing_token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
    return token.strip()


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"this needs a {allowed} token, not {principal.role.value}", code="wrong_role")


def require_subject(principal: Principal, role: Role, subject: str) -> None:
    """Admins may act on anything; otherwise only `role` acting on its own `subject`."""
    if principal.is_admin:
        return
    require_role(principal, role)
    if principal.subject != subject:
        raise Forbidden(f"this {role.value} token does not own {subject}", code="not_owner")
