"""The supervisor's values, apart from its machinery: the policy it is given
(:class:`SupervisorSettings`) and what it reports (:class:`ConversationInfo` for one
conversation, :class:`SupervisorStatistics` for all of them). Frozen, so a snapshot
never changes under whoever holds it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .actor import ActorSettings

__all__ = ["ConversationInfo", "SupervisorSettings", "SupervisorStatistics"]


@attrs.frozen
class SupervisorSettings:
    """Admission, restart and drain policy. Times in seconds."""

    max_conversations: int = 10_000
    restart_budget: int = 3
    restart_window: float = 5.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0
    breaker_threshold: int = 50
    breaker_window: float = 10.0
    breaker_cooldown: float = 30.0
    memory_limit_bytes: int | None = None
    drain_timeout: float = 30.0
    actor: ActorSettings = attrs.field(factory=ActorSettings)

    def __attrs_post_init__(self) -> None:
        if self.max_conversations < 1:
            raise ValueError("max_conversations must be at least 1")
        if self.restart_budget < 0 or self.restart_window <= 0:
            raise ValueError("restart_budget must be >= 0 and restart_window > 0")
        if self.breaker_threshold < 1 or self.breaker_window <= 0:
            raise ValueError("breaker_threshold must be >= 1 and breaker_window > 0")
        if not 0 <= self.backoff_min <= self.backoff_max:
            # Checked here, not at the first crash: the restart backoff is built from them then.
            least, most = self.backoff_min, self.backoff_max
            raise ValueError(f"backoff_min ({least!r}) must be >= 0 and not exceed backoff_max ({most!r})")


@attrs.frozen
class ConversationInfo:
    """What the inspection API says about one conversation."""

    conversation_id: str
    agent_id: str
    state: str
    restarts: int
    started_at: float
    details: Mapping[str, Any]


@attrs.frozen
class SupervisorStatistics:
    """A snapshot of the supervisor."""

    by_state: Mapping[str, int]
    by_agent: Mapping[str, int]
    active: int
    capacity: int
    started_total: int
    ended_total: Mapping[str, int]
    restarts_total: int
    rejected_total: Mapping[str, int]
    breaker_open: bool
    draining: bool
