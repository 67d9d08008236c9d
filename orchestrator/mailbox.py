"""A bounded FIFO of inbound events for one actor.

Full means backpressure (``put`` waits) or a named overflow policy; never
unbounded memory. ``put_nowait`` never waits: under ``block`` and ``reject`` it
raises :class:`~orchestrator.errors.MailboxFullError`, under the drop policies it
drops and counts.
"""

from __future__ import annotations

import enum
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


# No validators on assignment: the hot path assigns ``_getter`` twice per event.
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Mailbox(Generic[T]):
    """Bounded FIFO with one consumer and any number of producers."""

    capacity: int = attrs.field(default=64)
    policy: OverflowPolicy = attrs.field(default=OverflowPolicy.BLOCK, converter=OverflowPolicy)
    # A list, not a deque: an empty deque costs 600 bytes and capacities are small.
    _items: list[T] = attrs.field(init=False, factory=list)
    # One consumer: the task waiting in get(), if any. Producers park lazily.
    _getter: trio.lowlevel.Task | None = attrs.field(init=False, default=None)
    _putters: trio.lowlevel.ParkingLot | None = attrs.field(init=False, default=None)
    _dropped: int = attrs.field(init=False, default=0)
    _high_water: int = attrs.field(init=False, default=0)
    _closed: bool = attrs.field(init=False, default=False)

    @capacity.validator
    def _check_capacity(self, _attr: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {value}")

    def __len__(self) -> int:
        return len(self._items)

    @property
    def consumer_waiting(self) -> bool:
        """True while the consumer is parked in :meth:`get` (so the mailbox is empty)."""
        return self._getter is not None

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
                del self._items[0]
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
        self._wake_getter()
        return accepted

    def _wake_getter(self) -> None:
        getter, self._getter = self._getter, None
        if getter is not None:
            trio.lowlevel.reschedule(getter)

    async def put(self, item: T) -> bool:
        """Enqueue, waiting for room under the ``block`` policy.

        Returns False if a drop policy discarded an event. A cancellation point;
        it yields to the scheduler only when it has to wait. On cancellation
        while waiting, the item is not enqueued.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._items) >= self.capacity and self.policy is OverflowPolicy.BLOCK and not self._closed:
            if self._putters is None:
                self._putters = trio.lowlevel.ParkingLot()
            await self._putters.park()
        return self.put_nowait(item)

    def get_nowait(self) -> T:
        """Dequeue the oldest event; raises trio.WouldBlock when empty."""
        if self._items:
            item = self._items.pop(0)
            if self._putters:
                self._putters.unpark()
            return item
        if self._closed:
            raise MailboxClosedError("mailbox is closed")
        raise trio.WouldBlock

    async def get(self) -> T:
        """Dequeue the oldest event, waiting while empty. A checkpoint.

        Raises MailboxClosedError once closed and drained. A cancellation point;
        it yields to the scheduler only when it has to wait. On cancellation
        nothing is dequeued. One task at a time may wait in ``get``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._items or self._closed:
                return self.get_nowait()
            if self._getter is not None:
                raise trio.BusyResourceError("another task is already waiting in Mailbox.get")
            self._getter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_get)

    def _abort_get(self, _: object) -> trio.lowlevel.Abort:
        self._getter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def close(self) -> None:
        """Refuse new events; waiting producers fail, the consumer drains what is left."""
        self._closed = True
        self._wake_getter()
        if self._putters is not None:
            self._putters.unpark_all()

    def statistics(self) -> MailboxStatistics:
        """The live state of the mailbox as a frozen value."""
        return MailboxStatistics(
            depth=len(self._items),
            capacity=self.capacity,
            policy=self.policy,
            waiting_putters=0 if self._putters is None else len(self._putters),
            waiting_getters=0 if self._getter is None else 1,
            dropped=self._dropped,
            high_water=self._high_water,
            closed=self._closed,
        )
