"""A customer-service agent: customers, orders, support tickets and refunds.

Shows the shapes a real agent mixes: sync tools (run in worker threads, as a
blocking database client would), async tools, per-conversation state on
``self`` (the tickets opened and refunds issued in *this* conversation), business
rules that answer with an error reply instead of crashing, parameter
descriptions from docstring ``Args:`` sections, and lifecycle hooks.

The customer and order "database" is a fixed table in this module; nothing in
it changes, so every conversation starts from the same data.

Run it against a platform::

    orchestrator run examples/customer_service.py:CustomerServiceAgent \\
        --url wss://platform.example/ws --api-key ...
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import attrs
import trio

from orchestrator.agent import Agent, tool
from orchestrator.store import ConversationRecord

log = logging.getLogger("examples.customer_service")

Priority = Literal["low", "normal", "high"]


@attrs.frozen
class Customer:
    customer_id: str
    name: str
    email: str
    tier: Literal["standard", "gold"]


@attrs.frozen
class Order:
    order_id: str
    customer_id: str
    total: float
    status: Literal["processing", "shipped", "delivered", "refunded"]
    carrier: str | None = None
    eta: str | None = None


@attrs.frozen
class Ticket:
    ticket_id: str
    subject: str
    priority: Priority
    customer_id: str | None
    status: str = "open"


CUSTOMERS: dict[str, Customer] = {
    c.customer_id: c
    for c in (
        Customer("C-100", "Ada Lovelace", "ada@example.com", "gold"),
        Customer("C-101", "Grace Hopper", "grace@example.com", "standard"),
        Customer("C-102", "Alan Turing", "alan@example.com", "standard"),
    )
}

ORDERS: dict[str, Order] = {
    o.order_id: o
    for o in (
        Order("O-5001", "C-100", 59.90, "delivered", "DHL", "2025-05-02"),
        Order("O-5002", "C-100", 120.00, "shipped", "UPS", "2025-06-14"),
        Order("O-5003", "C-101", 15.50, "processing"),
        Order("O-5004", "C-102", 240.00, "refunded", "DHL", "2025-04-20"),
    )
}

_REFUNDABLE = frozenset({"delivered", "shipped"})


def _customer(customer_id: str) -> Customer:
    found = CUSTOMERS.get(customer_id.strip().upper())
    if found is None:
        raise ValueError(f"no customer with id {customer_id[:40]!r}; ids look like C-100")
    return found


def _order(order_id: str) -> Order:
    found = ORDERS.get(order_id.strip().upper())
    if found is None:
        raise ValueError(f"no order with id {order_id[:40]!r}; ids look like O-5001")
    return found


class CustomerServiceAgent(Agent):
    """Looks up customers and orders, opens tickets and issues refunds."""

    agent_id = "customer-service"

    def __init__(self) -> None:
        super().__init__()
        # Conversation state: one agent instance serves one conversation.
        self.tickets: list[Ticket] = []
        self.refunded: dict[str, float] = {}  # order id -> amount refunded in this conversation

    async def on_conversation_started(self, conversation: ConversationRecord) -> None:
        log.info("conversation %s started", conversation.conversation_id)

    async def on_conversation_ended(self, conversation: ConversationRecord) -> None:
        log.info(
            "conversation %s ended: %d ticket(s) opened, %d refund(s) issued",
            conversation.conversation_id,
            len(self.tickets),
            len(self.refunded),
        )

    @tool
    def lookup_customer(self, customer_id: str) -> dict[str, Any]:
        """Find a customer's profile and their orders.

        Args:
            customer_id: the customer's id, e.g. "C-100".
        """
        customer = _customer(customer_id)
        orders = [o.order_id for o in ORDERS.values() if o.customer_id == customer.customer_id]
        return {**attrs.asdict(customer), "orders": orders}

    @tool
    async def check_order_status(self, order_id: str) -> dict[str, Any]:
        """Where an order is: its status, carrier and expected delivery date.

        Args:
            order_id: the order's id, e.g. "O-5001".
        """
        order = _order(order_id)
        await trio.lowlevel.checkpoint()
        status: str = order.status
        refunded = order.total if status == "refunded" else self.refunded.get(order.order_id, 0.0)
        if 0 < refunded < order.total:
            status = "partially_refunded"
        elif refunded:
            status = "refunded"
        return {
            "order_id": order.order_id,
            "status": status,
            "carrier": order.carrier,
            "estimated_delivery": order.eta,
            "total": order.total,
            "refunded": refunded,
        }

    @tool
    async def open_ticket(
        self, subject: str, priority: Priority = "normal", customer_id: str | None = None
    ) -> dict[str, Any]:
        """Open a support ticket for a problem that needs a human.

        Args:
            subject: one line saying what the problem is.
            priority: "low", "normal" or "high" (an outage, a payment problem).
            customer_id: the customer it concerns, if known, e.g. "C-101".
        """
        subject = " ".join(subject.split())
        if not subject:
            raise ValueError("a ticket needs a subject saying what the problem is")
        if customer_id is not None:
            customer_id = _customer(customer_id).customer_id
        await trio.lowlevel.checkpoint()
        ticket = Ticket(f"T-{1001 + len(self.tickets)}", subject[:200], priority, customer_id)
        self.tickets.append(ticket)
        log.info("opened ticket %s (%s)", ticket.ticket_id, priority)
        return attrs.asdict(ticket)

    @tool
    def list_tickets(self) -> list[dict[str, Any]]:
        """The tickets opened so far in this conversation."""
        return [attrs.asdict(t) for t in tuple(self.tickets)]

    @tool
    async def refund_order(self, order_id: str, reason: str, amount: float | None = None) -> dict[str, Any]:
        """Refund a shipped or delivered order, in full or in part.

        Args:
            order_id: the order's id, e.g. "O-5001".
            reason: why the customer wants the money back.
            amount: how much to refund; leave out to refund what remains of the total.
        """
        order = _order(order_id)
        if not reason.strip():
            raise ValueError("a refund needs a reason")
        if order.status == "refunded":
            raise ValueError(f"order {order.order_id} was already refunded")
        if order.status not in _REFUNDABLE:
            raise ValueError(f"order {order.order_id} is still {order.status}; refunds start once it ships")
        remaining = round(order.total - self.refunded.get(order.order_id, 0.0), 2)
        if remaining <= 0:
            raise ValueError(f"order {order.order_id} was already refunded")
        refund = remaining if amount is None else round(amount, 2)
        if not (math.isfinite(refund) and refund > 0):
            raise ValueError(f"the refund amount must be positive, got {amount}")
        if refund > remaining:
            raise ValueError(
                f"the refund of {refund:.2f} is more than the {remaining:.2f} left on order "
                f"{order.order_id} (total {order.total:.2f})"
            )
        await trio.lowlevel.checkpoint()
        self.refunded[order.order_id] = round(self.refunded.get(order.order_id, 0.0) + refund, 2)
        return {
            "order_id": order.order_id,
            "refunded": refund,
            "remaining": round(remaining - refund, 2),
            "reason": reason.strip()[:200],
        }
