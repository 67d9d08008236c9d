"""The ``simulate`` command: run a scenario file as a batch and report.

::

    orchestrator simulate SCENARIOS.toml [--samples K] [--concurrency N]
        [--pass-rate P] [--agent AGENT] [--via-sandbox] [--out DIR]

``--via-sandbox`` starts the bundled sandbox platform and the orchestrator serving
the agent (``--agent``, else the file's ``agent``) in this process, and simulates
through the real wire protocols over loopback: scenarios without a simulated
agent as Arinova conversations (messages and streamed replies), scenarios whose
simulated platform LLM calls tools as Conversimple conversations
(``tool_call_request`` frames); see :mod:`.sandbox_channel`.

Writes ``DIR/transcripts.jsonl`` (one record per simulation, appended as each
finishes; rerunning resumes those the same scenario and agent code produced, and says
why any others ran again), ``DIR/summary.json``, ``DIR/junit.xml`` and, for
LLM scenarios, ``DIR/llm-cache/``; prints the report.

Exit status: 0 when every simulation passed, or with ``--pass-rate`` when the
pass rate reaches it; 1 when it does not, or when any simulation ended in error
(whatever the pass rate: an error is no verdict on the agent); 2, with one line,
when the input is unusable (a scenario file or agent that does not load, an
``--out`` that cannot hold the results, checked before anything runs, or results
that could not be written there later) or when the scenarios need an LLM and none
is configured (no API key and no base URL, and no cached completions to replay); 130 when interrupted
(SIGINT, Ctrl-C) and 143 when terminated (SIGTERM): finished simulations are
kept, and a rerun resumes.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn

import attrs
import click
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..agent import Agent
from ..errors import ConfigError
from .agents import agent_fingerprint, load_agent_class
from .batch import Batch, BatchRun, SimulationRecord
from .builder import check_tools
from .cache import CachedLLMClient
from .llm import LLMClient, LLMSettings
from .openai_client import OpenAIClient
from .report import junit_xml, render_report, summary_json
from .sandbox_channel import SandboxBatch, serve_over_sandbox
from .scenarios import ScenarioFile, load_scenarios
from .summary import BatchSummary

#: What to set for an LLM (see :meth:`.llm.LLMSettings.from_env`).
LLM_HINT = (
    "set ORCHESTRATOR_LLM_API_KEY (or OPENAI_API_KEY) for OpenAI, or ORCHESTRATOR_LLM_BASE_URL "
    "(or OPENAI_BASE_URL) for another OpenAI-compatible endpoint"
)


class BadInput(click.ClickException):
    """A flag's value cannot work (an agent spec that does not load): one line, exit status 2,
    as ``orchestrator run`` reports it."""

    exit_code = 2


class Unconfigured(BadInput):
    """The scenarios need something the environment does not provide: one line, exit status 2."""


class Unwritable(BadInput):
    """The results cannot be written where ``--out`` says: one line, exit status 2."""


def _prepare_out(out: Path) -> None:
    """Create ``out`` and prove a file can be written in it, before any simulation runs.

    Raises Unwritable naming ``--out`` and the reason: a path through a file, no
    permission, a read-only file system.
    """
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise Unwritable(f"--out {out}: {path} is not a directory")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise Unwritable(f"--out {out}: cannot write there: {exc.strerror or exc}") from exc


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, out of any (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _results_error(leaves: list[BaseException], out: Path) -> OSError | None:
    """The error that stopped the batch if it was reading or writing a file under ``out``."""
    first = leaves[0]
    if len(leaves) != 1 or not isinstance(first, OSError) or first.filename is None:
        return None
    return first if Path(str(first.filename)).is_relative_to(out) else None


def _in_file(path: Path, message: str) -> str:
    """``message`` about the scenario file, naming it by its path."""
    if message.startswith("the file"):
        return f"{path}{message[len('the file') :]}"
    return message if str(path) in message else f"{path}: {message}"


def _not_resumed(counts: Mapping[str, int]) -> str:
    """Why simulations with earlier results ran again, in one line."""
    total = sum(counts.values())
    why = {"agent": "the agent's code or spec changed", "scenario": "their scenario changed"}
    reasons = [f"{why[key]} ({counts[key]})" if len(counts) > 1 else why[key] for key in sorted(counts)]
    plural = "s" if total != 1 else ""
    return f"{total} earlier result{plural} not resumed: {' and '.join(reasons)}"


def _check_llm_configured(
    path: Path, scenario_file: ScenarioFile, settings: LLMSettings, cache: Path | None
) -> None:
    """Refuse at once to run LLM scenarios against OpenAI without a key (each would only error).

    A base URL alone is enough (local providers need no key); so is a cache with
    completions in it, which a rerun replays without asking anyone.
    """
    default_url = attrs.fields(LLMSettings).base_url.default
    if settings.api_key or settings.base_url != default_url:
        return
    if cache is not None and cache.is_dir() and any(cache.rglob("*.json")):
        return
    names = [s.name for s in scenario_file.scenarios if s.uses_llm]
    which = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    subject = f"scenario {which} needs" if len(names) == 1 else f"scenarios {which} need"
    raise Unconfigured(f"{path}: {subject} an LLM and none is configured: {LLM_HINT}")


class _ProgressBar:
    """A rich progress bar fed by the batch (refreshed on each update, no thread)."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            disable=not enabled,
        )
        self.task = self.progress.add_task("simulating", total=None, failed=0)
        self.failed = 0

    def batch_started(self, total: int, resumed: int) -> None:
        self.progress.update(self.task, total=total, completed=resumed)
        self.progress.refresh()

    def simulation_finished(self, record: SimulationRecord) -> None:
        self.failed += not record.passed
        self.progress.update(self.task, advance=1, failed=self.failed)
        self.progress.refresh()


class Interrupted(Exception):
    """The batch was stopped by SIGINT or SIGTERM (``signum``); what finished is kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _cancel_on_signal(
    scope: trio.CancelScope, received: list[int], *, task_status: trio.TaskStatus[None]
) -> None:
    """Cancel ``scope`` at the first SIGINT or SIGTERM, noting it in ``received``.

    Handled here, not left to Python's KeyboardInterrupt: a process started with
    SIGINT ignored (a background job of a shell without job control, as CI runs
    commands) would never see one, and SIGTERM would kill it mid-write.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return


async def _run_batch(
    batch: Batch,
    settings: LLMSettings | None,
    cache_dir: Path | None,
    bar: _ProgressBar,
    serve: type[Agent] | None = None,
) -> BatchRun:
    """Run ``batch`` (serving ``serve`` over the sandbox, if given); raises Interrupted.

    A signal cancels the batch alone, so the rest unwinds as after a finished run:
    the in-process orchestrator stops before its sandbox, and its links never see
    the platform go first (each conversation would log its link failed for good).
    """
    received: list[int] = []
    run: BatchRun | None = None
    async with AsyncExitStack() as stack:
        if serve is not None:
            batch.channel = await stack.enter_async_context(serve_over_sandbox(serve))
        if settings is not None:
            http = OpenAIClient(settings)
            stack.push_async_callback(http.aclose)
            client: LLMClient = http if cache_dir is None else CachedLLMClient(http, cache_dir)
            batch.llm = client
        batch.observer = bar
        with bar.progress:
            async with trio.open_nursery() as nursery:
                await nursery.start(_cancel_on_signal, nursery.cancel_scope, received)
                run = await batch.run()
                nursery.cancel_scope.cancel()
    if run is None:  # cancelled by a signal (a signal after the last record changes nothing)
        raise Interrupted(received[0])
    return run


def _interrupted(ctx: click.Context, console: Console, transcripts: Path, signum: int) -> NoReturn:
    """Say what was kept and exit 128 + ``signum`` (130 for Ctrl-C, 143 for SIGTERM)."""
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    console.print(f"{how}; finished simulations are kept in {transcripts}: run again to resume")
    ctx.exit(128 + signum)


@click.command("simulate")
@click.argument(
    "scenarios_file",
    metavar="SCENARIOS.toml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--samples", "-k", type=click.IntRange(min=1), help="Runs per scenario [file's samples, else 1]."
)
@click.option(
    "--concurrency",
    "-n",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Concurrency: how many simulations run at once (not how many run: scenarios x --samples).",
)
@click.option(
    "--pass-rate",
    type=click.FloatRange(0, 1),
    help="Exit 0 when this share (0..1) passed and none ended in error [every one must pass].",
)
@click.option("--agent", "agent_spec", metavar="AGENT", help="package.module:Class or path/to/file.py:Class.")
@click.option(
    "--via-sandbox",
    is_flag=True,
    help="Serve the agent with the orchestrator and reach it through the bundled sandbox platform.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Results [sim-results/<name>, or <name>-sandbox with --via-sandbox].",
)
@click.option("--fresh", is_flag=True, help="Discard earlier transcripts instead of resuming.")
@click.option("--no-cache", is_flag=True, help="Do not cache LLM completions on disk.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar while simulating."
)
@click.pass_context
def simulate(ctx: click.Context, /, scenarios_file: Path, **options: Any) -> None:
    """Simulate customer conversations with an agent and report outcomes and pass rates."""
    via_sandbox: bool = options["via_sandbox"]
    try:
        scenario_file = load_scenarios(scenarios_file)
        settings = scenario_file.llm_settings() if scenario_file.needs_llm else None
    except ConfigError as exc:  # bad input, not a failed simulation: 2, not 1
        raise BadInput(_in_file(scenarios_file, str(exc))) from exc
    try:
        spec = options["agent_spec"] or scenario_file.agent
        base_dir = Path.cwd() if options["agent_spec"] else scenario_file.base_dir
        agent_factory = load_agent_class(spec, base_dir) if spec else None
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    fingerprint = ""
    if agent_factory is not None:
        try:
            check_tools(scenario_file.scenarios, agent_factory)
        except ConfigError as exc:
            raise BadInput(_in_file(scenarios_file, str(exc))) from exc
        fingerprint = agent_fingerprint(agent_factory, spec or "")
    served: type[Agent] | None = None
    if via_sandbox:
        if agent_factory is None:
            raise click.UsageError("--via-sandbox needs an agent to serve: --agent or the file's agent")
        if not (isinstance(agent_factory, type) and issubclass(agent_factory, Agent)):
            raise click.UsageError(
                f"--via-sandbox serves the agent with the orchestrator: {spec} is not an orchestrator Agent"
            )
        served, agent_factory = agent_factory, None  # reached over the wire, never in process
    samples = options["samples"] or scenario_file.samples or 1
    # Separate default folders: a sandbox run never resumes records an in-process run wrote.
    default_out = Path("sim-results") / (scenarios_file.stem + ("-sandbox" if via_sandbox else ""))
    out: Path = options["out"] or default_out
    transcripts = out / "transcripts.jsonl"
    cache_dir = None if options["no_cache"] else out / "llm-cache"
    if settings is not None:
        _check_llm_configured(scenarios_file, scenario_file, settings, cache_dir)
    _prepare_out(out)
    try:
        if options["fresh"]:
            transcripts.unlink(missing_ok=True)
    except OSError as exc:
        raise Unwritable(f"--fresh: cannot remove {transcripts}: {exc.strerror or exc}") from exc
    batch = (SandboxBatch if via_sandbox else Batch)(
        scenario_file.scenarios,
        samples=samples,
        concurrency=options["concurrency"],
        agent_factory=agent_factory,
        transcripts=transcripts,
        agent_fingerprint=fingerprint,
    )
    console = Console()
    if settings is not None:
        console.print(f"LLM: {settings.endpoint} model {settings.model}", highlight=False)
    if served is not None:
        console.print(f"via the sandbox: the orchestrator serves {served.agent_id!r} over loopback")
    bar = _ProgressBar(console, options["progress"])
    try:
        # A Ctrl-C before the signal handler is in place, or a second one while the run
        # unwinds, is raised in the main task only, at a checkpoint, so it too unwinds
        # in order (see _run_batch). Raised in whatever task happened to run (trio's
        # default), a sandbox task could stop the platform under the orchestrator's links.
        args = (batch, settings, cache_dir, bar, served)
        run = trio.run(_run_batch, *args, restrict_keyboard_interrupt_to_checkpoints=True)
    except Interrupted as exc:
        _interrupted(ctx, console, transcripts, exc.signum)
    except BaseException as exc:
        # Out of a nursery, errors come grouped (with nothing else: what they cancelled is gone).
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):  # Ctrl-C: not a failure
            _interrupted(ctx, console, transcripts, signal.SIGINT)
        if all(isinstance(leaf, ConfigError) for leaf in leaves):  # a scenario lacks what it needs
            raise BadInput(_in_file(scenarios_file, str(leaves[0]))) from exc
        if (error := _results_error(leaves, out)) is not None:
            raise Unwritable(f"results not saved: {error.filename}: {error.strerror or error}") from exc
        raise
    summary = BatchSummary.from_run(run, samples)
    try:
        (out / "summary.json").write_text(summary_json(summary), encoding="utf-8")
        (out / "junit.xml").write_text(junit_xml(run.records, summary), encoding="utf-8")
    except OSError as exc:
        raise Unwritable(f"results not saved: {exc.filename}: {exc.strerror or exc}") from exc
    if run.not_resumed:
        console.print(_not_resumed(run.not_resumed), highlight=False)
    render_report(summary, run.records, console)
    console.print(f"results in {out}/ (transcripts.jsonl, summary.json, junit.xml)", highlight=False)
    failures = []
    errored = summary.end_reasons.get("error", 0)
    if errored:
        failures.append(f"{errored} of {summary.total} simulations ended in error")
    threshold = options["pass_rate"]
    if threshold is None and summary.passed < summary.total:
        failures.append(f"{summary.total - summary.passed} of {summary.total} simulations did not pass")
    elif threshold is not None and not summary.meets(threshold):
        failures.append(f"pass rate {summary.pass_rate:.1%} is below the required {threshold:.1%}")
    for failure in failures:
        console.print(f"[red]{failure}[/red]", highlight=False)
    if failures:
        ctx.exit(1)
