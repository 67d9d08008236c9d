"""WebSocket over trio-websocket (wsproto underneath): the reference implementation.

trio-websocket needs a background reader task per connection and asks for a
nursery to run it in. Instead of a nursery per connection, every reader runs
in one *hub* nursery per trio run, owned by a system task started on first
use (so it lives as long as the run and is cancelled when the main task ends).
The stream is opened here (:func:`.dial.open_stream`), so timeouts, TLS checks
and closing the socket stay under our control.

A reader that fails must never take the hub down: each one runs under a guard
that records how it ended. That record is also how a rejected handshake
(which trio-websocket raises *in the reader task*) reaches :func:`connect`.
"""

from __future__ import annotations

import contextlib
import http
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import attrs
import trio
import trio_websocket
from trio.lowlevel import RunVar

from ..errors import FrameTooLargeError, HandshakeError, LinkClosedError
from .dial import Stream, Target, open_stream, rejection_error
from .interface import CLOSE_TIMEOUT, close_arguments
from .pipe import set_reset_on_close

__all__ = ["TrioWebSocket", "connect"]

# trio-websocket closes with 1009 and this reason when a message is over its limit.
_TOO_BIG_REASON = "Exceeded maximum message size"


@attrs.define(eq=False)
class _Hub:
    ready: trio.Event = attrs.Factory(trio.Event)
    nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.ready.set()
            await trio.sleep_forever()


_HUB: RunVar[_Hub] = RunVar("orchestrator.transport.trio_ws.hub")


async def _hub_nursery() -> trio.Nursery:
    try:
        hub = _HUB.get()
    except LookupError:
        hub = _Hub()
        _HUB.set(hub)  # before any checkpoint, so concurrent first callers share it
        trio.lowlevel.spawn_system_task(hub.run, name="orchestrator.transport.trio_ws.hub")
    await hub.ready.wait()
    assert hub.nursery is not None
    return hub.nursery


@attrs.define(eq=False)
class _ReaderHost:
    """Stands in for the nursery trio-websocket asks for: runs the reader in the hub."""

    nursery: trio.Nursery
    finished: trio.Event = attrs.Factory(trio.Event)
    error: Exception | None = None

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any, **_: Any) -> None:
        self.nursery.start_soon(self._guard, fn, *args)

    async def _guard(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # one link's failure: recorded for it, never raised in the hub
            self.error = exc
        finally:
            self.finished.set()


@attrs.define(eq=False, repr=False)
class TrioWebSocket:
    """A trio-websocket connection behind the :class:`.WebSocket` interface."""

    _conn: trio_websocket.WebSocketConnection
    _stream: Stream
    _label: str
    _max_frame_bytes: int
    subprotocol: str | None = None
    _closed: bool = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label} code={self.close_code}>"

    @property
    def close_code(self) -> int | None:
        reason = self._conn.closed
        return None if reason is None else int(reason.code)

    writer_busy = False  # each send_message writes its own frame

    def send_text_soon(self, text: str, *, yielding: bool = True) -> Awaitable[None]:
        return self.send_text(text)

    async def send_text(self, text: str) -> None:
        try:
            await self._conn.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    async def receive_text(self) -> str:
        try:
            message = await self._conn.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            if (
                reason is not None
                and reason.code == 1009
                and (reason.reason or "").startswith(_TOO_BIG_REASON)
            ):
                # trio-websocket stops reading but leaves the socket open.
                await trio.aclose_forcefully(self._stream)
                raise FrameTooLargeError(
                    f"a message from {self._label} exceeded {self._max_frame_bytes} bytes; "
                    "the link was closed with 1009"
                ) from exc
            raise self._closed_error(exc) from exc
        if isinstance(message, str):
            return message
        try:
            return message.decode()
        except UnicodeDecodeError as exc:
            await self.aclose(1007, "invalid UTF-8")
            raise LinkClosedError(f"{self._label} sent invalid UTF-8; link closed") from exc

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        code, reason = close_arguments(code, reason)
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._conn.aclose(code, reason or None)  # raises if the link is gone
        await trio.aclose_forcefully(self._stream)  # also ends the reader task

    def abort(self) -> None:
        stream = self._stream
        sock = (stream if isinstance(stream, trio.SocketStream) else stream.transport_stream).socket
        if sock.fileno() != -1:
            set_reset_on_close(sock)
        sock.close()  # the reader task sees the socket closed and ends

    def _closed_error(self, exc: trio_websocket.ConnectionClosed) -> LinkClosedError:
        reason = exc.reason
        code = 1006 if reason is None else reason.code
        detail = f": {reason.reason}" if reason is not None and reason.reason else ""
        return LinkClosedError(f"link to {self._label} closed (code {code}){detail}")


async def connect(
    target: Target,
    *,
    subprotocols: Sequence[str] = (),
    max_frame_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> TrioWebSocket:
    """Open a client WebSocket to ``target``; errors as :func:`orchestrator.transport.connect`.

    Cancellation closes the socket (which ends the reader task).
    """
    stream = await open_stream(target, ssl_context)
    try:
        conn = await _handshake(stream, target, subprotocols, max_frame_bytes)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return TrioWebSocket(conn, stream, target.redacted, max_frame_bytes, conn.subprotocol)


async def _handshake(
    stream: Stream, target: Target, subprotocols: Sequence[str], max_frame_bytes: int
) -> trio_websocket.WebSocketConnection:
    host = _ReaderHost(await _hub_nursery())
    headers = []
    if target.authorization is not None:
        headers.append((b"Authorization", target.authorization.encode()))
    opened: list[trio_websocket.WebSocketConnection] = []
    async with trio.open_nursery() as race:

        async def open_connection() -> None:
            opened.append(
                await trio_websocket.wrap_client_stream(
                    cast(trio.Nursery, host),
                    stream,
                    target.host_header,
                    target.resource,
                    subprotocols=list(subprotocols),
                    extra_headers=headers,
                    max_message_size=max_frame_bytes,
                )
            )
            race.cancel_scope.cancel()

        race.start_soon(open_connection)
        await host.finished.wait()  # the reader ended before the handshake completed
        race.cancel_scope.cancel()
    if opened:
        return opened[0]
    error = host.error
    if isinstance(error, trio_websocket.ConnectionRejected):
        status = error.status_code
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        raise rejection_error(status, phrase, target.redacted) from error
    raise HandshakeError(f"{target.redacted} closed the connection during the WebSocket handshake") from error
