"""What a link does with its ``websockets`` protocol object at the close, beyond its API.

Where a link reads and writes its everyday frames itself (see :mod:`.frames`), it
closes the same way: :func:`queue_close` writes this side's Close as the protocol
object's ``send_close`` would, masked from the pool instead of from a system call
of its own, and :func:`read_server_close` finds the server's answering Close in
what a closing client reads, without the protocol object's chain of generators;
:func:`answer_close` is a server's answer to its client's Close, found the same
way. Each leaves the protocol object as its own methods would. :func:`release` lets go
of a protocol object a link is done with.
"""

from __future__ import annotations

import itertools
from typing import Any

from websockets.exceptions import ProtocolError
from websockets.frames import Close
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State

from . import frames

__all__ = ["answer_close", "queue_close", "read_server_close", "release"]

_SPENT = itertools.repeat(None)
"""Stands in for a released protocol object's parser: takes any step, does nothing."""


def release(proto: WsProtocol) -> None:
    """Let go of a protocol object the link is done with (socket closed, or handshake
    over and replaced). Its parser is a generator whose frame holds the object, a
    reference cycle: without this, every finished link and its buffers waited for a
    full garbage collection, which a busy process runs rarely, and a 5-minute soak's
    RSS crept up by 17 %. Closing the generator ends the cycle, so reference counting
    frees the object as soon as nothing else holds it; bytes fed to it later are ignored."""
    parser: Any = proto.parser
    if parser is not _SPENT:
        proto.parser = _SPENT  # type: ignore[assignment]
        parser.close()
    # A refused handshake's error (kept as the cause of the one raised for it) is in a
    # cycle with the response it carries, and its traceback's frames hold the object.
    failure, proto.handshake_exc = proto.handshake_exc, None
    if failure is not None:
        failure.__traceback__ = None  # frames inside websockets' parser: nothing to see


def queue_close(proto: WsProtocol, code: int, reason: str, *, masked: bool) -> None:
    """Queue this side's Close on an open ``proto``, leaving it as its own ``send_close``
    does (the Close sent, CLOSING), with the frame built here."""
    close = Close(code, reason)
    proto.writes.append(frames.close_frame(close.serialize(), masked=masked))
    proto.close_sent = close
    proto.state = State.CLOSING


def read_server_close(proto: WsProtocol, data: bytes | bytearray, *, limit: int) -> bool | None:
    """Bytes a closing client read from the server, from a frame boundary on: True once
    the server's Close is in (recorded in ``proto`` as its parser records it, and
    ``proto`` let go), False while nothing but messages came (dropped: the client
    reads no more), None if they are not that simple (see frames.peer_close), or
    the Close is malformed: then the protocol object must read them, and all after."""
    said = frames.peer_close(data, limit=limit)
    if said is True:
        return False
    if said is False:
        return None
    try:
        close = Close.parse(said)
    except (ProtocolError, UnicodeDecodeError):
        return None  # the protocol object fails it, as it would have
    proto.close_rcvd, proto.close_rcvd_then_sent = close, False
    release(proto)
    return True


def answer_close(proto: WsProtocol, payload: bytes) -> bool:
    """A server's open ``proto`` after its client's Close (``payload``) was read, as its own
    parser leaves it: the Close echoed and the end of TCP asked for (both queued),
    CLOSING, and discarding whatever still comes. False, with nothing changed, if the
    Close is malformed: then the protocol object must read it, and fail the link."""
    try:
        close = Close.parse(payload)
    except (ProtocolError, UnicodeDecodeError):
        return False
    proto.close_rcvd = close
    proto.writes.append(frames.close_frame(payload, masked=False))  # the payload, echoed
    proto.close_sent, proto.close_rcvd_then_sent = close, True
    proto.state = State.CLOSING
    proto.send_eof()
    parser = proto.discard()
    next(parser)
    proto.parser = parser
    return True
