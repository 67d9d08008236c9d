from __future__ import annotations

import pytest
import trio
import trio.testing

from orchestrator.errors import MailboxClosedError, MailboxFullError
from orchestrator.mailbox import Mailbox, OverflowPolicy


async def test_mailbox_is_fifo() -> None:
    box: Mailbox[int] = Mailbox(4)
    for i in range(4):
        await box.put(i)
    assert [await box.get() for _ in range(4)] == [0, 1, 2, 3]


async def test_mailbox_put_waits_when_full_until_a_get() -> None:
    box: Mailbox[int] = Mailbox(2)
    await box.put(1)
    await box.put(2)
    done = []

    async def producer() -> None:
        await box.put(3)
        done.append(3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and box.statistics().waiting_putters == 1
        assert await box.get() == 1
        await trio.testing.wait_all_tasks_blocked()
        assert done == [3]
    assert [box.get_nowait(), box.get_nowait()] == [2, 3]


async def test_mailbox_put_nowait_raises_named_error_when_full() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    with pytest.raises(MailboxFullError, match="full"):
        box.put_nowait(2)
    reject: Mailbox[int] = Mailbox(1, OverflowPolicy.REJECT)
    await reject.put(1)
    with pytest.raises(MailboxFullError):
        await reject.put(2)


async def test_mailbox_drop_policies_bound_memory_and_count() -> None:
    oldest: Mailbox[int] = Mailbox(2, "drop_oldest")
    newest: Mailbox[int] = Mailbox(2, "drop_newest")
    for i in range(5):
        await oldest.put(i)
        await newest.put(i)
    assert [oldest.get_nowait(), oldest.get_nowait()] == [3, 4]
    assert [newest.get_nowait(), newest.get_nowait()] == [0, 1]
    assert oldest.statistics().dropped == 3 and newest.statistics().dropped == 3
    assert oldest.statistics().high_water == 2


async def test_mailbox_get_waits_and_close_wakes_everyone() -> None:
    box: Mailbox[int] = Mailbox(1)
    with pytest.raises(trio.WouldBlock):
        box.get_nowait()
    errors: list[type[BaseException]] = []

    async def getter() -> None:
        with pytest.raises(MailboxClosedError):
            await box.get()
        errors.append(MailboxClosedError)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert errors == [MailboxClosedError]
    with pytest.raises(MailboxClosedError):
        box.put_nowait(1)


async def test_mailbox_close_lets_the_consumer_drain_first() -> None:
    box: Mailbox[str] = Mailbox(3)
    await box.put("a")
    box.close()
    assert await box.get() == "a"
    with pytest.raises(MailboxClosedError):
        await box.get()


async def test_mailbox_cancelled_put_enqueues_nothing(autojump_clock: trio.testing.MockClock) -> None:
    box: Mailbox[int] = Mailbox(1)
    await box.put(1)
    with trio.move_on_after(1):
        await box.put(2)
    assert box.statistics().depth == 1 and box.get_nowait() == 1


def test_mailbox_rejects_bad_capacity_and_policy() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(0)
    with pytest.raises(ValueError):
        Mailbox(1, "explode")
