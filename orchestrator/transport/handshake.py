"""Opening a sans-IO link: the client's HTTP upgrade, and what the server's shares.

:func:`connect` dials, sends the upgrade request, reads the response and hands
back a :class:`~.sansio.SansIOWebSocket`. When the response ends exactly where the
read ended (:func:`ends_at_blank_line`), the link starts at a frame boundary with a
fresh protocol object (:func:`_opened`), so it keeps no handshake state and reads
frames itself (see :mod:`.frames`).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any, TypeVar

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI

from ..errors import HandshakeError
from .closing import release
from .dial import Target, open_stream, rejection_error
from .pipe import Pipe, pipe_for
from .sansio import WIRE_LOG, SansIOWebSocket

__all__ = ["connect", "ends_at_blank_line", "feed_handshake"]

_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)

E = TypeVar("E")


def feed_handshake(proto: Any, data: bytes | bytearray, kind: type[E]) -> tuple[E | None, list[Any]]:
    """Feed handshake bytes (empty = EOF) to a websockets protocol; the first ``kind``
    event (the HTTP request or response) and whatever frames arrived right after it."""
    if data:
        proto.receive_data(data)
    else:
        proto.receive_eof()
    events = proto.events_received()
    for index, event in enumerate(events):
        if isinstance(event, kind):
            return event, events[index + 1 :]
    return None, []


async def connect(
    target: Target,
    *,
    subprotocols: Sequence[str] = (),
    max_frame_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> SansIOWebSocket:
    """Open a client WebSocket to ``target``; errors as :func:`orchestrator.transport.connect`.

    Cancellation closes the socket.
    """
    pipe = pipe_for(await open_stream(target, ssl_context))
    try:
        return await _handshake(pipe, target, subprotocols, max_frame_bytes)
    except BaseException:
        pipe.close()
        raise


async def _handshake(
    pipe: Pipe, target: Target, subprotocols: Sequence[str], max_frame_bytes: int
) -> SansIOWebSocket:
    path, _, query = target.resource.partition("?")
    proto = ClientProtocol(
        WebSocketURI(target.secure, target.host, target.port, path, query),
        subprotocols=[Subprotocol(name) for name in subprotocols] or None,
        max_size=max_frame_bytes,
        logger=WIRE_LOG,
    )
    try:
        return await _negotiate(proto, pipe, target, max_frame_bytes)
    except BaseException:
        release(proto)  # no link was made: let it go now
        raise


async def _negotiate(
    proto: ClientProtocol, pipe: Pipe, target: Target, max_frame_bytes: int
) -> SansIOWebSocket:
    request = proto.connect()
    if target.authorization is not None:
        request.headers["Authorization"] = target.authorization
    proto.send_request(request)
    response: Response | None = None
    seen = b""  # the handshake's bytes: did anything follow the response?
    try:
        await pipe.send_all(b"".join(proto.data_to_send()))
        while response is None:
            data = await pipe.receive_some()
            seen += data
            response, early = feed_handshake(proto, data, Response)
            if response is None and (not data or proto.handshake_exc is not None):
                raise HandshakeError(
                    f"{target.redacted} closed the connection during the WebSocket handshake"
                ) from proto.handshake_exc
    except _LINK_ERRORS as exc:
        raise HandshakeError(
            f"{target.redacted} dropped the connection during the WebSocket handshake"
        ) from exc
    failure = proto.handshake_exc
    if isinstance(failure, InvalidStatus):
        status = failure.response
        raise rejection_error(status.status_code, status.reason_phrase, target.redacted) from failure
    if failure is not None:
        raise HandshakeError(
            f"invalid WebSocket handshake response from {target.redacted}: {failure}"
        ) from failure
    boundary = ends_at_blank_line(seen) and not early and not proto.reader.buffer and not proto.extensions
    if boundary:
        proto = _opened(proto, max_frame_bytes)
    ws = SansIOWebSocket(pipe, proto, target.redacted, max_frame_bytes, proto.subprotocol)
    await ws.accept_early_frames(early)
    if boundary:
        ws.at_frame_boundary()
    return ws


def ends_at_blank_line(handshake: bytes) -> bool:
    """Whether the read bytes end exactly where the HTTP head ends (its first blank
    line): then nothing after it was read, and the next byte starts a frame. (Ending in
    a blank line is not enough: a frame's header or mask can end in those bytes too.)"""
    return handshake.find(b"\r\n\r\n") + 4 == len(handshake)


def _opened(handshaken: ClientProtocol, max_frame_bytes: int) -> ClientProtocol:
    """A protocol object born OPEN, in place of one that has just completed its handshake.

    The generator that parsed the handshake response keeps it (and its headers,
    2 KB) alive for the life of the link. Only valid when no byte followed the
    response (the read ended with it and nothing is buffered or parsed), so the
    new parser starts exactly at the first frame.
    """
    opened = ClientProtocol(handshaken.uri, state=State.OPEN, max_size=max_frame_bytes, logger=WIRE_LOG)
    opened.subprotocol = handshaken.subprotocol
    release(handshaken)
    return opened
