"""Tokens: signed, expiring on the server's clock, carrying a role and a subject."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import jwt.warnings
import pytest

from dispatch.auth import (
    Principal,
    Role,
    bearer_token,
    issue_token,
    load_or_create_secret,
    require_subject,
    verify_token,
)
from dispatch.clock import ManualClock
from dispatch.errors import Forbidden, Unauthorized

SECRET = "s" * 40


def test_round_trip() -> None:
    clock = ManualClock()
    token = issue_token(SECRET, Role.SHOP, "shop_abc", 60, clock.now())
    assert verify_token(SECRET, token, clock.now()) == Principal(Role.SHOP, "shop_abc")


def test_expiry_follows_the_injected_clock() -> None:
    clock = ManualClock()
    token = issue_token(SECRET, Role.COURIER, "cou_x", 60, clock.now())
    clock.advance(59)
    verify_token(SECRET, token, clock.now())
    clock.advance(1)
    with pytest.raises(Unauthorized) as err:
        verify_token(SECRET, token, clock.now())
    assert err.value.code == "token_expired"


def test_issue_time_follows_the_injected_clock_too() -> None:
    """A replay's clock runs ahead of the wall clock: its tokens are valid on it, not ahead of it."""
    ahead = datetime.now(UTC) + timedelta(days=30)
    token = issue_token(SECRET, Role.RESIDENT, "res_x", 3600, ahead)
    assert verify_token(SECRET, token, ahead) == Principal(Role.RESIDENT, "res_x")
    with pytest.raises(Unauthorized) as err:
        verify_token(SECRET, token, ahead - timedelta(minutes=5))  # issued beyond the skew allowed
    assert err.value.code == "invalid_token"
    verify_token(SECRET, token, ahead - timedelta(seconds=30))  # within it


def _signed_with_another_algorithm(claims: dict[str, object]) -> str:
    with warnings.catch_warnings():  # PyJWT finds our test secret short for HS512: that is not the point here
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, SECRET, algorithm="HS512")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        jwt.encode({"sub": "x", "role": "admin", "exp": 2**40}, "another-secret-" + "y" * 30),
        _signed_with_another_algorithm({"sub": "x", "role": "admin", "exp": 2**40}),
        jwt.encode({"sub": "x", "role": "king", "exp": 2**40}, SECRET),
        jwt.encode({"sub": "x", "role": "admin"}, SECRET),
        jwt.encode({"role": "admin", "exp": 2**40}, SECRET),
    ],
)
def test_forged_or_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, ManualClock().now())


def test_unsigned_alg_none_is_refused() -> None:
    token = jwt.encode({"sub": "x", "role": "admin", "exp": 2**40}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, ManualClock().now())


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic abc", "token"])
def test_bad_authorization_headers(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_subject_checks() -> None:
    require_subject(Principal(Role.SHOP, "shop_a"), Role.SHOP, "shop_a")
    require_subject(Principal(Role.ADMIN, "ops"), Role.SHOP, "shop_a")
    with pytest.raises(Forbidden):
        require_subject(Principal(Role.SHOP, "shop_b"), Role.SHOP, "shop_a")
    with pytest.raises(Forbidden):
        require_subject(Principal(Role.RESIDENT, "shop_a"), Role.SHOP, "shop_a")


def test_secret_generated_once_and_private(tmp_path: Path) -> None:
    first = load_or_create_secret(None, tmp_path)
    assert load_or_create_secret(None, tmp_path) == first
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret("e" * 32, tmp_path) == "e" * 32
    with pytest.raises(ValueError, match="at least"):
        load_or_create_secret("short", tmp_path)


def test_token_lifetime_is_the_ttl() -> None:
    clock = ManualClock()
    token = issue_token(SECRET, Role.ADMIN, "ops", 3600, clock.now())
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["exp"] - claims["iat"] == int(timedelta(hours=1).total_seconds())
