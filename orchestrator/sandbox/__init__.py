"""The bundled sandbox platform: a local server speaking Conversimple and Arinova.

Agents (ours, conversimple-sdk's, arinova-agent-sdk's) connect to it over real
WebSockets; simulated customers drive each conversation from a scenario file or
with synthetic, schema-valid arguments; every message is recorded; as a load
generator it reports calls/s and latency percentiles::

    sandbox/
      settings.py      SandboxSettings, the two socket paths
      server.py        SandboxServer: serve, route by path, add conversations, faults
      conversimple.py  Phoenix sockets: joins, registrations, answers, faults
      conversation.py  one conversation: announced, driven by its customer, redelivery, end
      arinova.py       bot sockets, tasks, streamed replies
      customers.py     simulated customers and their expectations
      synthetic.py     schema-valid synthetic arguments and messages
      scenarios.py     the scenario TOML format
      recorder.py      transcripts and per-call records
      load.py          the load generator and its report
      cli.py           `orchestrator sandbox`
"""

from __future__ import annotations

from .load import LoadReport, build_report, run_load
from .recorder import CallRecord, ConversationLog, Entry, Recorder, ReplyRecord
from .scenarios import (
    ConversationPlan,
    MessageTurn,
    Scenario,
    ToolTurn,
    load_plan,
    load_scenario,
    parse_scenario,
)
from .server import SandboxServer, SandboxStatistics
from .settings import ARINOVA_PATH, CONVERSIMPLE_PATH, SandboxSettings

__all__ = [
    "ARINOVA_PATH",
    "CONVERSIMPLE_PATH",
    "CallRecord",
    "ConversationLog",
    "ConversationPlan",
    "Entry",
    "LoadReport",
    "MessageTurn",
    "Recorder",
    "ReplyRecord",
    "SandboxServer",
    "SandboxSettings",
    "SandboxStatistics",
    "Scenario",
    "ToolTurn",
    "build_report",
    "load_plan",
    "load_scenario",
    "parse_scenario",
    "run_load",
]
