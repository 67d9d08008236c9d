"""The simulator's exceptions, grafted onto :mod:`orchestrator.errors`::

    OrchestratorError
    ├── ConfigError
    │   └── ScenarioError              a scenario file that cannot be used
    └── SimulationError                a simulation that could not run to its end
        ├── RunnerUsedError            a runner is single use: run() called twice
        ├── ParticipantError           a participant or the agent under test raised
        └── LLMError                   an LLM request failed (status, transport, bad body)
            └── LLMTimeout             an LLM request ran past its timeout

A ``ParticipantError`` or ``LLMError`` raised while a conversation runs does not
escape the runner: the result ends with reason ``error`` and the message as its
detail, so one broken simulation never stops a batch. Messages never carry an
API key.
"""

from __future__ import annotations

from ..errors import ConfigError, OrchestratorError


class ScenarioError(ConfigError):
    """A scenario file is malformed: bad TOML, unknown keys, invalid values."""


class SimulationError(OrchestratorError):
    """Base class of failures while simulating a conversation."""


class RunnerUsedError(SimulationError):
    """A runner is single use and ``run()`` was already called."""


class ParticipantError(SimulationError):
    """A participant, or the agent under test, raised or returned something unusable."""


class LLMError(SimulationError):
    """An LLM request failed: HTTP status, transport error, or an unreadable body."""


class LLMTimeout(LLMError):
    """An LLM request ran past its timeout."""
