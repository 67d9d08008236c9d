"""The everyday WebSocket frame, read and written without the protocol object's machinery.

Nearly every frame on a link is one whole text message: one frame, FIN set, no
extension bits. The ``websockets`` protocol object parses each through a chain of
generators and builds each through a dataclass, which costs more than the system
call that carries it. :func:`scan` finds such frames in the bytes read and hands
everything else (control frames, fragments, anything malformed or too large) back
whole, for the protocol object to handle as it always did; :func:`text_frame`
builds one. A closing client writes its Close with :func:`close_frame` and finds
the server's answer with :func:`peer_close`, while nothing else is read; a server
finds its client's Close with :func:`client_close`.

Masks (client to server) come from the operating system's random source like the
protocol object's, read 4 KiB at a time instead of 4 bytes per frame.
"""

from __future__ import annotations

import os
import struct

try:  # XOR a payload with its 4-byte mask (masking and unmasking are the same); C where built
    from websockets.speedups import apply_mask as unmask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask as unmask

from .perthread import MaskPool

__all__ = [
    "OTHER",
    "REST",
    "TEXT",
    "client_close",
    "close_frame",
    "lone_text",
    "peer_close",
    "scan",
    "text_frame",
    "unmask",
]

TEXT = 0
"""A whole text message: its payload is ``data[start:stop]``, masked with ``mask`` if set."""
OTHER = 1
"""Any other whole frame: ``data[start:stop]`` is the frame, header included."""
REST = 2
"""From here on, the protocol object's: ``data[start:]`` and all that follows go to it. A frame
announcing more than the limit, or the start of one that is not a whole text message, so
that it answers or fails as soon as it can, holding no more than it would."""

_HEAD_TEXT = 0x81  # FIN, no RSV bits, opcode 1
_HEAD_CLOSE = 0x88  # FIN, no RSV bits, opcode 8
_MAX_CONTROL = 125  # a control frame's payload, at most: its length fits the second byte
_CONTROL = frozenset({0x88, 0x89, 0x8A})  # FIN and no RSV bits: close, ping, pong
_WHOLE = frozenset({_HEAD_TEXT, 0x82}) | _CONTROL
"""First bytes of the frames a lingering client may skip or read: FIN set, no extension bits."""
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")

Found = tuple[int, int, int, bytes | None]


_MASKS = MaskPool()


def _mask() -> bytes:
    masks = _MASKS
    at = masks.at
    if at >= len(masks.pool):
        masks.pool, at = os.urandom(4096), 0
    masks.at = at + 4
    return masks.pool[at : at + 4]


def text_frame(data: bytes, *, masked: bool) -> bytes:
    """One unfragmented text frame carrying ``data`` (UTF-8), masked if the client sends it."""
    size = len(data)
    if size >= 65536:
        return _frame(_HEAD_TEXT, data, masked)
    # Every message takes this way: _frame and _mask written out, a call each less.
    if not masked:
        return (_SHORT.pack(_HEAD_TEXT, size) if size < 126 else _MEDIUM.pack(_HEAD_TEXT, 126, size)) + data
    head = _SHORT.pack(_HEAD_TEXT, 0x80 | size) if size < 126 else _MEDIUM.pack(_HEAD_TEXT, 0xFE, size)
    masks = _MASKS
    at = masks.at
    if at >= len(masks.pool):
        masks.pool, at = os.urandom(4096), 0
    masks.at = at + 4
    mask = masks.pool[at : at + 4]
    return head + mask + unmask(data, mask)


def lone_text(data: bytes | bytearray, masked: bool, limit: int) -> str | None:
    """The message ``data`` carries if it is exactly one whole text frame of under 64 KiB,
    masked exactly when ``masked``, within ``limit`` and valid UTF-8: what nearly every
    read on a request/reply link holds. None for anything else, which :func:`scan` reads."""
    end = len(data)
    if end < 2 or data[0] != _HEAD_TEXT:
        return None
    second = data[1]
    if (second > 0x7F) is not masked:
        return None
    size = second & 0x7F
    start = 6 if masked else 2
    if size == 126:
        start += 2
        if end < start:
            return None
        size = (data[2] << 8) | data[3]
    elif size == 127:
        return None
    if start + size != end or size > limit:
        return None
    payload = data[start:] if not masked else unmask(data[start:], data[start - 4 : start])
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError:
        return None  # scan's reader fails the link as it should


def close_frame(payload: bytes, *, masked: bool) -> bytes:
    """A Close frame carrying ``payload`` (a serialised ``websockets.frames.Close``)."""
    assert len(payload) <= _MAX_CONTROL
    return _frame(_HEAD_CLOSE, payload, masked)


def _frame(first: int, data: bytes, masked: bool) -> bytes:
    size = len(data)
    second = 0x80 if masked else 0
    if size < 126:
        head = _SHORT.pack(first, second | size)
    elif size < 65536:
        head = _MEDIUM.pack(first, second | 126, size)
    else:
        head = _LONG.pack(first, second | 127, size)
    if not masked:
        return head + data
    mask = _mask()
    return head + mask + unmask(data, mask)


def peer_close(data: bytes | bytearray, *, limit: int) -> bytes | bool:
    """What bytes a client read from the server after its own Close say, read here
    as long as they are simple: the payload of the server's Close, if ``data`` is whole
    frames up to a well-formed one (unmasked, FIN set, no extension bits); True if it
    is whole frames with no Close among them, each a whole message, ping or pong
    (nothing to do: the client reads no more messages); False for anything else (a
    frame cut short, one over ``limit``, a fragment, a masked frame or one with
    extension bits, a malformed Close), which the protocol object must read, from
    this read on: it fails the link where the frames break the protocol."""
    found, used = scan(data, masked=False, limit=limit, text=True)
    for kind, start, stop, _ in found:
        if kind == REST:
            return False
        if kind == OTHER:
            first, second = data[start], data[start + 1]
            if first not in _WHOLE or (second > _MAX_CONTROL and first in _CONTROL) or second & 0x80:
                return False
            if first == _HEAD_CLOSE:
                return bytes(data[start + 2 : stop])
    return used == len(data)


def client_close(data: bytes | bytearray, start: int, stop: int) -> bytes | None:
    """The payload, unmasked, of the whole frame ``data[start:stop]`` (as :func:`scan` found
    it) if it is a client's Close: masked, FIN set, no extension bits, at most 125 bytes.
    None for any other frame. Whether the payload is a well-formed Close is the caller's."""
    second = data[start + 1]
    size = second & 0x7F  # 126 and 127 announce longer lengths, which a Close may not have
    if data[start] != _HEAD_CLOSE or second & 0x80 == 0 or size > _MAX_CONTROL or start + 6 + size != stop:
        return None
    at = start + 6
    return unmask(bytes(data[at:stop]), bytes(data[start + 2 : at]))


def scan(data: bytes | bytearray, *, masked: bool, limit: int, text: bool) -> tuple[list[Found], int]:
    """The whole frames at the start of ``data``, and how many bytes they take.

    Each is ``(kind, start, stop, mask)``. A frame is TEXT only if ``text`` (no
    fragmented message is in progress), it is a final text frame with no extension
    bits, masked exactly when ``masked``, and within ``limit``; later frames are
    OTHER once one is, since a fragment may open a message. Scanning stops at a
    partial TEXT frame (its bytes are not counted) and after a REST one.
    """
    found: list[Found] = []
    at, end = 0, len(data)
    while end - at >= 2:
        first, second = data[at], data[at + 1]
        size = second & 0x7F
        start = at + 2
        if size == 126:
            start += 2
            if start > end:
                break
            size = int.from_bytes(data[at + 2 : start], "big")
        elif size == 127:
            start += 8
            if start > end:
                break
            size = int.from_bytes(data[at + 2 : start], "big")
        mask: bytes | None = None
        if second & 0x80:
            start += 4
            if start > end:
                break
            mask = bytes(data[start - 4 : start])
        stop = start + size
        plain = text and first == _HEAD_TEXT and (mask is not None) == masked
        if size > limit or (stop > end and not plain):
            found.append((REST, at, end, None))
            return found, end
        if stop > end:
            break
        if plain:
            found.append((TEXT, start, stop, mask))
        else:
            text = False
            found.append((OTHER, at, stop, None))
        at = stop
    return found, at
