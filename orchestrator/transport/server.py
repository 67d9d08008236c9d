"""A WebSocket server on the sans-IO core: for the sandbox platform, tests and benchmarks.

One task per accepted connection runs the handshake and then the handler;
nothing else runs per connection. ``reject`` lets a test
or the sandbox refuse a handshake with any HTTP status (401 for a bad token).
"""

from __future__ import annotations

import errno
import http
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

import attrs
import trio
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ..errors import FrameTooLargeError, LinkError
from .accepted import SansIOServerWebSocket
from .closing import release
from .dial import Stream
from .handshake import ends_at_blank_line, feed_handshake
from .interface import DEFAULT_MAX_FRAME_BYTES, Handler, Reject
from .pipe import Pipe, pipe_for
from .sansio import WIRE_LOG

__all__ = ["SansIOServerWebSocket", "serve"]

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to send its handshake request before the socket is dropped."""


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    subprotocols: Sequence[str] = (),
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    reject: Reject | None = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept WebSocket connections on ``host:port`` until cancelled.

    ``task_status.started(port)`` reports the bound port (pass ``port=0`` for a
    free one). Each connection runs ``handler(ws)`` in its own task; the link is
    closed with 1000 when the handler returns. A handler ending in a
    :class:`~orchestrator.errors.LinkError` or
    :class:`~orchestrator.errors.FrameTooLargeError` (the client went away or
    misbehaved) ends only that connection; any other exception propagates and
    stops the server. The server picks the first of its ``subprotocols`` the
    client offers, or none. ``reject(path, query, headers)`` returning a status
    refuses the handshake with it. With ``ssl_context`` the server speaks TLS.
    Cancellation closes the listeners and every connection.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]
    acceptor = _Acceptor(
        handler=handler,
        subprotocols=[Subprotocol(name) for name in subprotocols],
        max_frame_bytes=max_frame_bytes,
        reject=reject,
        ssl_context=ssl_context,
        handshake_timeout=handshake_timeout,
    )
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, nursery, acceptor.serve_connection)
        task_status.started(bound_port)


#: ``accept`` failures that mean "no descriptors or memory left for now": wait, then retry.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY_S = 0.1
log = logging.getLogger("orchestrator.transport.server")


async def accept_loop(
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    serve: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    """Accept connections until cancelled, each served in its own task in ``nursery``.

    trio's ``serve_listeners`` does this too, but then closes every stream with
    ``aclose_forcefully``: a cancel scope and a ``Cancelled`` raised and caught per
    connection, a sixth of what closing a link cost the server. ``serve`` closes its
    own socket."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accepting a connection failed (%s); retrying in %g s", exc, ACCEPT_RETRY_S)
                await trio.sleep(ACCEPT_RETRY_S)
            else:
                nursery.start_soon(serve, stream)


class _ServerProtocol(ServerProtocol):
    """Picks the first of the server's subprotocols the client offers. (A method here, not
    websockets' ``select_subprotocol`` argument: that one is bound onto each object, a
    reference cycle that kept every finished link in memory until a full collection.)"""

    def select_subprotocol(self, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        for name in self.available_subprotocols or ():
            if name in offered:
                return name
        return None


@attrs.frozen
class _Acceptor:
    handler: Handler
    subprotocols: list[Subprotocol]
    max_frame_bytes: int
    reject: Reject | None
    ssl_context: ssl.SSLContext | None
    handshake_timeout: float

    async def serve_connection(self, tcp: trio.SocketStream) -> None:
        """Serve one accepted connection; its socket is closed when this returns."""
        peer = _peer(tcp)
        stream: Stream = tcp
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(tcp, self.ssl_context, server_side=True, https_compatible=True)
        except BaseException:
            tcp.socket.close()
            raise
        pipe = pipe_for(stream)
        try:
            ws = None
            with trio.move_on_after(self.handshake_timeout):
                ws = await self._handshake(pipe, peer)
            if ws is None:
                return
            try:
                await self.handler(ws)
            except* (LinkError, FrameTooLargeError):
                pass  # the client went away or broke the rules: this connection only
            finally:
                if trio.current_effective_deadline() != -math.inf:
                    await ws.aclose()
                # else the server is being cancelled: drop at once, no close handshake
        finally:
            pipe.close()

    async def _handshake(self, pipe: Pipe, peer: str) -> SansIOServerWebSocket | None:
        proto = _ServerProtocol(
            subprotocols=self.subprotocols or None,
            max_size=self.max_frame_bytes,
            logger=WIRE_LOG,
        )
        ws = None
        try:
            ws = await self._negotiate(proto, pipe, peer)
        finally:
            if ws is None:
                release(proto)  # no link was made: let it go now (see release)
        return ws

    async def _negotiate(self, proto: ServerProtocol, pipe: Pipe, peer: str) -> SansIOServerWebSocket | None:
        request: Request | None = None
        seen = b""  # the handshake's bytes: did anything follow the request?
        while request is None:
            try:
                data = await pipe.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None  # reset, or a failed TLS handshake
            seen += data
            request, early = feed_handshake(proto, data, Request)
            if request is None and (not data or proto.handshake_exc is not None):
                await _write_quietly(pipe, proto.data_to_send())  # the 4xx, if any
                return None
        path, _, query_string = request.path.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        status = self.reject(path, query, request.headers) if self.reject else None
        if status is None:
            response = proto.accept(request)
        else:
            phrase = http.HTTPStatus(status).phrase
            response = proto.reject(status, f"{phrase}\n")
        proto.send_response(response)
        if not await _write_quietly(pipe, proto.data_to_send()) or response.status_code != 101:
            return None
        ws = SansIOServerWebSocket(
            pipe,
            proto,
            f"client {peer}",
            self.max_frame_bytes,
            proto.subprotocol,
            path=path,
            query=query,
            headers=request.headers,
        )
        await ws.accept_early_frames(early)
        if ends_at_blank_line(seen) and not early:
            ws.at_frame_boundary()
        return ws


async def _write_quietly(pipe: Pipe, writes: list[bytes]) -> bool:
    """Write handshake bytes (and the EOF websockets may ask for); False if the client is gone."""
    eof = bool(writes) and not writes[-1]
    try:
        await pipe.send_all(b"".join(writes))
        if eof:
            await pipe.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _peer(tcp: trio.SocketStream) -> str:
    try:
        address = tcp.socket.getpeername()
    except OSError:
        return "(gone)"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
