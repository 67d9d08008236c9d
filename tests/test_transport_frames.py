"""The everyday-frame fast path (``orchestrator.transport.frames``) against the websockets protocol object.

Whatever bytes arrive, cut wherever the reads happen to cut them, a link reading
frames itself must return the same messages, answer the same pings and close
with the same code as one that hands every byte to the protocol object.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from orchestrator.errors import FrameTooLargeError, LinkClosedError
from orchestrator.transport import frames
from orchestrator.transport.handshake import ends_at_blank_line
from orchestrator.transport.pipe import YIELD_EVERY, FdPipe, Heard
from orchestrator.transport.sansio import SansIOWebSocket
from orchestrator.transport.server import _Acceptor

LIMIT = 70_000


async def echo_handler(ws: Any) -> None:
    await ws.receive_text()


@attrs.define
class ScriptedPipe:
    """A pipe whose reads return ``chunks`` in turn, then end of stream; it keeps what is written."""

    chunks: list[bytes]
    written: list[bytes] = attrs.Factory(list)

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written.append(bytes(data))

    async def receive_some(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def linger(self, timeout: float, heard: Heard | None = None, *, shut: bool = False) -> bool:
        return False  # the tests read the close handshake to its end

    lingers = False

    def send_now(self, data: bytes) -> int:
        return 0


def make_link(
    chunks: list[bytes], *, fast: bool, server: bool = False, pipe: ScriptedPipe | None = None
) -> tuple[SansIOWebSocket, ScriptedPipe]:
    pipe = ScriptedPipe(list(chunks)) if pipe is None else pipe
    proto: ClientProtocol | ServerProtocol
    if server:
        proto = ServerProtocol(state=State.OPEN, max_size=LIMIT)
    else:
        proto = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN, max_size=LIMIT)
    ws = SansIOWebSocket(pipe, proto, "peer", LIMIT)
    if fast:
        ws.at_frame_boundary()
    return ws, pipe


async def read_all(ws: SansIOWebSocket) -> tuple[list[str], str, int | None]:
    """Every message until the link ends, how it ended, and its close code."""
    messages: list[str] = []
    while True:
        try:
            messages.append(await ws.receive_text())
        except (LinkClosedError, FrameTooLargeError) as exc:
            return messages, type(exc).__name__, ws.close_code


def frames_sent(written: list[bytes], *, by_client: bool) -> list[tuple[Opcode, bytes]]:
    """The frames a link wrote, parsed by the other side's protocol object."""
    proto: ClientProtocol | ServerProtocol
    if by_client:
        proto = ServerProtocol(state=State.OPEN)
    else:
        proto = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN)
    proto.receive_data(b"".join(written))
    return [(e.opcode, bytes(e.data)) for e in proto.events_received() if isinstance(e, Frame)]


def random_frames(rng: random.Random) -> list[Frame]:
    """A plausible stream from a peer: mostly whole text messages, sometimes pings,
    fragments, binary frames and long messages (all three length encodings)."""
    out: list[Frame] = []
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        size = rng.choice([0, 1, 20, 125, 126, 300, 65_535, 65_536, 69_000])
        text = "".join(rng.choice("ab✓é ") for _ in range(size // 2)).encode()[:size]
        text = text.decode("utf-8", "ignore").encode()
        if roll < 0.6:
            out.append(Frame(Opcode.TEXT, text))
        elif roll < 0.7:
            out.append(Frame(Opcode.PING, text[:100]))
        elif roll < 0.8:
            out.append(Frame(Opcode.PONG, text[:100]))
        elif roll < 0.9:
            out.append(Frame(Opcode.BINARY, text))
        else:
            cut = len(text) // 2
            out.append(Frame(Opcode.TEXT, text[:cut], fin=False))
            if rng.random() < 0.5:
                out.append(Frame(Opcode.PING, b"mid-message"))
            out.append(Frame(Opcode.CONT, text[cut:]))
    if rng.random() < 0.5:
        out.append(Frame(Opcode.CLOSE, Close(1001, "bye").serialize()))
    return out


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` as the reads might deliver it: one piece, or cut at random places."""
    if rng.random() < 0.3:
        return [data]
    points = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


async def both_ways(chunks: list[bytes], *, server: bool = False) -> None:
    results = []
    for fast in (False, True):
        ws, pipe = make_link(chunks, fast=fast, server=server)
        messages, ending, code = await read_all(ws)
        await ws.aclose()
        results.append((messages, ending, code, frames_sent(pipe.written, by_client=not server)))
    assert results[1] == results[0]


@pytest.mark.parametrize("seed", range(60))
async def test_any_stream_cut_anywhere_reads_as_the_protocol_object_reads_it(seed: int) -> None:
    rng = random.Random(seed)
    server = seed % 3 == 0  # a server reads masked frames
    stream = b"".join(f.serialize(mask=server) for f in random_frames(rng))
    await both_ways(cut(stream, rng), server=server)


@pytest.mark.parametrize("seed", range(20))
async def test_a_stream_read_one_frame_at_a_time_reads_as_the_protocol_object_reads_it(seed: int) -> None:
    rng = random.Random(seed)
    server = seed % 2 == 0
    await both_ways([f.serialize(mask=server) for f in random_frames(rng)], server=server)


@pytest.mark.parametrize("seed", range(20))
def test_a_read_holding_one_whole_text_message_is_taken_as_scan_takes_it(seed: int) -> None:
    rng = random.Random(seed)
    odd = [b"\x81\x02\xff\xfe", b"\x81\x7e\x00", b"\x81", b"", b"\xc1\x02hi", b"\x81\x03ok"]
    for data in [f.serialize(mask=m) for f in random_frames(rng) for m in (True, False)] + odd:
        for masked in (True, False):
            text = frames.lone_text(data, masked, LIMIT)
            found, used = frames.scan(data, masked=masked, limit=LIMIT, text=True)
            whole = used == len(data) and [f[0] for f in found] == [frames.TEXT]
            if not whole:
                assert text is None
                continue
            _, start, stop, mask = found[0]
            payload = data[start:stop] if mask is None else frames.unmask(data[start:stop], mask)
            try:
                expected: str | None = payload.decode()
            except UnicodeDecodeError:
                expected = None
            assert text == (expected if stop - start < 65_536 else None)


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("too big", Frame(Opcode.TEXT, b"x" * (LIMIT + 1)).serialize(mask=False)),
        ("too big, header only", Frame(Opcode.TEXT, b"x" * (LIMIT + 1)).serialize(mask=False)[:10]),
        ("invalid UTF-8", Frame(Opcode.TEXT, b"ok").serialize(mask=False) + b"\x81\x02\xff\xfe"),
        ("masked by a server", Frame(Opcode.TEXT, b"hello").serialize(mask=True)),
        ("extension bit set", b"\xc1\x02hi"),
        ("continuation first", Frame(Opcode.CONT, b"orphan").serialize(mask=False)),
        ("text inside a fragmented message", b"\x01\x01a\x81\x01b"),
        ("cut short by end of stream", Frame(Opcode.TEXT, b"x" * 300).serialize(mask=False)[:150]),
        ("oversized ping", b"\x89\x7e\x00\x80" + b"p" * 128),
        (
            "invalid UTF-8, then a close",
            b"\x81\x02ok\x81\x02\xff\xfe"
            + Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=False),
        ),
        ("invalid UTF-8, then a ping", b"\x81\x02ok\x81\x02\xff\xfe\x89\x01p"),
        ("a bad frame, then invalid UTF-8", b"\x81\x02\xff\xfe\xc1\x01r"),
    ],
)
async def test_broken_streams_fail_as_the_protocol_object_fails_them(name: str, stream: bytes) -> None:
    await both_ways([stream])
    await both_ways([stream[:1], stream[1:]] if len(stream) > 1 else [stream])


async def test_a_server_reads_masked_frames_and_refuses_unmasked_ones() -> None:
    good = Frame(Opcode.TEXT, "masked ✓".encode()).serialize(mask=True)
    ws, _ = make_link([good], fast=True, server=True)
    assert await ws.receive_text() == "masked ✓"
    ws, _ = make_link([Frame(Opcode.TEXT, b"bare").serialize(mask=False)], fast=True, server=True)
    assert await read_all(ws) == ([], "LinkClosedError", int(CloseCode.PROTOCOL_ERROR))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_000])
async def test_text_frames_written_here_are_what_the_protocol_object_would_write(size: int) -> None:
    data = ("é" * size).encode()[:size]
    data = data.decode("utf-8", "ignore").encode()
    for masked in (True, False):
        frame = frames.text_frame(data, masked=masked)
        assert frames_sent([frame], by_client=masked) == [(Opcode.TEXT, data)]
        assert bool(frame[1] & 0x80) == masked


def test_every_masked_frame_gets_a_fresh_mask() -> None:
    masks = {frames.text_frame(b"same", masked=True)[2:6] for _ in range(3000)}
    assert len(masks) > 2990  # 32 random bits each, across several 4 KiB refills


async def test_a_link_writing_frames_itself_talks_to_the_protocol_object() -> None:
    ws, pipe = make_link([], fast=True)
    await ws.send_text("hello ✓")
    assert frames_sent(pipe.written, by_client=True) == [(Opcode.TEXT, "hello ✓".encode())]
    server, pipe = make_link([], fast=True, server=True)
    await server.send_text("back")
    assert frames_sent(pipe.written, by_client=False) == [(Opcode.TEXT, b"back")]


def test_scan_stops_at_a_partial_frame_and_counts_only_whole_ones() -> None:
    one = Frame(Opcode.TEXT, b"one").serialize(mask=False)
    two = Frame(Opcode.TEXT, b"two" * 100).serialize(mask=False)
    for end in range(len(one), len(one) + len(two)):
        found, used = frames.scan((one + two)[:end], masked=False, limit=LIMIT, text=True)
        assert used == len(one) and found == [(frames.TEXT, 2, len(one), None)]
    found, used = frames.scan(one + two, masked=False, limit=LIMIT, text=True)
    assert used == len(one) + len(two) and [f[0] for f in found] == [frames.TEXT, frames.TEXT]


def test_scan_hands_every_frame_after_a_control_frame_to_the_protocol_object() -> None:
    stream = b"".join(
        f.serialize(mask=False) for f in (Frame(Opcode.PING, b""), Frame(Opcode.TEXT, b"after"))
    )
    found, _ = frames.scan(stream, masked=False, limit=LIMIT, text=True)
    assert [f[0] for f in found] == [frames.OTHER, frames.OTHER]


def test_a_link_whose_protocol_object_logs_frames_leaves_them_to_it() -> None:
    proto = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN)
    proto.debug = True
    ws = SansIOWebSocket(ScriptedPipe([]), proto, "peer", LIMIT)
    ws.at_frame_boundary()
    assert not ws._fast


async def yields_as_often_as_writes_do(
    send: Callable[[int], Awaitable[None]], between: Callable[[], None] = lambda: None
) -> None:
    """Send 20 * YIELD_EVERY times while another task counts its turns (calling
    ``between`` on each): it must get one turn per YIELD_EVERY sends."""
    others = 0

    async def other() -> None:
        nonlocal others
        while True:
            others += 1
            between()
            await trio.lowlevel.checkpoint()

    sends = 20 * YIELD_EVERY
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        start = others
        for index in range(sends):
            await send(index)
        ran = others - start
        nursery.cancel_scope.cancel()
    assert sends // YIELD_EVERY - 1 <= ran <= sends // YIELD_EVERY + 2


async def test_a_task_that_only_sends_still_lets_others_run() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    pipe = FdPipe(trio.socket.from_stdlib_socket(left))

    def drain() -> None:  # so the sender never waits
        with contextlib.suppress(BlockingIOError):
            right.recv(65536)

    async def send(_: int) -> None:
        await pipe.send_all(b"x")

    await yields_as_often_as_writes_do(send, drain)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await pipe.send_all(b"x")  # cancellation is still seen on every call
    pipe.close()
    right.close()


async def test_messages_read_together_leave_without_a_scheduler_pass_each() -> None:
    count = 20 * YIELD_EVERY
    batch = b"".join(Frame(Opcode.TEXT, b"%d" % n).serialize(mask=False) for n in range(count))
    ws, _ = make_link([batch], fast=True)
    turns = 0

    async def other() -> None:  # counts the reader's yields
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        assert await ws.receive_text() == "0"  # the read: the rest wait in the inbox
        start = turns
        for n in range(1, count):
            assert await ws.receive_text() == str(n)
        ran = turns - start
        nursery.cancel_scope.cancel()
    assert count // YIELD_EVERY - 2 <= ran <= count // YIELD_EVERY + 1  # a pass per message before
    more, _ = make_link([batch], fast=True)
    assert await more.receive_text() == "0"
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await more.receive_text()  # cancellation is still seen on every call...
    assert await more.receive_text() == "1"  # ...and the message it would have taken stays


# Found in review: each failed before its fix.


async def test_closing_with_half_a_frame_read_hands_it_to_the_protocol_object() -> None:
    """``aclose`` after a read that ended mid-frame: the close handshake still reads the
    peer's close frame (the half frame is the protocol object's from then on)."""
    first = Frame(Opcode.TEXT, b'{"n":1}').serialize(mask=False)
    second = Frame(Opcode.TEXT, b"y" * 120).serialize(mask=False)
    close = Frame(Opcode.CLOSE, Close(4000, "peer-bye").serialize()).serialize(mask=False)
    endings = []
    for fast in (False, True):
        ws, _ = make_link([first + second[:50], second[50:] + close], fast=fast)
        assert await ws.receive_text() == '{"n":1}'
        await ws.aclose()
        endings.append(ws.close_code)
    assert endings == [4000, 4000]


def test_the_handshake_ends_at_its_first_blank_line_only() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert ends_at_blank_line(head)
    assert not ends_at_blank_line(head + b"\x81\x02hi")
    # A frame header whose length and mask bytes are "\r\n", "\r\n\r\n": ends in a blank
    # line, but is not the end of the handshake.
    assert not ends_at_blank_line(head + b"\x81\xfe\r\n\r\n\r\n")


async def test_a_server_never_reads_frames_itself_from_inside_a_frame() -> None:
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
    client.send_request(client.connect())
    request = b"".join(client.data_to_send())
    smuggled = Frame(Opcode.TEXT, b"smuggled").serialize(mask=True)
    pipe = ScriptedPipe([request + b"\x81\xfe\r\n\r\n\r\n", smuggled])
    acceptor = _Acceptor(echo_handler, [], LIMIT, None, None, 5)
    ws = await acceptor._handshake(pipe, "peer")  # the private step: no socket needed
    assert ws is not None and not ws._fast


@attrs.define
class LingeringPipe(ScriptedPipe):
    """A pipe that lingers, and whose socket takes at most ``takes`` bytes at once."""

    takes: int = 1 << 20
    broken: bool = False
    taken: list[bytes] = attrs.Factory(list)
    lingered: bool = False
    heard: Heard | None = None
    shut: bool = False

    @property
    def lingers(self) -> bool:
        return not self.lingered

    def send_now(self, data: bytes) -> int:
        if self.broken:
            raise trio.BrokenResourceError("reset")
        self.taken.append(data[: self.takes])
        return min(self.takes, len(data))

    def linger(self, timeout: float, heard: Heard | None = None, *, shut: bool = False) -> bool:
        self.lingered, self.heard, self.shut = True, heard, shut
        return True


def closes_in(wire: bytes) -> list[int]:
    server = ServerProtocol(state=State.OPEN, max_size=LIMIT)
    server.receive_data(wire)
    return [Close.parse(f.data).code for f in server.events_received() if isinstance(f, Frame)]


@pytest.mark.parametrize("takes", [1 << 20, 3, 0])
async def test_a_clients_close_goes_out_whole_however_much_the_socket_takes_at_once(takes: int) -> None:
    # aclose writes a client's Close without waiting when the socket takes it all, and
    # leaves the wait for the server's FIN to the pipe; what the socket did not take
    # goes out the usual way, then the pipe lingers all the same.
    pipe = LingeringPipe([], takes=takes)
    ws, _ = make_link([], fast=True, pipe=pipe)
    await ws.aclose(4001, "bye")
    assert closes_in(b"".join(pipe.taken + pipe.written)) == [4001]
    assert bool(pipe.written) == (takes < 11)  # a masked Close with "bye" is 11 bytes
    assert pipe.lingered
    assert ws.close_code == 4001


async def test_a_close_the_socket_refuses_at_once_drops_the_link() -> None:
    pipe = LingeringPipe([], broken=True)
    ws, _ = make_link([], fast=True, pipe=pipe)
    await ws.aclose()
    assert not pipe.lingered
    with pytest.raises(LinkClosedError):
        await ws.send_text("after")


@pytest.mark.parametrize("answer", [b"", b"bye"], ids=["close alone", "after a message"])
async def test_a_lingering_client_still_learns_the_servers_close_code(answer: bytes) -> None:
    # Found in review: the bytes read while the socket lingers went unread, so a client
    # reported its own close code where the server had answered with another.
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=True, pipe=pipe)
    await ws.aclose(1000)
    assert ws.close_code == 1000  # nothing from the server yet
    listener = pipe.heard
    assert listener is not None
    wire = Frame(Opcode.TEXT, answer).serialize(mask=False) if answer else b""
    close = Frame(Opcode.CLOSE, Close(1011, "busy").serialize()).serialize(mask=False)
    assert not listener(wire + close[:3])  # half the Close: it wants the rest
    assert listener(close[3:])  # the Close is in: it wants no more
    assert ws.close_code == 1011
    with pytest.raises(LinkClosedError, match="1011"):
        await ws.send_text("after")


async def test_a_fast_clients_close_leaves_the_protocol_object_as_its_own_close_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=True, pipe=pipe)
    reference = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN, max_size=LIMIT)
    reference.send_close(4001, "bye")
    # The Close is written here, masked from the pool: no system call of its own for a mask.
    monkeypatch.setattr("websockets.frames.secrets.token_bytes", lambda n: pytest.fail("a mask per frame"))
    await ws.aclose(4001, "bye")
    assert closes_in(b"".join(pipe.taken)) == [4001]
    proto = ws._proto
    assert (proto.state, proto.close_sent, proto.close_rcvd) == (
        reference.state,
        reference.close_sent,
        reference.close_rcvd,
    )


CLOSE_1011 = Frame(Opcode.CLOSE, Close(1011, "busy").serialize()).serialize(mask=False)
SERVER_ANSWERS = {
    "close": [CLOSE_1011],
    "message, then close": [Frame(Opcode.TEXT, b"late").serialize(mask=False), CLOSE_1011],
    "message and close in one read": [Frame(Opcode.TEXT, b"late").serialize(mask=False) + CLOSE_1011],
    "ping and close": [Frame(Opcode.PING, b"?").serialize(mask=False) + CLOSE_1011],
    "empty close": [Frame(Opcode.CLOSE, b"").serialize(mask=False)],
    "close cut in two": [CLOSE_1011[:3], CLOSE_1011[3:]],
    "message cut in two": [b"\x81\x04la", b"te" + CLOSE_1011],
    "bad close code": [b"\x88\x02\x03\xe7"],
    "one-byte close": [b"\x88\x01\x03"],
    "reason not utf-8": [b"\x88\x04\x03\xe8\xff\xfe"],
    "masked close": [Frame(Opcode.CLOSE, Close(1011, "busy").serialize()).serialize(mask=True)],
    "fragmented close": [b"\x08\x02\x03\xe8"],
    "end without close": [Frame(Opcode.TEXT, b"late").serialize(mask=False)],
    "binary and pong, then close": [
        Frame(Opcode.BINARY, b"\x00").serialize(mask=False) + Frame(Opcode.PONG, b"").serialize(mask=False),
        CLOSE_1011,
    ],
    # Found in review: these were dropped unread, where the protocol object fails the link.
    "fragmented message, then close cut in two": [
        Frame(Opcode.TEXT, b"a", fin=False).serialize(mask=False),
        Frame(Opcode.CONT, b"b").serialize(mask=False) + CLOSE_1011[:3],
        CLOSE_1011[3:],
    ],
    "continuation without a start": [Frame(Opcode.CONT, b"b").serialize(mask=False) + CLOSE_1011],
    "masked message": [Frame(Opcode.TEXT, b"late").serialize(mask=True) + CLOSE_1011],
    "extension bit": [b"\xc1\x01a" + CLOSE_1011],
    "ping not final": [b"\x09\x01?" + CLOSE_1011],
}


async def lingering_close(answer: list[bytes], *, fast: bool) -> tuple[SansIOWebSocket, list[bool]]:
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=fast, pipe=pipe)
    await ws.aclose(1000)
    assert pipe.heard is not None
    said = [pipe.heard(chunk) for chunk in answer]
    if not said[-1]:
        said.append(pipe.heard(b""))  # the server's FIN
    return ws, said


@pytest.mark.parametrize("answer", SERVER_ANSWERS.values(), ids=SERVER_ANSWERS)
async def test_a_lingering_client_reads_the_servers_close_as_the_protocol_object_does(
    answer: list[bytes],
) -> None:
    ws, said = await lingering_close(answer, fast=True)
    reference, reference_said = await lingering_close(answer, fast=False)
    assert said == reference_said
    assert ws.close_code == reference.close_code
    errors = []
    for link in (ws, reference):
        with pytest.raises(LinkClosedError) as caught:
            await link.send_text("after")
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("name", ["close", "message, then close", "ping and close", "empty close"])
async def test_a_simple_close_from_the_server_is_read_without_the_protocol_object(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=True, pipe=pipe)
    await ws.aclose(1000)
    proto = ws._proto
    monkeypatch.setattr(proto, "receive_data", lambda data: pytest.fail("parsed by the protocol object"))
    assert pipe.heard is not None
    said = [pipe.heard(chunk) for chunk in SERVER_ANSWERS[name]]
    assert said[-1] and not any(said[:-1])
    assert ws.close_code == (1005 if name == "empty close" else 1011)


@pytest.mark.parametrize("takes", [1 << 20, 3, 0])
async def test_a_message_sent_soon_leaves_whole_however_much_the_socket_takes_at_once(takes: int) -> None:
    # send_text_soon writes the frame without a coroutine when the socket takes it all;
    # when it takes less, what it returns sends the rest, and the bytes are one frame.
    # (Not yielding: whether this send is the one in YIELD_EVERY asked to yield depends on
    # every test before it.)
    pipe = LingeringPipe([], takes=takes)
    ws, _ = make_link([], fast=True, pipe=pipe)
    sending = ws.send_text_soon("héllo", yielding=False)
    if takes >= 100:
        assert sending is None
        assert pipe.written == []
    else:
        assert sending is not None
        assert len(b"".join(pipe.taken)) == takes
        await sending
    wire = b"".join(pipe.taken) + b"".join(pipe.written)
    assert frames_sent([wire], by_client=True) == [(Opcode.TEXT, "héllo".encode())]
    if takes >= 100:
        assert ws.send_text_soon("again", yielding=False) is None  # nothing holds the write turn


async def test_a_message_sent_soon_on_a_broken_socket_fails_as_send_text_does() -> None:
    pipe = LingeringPipe([], broken=True)
    ws, _ = make_link([], fast=True, pipe=pipe)
    sending = ws.send_text_soon("lost")
    assert sending is not None
    with pytest.raises(LinkClosedError):
        await sending
    assert ws.close_code == CloseCode.ABNORMAL_CLOSURE
    with pytest.raises(LinkClosedError):  # and so does every later send
        await ws.send_text("after")


async def test_a_message_sent_soon_queues_behind_a_sender_holding_the_write_turn() -> None:
    pipe = LingeringPipe([], takes=2)
    ws, _ = make_link([], fast=True, pipe=pipe)
    first = ws.send_text_soon("first")  # 2 bytes out: this sender now holds the turn
    assert first is not None
    second = ws.send_text_soon("second")  # not written at once: it goes through send_text
    assert second is not None and len(pipe.taken) == 1

    async def finish(sending: Any) -> None:
        await sending

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish, first)
        nursery.start_soon(finish, second)
    wire = b"".join(pipe.taken) + b"".join(pipe.written)
    assert frames_sent([wire], by_client=True) == [(Opcode.TEXT, b"first"), (Opcode.TEXT, b"second")]


async def test_a_task_that_only_sends_soon_still_lets_others_run() -> None:
    # Frames that leave at once ask for a yield as often as send_text's writes do.
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=True, pipe=pipe)

    async def send(index: int) -> None:
        sending = ws.send_text_soon(f"m{index}")
        if sending is not None:
            await sending

    await yields_as_often_as_writes_do(send)
    assert len(pipe.taken) == 20 * YIELD_EVERY  # every frame left at once


async def test_a_sender_that_waits_on_its_socket_next_is_never_asked_to_yield() -> None:
    # Not yielding: the caller reads its socket next, and that read lets the others run.
    pipe = LingeringPipe([])
    ws, _ = make_link([], fast=True, pipe=pipe)
    assert all(ws.send_text_soon(f"m{i}", yielding=False) is None for i in range(3 * YIELD_EVERY))
    assert len(pipe.taken) == 3 * YIELD_EVERY
    asked = [ws.send_text_soon(f"y{i}") for i in range(YIELD_EVERY)]
    assert sum(sending is not None for sending in asked) == 1  # yielding again: once in YIELD_EVERY
    for sending in asked:
        if sending is not None:
            await sending


async def test_a_send_after_a_message_too_large_fails_as_a_closed_link() -> None:
    # The reader learns the message was too large; a sender (the sandbox answering on
    # another socket, say) only that the link is closed, as the interface says.
    too_big = Frame(Opcode.TEXT, b"x" * (LIMIT + 1)).serialize(mask=False)
    ws, _ = make_link([too_big], fast=True)
    messages, error, code = await read_all(ws)
    assert (messages, error, code) == ([], "FrameTooLargeError", 1009)
    with pytest.raises(LinkClosedError, match="1009"):
        await ws.send_text("after")
    sending = ws.send_text_soon("after")
    assert sending is not None
    with pytest.raises(LinkClosedError, match="1009"):
        await sending


@attrs.define
class WatchedPipe(LingeringPipe):
    """A lingering pipe that also keeps how often it was read, half-closed and closed."""

    reads: int = 0
    eof_sent: bool = False
    closed: bool = False

    async def receive_some(self) -> bytes:
        self.reads += 1
        return await super().receive_some()

    async def send_eof(self) -> None:
        self.eof_sent = True
        await super().send_eof()

    def close(self) -> None:
        self.closed = True


async def read_as_the_protocol_object(
    stream: bytes, pipe: WatchedPipe
) -> tuple[SansIOWebSocket, SansIOWebSocket, list[bytes]]:
    """A server link reading its frames itself reads ``stream`` through ``pipe`` to the
    end, which must be the end of a link that hands every byte to the protocol object:
    the two links, and what the second wrote."""
    pipe.chunks = [stream]
    reference, reference_pipe = make_link([stream], fast=False, server=True)
    expected = await read_all(reference)
    ws, _ = make_link([], fast=True, server=True, pipe=pipe)
    assert await read_all(ws) == expected
    return ws, reference, reference_pipe.written


CLIENT_CLOSES = {
    "normal": Close(1000, "").serialize(),
    "with a reason": Close(4001, "bye ✓").serialize(),
    "empty": b"",
    "longest": Close(4002, "r" * 123).serialize(),
    "bad code": b"\x03\xe7",  # 999: not a close code
    "bad UTF-8": b"\x03\xe8\xff\xfe",
    "one byte": b"\x03",
}
MALFORMED = {"bad code", "bad UTF-8", "one byte"}


@pytest.mark.parametrize("takes", [1 << 20, 3, 0], ids=["socket takes all", "takes 3 bytes", "takes none"])
@pytest.mark.parametrize("name", list(CLIENT_CLOSES))
async def test_a_servers_answer_to_its_clients_close_is_the_protocol_objects(name: str, takes: int) -> None:
    # A server reads a Close that ends a read itself and echoes it as the protocol object
    # would. When the socket takes the echo at once its end of TCP follows, and the wait
    # for the client's end is the pipe's: the link reads nothing more and no task waits.
    # A socket that takes less gets the rest the usual way (written, half-closed, read
    # to the client's end). A malformed Close goes to the protocol object, which fails
    # the link.
    stream = Frame(Opcode.TEXT, b"last").serialize(mask=True)
    stream += Frame(Opcode.CLOSE, CLIENT_CLOSES[name]).serialize(mask=True)
    pipe = WatchedPipe([], takes=takes)
    ws, reference, reference_wrote = await read_as_the_protocol_object(stream, pipe)
    assert b"".join(pipe.taken + pipe.written) == b"".join(reference_wrote)
    answered_here = name not in MALFORMED
    at_once = answered_here and takes > len(CLIENT_CLOSES[name]) + 2
    assert pipe.closed
    assert pipe.reads == (1 if at_once else 2)  # the usual way reads to the client's end
    assert pipe.eof_sent != at_once
    assert pipe.lingered == pipe.shut == at_once  # half-closed, and left to the pipe
    if answered_here:
        proto, done = ws._proto, reference._proto
        assert (proto.close_rcvd, proto.close_sent) == (done.close_rcvd, done.close_sent)
        assert proto.close_rcvd_then_sent is done.close_rcvd_then_sent is True
        assert proto.state is done.state is State.CLOSED


async def test_a_client_close_with_bytes_after_it_in_the_same_read_goes_to_the_protocol_object() -> None:
    close = Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True)
    stream = close + Frame(Opcode.PING, b"late").serialize(mask=True)
    pipe = WatchedPipe([])
    *_, reference_wrote = await read_as_the_protocol_object(stream, pipe)
    assert pipe.written == reference_wrote and not pipe.taken
    assert pipe.eof_sent and pipe.reads == 2  # the old way: half-closed, read to the end


@pytest.mark.parametrize(("size", "code"), [(126, 1002), (124, 4096)], ids=["126 bytes", "124 bytes"])
async def test_a_long_form_client_close_goes_to_the_protocol_object(size: int, code: int) -> None:
    # A control frame carries at most 125 bytes, so its length fits the short form; one
    # in the long form is the protocol object's to judge (126 bytes fail the link, 124
    # it echoes). websockets' Frame will not build one, so the bytes are written here,
    # with a mask that makes them a well-formed Close (4735) if read as the short form.
    payload = Close(4096, "r" * 124).serialize()[:size]
    mask = bytes.fromhex("f6c51203")
    stream = b"\x88\xfe" + size.to_bytes(2, "big") + mask + frames.unmask(payload, mask)
    pipe = WatchedPipe([])
    *_, reference_wrote = await read_as_the_protocol_object(stream, pipe)
    assert pipe.written == reference_wrote and not pipe.taken
    assert frames_sent(reference_wrote, by_client=False)[0][1][:2] == code.to_bytes(2, "big")


async def test_a_client_close_inside_a_fragmented_message_fails_as_the_protocol_object_fails_it() -> None:
    stream = Frame(Opcode.TEXT, b"half", fin=False).serialize(mask=True)
    stream += Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True)
    pipe = WatchedPipe([])
    *_, reference_wrote = await read_as_the_protocol_object(stream, pipe)
    failed = Close(CloseCode.PROTOCOL_ERROR, "incomplete fragmented message").serialize()
    assert frames_sent(pipe.written, by_client=False) == [(Opcode.CLOSE, failed)]
    assert frames_sent(reference_wrote, by_client=False) == [(Opcode.CLOSE, failed)]


async def test_a_client_close_answered_while_a_sender_holds_the_write_turn_leaves_after_its_frame() -> None:
    # The sender's write waits; the reader finds the client's Close and leaves the echo
    # to the sender, which writes it after its own frame, then half-closes.
    stream = Frame(Opcode.CLOSE, Close(1001, "away").serialize()).serialize(mask=True)
    gate = trio.Event()

    @attrs.define
    class SlowPipe(WatchedPipe):
        async def send_all(self, data: bytes) -> None:
            await gate.wait()
            await super().send_all(data)

    pipe = SlowPipe([stream])
    ws, _ = make_link([], fast=True, server=True, pipe=pipe)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.send_text, "before")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read_all, ws)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert frames_sent(pipe.written, by_client=False) == [
        (Opcode.TEXT, b"before"),
        (Opcode.CLOSE, Close(1001, "away").serialize()),
    ]
    assert pipe.eof_sent and ws.close_code == 1001
