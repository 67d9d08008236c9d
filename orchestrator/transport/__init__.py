"""The one module that owns the WebSocket libraries.

Everything above this package speaks :class:`WebSocket` (text in, text out,
:mod:`orchestrator.errors` on failure) and never sees a third-party exception::

    transport/
      interface.py   WebSocket / ServerWebSocket protocols, close limits
      dial.py        URL -> Target (safety rules, redaction) -> TCP/TLS stream
      pipe.py        the byte pipe under sansio: raw fd I/O for TCP, trio streams for TLS
      readiness.py   TCP reads wait here: readers woken in the order their bytes came
      sansio.py      client on websockets' sans-IO core, no task per connection
      handshake.py   opening a sans-IO link: the client's upgrade, what the server's shares
      frames.py      the everyday frame (one whole text message) read and written directly
      closing.py     the Close written and the server's read directly; protocol objects let go
      trio_ws.py     client on trio-websocket (reader task in one shared nursery)
      server.py      serve(): the server, on the sans-IO core

Two client implementations exist so they can be measured against each other
(``benchmarks/transport.py``); :data:`DEFAULT_IMPLEMENTATION` is the faster one.
On the 2-core development host (sequential echo of a 200-byte JSON text per
connection, server and client in separate processes; the host's load varies, and
CPU per call with it, by up to a third from one hour to the next: compare within a run):

=============  ===============  ===============  ===============  ==============
connections    sansio calls/s   trio-websocket   client CPU/call  memory/conn
=============  ===============  ===============  ===============  ==============
1,000          24,500           4,400            41 µs vs 228     6 vs 18 KiB
10,000         21,000           2,400            47 µs vs 394 µs  4 vs 17 KiB
=============  ===============  ===============  ===============  ==============

Error mapping at this boundary:

========================================  ==========================================
cause                                     raised
========================================  ==========================================
other scheme, ``ws://`` off loopback      :class:`~orchestrator.errors.UnsafeURLError`
certificate fails verification            :class:`~orchestrator.errors.PermanentLinkError`
handshake answered 400 / 401 / 403        :class:`~orchestrator.errors.PermanentLinkError`
other status, refused, reset, DNS         :class:`~orchestrator.errors.HandshakeError`
``connect_timeout`` elapsed               :class:`~orchestrator.errors.LinkTimeout`
peer closed / link dropped                :class:`~orchestrator.errors.LinkClosedError`
message over ``max_frame_bytes``          :class:`~orchestrator.errors.FrameTooLargeError`
========================================  ==========================================

No message or repr carries the URL's query string (the auth token): they show
:func:`orchestrator.redact.redact_url` of it.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..errors import ConfigError, LinkTimeout
from . import handshake, trio_ws
from .dial import Target, is_loopback, parse_target
from .interface import (
    CLOSE_TIMEOUT,
    DEFAULT_MAX_FRAME_BYTES,
    Handler,
    Reject,
    ServerWebSocket,
    WebSocket,
)
from .server import serve

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_IMPLEMENTATION",
    "DEFAULT_MAX_FRAME_BYTES",
    "IMPLEMENTATIONS",
    "Handler",
    "Reject",
    "ServerWebSocket",
    "Target",
    "WebSocket",
    "connect",
    "is_loopback",
    "parse_target",
    "serve",
]

IMPLEMENTATIONS = ("sansio", "trio-websocket")
"""Names accepted by ``connect(implementation=...)``."""

DEFAULT_IMPLEMENTATION = "sansio"
"""Chosen by measurement (``benchmarks/transport.py``): more calls/s, less memory per link."""


async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    allow_insecure: bool = False,
    implementation: str = DEFAULT_IMPLEMENTATION,
) -> WebSocket:
    """Open a client WebSocket to ``url`` (``wss://``, or ``ws://`` to loopback).

    ``wss://`` verifies the server's certificate against ``ssl_context``, by
    default the system trust store with hostname checking. ``subprotocols``
    are offered in order of preference; the one selected is
    ``ws.subprotocol``. Inbound messages over ``max_frame_bytes`` close the
    link with 1009. Raises as tabled in the module docstring; ``UnsafeURLError``
    comes before any network I/O. The whole open (TCP, TLS, HTTP upgrade) must
    finish within ``connect_timeout`` seconds. Cancellation closes whatever was
    opened. The caller owns the result and must ``aclose()`` it.
    """
    target = parse_target(url, allow_insecure=allow_insecure)
    if isinstance(subprotocols, str):
        subprotocols = (subprotocols,)
    opener: Callable[..., Awaitable[WebSocket]]
    if implementation == "sansio":
        opener = handshake.connect
    elif implementation == "trio-websocket":
        opener = trio_ws.connect
    else:
        raise ConfigError(
            f"unknown WebSocket implementation {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}"
        )
    with trio.move_on_after(connect_timeout):
        return await opener(
            target,
            subprotocols=subprotocols,
            max_frame_bytes=max_frame_bytes,
            ssl_context=ssl_context,
        )
    raise LinkTimeout(f"connecting to {target.redacted} took longer than {connect_timeout:g} s")
