"""``orchestrator demo``: the sandbox platform plus the example agents, on this machine.

One process, two sides talking over real loopback WebSockets: the bundled
sandbox platform (Conversimple's Phoenix channels and Arinova's ``/ws/agent``)
drives simulated customers from the scenario files in ``examples/scenarios/``,
and the orchestrator serves the example agents in ``examples/`` under its
supervisor, with ``/metrics``, ``/readyz`` and ``/status`` served as in
production. Live progress while it runs, a summary table at the end; the exit
status is 0 when every conversation completed and no call was lost.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .agent import Agent
from .config import Settings
from .dispatcher import CompositePlatform, Platform
from .errors import ConfigError
from .platforms.conversimple import ConversimplePlatform, policy_from_settings
from .sandbox.load import LoadReport
from .sandbox.scenarios import Scenario, load_scenario
from .sandbox.server import SandboxServer
from .sandbox.settings import SandboxSettings
from .service import Running, run_service

#: The example agents the demo serves, as ``module:Class`` under examples/.
EXAMPLE_AGENTS = (
    "examples.weather:WeatherAgent",
    "examples.customer_service:CustomerServiceAgent",
    "examples.booking:BookingAgent",
    "examples.echo:EchoAgent",
)
DEMO_KEY = "demo-key"
DEMO_IDLE_TIMEOUT = 30.0
#: One Arinova bot (token) per agent that answers messages: the sandbox routes an
#: Arinova conversation to the bot named like its agent id.
ARINOVA_BOTS = {"demo-bot-weather": "weather", "demo-bot-echo": "echo"}


def project_root() -> Path:
    """The checkout holding examples/ (the demo runs from a source checkout)."""
    here = Path(__file__).resolve().parent.parent
    if not (here / "examples").is_dir():
        raise ConfigError("the demo needs the examples/ folder of a source checkout next to the package")
    return here


def load_examples(root: Path) -> list[type[Agent]]:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    agents: list[type[Agent]] = []
    for spec in EXAMPLE_AGENTS:
        module, _, name = spec.partition(":")
        agents.append(getattr(importlib.import_module(module), name))
    return agents


def load_scenarios(root: Path, repeat: int) -> list[Scenario]:
    files = sorted((root / "examples" / "scenarios").glob("sandbox_*.toml"))
    if not files:
        raise ConfigError("no examples/scenarios/sandbox_*.toml scenario files found")
    scenarios = [load_scenario(path) for path in files]
    return [s for s in scenarios for _ in range(repeat)]


@attrs.define(eq=False)
class Demo:
    """Runs the sandbox and the orchestrator side by side until the scenarios are done."""

    settings: Settings
    repeat: int = 1
    console: Console = attrs.field(factory=lambda: Console(stderr=True, width=max(100, Console().width)))

    async def run(self) -> int:
        if self.settings.supervisor.actor.idle_timeout is None:
            # Arinova never says a conversation ended: its actors end when idle.
            actor = attrs.evolve(self.settings.supervisor.actor, idle_timeout=DEMO_IDLE_TIMEOUT)
            supervisor = attrs.evolve(self.settings.supervisor, actor=actor)
            self.settings = attrs.evolve(self.settings, supervisor=supervisor)
        root = project_root()
        agents = load_examples(root)
        scenarios = load_scenarios(root, self.repeat)
        server = SandboxServer(SandboxSettings(port=0, bot_tokens=ARINOVA_BOTS))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            platform = self._platform(server, agents)
            running: Running = await nursery.start(
                lambda task_status: run_service(self.settings, agents, platform, task_status=task_status)
            )
            if running.http_port is not None:
                self.console.print(
                    f"[bold]orchestrator demo[/]: sandbox on {server.base_url}, metrics on "
                    f"http://{self.settings.http.host}:{running.http_port}/metrics"
                )
            ids = [cid for scenario in scenarios for cid in server.add_conversations(scenario)]
            with Live(
                self._progress(server, ids, running), console=self.console, refresh_per_second=8
            ) as live:
                with trio.move_on_after(120) as timeout:
                    async with trio.open_nursery() as waiting:
                        waiting.start_soon(server.wait_done, ids)
                        while len(server.report(ids).outcomes) == 0 or not all(
                            server.conversation(c).outcome for c in ids
                        ):
                            live.update(self._progress(server, ids, running))
                            await trio.sleep(0.125)
                live.update(self._progress(server, ids, running))
            report = server.report(ids)
            self.console.print()
            self.console.print(self._summary(server, ids, running))
            if timeout.cancelled_caught:
                self.console.print("[red]demo timed out before every conversation ended[/]")
            nursery.cancel_scope.cancel()
        print(report.to_json())
        return 0 if report.passed and not timeout.cancelled_caught else 1

    def _platform(self, server: SandboxServer, agents: Sequence[type[Agent]]) -> Platform:
        policy = policy_from_settings(self.settings.platform)
        conversimple = ConversimplePlatform(server.conversimple_url, DEMO_KEY, "demo-customer", policy)
        try:
            from .platforms.arinova import ArinovaPlatform
        except ImportError:  # pragma: no cover - Arinova ships with the package
            return conversimple
        platforms: dict[str, Platform] = {"conversimple": conversimple}
        for token, agent_id in ARINOVA_BOTS.items():
            name = f"arinova-{agent_id}"
            platforms[name] = ArinovaPlatform(
                server.arinova_url, token, agent_id=agent_id, name=name, policy=policy
            )
        return CompositePlatform(platforms)

    def _progress(self, server: SandboxServer, ids: Sequence[str], running: Running) -> Table:
        report = server.report(ids)
        done = sum(report.outcomes.values())
        stats = running.supervisor.statistics()
        table = Table(title="orchestrator demo", show_header=False, box=None)
        live = f"{stats.active} actors running"
        if done == len(ids) and stats.active:
            live += " (an Arinova chat has no end event: its actor stops when idle)"
        table.add_row("conversations", f"{done}/{len(ids)} ended at the platform, {live}")
        table.add_row("tool calls", f"{report.calls} ({report.calls_ok} ok, {report.calls_error} errors)")
        table.add_row("replies", f"{report.replies} ({report.chunks} chunks streamed)")
        return table

    def _summary(self, server: SandboxServer, ids: Sequence[str], running: Running) -> Table:
        rows: dict[tuple[str, str], list[int]] = {}
        for cid in ids:
            log = server.conversation(cid)
            row = rows.setdefault((log.agent_id, log.platform), [0, 0, 0, 0, 0])
            row[0] += 1
            row[1] += log.outcome == "completed"
            row[2] += len(log.calls) + len(log.replies)
            row[3] += sum(c.status == "error" for c in log.calls) + sum(
                r.status == "error" for r in log.replies
            )
            row[4] += sum(c.status == "lost" for c in log.calls) + sum(
                r.status == "lost" for r in log.replies
            )
        table = Table(title="summary")
        # An agent's name whole, on a narrow terminal too: the numbers' headers wrap instead.
        names = max((len(agent) for agent, _ in rows), default=5)
        table.add_column("agent", no_wrap=True, min_width=names)
        table.add_column("platform", no_wrap=True, min_width=len("conversimple"))
        for header in ("conversations", "completed", "calls", "errors", "lost"):
            table.add_column(header, justify="right")
        for (agent, platform), row in sorted(rows.items()):
            table.add_row(agent, platform, *(str(v) for v in row))
        stats = running.supervisor.statistics()
        table.caption = (
            f"supervisor: {stats.started_total} started, restarts {stats.restarts_total}; calls: tool "
            "calls and Arinova replies; errors: the business-rule replies the scenarios expect"
        )
        return table


def summary_of(report: LoadReport) -> str:
    return report.table()
