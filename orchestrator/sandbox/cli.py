"""``orchestrator sandbox``: serve the sandbox platform, run a scenario or a load test.

::

    orchestrator sandbox [--port 4000]                           # serve until Ctrl-C
    orchestrator sandbox --scenario examples/scenarios/sandbox_weather.toml
    orchestrator sandbox --conversations 1000 --calls 5 --rate 200 [--agent-id echo]
    orchestrator sandbox --platform arinova --conversations 100 --calls 3 --words 20

With a scenario or ``--conversations`` it announces them, prints progress on
stderr, then a table and, as the last line of stdout, one JSON object; it exits 0
when every conversation completed and nothing was lost, else 1 (also when the
``--record`` transcripts could not be written at the end). Usage errors exit 2.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click
import trio
from prometheus_client import CollectorRegistry

from orchestrator import __version__
from orchestrator.errors import ConfigError, first_error
from orchestrator.http import make_app, serve_http
from orchestrator.metrics import Metrics

from .load import LoadReport, run_load
from .scenarios import PLATFORMS, Scenario, load_plan, load_scenario
from .server import SandboxServer
from .settings import DEFAULT_AGENT_NAME, SandboxSettings

__all__ = ["sandbox"]


class _Failure(click.ClickException):
    """A user error: one line on stderr, exit status 2."""

    exit_code = 2


def _tokens(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> dict[str, str]:
    """``--bot-token`` values, ``TOKEN`` or ``TOKEN=AGENT_NAME``, as token → agent name."""
    tokens = {}
    for spec in specs:
        token, equals, name = spec.partition("=")
        if not token or (equals and not name):
            # The value is not quoted back: its token is a secret.
            empty = "TOKEN" if not token else "AGENT_NAME"
            raise click.BadParameter(f"a value has an empty {empty}; expected TOKEN or TOKEN=AGENT_NAME")
        tokens[token] = name or DEFAULT_AGENT_NAME
    return tokens


def _finite(_ctx: click.Context, _param: click.Parameter, seconds: float) -> float:
    """Refuse ``inf`` and ``nan``, which a float range lets through: a time must be a time."""
    if not math.isfinite(seconds):
        raise click.BadParameter(f"{seconds} is not a finite number of seconds")
    return seconds


def _record_path(_ctx: click.Context, _param: click.Parameter, path: Path | None) -> Path | None:
    """Refuse a ``--record`` path the transcripts could not be written to now, not after the run."""
    if path is None:
        return None
    directory = path.parent
    if not directory.exists():
        raise click.BadParameter(f"directory '{directory}' does not exist")
    if not directory.is_dir():
        raise click.BadParameter(f"'{directory}' is not a directory")
    target = path if path.exists() else directory
    if not os.access(target, os.W_OK):
        raise click.BadParameter(f"'{target}' is not writable")
    return path


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=4000, show_default=True, help="0: any free port."
)
@click.option("--scenario", type=click.Path(dir_okay=False, path_type=Path), help="Scenario TOML to run.")
@click.option("--conversations", "-n", type=click.IntRange(min=0), help="Load test: this many conversations.")
@click.option(
    "--calls", "-k", type=click.IntRange(min=0), default=5, show_default=True, help="Calls per conversation."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Conversations per second; 0: all at once.",
)
@click.option(
    "--agent-id", default="echo", show_default=True, help="agent_id of the load test's conversations."
)
@click.option(
    "--platform",
    type=click.Choice(PLATFORMS),
    default="conversimple",
    show_default=True,
    help="Wire protocol of the load test's conversations.",
)
@click.option(
    "--words", type=click.IntRange(min=1), default=20, show_default=True, help="Words per Arinova message."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of synthetic arguments and messages."
)
@click.option(
    "--api-key", "api_keys", multiple=True, help="Accepted Conversimple key (repeatable; default: any)."
)
@click.option(
    "--bot-token",
    "bot_tokens",
    multiple=True,
    callback=_tokens,
    help="Accepted Arinova TOKEN or TOKEN=AGENT_NAME.",
)
@click.option("--suspend", "suspended", multiple=True, help="Customer id whose join is refused as suspended.")
@click.option("--auth-at-handshake", is_flag=True, help="Refuse bad keys with HTTP 401/403, not at join.")
@click.option(
    "--call-timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite,
    default=60.0,
    show_default=True,
    help="Seconds a Conversimple tool call may go unanswered (from its first send) before it is lost.",
)
@click.option(
    "--register-timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite,
    default=30.0,
    show_default=True,
    help="Seconds an announced conversation waits for an agent to register tools before it ends "
    "unregistered.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_record_path,
    help="Write transcripts (JSON lines) at the end.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=9465,
    show_default=True,
    help="Port of /metrics, /healthz, /readyz, /status (on --host).",
)
@click.option("--no-http", is_flag=True, help="Do not serve the HTTP endpoint.")
def sandbox(**options: Any) -> None:
    """Run the bundled sandbox platform (Conversimple and Arinova) on this machine."""
    if options["scenario"] is not None and options["conversations"] is not None:
        raise click.UsageError("--scenario and --conversations are mutually exclusive")
    try:
        scenario = _scenario(options)
        settings = SandboxSettings(
            host=options["host"],
            port=options["port"],
            api_keys=options["api_keys"],
            bot_tokens=options["bot_tokens"],
            suspended_customers=options["suspended"],
            auth_at_handshake=options["auth_at_handshake"],
            call_timeout=options["call_timeout"],
            register_timeout=options["register_timeout"],
            record_messages=options["record"] is not None or options["conversations"] is None,
        )
    except ConfigError as exc:
        raise _Failure(str(exc)) from None
    from orchestrator.cli import run_trio  # it registers this command: imported here, not at the top

    http = None if options["no_http"] else options["http_port"]
    # An address it cannot listen on is a ConfigError: one line on stderr and exit status 2.
    sys.exit(run_trio(partial(_serve, settings, scenario, options["record"], options["quiet"], http)))


def _scenario(options: dict[str, Any]) -> Scenario | None:
    if options["scenario"] is not None:
        return load_scenario(options["scenario"])
    if options["conversations"] is not None:
        return load_plan(
            options["conversations"],
            options["calls"],
            agent_id=options["agent_id"],
            platform=options["platform"],
            rate=options["rate"],
            words=options["words"],
            seed=options["seed"],
        )
    return None


@attrs.define(eq=False)
class _Status:
    """The sandbox as an HTTP :class:`~orchestrator.http.StatusProvider`."""

    server: SandboxServer

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

    def status(self) -> Mapping[str, Any]:
        return {"sandbox": attrs.asdict(self.server.statistics())}


async def _serve(
    settings: SandboxSettings,
    scenario: Scenario | None,
    record: Path | None,
    quiet: bool,
    http_port: int | None = None,
) -> int:
    """Serve until a signal, or run ``scenario`` and print its report; returns the exit status.

    Raises :class:`ConfigError` when the sandbox's or the HTTP endpoint's address
    cannot be bound (in use, not local, not resolvable).
    """
    server = SandboxServer(settings)
    report: LoadReport | None = None
    bound: int | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(server.run)
            except* OSError as group:  # raised before it listened: the address is unusable
                where = f"{settings.host}:{settings.port}"
                raise ConfigError(f"cannot serve the sandbox on {where}: {first_error(group)}") from None
            if http_port is not None:
                app = make_app(
                    Metrics(CollectorRegistry(), process=True), _Status(server), version=__version__
                )
                bound = await nursery.start(partial(serve_http, app, host=settings.host, port=http_port))
            click.echo(
                f"sandbox listening on {settings.host}:{server.port}\n"
                f"  Conversimple  {server.conversimple_url}\n"
                f"  Arinova       {server.base_url}/ws/agent",
                err=True,
            )
            if bound is not None:
                click.echo(f"  status        http://{settings.host}:{bound}/status", err=True)
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            if scenario is None:
                await trio.sleep_forever()
            progress = None if quiet else (lambda line: click.echo(line, err=True))
            report = await run_load(server, scenario, progress=progress)
            nursery.cancel_scope.cancel()
    if report is None and server.recorder.conversations:
        report = server.report()  # interrupted: what was done so far
    written = record is None or _write_transcripts(server, record)
    if report is None:
        return 0 if written else 1
    click.echo(report.table())
    click.echo(report.to_json())
    return 0 if report.passed and written else 1


def _write_transcripts(server: SandboxServer, record: Path) -> bool:
    """Write the transcripts to ``record``; False, after one line on stderr, when that fails."""
    try:
        server.recorder.write_jsonl(record)
    except OSError as exc:  # the disk filled up, the directory went away...
        click.echo(f"Error: cannot write the transcripts to {record}: {exc.strerror or exc}", err=True)
        return False
    return True


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        click.echo("sandbox: stopping", err=True)
        scope.cancel()
        return


if __name__ == "__main__":
    sandbox()
