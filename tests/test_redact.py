"""Credentials never reach a message: URLs, free text and log records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from orchestrator.redact import SecretFilter, redact_text, redact_url

TOKEN = "tok-4f9a1c"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"wss://platform.example/socket/websocket?customer_id=c1&auth_token={TOKEN}",
            "wss://platform.example/socket/websocket?customer_id=***&auth_token=***",
        ),
        (
            f"ws://bot:{TOKEN}@127.0.0.1:8080/ws/agent",
            "ws://bot:***@127.0.0.1:8080/ws/agent",
        ),
        (f"wss://h/p?{TOKEN}", "wss://h/p?***"),
        (f"wss://h/p?a=&b={TOKEN}#frag-{TOKEN}", "wss://h/p?a=***&b=***#***"),
        ("wss://h:443/p", "wss://h:443/p"),
        (f"wss://[::1/p?auth_token={TOKEN}", "wss://[::1/p?***"),
        # Not a URL urlsplit reads (an unclosed bracket): the password goes too.
        (f"ws://user:{TOKEN}@[::1/x?token={TOKEN}", "ws://user:***@[::1/x?***"),
        (f"ws://user:p@{TOKEN}@[::1", "ws://user:***@[::1"),
        (f"wss://me@example.com:{TOKEN}@[::1/ws", "wss://me@example.com:***@[::1/ws"),
    ],
)
def test_redact_url_masks_query_values_password_and_fragment(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert TOKEN not in redact_url(url)


def test_redact_url_keeps_user_without_password() -> None:
    assert redact_url("wss://alice@h/p") == "wss://alice@h/p"


def test_redact_text_masks_registered_secrets_longest_first() -> None:
    text = f"key={TOKEN}-extra and again {TOKEN}"
    assert redact_text(text, [TOKEN, f"{TOKEN}-extra", ""]) == "key=*** and again ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /ws?auth_token={TOKEN}&x=1", "GET /ws?auth_token=***&x=***"),
        (f"token={TOKEN} next", "token=*** next"),
        (f"api_key: {TOKEN}", "api_key: ***"),
        (f'{{"type": "agent_auth", "botToken": "{TOKEN}"}}', '{"type": "agent_auth", "botToken": "***"}'),
        (f"{{'botToken': '{TOKEN}'}}", "{'botToken': '***'}"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
        (
            f"see wss://h/ws?customer_id=c9&auth_token={TOKEN} now",
            "see wss://h/ws?customer_id=***&auth_token=*** now",
        ),
        ("used 12 tokens, max_tokens 40", "used 12 tokens, max_tokens 40"),
    ],
)
def test_redact_text_masks_credential_shapes(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, SecretFilter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    secret_filter = SecretFilter(["registered-secret"])
    handler.addFilter(secret_filter)
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, secret_filter
    finally:
        logger.removeHandler(handler)


def test_secret_filter_masks_message_and_args(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, secret_filter = captured
    secret_filter.add_secret("late-secret")
    logger.info("connecting to %s", f"wss://h/ws?auth_token={TOKEN}")
    logger.warning("auth %(token)s", {"token": "registered-secret"})
    logger.error("payload %r", {"botToken": TOKEN, "note": "late-secret"})
    logger.info(f"token={TOKEN}")
    out = stream.getvalue()
    assert TOKEN not in out
    assert "registered-secret" not in out and "late-secret" not in out
    assert "connecting to wss://h/ws?auth_token=***" in out
    assert out.count("***") >= 5


def test_secret_filter_masks_tracebacks(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    try:
        raise RuntimeError(f"failed wss://h/ws?auth_token={TOKEN} with registered-secret")
    except RuntimeError:
        logger.exception("link failed")
    out = stream.getvalue()
    assert "RuntimeError" in out and "link failed" in out
    assert TOKEN not in out and "registered-secret" not in out


def test_secret_filter_survives_bad_format_args(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    logger.info("two %s %s", "registered-secret")  # one argument missing
    out = stream.getvalue()
    assert "registered-secret" not in out and "two" in out


def test_secret_filter_never_drops_records(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    for n in range(3):
        logger.debug("line %d", n)
    assert stream.getvalue().splitlines() == ["line 0", "line 1", "line 2"]


def test_a_url_in_a_message_keeps_the_punctuation_after_it() -> None:
    text = f"cannot connect to ws://h:1/x?customer_id=c&auth_token={TOKEN}: all attempts failed"
    expected = "cannot connect to ws://h:1/x?customer_id=***&auth_token=***: all attempts failed"
    assert redact_text(text) == expected
    assert redact_text(text, [TOKEN]) == expected
    assert redact_text("see https://example.com/docs.") == "see https://example.com/docs."


def test_a_short_secret_is_masked_where_it_stands_alone_not_inside_words() -> None:
    text = "handshake for k failed: auth_token=k&k=1 (k) kk"
    assert redact_text(text, ["k"]) == "handshake for *** failed: auth_token=***&***=1 (***) kk"
    # A secret of SHORT_SECRET characters or more is masked wherever it appears.
    assert redact_text(f"x{TOKEN}y", [TOKEN]) == "x***y"
