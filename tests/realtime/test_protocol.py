"""The websocket protocol without a socket: client messages in, replies out, rate limits on a given clock."""

from __future__ import annotations

import orjson
import pytest

from websocket.errors import ProtocolError, RateLimited
from websocket.protocol import (
    MAX_MESSAGE_BYTES,
    ClientMessage,
    RateLimiter,
    after_seq_of,
    parse_client_message,
    reply_error,
    reply_ok,
)


def test_a_command_is_its_type_its_id_and_the_rest() -> None:
    msg = parse_client_message('{"type": "job.accept", "id": 7, "job_id": "job_x", "prep_minutes": 5}')
    assert msg == ClientMessage("job.accept", 7, {"job_id": "job_x", "prep_minutes": 5})
    assert parse_client_message(b'{"type": "ping"}') == ClientMessage("ping", None, {})


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "malformed_json"),
        ("[1, 2]", "bad_message"),
        ('"text"', "bad_message"),
        ('{"type": "ping", "id": true}', "bad_id"),
        ('{"type": "ping", "id": 1.5}', "bad_id"),
        ('{"type": "ping", "id": {"a": 1}}', "bad_id"),
        ('{"type": "ping", "id": "' + "x" * 101 + '"}', "bad_id"),
        ('{"id": 1}', "bad_type"),
        ('{"type": "Job.Accept"}', "bad_type"),
        ('{"type": "job..accept"}', "bad_type"),
        ('{"type": 42}', "bad_type"),
        ('{"type": "' + "a" * 65 + '"}', "bad_type"),
    ],
)
def test_bad_messages_are_refused_with_a_code(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(raw)
    assert caught.value.code == code


def test_a_message_without_a_type_is_answered_with_its_own_id() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"id": "abc", "job_id": "x"}')
    assert caught.value.msg_id == "abc"


def test_size_is_counted_in_bytes_before_parsing() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type": "ping", "pad": "' + "é" * MAX_MESSAGE_BYTES + '"}')
    assert caught.value.code == "message_too_large"
    assert caught.value.details == {"limit": MAX_MESSAGE_BYTES}


def test_replies_echo_the_id_and_share_the_http_error_shape() -> None:
    assert reply_ok("a", {"x": 1}) == {"type": "reply", "id": "a", "ok": True, "data": {"x": 1}}
    error = reply_error(3, "unavailable", "PostgreSQL is down", {"dependency": "postgres"}, retry_after=2)
    assert error == {
        "type": "reply",
        "id": 3,
        "ok": False,
        "error": {
            "code": "unavailable",
            "message": "PostgreSQL is down",
            "details": {"dependency": "postgres"},
            "retry_after": 2,
        },
    }
    assert "retry_after" not in reply_error(None, "bad", "no")["error"]
    orjson.dumps(error)  # plain JSON


@pytest.mark.parametrize("value", [None, -1, 1.5, True, "3"])
def test_resume_needs_a_non_negative_integer(value: object) -> None:
    with pytest.raises(ProtocolError):
        after_seq_of({"after_seq": value})
    assert after_seq_of({"after_seq": 0}) == 0


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10.0, burst=5.0)
    for _ in range(5):
        limiter.check(100.0)
    with pytest.raises(RateLimited) as caught:
        limiter.check(100.0, msg_id="sixth")
    assert caught.value.msg_id == "sixth" and caught.value.retry_after == 1
    limiter.check(100.125)  # an eighth of a second buys one more at 10 a second
    with pytest.raises(RateLimited):
        limiter.check(100.125)


def test_a_client_at_the_rate_is_never_limited() -> None:
    limiter = RateLimiter(rate=20.0, burst=40.0)
    for n in range(10_000):
        limiter.check(n / 20.0)  # exactly twenty a second, forever
