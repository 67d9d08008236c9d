"""A hotel booking agent: a multi-turn flow whose state lives on ``self``.

The flow is check availability → hold a room → confirm with the guest's
details; a booking can be cancelled. Each step checks the previous one happened
in *this* conversation, and every broken rule is an error reply the platform's
LLM can read and act on ("check availability first", "suites can be held for
at most 2 nights", "hold H-1 expired"...), never a crash.

``confirm_booking`` takes a nested ``Guest`` (an attrs class), so its schema
shows an object parameter with its own described fields. Holds expire after
``HOLD_SECONDS`` of trio time or after ``MAX_CONFIRM_ATTEMPTS`` failed
confirmations. Inventory is deterministic: suites sell out on Fridays and
Saturdays, everything else is available.

Run it against a platform::

    orchestrator run examples/booking.py:BookingAgent --url wss://platform.example/ws --api-key ...
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

import attrs
import trio

from orchestrator.agent import Agent, tool

RoomType = Literal["single", "double", "suite"]

HOLD_SECONDS = 900.0
MAX_CONFIRM_ATTEMPTS = 3
MAX_NIGHTS = 14
MAX_SUITE_NIGHTS = 2
MAX_GUESTS = 4

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


@attrs.frozen
class Room:
    room_type: RoomType
    sleeps: int
    nightly_rate: float


ROOMS: dict[str, Room] = {
    r.room_type: r
    for r in (Room("single", 1, 89.0), Room("double", 2, 129.0), Room("suite", MAX_GUESTS, 289.0))
}
_SUITE_SOLD_OUT_WEEKDAYS = frozenset({4, 5})  # Friday and Saturday nights


@attrs.frozen
class Guest:
    """Who the booking is for."""

    name: Annotated[str, "the guest's full name"]
    email: Annotated[str, "where the confirmation is sent"]


@attrs.frozen
class Booking:
    """A confirmed stay (returned to the platform as a JSON object)."""

    booking_id: str
    room_type: RoomType
    check_in: str
    nights: int
    guest: Guest
    total: float
    status: Literal["confirmed", "cancelled"] = "confirmed"


@attrs.define(eq=False)
class _Hold:
    hold_id: str
    room_type: RoomType
    check_in: datetime.date
    nights: int
    expires_at: float
    failed_attempts: int = 0
    used: bool = False


def parse_date(date: str) -> datetime.date:
    """A ``YYYY-MM-DD`` date; ValueError with a readable message otherwise."""
    text = date.strip()
    if not _DATE.fullmatch(text):
        raise ValueError(f"date must look like YYYY-MM-DD, got {date[:40]!r}")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text} is not a calendar date") from None


def _check_nights(nights: int) -> None:
    if not 1 <= nights <= MAX_NIGHTS:
        raise ValueError(f"nights must be between 1 and {MAX_NIGHTS}, got {nights}")


def _available(room: Room, check_in: datetime.date, nights: int, guests: int) -> bool:
    if room.sleeps < guests:
        return False
    if room.room_type != "suite":
        return True
    if nights > MAX_SUITE_NIGHTS:
        return False
    stay = (check_in + datetime.timedelta(days=n) for n in range(nights))
    return not any(day.weekday() in _SUITE_SOLD_OUT_WEEKDAYS for day in stay)


class BookingAgent(Agent):
    """Checks availability, holds rooms and books them."""

    agent_id = "booking"

    def __init__(self) -> None:
        super().__init__()
        # Conversation state: (check-in, nights) -> room types found available.
        self.checked: dict[tuple[datetime.date, int], frozenset[str]] = {}
        self.holds: dict[str, _Hold] = {}
        self.bookings: dict[str, Booking] = {}

    @tool
    async def check_availability(self, date: str, nights: int = 1, guests: int = 1) -> dict[str, Any]:
        """Which room types are free for a stay, and what they cost.

        Args:
            date: check-in date, YYYY-MM-DD.
            nights: how many nights, 1 to 14.
            guests: how many people share the room, 1 to 4.
        """
        check_in = parse_date(date)
        _check_nights(nights)
        if not 1 <= guests <= MAX_GUESTS:
            raise ValueError(f"guests must be between 1 and {MAX_GUESTS}, got {guests}")
        await trio.lowlevel.checkpoint()
        free = [room for room in ROOMS.values() if _available(room, check_in, nights, guests)]
        self.checked[check_in, nights] = frozenset(room.room_type for room in free)
        result: dict[str, Any] = {
            "date": check_in.isoformat(),
            "nights": nights,
            "guests": guests,
            "rooms": [
                {"room_type": r.room_type, "nightly_rate": r.nightly_rate, "total": r.nightly_rate * nights}
                for r in free
            ],
        }
        if nights > MAX_SUITE_NIGHTS:
            result["note"] = f"suites can be booked for at most {MAX_SUITE_NIGHTS} nights"
        return result

    @tool
    async def hold_room(self, room_type: RoomType, date: str, nights: int) -> dict[str, Any]:
        """Hold a room for a stay checked with check_availability, while the guest decides.

        Args:
            room_type: "single", "double" or "suite".
            date: check-in date, YYYY-MM-DD (as checked).
            nights: how many nights (as checked).
        """
        check_in = parse_date(date)
        _check_nights(nights)
        if room_type == "suite" and nights > MAX_SUITE_NIGHTS:
            raise ValueError(f"suites can be held for at most {MAX_SUITE_NIGHTS} nights, not {nights}")
        free = self.checked.get((check_in, nights))
        if free is None:
            raise ValueError(f"check availability first for {check_in.isoformat()}, {nights} night(s)")
        if room_type not in free:
            raise ValueError(
                f"no {room_type} room is available from {check_in.isoformat()} for {nights} night(s)"
            )
        await trio.lowlevel.checkpoint()
        hold = _Hold(
            f"H-{len(self.holds) + 1}", room_type, check_in, nights, trio.current_time() + HOLD_SECONDS
        )
        self.holds[hold.hold_id] = hold
        return {
            "hold_id": hold.hold_id,
            "room_type": room_type,
            "date": check_in.isoformat(),
            "nights": nights,
            "total": ROOMS[room_type].nightly_rate * nights,
            "expires_in_seconds": HOLD_SECONDS,
        }

    @tool
    async def confirm_booking(self, hold_id: str, guest: Guest) -> Booking:
        """Turn a hold into a booking for the named guest.

        Args:
            hold_id: the id hold_room returned, e.g. "H-1".
            guest: the guest's name and email address.
        """
        hold = self._live_hold(hold_id)
        await trio.lowlevel.checkpoint()
        problem = None
        if not guest.name.strip():
            problem = "the guest's name is empty"
        elif not _EMAIL.fullmatch(guest.email.strip()):
            problem = f"{guest.email[:60]!r} is not an email address"
        if problem is not None:
            hold.failed_attempts += 1
            left = MAX_CONFIRM_ATTEMPTS - hold.failed_attempts
            if left <= 0:
                raise ValueError(f"{problem}; hold {hold.hold_id} has now expired, place a new hold")
            raise ValueError(f"{problem}; {left} attempt(s) left before hold {hold.hold_id} expires")
        hold.used = True
        booking = Booking(
            f"B-{len(self.bookings) + 1}",
            hold.room_type,
            hold.check_in.isoformat(),
            hold.nights,
            Guest(" ".join(guest.name.split()), guest.email.strip()),
            ROOMS[hold.room_type].nightly_rate * hold.nights,
        )
        self.bookings[booking.booking_id] = booking
        return booking

    @tool
    async def cancel_booking(self, booking_id: str) -> dict[str, Any]:
        """Cancel a booking made in this conversation; the full amount is refunded.

        Args:
            booking_id: the id confirm_booking returned, e.g. "B-1".
        """
        booking = self.bookings.get(booking_id.strip().upper())
        if booking is None:
            raise ValueError(f"no booking {booking_id[:40]!r} in this conversation")
        if booking.status == "cancelled":
            raise ValueError(f"booking {booking.booking_id} is already cancelled")
        await trio.lowlevel.checkpoint()
        self.bookings[booking.booking_id] = attrs.evolve(booking, status="cancelled")
        return {"booking_id": booking.booking_id, "status": "cancelled", "refund": booking.total}

    def _live_hold(self, hold_id: str) -> _Hold:
        if not self.holds:
            raise ValueError("there are no holds in this conversation; hold a room first")
        hold = self.holds.get(hold_id.strip().upper())
        if hold is None:
            raise ValueError(f"no hold {hold_id[:40]!r}; holds: {', '.join(self.holds)}")
        if hold.used:
            raise ValueError(f"hold {hold.hold_id} was already confirmed")
        if hold.failed_attempts >= MAX_CONFIRM_ATTEMPTS:
            raise ValueError(
                f"hold {hold.hold_id} expired after {MAX_CONFIRM_ATTEMPTS} failed confirmation attempts"
            )
        if trio.current_time() >= hold.expires_at:
            raise ValueError(f"hold {hold.hold_id} expired; holds last {HOLD_SECONDS / 60:g} minutes")
        return hold
