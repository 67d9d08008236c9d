"""WebSocket over trio streams, driven through the ``websockets`` library's sans-IO core.

No task per connection: :meth:`SansIOWebSocket.receive_text` reads from the
socket on demand and feeds the protocol object; whatever the protocol wants to
send back (pongs, the close echo) is written inline before returning.
:meth:`~SansIOWebSocket.send_text` serialises a frame and writes it while
holding the connection's *write turn*, a flag plus a lazily created parking
lot, so concurrent senders never interleave frames and an uncontended send
costs no extra scheduling. Per connection this keeps one stream, one
``websockets`` protocol object and this small slotted object. Opening a link
(the HTTP upgrade) is :mod:`.handshake`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import NoReturn

import attr
import trio
from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import CLIENT, SERVER, Event, State
from websockets.protocol import Protocol as WsProtocol
from websockets.typing import BytesLike

from ..errors import FrameTooLargeError, LinkClosedError
from ..redact import SecretFilter
from . import frames
from .closing import answer_close, queue_close, read_server_close, release
from .interface import CLOSE_TIMEOUT, close_arguments
from .pipe import WRITES, Pipe, Unyielded, yield_due, yield_sometimes

__all__ = ["WIRE_LOG", "SansIOWebSocket"]

WIRE_LOG = logging.getLogger("orchestrator.transport.wire")
"""Logger handed to the ``websockets`` protocol objects (they log opens, closes and failures).

Its records can carry the request line (with the token in the query string) and
auth frames, so they are masked at the source, before any handler sees them.
"""
WIRE_LOG.addFilter(SecretFilter())

_OPEN = State.OPEN
_CLOSED = State.CLOSED
_CLOSING = State.CLOSING
_TAKEN = Unyielded()
"""Messages handed out from an inbox at once (see :meth:`SansIOWebSocket.receive_text`)."""
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


@attr.s(auto_attribs=True, eq=False, repr=False, slots=True)
class SansIOWebSocket:
    """One WebSocket (client or server end) over a trio stream; see :class:`.WebSocket`."""

    _pipe: Pipe
    _proto: WsProtocol
    _label: str
    """Who is at the other end, safe to print (a redacted URL or a peer address)."""
    _max_frame_bytes: int
    subprotocol: str | None = None
    _inbox: list[str] = attr.Factory(list)
    """Messages decoded but not yet returned (several can arrive in one read)."""
    _fragments: list[BytesLike] | None = None
    _failure: str | None = None
    _writing: bool = False
    _write_lot: trio.lowlevel.ParkingLot | None = None
    # Frames queued in the protocol so far, and how many of them have been written:
    # a sender that finds the socket busy queues its frame and waits for a writer to
    # carry it, so frames sent at the same moment leave in one system call.
    _queued: int = 0
    _flushed: int = 0
    _flush_lot: trio.lowlevel.ParkingLot | None = None
    _reading: bool = False
    _closed: bool = False
    _dropped: bool = False
    # Frames are read and written here (see .frames) once the handshake has put the
    # protocol object at a frame boundary (see at_frame_boundary). Whole frames of any
    # other kind still go to it; once it leaves OPEN or fails, everything does.
    _fast: bool = False
    _partial: bytearray | None = None  # the start of a frame not yet all read
    _masked_in: bool = attr.ib(init=False)  # a server's peer masks its frames
    _lingering: bool = False  # the pipe waits for the server's FIN (see _close_handshake)

    def __attrs_post_init__(self) -> None:
        self._masked_in = self._proto.side is SERVER

    def at_frame_boundary(self) -> None:
        """The handshake's last read ended with it and no frame followed in that read: the
        next byte starts a frame, so frames can be read and written here from now on.
        Not while the wire log is at DEBUG: it shows the protocol object's frames."""
        proto = self._proto
        self._fast = not (proto.extensions or proto.reader.buffer or self._inbox or proto.debug)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label} code={self.close_code}>"

    @property
    def close_code(self) -> int | None:
        proto = self._proto
        if proto.close_rcvd is not None:
            return int(proto.close_rcvd.code)
        if not (self._dropped or proto.state is _CLOSED):
            return None
        if proto.close_sent is not None:
            return int(proto.close_sent.code)
        return int(CloseCode.ABNORMAL_CLOSURE)

    # Sending

    @property
    def writer_busy(self) -> bool:
        return self._writing

    async def send_text(self, text: str) -> None:
        data = text.encode()
        proto = self._proto
        if proto.state is not _OPEN or self._dropped:
            await self._refuse()
        if self._fast:
            proto.writes.append(frames.text_frame(data, masked=not self._masked_in))
        else:
            proto.send_text(data)
        self._queued += 1
        if self._writing:
            # Another task holds the write turn: it writes everything queued before it
            # lets go, this frame included. (Cancelled while waiting, the frame still goes.)
            await self._wait_flushed(self._queued)
            return
        self._writing = True  # uncontended: no extra await on the hot path
        await self._finish_writing()

    def send_text_soon(self, text: str, *, yielding: bool = True) -> Awaitable[None] | None:
        """:meth:`send_text` without a coroutine when the frame can leave at once (the
        link is open, nobody holds the write turn, nothing is queued and the socket takes
        it all): None once it has left, else what to await: to send it, to finish sending
        it, or (every few frames that left at once, as :meth:`send_text` yields, if
        ``yielding``) to let other tasks run. Unlike :meth:`send_text` it does not check
        for cancellation first."""
        proto = self._proto
        if self._writing or proto.writes or not self._fast or self._dropped or proto.state is not _OPEN:
            return self.send_text(text)
        data = frames.text_frame(text.encode(), masked=not self._masked_in)
        self._queued += 1
        try:
            sent = self._pipe.send_now(data)
        except _LINK_ERRORS:
            self._drop()
            return self._refuse()
        if sent == len(data):
            self._written(self._queued)
            if yielding and yield_due(WRITES):
                return trio.lowlevel.cancel_shielded_checkpoint()  # noqa: ASYNC105 - the caller awaits it
            return None
        proto.writes.append(data[sent:])  # the rest goes out with the usual wait
        self._writing = True
        return self._finish_writing()

    async def _refuse(self) -> NoReturn:
        await trio.lowlevel.checkpoint()
        raise self._closed_error(sending=True)

    async def _finish_writing(self) -> None:
        """Write what is queued while holding the write turn, then let it go."""
        try:
            if not await self._write_queued():
                raise self._closed_error(sending=True)
        finally:
            self._release_write_turn()

    async def _wait_flushed(self, frame: int) -> None:
        lot = self._flush_lot
        if lot is None:
            lot = self._flush_lot = trio.lowlevel.ParkingLot()
        while self._flushed < frame:
            if self._dropped:
                await trio.lowlevel.checkpoint()
                raise self._closed_error(sending=True)
            if not self._writing:  # the holder let go before this frame was written
                await self._flush()
                continue
            await lot.park()
        await trio.lowlevel.checkpoint()

    async def _acquire_write_turn(self) -> None:
        if self._writing:
            await self._wait_write_turn()
        else:
            self._writing = True

    async def _wait_write_turn(self) -> None:
        lot = self._write_lot
        if lot is None:
            lot = self._write_lot = trio.lowlevel.ParkingLot()
        # Woken only by _release_write_turn, which hands the turn over directly.
        await lot.park()

    def _release_write_turn(self) -> None:
        lot = self._write_lot
        if lot:
            lot.unpark()  # the turn passes to the next waiter in FIFO order
        else:
            self._writing = False

    async def _flush(self) -> bool:
        """Write what the protocol has queued; False if the link is gone."""
        await self._acquire_write_turn()
        try:
            return await self._write_queued()
        finally:
            self._release_write_turn()

    async def _write_queued(self) -> bool:
        # The caller holds the write turn, so bytes leave in the order they were queued.
        # Invariant: the holder drains the protocol's queue before giving the turn up, so
        # a reader that finds the turn taken may leave a pong queued and carry on reading.
        proto = self._proto
        pipe = self._pipe
        while True:
            upto = self._queued
            writes = proto.data_to_send()
            if self._dropped:
                return False
            if not writes:
                self._written(upto)
                return True
            eof = not writes[-1]  # websockets queues b"" (SEND_EOF) to ask for a TCP close
            if eof:
                writes.pop()
                # Once CLOSED the socket is closed next, which sends the FIN: no shutdown first.
                eof = proto.state is not _CLOSED
            try:
                if writes:
                    await pipe.send_all(writes[0] if len(writes) == 1 else b"".join(writes))
                if eof:
                    await pipe.send_eof()
            except _LINK_ERRORS:
                self._drop()
                return False
            except BaseException:
                self._drop()  # cancelled mid-frame: what reached the peer is unknown
                raise
            self._written(upto)

    def _written(self, upto: int) -> None:
        """Frames up to ``upto`` have left: wake the senders waiting on them."""
        if upto > self._flushed:
            self._flushed = upto
            if self._flush_lot:
                self._flush_lot.unpark_all()

    # Receiving

    async def receive_text(self) -> str:
        inbox = self._inbox
        if inbox:
            # Messages read together leave without a scheduler pass each: the control
            # connection reads thousands of notices at a time. (Cancelled here, the
            # message stays.)
            await trio.lowlevel.checkpoint_if_cancelled()
            await yield_sometimes(_TAKEN)
            return inbox.pop(0)
        if self._reading:
            raise trio.BusyResourceError("another task is already receiving on this WebSocket")
        proto = self._proto
        self._reading = True
        try:
            while True:
                if proto.state is not _OPEN or self._dropped or self._closed:
                    if self._closed or self._dropped:
                        await trio.lowlevel.checkpoint()  # aclose() owns the closing, or it is over
                    else:
                        await self._finish_closing()
                    raise self._closed_error()
                try:
                    data = await self._pipe.receive_some()
                except _LINK_ERRORS as exc:
                    self._drop()
                    raise self._closed_error() from exc
                if self._fast:
                    if self._partial is None and self._fragments is None:
                        # The everyday read, one whole text message: no scan, no inbox.
                        text = frames.lone_text(data, self._masked_in, self._max_frame_bytes)
                        if text is not None:
                            return text
                    self._take_frames(data)
                else:
                    self._feed(data)
                # A pong or close frame to send back: if a sender holds the write turn it
                # sends them before letting go (see _write_queued), so never wait for it.
                if proto.writes and not self._writing:
                    await self._flush()  # the messages stay in the inbox if it is cancelled
                if inbox:
                    return inbox.pop(0)
        finally:
            self._reading = False

    def _feed(self, data: bytes | bytearray) -> None:
        """Hand bytes (empty = EOF) to the protocol object and keep the messages it finds."""
        self.take_messages(self._give(data))

    def _give(self, data: bytes | bytearray) -> list[Event]:
        """Hand bytes (empty = EOF) to the protocol object: what it found."""
        proto = self._proto
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        return proto.events_received()

    def _take_frames(self, data: bytes | bytearray) -> None:
        """Split what was read into frames: whole text messages are decoded here, the rest
        goes to the protocol object; see :mod:`.frames`."""
        partial = self._partial
        if not data:  # EOF: the protocol object reports it (and any frame cut short)
            self._fast, self._partial = False, None
            if partial:
                self._feed(partial)
            self._feed(b"")
            return
        if partial is not None:
            partial.extend(data)  # in place: compiled, ``+=`` would make a new bytearray
            data = partial
        found, used = frames.scan(
            data, masked=self._masked_in, limit=self._max_frame_bytes, text=self._fragments is None
        )
        proto = self._proto
        inbox = self._inbox
        fed = False
        for kind, start, stop, mask in found:
            if kind == frames.TEXT:
                payload = data[start:stop] if mask is None else frames.unmask(data[start:stop], mask)
                try:
                    inbox.append(str(payload, "utf-8"))
                except UnicodeDecodeError:
                    # As the protocol object reads a batch: the frames after this one are
                    # parsed (pings answered, a close echoed), their messages dropped.
                    self._fast = False
                    if stop < len(data):
                        proto.receive_data(data[stop:])
                        proto.events_received()
                    self._invalid_utf8()
                    break
                continue
            last = kind == frames.OTHER and stop == len(data)
            if last and self._masked_in and self._answer_close(data, start, stop):
                break  # the read ended with the client's Close, answered here
            # The first frame that is not a whole text message: the rest of this read goes
            # to the protocol object in one piece, as it would have read it. Reading here
            # goes on only if that left it between frames, open and well.
            self._feed(data[start:])
            fed = True
            between_frames = used == len(data) and found[-1][0] != frames.REST
            if not between_frames or proto.state is not _OPEN or proto.parser_exc is not None:
                self._fast = False
            break
        if not self._fast or fed or used == len(data):
            self._partial = None
        elif partial is not None:
            del partial[:used]
        else:
            self._partial = bytearray(data[used:])

    def _answer_close(self, data: bytes | bytearray, start: int, stop: int) -> bool:
        """A server's read that ends with its client's Close: the Close echoed and this
        side's end of TCP sent at once, without the protocol object's parser or a task
        waiting for the client's end (see _shut_at_once). False, with nothing done, for
        any other frame, or a Close the protocol object must read (malformed, in the long
        form, or inside a fragmented message): it gets the frame, as any frame not read
        here."""
        proto = self._proto
        if self._fragments is not None or proto.state is not _OPEN:
            return False
        payload = frames.client_close(data, start, stop)
        if payload is None or not answer_close(proto, payload):
            return False
        self._fast = False
        self._shut_at_once()
        return True

    def _shut_at_once(self) -> None:
        """A server's answer to its client's Close written without waiting, and its end of
        TCP sent behind it (the server closes TCP first: RFC 6455, 7.1.1). The wait for
        the client's end is the pipe's, in the background (see FdPipe.linger): no task
        wakes for it, and what the client still sends is read and dropped, so that
        closing over unread bytes never resets the link and loses what is still on its
        way to the client. Where the socket does not take the answer at once, or cannot
        linger, it is left to the usual way: written, half-closed, and read until the
        client's end."""
        proto = self._proto
        pipe = self._pipe
        if self._writing or not pipe.lingers:
            return  # the usual way: the write turn's holder writes it (see _write_queued)
        writes = proto.writes  # the answer and the end of TCP: a writer left nothing before them
        data = b"".join(writes)
        try:
            sent = pipe.send_now(data)
        except _LINK_ERRORS:
            self._drop()
            return
        if sent < len(data):
            writes[:] = [data[sent:], b""]  # b"": the half-close websockets asks for
            return
        writes.clear()
        self._written(self._queued)
        proto.state = _CLOSED  # for this link: nothing more is read or written
        pipe.linger(CLOSE_TIMEOUT, shut=True)  # False: the half-close failed, and _drop closes
        self._drop()

    def _invalid_utf8(self) -> None:
        self._fast = False
        self._failure = "the peer sent invalid UTF-8"
        self._proto.fail(CloseCode.INVALID_DATA, "invalid UTF-8")

    async def accept_early_frames(self, events: Sequence[Event]) -> None:
        """Keep frames that arrived with the handshake, and answer them if needed."""
        self.take_messages(events)
        if self._proto.writes:
            await self._flush()

    def take_messages(self, events: Sequence[Event]) -> None:
        """Assemble the protocol object's data frames into messages, kept in the inbox."""
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if not frame.fin:
                    self._fragments = [frame.data]
                    continue
                payload: BytesLike = frame.data
            elif opcode is _CONT and self._fragments is not None:
                self._fragments.append(frame.data)
                if not frame.fin:
                    continue
                payload, self._fragments = b"".join(self._fragments), None
            else:
                continue  # ping, pong, close: the protocol object already answered
            try:
                self._inbox.append(str(payload, "utf-8"))
            except UnicodeDecodeError:
                self._invalid_utf8()
                break

    # Closing

    def _to_protocol(self) -> None:
        """From now on every byte goes to the protocol object, the start of a frame
        already read included (it reads the close handshake)."""
        if self._fast:
            self._fast = False
            partial, self._partial = self._partial, None
            if partial:
                self._proto.receive_data(partial)
                self.take_messages(self._proto.events_received())

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if self._dropped:  # the socket is closed already: nothing is left to say
            return
        if self._partial is not None:
            self._to_protocol()  # the start of a frame: the protocol object reads the rest
        if self._proto.state is _OPEN:
            self._send_close(*close_arguments(code, reason))
        if not (self._reading or self._writing) and self._close_at_once():
            return
        self._to_protocol()
        try:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                if not self._reading:
                    await self._close_handshake()
                else:
                    await self._flush()
        finally:
            self._drop()

    def _send_close(self, code: int, reason: str) -> None:
        """Queue this side's Close; written here where frames are (see .closing)."""
        if self._fast:
            queue_close(self._proto, code, reason, masked=not self._masked_in)
        else:
            self._proto.send_close(code, reason)

    def _close_at_once(self) -> bool:
        """A client's Close written without waiting, and the wait for the server's FIN
        left to the pipe (see _close_handshake): no cancel scope and no scheduler pass.
        False, with nothing lost, where something would have to wait."""
        proto = self._proto
        pipe = self._pipe
        if proto.side is not CLIENT or proto.state is not _CLOSING or not pipe.lingers:
            return False
        writes = proto.writes
        if not all(writes):  # b"" asks for a TCP half-close: not at once
            return False
        data = b"".join(writes)
        try:
            sent = pipe.send_now(data) if data else 0
        except _LINK_ERRORS:
            self._drop()
            return True
        if sent < len(data):
            writes[:] = [data[sent:]]  # the rest goes out with the usual wait
            return False
        writes.clear()
        self._written(self._queued)
        self._lingering = pipe.linger(CLOSE_TIMEOUT, self._heard_lingering)
        self._drop()
        return True

    def _heard_lingering(self, data: bytes) -> bool:
        """Bytes read while the socket lingers (b"": its end), until the server's Close is
        in, for :attr:`close_code`; then the protocol object is let go. Read here while
        they are simple (see .closing), else by the protocol object."""
        proto = self._proto
        if self._fast and data and self._fragments is None:
            done = read_server_close(proto, data, limit=self._max_frame_bytes)
            if done is not None:
                return done
            self._fast = False  # from this read on, every byte goes to the protocol object
        self._give(data)  # the close handshake has begun: data is discarded
        proto.writes.clear()  # an answer would be to a peer this side has stopped talking to
        if data and proto.close_rcvd is None and proto.parser_exc is None:
            return False
        release(proto)
        return True

    async def _finish_closing(self) -> None:
        """Send what is queued, then read until the peer closes TCP (bounded); drop the socket."""
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._close_handshake()
        finally:
            self._drop()

    async def _close_handshake(self) -> None:
        """Send what is queued, then read until the protocol object is CLOSED (the peer
        closed TCP) or the link is gone. The caller bounds it in time and drops the socket.

        A client waits for the server's FIN even after both Closes are in: the side that
        closes TCP first holds the TIME_WAIT, and that must be the server (RFC 6455,
        7.1.1), not an orchestrator whose ephemeral ports every conversation uses. Once
        its Close is written it has nothing left to say or read, so where it can, the
        pipe waits for the FIN in the background (see FdPipe.linger) and no task wakes
        for the server's Close or its FIN."""
        self._to_protocol()
        proto = self._proto
        if not await self._flush():
            return
        if proto.side is CLIENT and proto.state is _CLOSING:
            # Until the server's Close is in, the protocol object reads what still comes.
            heard = self._heard_lingering if proto.close_rcvd is None else None
            if self._pipe.linger(CLOSE_TIMEOUT, heard):
                self._lingering = heard is not None
                return
        while proto.state is not _CLOSED and not self._dropped:
            try:
                data = await self._pipe.receive_some()
            except _LINK_ERRORS:
                return
            self._give(data)  # the close handshake has begun: data is discarded
            if proto.writes and not await self._flush():
                return

    def abort(self) -> None:
        if not self._dropped:
            self._dropped = True
            self._pipe.abort()
            release(self._proto)
        if self._flush_lot:
            self._flush_lot.unpark_all()

    def _drop(self) -> None:
        """Close the socket now (synchronously, so it is safe in any ``finally``); a
        lingering one closes in the background, and lets the protocol object go then."""
        if not self._dropped:
            self._dropped = True
            self._pipe.close()
            if not self._lingering:
                release(self._proto)
        if self._flush_lot:
            self._flush_lot.unpark_all()  # senders waiting on a writer learn the link is gone

    def _closed_error(self, *, sending: bool = False) -> LinkClosedError | FrameTooLargeError:
        if isinstance(self._proto.parser_exc, PayloadTooBig):
            text = (
                f"a message from {self._label} exceeded {self._max_frame_bytes} bytes; "
                "the link was closed with 1009"
            )
            # The reader learns of the message too large; to a sender the link is closed.
            return LinkClosedError(text) if sending else FrameTooLargeError(text)
        detail = self._failure
        received = self._proto.close_rcvd
        if detail is None and received is not None and received.reason:
            detail = received.reason
        suffix = f": {detail}" if detail else ""
        return LinkClosedError(f"link to {self._label} closed (code {self.close_code}){suffix}")
