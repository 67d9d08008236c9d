"""The ``orchestrator`` command.

Every user error (a bad AGENT spec, flag, config file or URL) is one line on
stderr and exit status 2, never a traceback. Settings come from flags, then
``ORCHESTRATOR_*`` variables (and the Conversimple/Arinova SDK names), then a
TOML file given with ``--config``; flags win.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
import trio

from . import __version__
from .build import describe, stale_modules
from .config import Settings
from .errors import ConfigError, LinkError, OrchestratorError, first_error

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds without a message after which an Arinova conversation's actor ends
#: (unless ``actor.idle_timeout`` is set): Arinova has no end-of-conversation event.
ARINOVA_IDLE_TIMEOUT = 600.0


class BadInput(click.ClickException):
    """A user error: one line on stderr, exit status 2."""

    exit_code = 2


class LinkFailed(click.ClickException):
    """The platform link failed for good: exit status 3."""

    exit_code = 3


_NO_ARGS: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""What click (8.2 on) raises to show a bare command group's help: a usage error by type."""


class _OneLineUsage(click.Group):
    """The command group: a flag or argument click refuses (a value out of range, an
    unknown option, a missing argument, a command that does not exist) is one line too,
    naming where to look, not click's usage block, hint and error on three."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _NO_ARGS:
            raise  # a bare command shows its help, as it always did
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _NO_ARGS:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _one_line(exc: click.UsageError) -> BadInput:
    where = exc.ctx.command_path if exc.ctx is not None else "orchestrator"
    return BadInput(f"{exc.format_message()} (see '{where} --help')")


def _fail(exc: BaseException) -> click.ClickException:
    return BadInput(str(exc))


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from ``config``, the environment and flag ``overrides`` (None values dropped)."""
    cleaned: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value not in (None, {}):
            cleaned[key] = value
    try:
        return Settings.load(toml=config, overrides=cleaned)
    except ConfigError as exc:
        raise _fail(exc) from None


def common_options(func: F) -> F:
    """Flags shared by the commands that run a service (HTTP endpoint, logging, config)."""
    options = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML settings file (flags and environment override it).",
        ),
        click.option("--http-host", help="Address of /metrics, /healthz, /readyz, /status [127.0.0.1]."),
        click.option(
            "--http-port",
            type=click.IntRange(0, 65535),
            help="Port of the HTTP endpoint [9464; the demo: any free port].",
        ),
        click.option("--no-http", is_flag=True, help="Do not serve the HTTP endpoint."),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
            help="Log level [info].",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"], case_sensitive=False),
            help="Log format [text].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def common_overrides(
    http_host: str | None,
    http_port: int | None,
    no_http: bool,
    log_level: str | None,
    log_format: str | None,
) -> dict[str, Any]:
    return {
        "http": {"host": http_host, "port": http_port, "enabled": False if no_http else None},
        "logging": {"level": log_level.upper() if log_level else None, "format": log_format},
    }


def configure(settings: Settings, *, worker: int | None = None) -> None:
    """Set up logging for a command, masking the configured secrets; a worker process's
    records say which worker wrote them."""
    from .logs import WorkerFilter, configure_logging

    secrets = [s for s in (settings.platform.api_key, settings.platform.bot_token) if s]
    filters = [] if worker is None else [WorkerFilter(worker)]
    try:
        configure_logging(settings.logging.level, settings.logging.format, secrets=secrets, filters=filters)
    except ConfigError as exc:
        raise _fail(exc) from None


def run_trio(main: Callable[[], Any]) -> int:
    """Run a trio main function, turning our errors into one-line messages (and, where
    the logs are JSON lines, an ERROR record too: a log pipeline sees why it stopped)."""
    try:
        code = trio.run(main)
    except* ConfigError as group:
        raise _logged(_fail(first_error(group))) from None
    except* LinkError as group:
        raise _logged(LinkFailed(f"platform link failed: {first_error(group)}")) from None
    except* OrchestratorError as group:
        raise _logged(_fail(first_error(group))) from None
    return int(code or 0)


def _logged(error: click.ClickException) -> click.ClickException:
    from .logs import writes_json

    if writes_json():
        logging.getLogger("orchestrator").error("%s", error.format_message())
    return error


@click.group(
    cls=_OneLineUsage, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(
    __version__, "-V", "--version", prog_name="orchestrator", message=f"%(prog)s %(version)s, {describe()}"
)
def main() -> None:
    """Host thousands of live customer/AI-agent conversations in one process.

    Start with `orchestrator demo` (no account needed).
    """
    stale = stale_modules()
    if stale:
        click.echo(
            f"warning: compiled modules older than their source, so the source's edits do not run: "
            f"{', '.join(stale)}; reinstall (pip install) to rebuild them",
            err=True,
        )


@main.command()
@click.argument("agents", nargs=-1, required=True, metavar="AGENT...")
@click.option(
    "--platform",
    "platform_kind",
    type=click.Choice(["conversimple", "arinova"]),
    help="Wire protocol of the platform [conversimple].",
)
@click.option("--url", help="Platform URL (env CONVERSIMPLE_PLATFORM_URL).")
@click.option("--api-key", help="Conversimple API key (env CONVERSIMPLE_API_KEY).")
@click.option(
    "--customer-id",
    help="Conversimple customer id (env CONVERSIMPLE_CUSTOMER_ID; derived from the key if absent).",
)
@click.option("--bot-token", help="Arinova bot token (env ARINOVA_BOT_TOKEN).")
@click.option(
    "--allow-insecure", is_flag=True, default=None, help="Allow plain ws:// to a non-loopback host."
)
@click.option("--max-conversations", type=click.IntRange(1), help="Admission cap [10000].")
@click.option("--drain-timeout", type=click.FloatRange(0), help="Seconds to drain on SIGTERM [30].")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [1].")
@common_options
def run(
    agents: tuple[str, ...],
    platform_kind: str | None,
    url: str | None,
    api_key: str | None,
    customer_id: str | None,
    bot_token: str | None,
    allow_insecure: bool | None,
    max_conversations: int | None,
    drain_timeout: float | None,
    workers: int | None,
    config: Path | None,
    **common: Any,
) -> None:
    """Serve AGENT classes (package.module:Class or path/to/file.py:Class) on a platform.

    Runs until SIGINT or SIGTERM, then drains: /readyz turns 503, nothing new is
    admitted, conversations finish until --drain-timeout. A second signal exits at once.
    """
    from .loader import load_agents
    from .platforms import build_platform

    overrides = common_overrides(**common)
    overrides["platform"] = {
        "kind": platform_kind,
        "url": url,
        "api_key": api_key,
        "customer_id": customer_id,
        "bot_token": bot_token,
        "allow_insecure": allow_insecure,
    }
    overrides["supervisor"] = {"max_conversations": max_conversations, "drain_timeout": drain_timeout}
    overrides["workers"] = workers
    settings = load_settings(config, overrides)
    if settings.platform.kind == "arinova" and settings.supervisor.actor.idle_timeout is None:
        # Arinova never announces the end of a conversation: end idle ones.
        actor = attrs.evolve(settings.supervisor.actor, idle_timeout=ARINOVA_IDLE_TIMEOUT)
        settings = attrs.evolve(settings, supervisor=attrs.evolve(settings.supervisor, actor=actor))
    try:
        agent_classes = load_agents(list(agents))
        platform = build_platform(settings)
    except OrchestratorError as exc:
        raise _fail(exc) from None
    configure(settings)

    if settings.workers > 1:
        if settings.platform.kind != "conversimple":
            raise BadInput("--workers is supported with the conversimple platform only")
        from .workers import WorkerPool, settings_to_env

        argv = [sys.executable, "-m", "orchestrator", "worker", *agents]
        pool = WorkerPool(settings, argv, settings.workers, env=settings_to_env(settings))
        sys.exit(run_trio(pool.run))

    from .service import run_service

    sys.exit(run_trio(lambda: run_service(settings, agent_classes, platform)))


@main.command(hidden=True)
@click.argument("agents", nargs=-1, required=True, metavar="AGENT...")
@click.option("--worker-index", type=click.IntRange(0), required=True)
@click.option("--worker-count", type=click.IntRange(1), required=True)
def worker(agents: tuple[str, ...], worker_index: int, worker_count: int) -> None:
    """One worker of `run --workers N` (started by the parent process, not by hand)."""
    from .loader import load_agents
    from .platforms.conversimple import ConversimplePlatform
    from .service import run_service
    from .workers import PipePlatform, settings_from_env

    try:
        settings = settings_from_env()
        agent_classes = load_agents(list(agents))
        platform = PipePlatform(ConversimplePlatform.from_settings(settings.platform))
    except OrchestratorError as exc:
        raise _fail(exc) from None
    configure(settings, worker=worker_index)
    sys.exit(
        run_trio(
            lambda: run_service(
                settings,
                agent_classes,
                platform,
                # Ends once the parent is gone and what is here has drained (see PipePlatform).
                stop_when_idle=True,
                on_started=lambda up: platform.tell({"worker": worker_index, "http_port": up.http_port}),
            )
        )
    )


@main.command()
@click.option(
    "--repeat", type=click.IntRange(1, 100), default=1, show_default=True, help="Run each scenario N times."
)
@common_options
def demo(repeat: int, config: Path | None, **common: Any) -> None:
    """Run the sandbox platform and the example agents together (no account needed).

    Simulated customers call the example agents' tools over real loopback
    WebSockets (Conversimple) and chat with a streaming agent (Arinova); live
    progress, then a summary table. Exit status 0 when every conversation completed.
    """
    if common["http_port"] is None:
        common["http_port"] = 0  # any free port: the demo prints it
    overrides = common_overrides(**common)
    if common["log_level"] is None:
        overrides["logging"]["level"] = "WARNING"
    settings = load_settings(config, overrides)
    configure(settings)
    from .demo import Demo

    sys.exit(run_trio(Demo(settings, repeat).run))


def _register_optional_commands() -> None:
    """Commands whose modules are optional at import time (keeps `--help` fast)."""
    try:
        from .simulator.cli import simulate
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    main.add_command(simulate)
    from .sandbox.cli import sandbox

    main.add_command(sandbox)
    from .bench import bench

    main.add_command(bench)


_register_optional_commands()
