"""A bounded FIFO of inbound events for one actor.

Full means backpressure (``put`` waits) or a named overflow policy; never
unbounded memory. ``put_nowait`` never waits: under ``block`` and ``reject`` it
raises :class:`~orchestrator.errors.MailboxFullError`, under the drop policies it
drops and counts.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

import attrs
import trio

from .errors import MailboxClosedError, MailboxFullError

T = TypeVar("T")


class OverflowPolicy(enum.Enum):
    """What a full mailbox does with one more event."""

    BLOCK = "block"  #: ``put`` waits for room (backpressure to the sender)
    REJECT = "reject"  #: ``put`` raises MailboxFullError at once
    DROP_OLDEST = "drop_oldest"  #: evict the oldest waiting event
    DROP_NEWEST = "drop_newest"  #: discard the event being put


@attrs.frozen
class MailboxStatistics:
    """A snapshot of one mailbox."""

    depth: int
    capacity: int
    policy: OverflowPolicy
    waiting_putters: int
    waiting_getters: int
    dropped: int
    high_water: int
    closed: bool


@attrs.define(eq=False)
class Mailbox(Generic[T]):
    """Bounded FIFO with one consumer and any number of producers."""

    capacity: int = attrs.field(default=64)
    policy: OverflowPolicy = attrs.field(default=OverflowPolicy.BLOCK, converter=OverflowPolicy)
    _items: deque[T] = attrs.field(init=False, factory=deque)
    _getters: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _putters: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _dropped: int = attrs.field(init=False, default=0)
    _high_water: int = attrs.field(init=False, default=0)
    _closed: bool = attrs.field(init=False, default=False)

    @capacity.validator
    def _check_capacity(self, _attr: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {value}")

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        """Enqueue without waiting. Returns False if a drop policy discarded an event.

        Raises MailboxFullError when full under ``block`` or ``reject``, and
        MailboxClosedError once closed.
        """
        if self._closed:
            raise MailboxClosedError("mailbox is closed")
        accepted = True
        if len(self._items) >= self.capacity:
            if self.policy is OverflowPolicy.DROP_OLDEST:
                self._items.popleft()
                self._dropped += 1
                accepted = False
            elif self.policy is OverflowPolicy.DROP_NEWEST:
                self._dropped += 1
                return False
            else:
                raise MailboxFullError(f"mailbox full ({self.capacity} events)")
        self._items.append(item)
        if len(self._items) > self._high_water:
            self._high_water = len(self._items)
        self._getters.unpark()
        return accepted

    async def put(self, item: T) -> bool:
        """Enqueue, waiting for room under the ``block`` policy.

        Returns False if a drop policy discarded an event. A checkpoint. On
        cancellation while waiting, the item is not enqueued.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._items) >= self.capacity and self.policy is OverflowPolicy.BLOCK and not self._closed:
            await self._putters.park()
        accepted = self.put_nowait(item)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    def get_nowait(self) -> T:
        """Dequeue the oldest event; raises trio.WouldBlock when empty."""
        if self._items:
            item = self._items.popleft()
            self._putters.unpark()
            return item
        if self._closed:
            raise MailboxClosedError("mailbox is closed")
        raise trio.WouldBlock

    async def get(self) -> T:
        """Dequeue the oldest event, waiting while empty. A checkpoint.

        Raises MailboxClosedError once closed and drained. On cancellation
        nothing is dequeued.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                item = self.get_nowait()
            except trio.WouldBlock:
                await self._getters.park()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item

    def close(self) -> None:
        """Refuse new events; waiting producers fail, the consumer drains what is left."""
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()

    def statistics(self) -> MailboxStatistics:
        """The live state of the mailbox as a frozen value."""
        return MailboxStatistics(
            depth=len(self._items),
            capacity=self.capacity,
            policy=self.policy,
            waiting_putters=len(self._putters),
            waiting_getters=len(self._getters),
            dropped=self._dropped,
            high_water=self._high_water,
            closed=self._closed,
        )
