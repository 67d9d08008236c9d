"""What every WebSocket implementation offers: the two protocols and shared limits.

Both implementations (:mod:`.sansio`, :mod:`.trio_ws`) satisfy :class:`WebSocket`
structurally; the server of :mod:`.server` hands handlers a :class:`ServerWebSocket`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_MAX_FRAME_BYTES",
    "Handler",
    "Reject",
    "ServerWebSocket",
    "WebSocket",
    "close_arguments",
]

DEFAULT_MAX_FRAME_BYTES = 1 << 20
"""Largest inbound message accepted by default (1 MiB); larger ones close the link with 1009."""

CLOSE_TIMEOUT = 3.0
"""Seconds ``aclose`` (or a closing receive) waits for the peer's side of the close handshake."""

# Codes an endpoint may put in a close frame (RFC 6455 section 7.4, IANA registry).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
_MAX_CLOSE_REASON_BYTES = 123


def close_arguments(code: int, reason: str) -> tuple[int, str]:
    """A close code and reason any peer accepts: an unsendable code becomes 1011,
    the reason is cut to the 123 bytes a close frame can carry."""
    if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        code = 1011
    raw = reason.encode()[:_MAX_CLOSE_REASON_BYTES]
    return code, raw.decode(errors="ignore")


class WebSocket(Protocol):
    """One open WebSocket carrying text messages.

    ``send_text`` may be called from several tasks at once (frames are never
    interleaved); ``receive_text`` from one task at a time.
    """

    subprotocol: str | None
    """The subprotocol the server selected, or ``None``."""

    @property
    def close_code(self) -> int | None:
        """The code the link closed with, ``None`` while open.

        The peer's close frame if one came, else the one this side sent (a failure
        such as 1009 or 1007, or an unanswered ``aclose``), else 1006 (dropped).
        """
        ...

    async def send_text(self, text: str) -> None:
        """Send one text message.

        Raises :class:`~orchestrator.errors.LinkClosedError` when the link is gone.
        Cancelling a send may close the link: a half-written frame cannot be resumed.
        """
        ...

    def send_text_soon(self, text: str, *, yielding: bool = True) -> Awaitable[None] | None:
        """:meth:`send_text`, done at once where it can be: None once the message has
        left, else what to await to send it, to finish sending it, or (every few
        messages, as :meth:`send_text` does, unless not ``yielding``: for a caller that
        waits on its socket next, which lets the others run) to let other tasks run. The
        fast path of a reply: no coroutine and no cancellation check when the socket takes
        it at once."""
        ...

    @property
    def writer_busy(self) -> bool:
        """Another task is writing to the link: a message sent now joins what it writes,
        so cancelling its sender can no longer cut the link (the message still goes).
        Always False where every sender writes its own message."""
        ...

    async def receive_text(self) -> str:
        """Wait for the next message (binary messages are decoded as UTF-8).

        Raises :class:`~orchestrator.errors.LinkClosedError` once the peer closed
        or the link dropped (messages that arrived before the close are returned
        first), and :class:`~orchestrator.errors.FrameTooLargeError` for a message
        over ``max_frame_bytes``, after closing the link with code 1009.
        Cancellation leaves the link usable. WebSocket pings are answered from
        in here (sans-IO), so keep a task receiving on any link that must stay up.
        """
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the link: send a close frame, wait a bounded time for the peer, drop the socket.

        Idempotent, never raises, finishes within :data:`CLOSE_TIMEOUT` even when
        the caller is cancelled (the wait is shielded). A sans-IO client on plain
        TCP, with no other task reading it, returns once its close frame is
        written: its socket waits for the server to close TCP (at most
        :data:`CLOSE_TIMEOUT`) in the background, with no task of its own (see
        :mod:`.readiness`), and :attr:`close_code` becomes the server's once its
        answer is read there.
        """
        ...

    def abort(self) -> None:
        """Drop the connection now with a TCP reset and no close frame.

        What a network failure looks like to the peer (the sandbox and tests use
        it to simulate one). Synchronous and idempotent; blocked calls on this
        link then raise :class:`~orchestrator.errors.LinkClosedError`.
        """
        ...


class ServerWebSocket(WebSocket, Protocol):
    """The server's end of an accepted WebSocket, with what the client asked for."""

    @property
    def path(self) -> str:
        """The request path, without the query string."""
        ...

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters (the last value wins when a key repeats)."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The handshake request headers (case-insensitive keys)."""
        ...


Handler = Callable[[ServerWebSocket], Awaitable[None]]
"""Serves one accepted connection; the link is closed (1000) when it returns."""

Reject = Callable[[str, Mapping[str, str], Mapping[str, str]], "int | None"]
"""``reject(path, query, headers)`` returns an HTTP status to refuse the handshake, or ``None``."""
