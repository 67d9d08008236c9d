"""Guarantee 7: credentials never leak. No API key, bot token or token-bearing URL in any
log line, metric, error message, /status output or load-test report.

A distinct canary secret goes down each path a credential can take: the ``--api-key``
flag (it travels in the URL's query string), ``CONVERSIMPLE_API_KEY``, a TOML config file,
a password in the platform URL (sent as an ``Authorization: Basic`` header), a token in the
URL's own query, ``ARINOVA_BOT_TOKEN`` (sent in the ``agent_auth`` frame). Real
``orchestrator run`` subprocesses, at ``--log-level debug`` in both formats, succeed or are
refused (at the join, at the handshake, by Arinova's ``auth_error``, by the URL rules,
by a bad config file); everything they print, /metrics, /status, /readyz and the
sandbox load generator's report are searched for every canary (and its base64 and
percent-encoded forms).
"""

from __future__ import annotations

import base64
import logging
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from orchestrator.errors import PermanentLinkError
from orchestrator.sandbox.settings import SandboxSettings

from .test_guarantees import (
    KIT,
    Child,
    Misbehaving,
    Steady,
    child,
    free_port,
    scenario,
    stack,
    tool_turns,
    wait_until,
)

CANARIES = {
    "flag": "cnry-flag-7Qx2Lp",
    "env": "cnry-env-9Zt4Wm",
    "toml": "cnry-toml-3Kd8Rv",
    "url password": "cnry-urlpw-5Hn1Ys",
    "url query": "cnry-query-2Fw9Ja",
    "join refused": "cnry-join-6Vb3Qe",
    "handshake refused": "cnry-hs-4Pk7Nu",
    "bot token": "cnry-bot-8Gm6Tc",
    "bot refused": "cnry-botx-1Rs5Dz",
    "unsafe url": "cnry-unsafe-0Lh2Xc",
    "bad config": "cnry-cfg-9Ty3Mw",
    "load test": "cnry-load-5Ae8Gi",
}


def forms(secret: str) -> set[str]:
    """The ways a secret could show up: as is, percent-encoded, in a Basic credential."""
    basic = base64.b64encode(f"user:{secret}".encode()).decode()
    return {secret, quote(secret, safe=""), basic, basic.rstrip("="), secret[5:]}


def leaks(text: str) -> list[str]:
    return sorted(name for name, secret in CANARIES.items() if any(f in text for f in forms(secret)))


async def scrape(running: Child) -> str:
    parts = []
    for path in ("/metrics", "/status", "/readyz", "/healthz"):
        response = await running.get(path)
        parts.append(f"{path} {response.status_code}\n{response.headers}\n{response.text}")
    return "\n".join(parts)


async def serve_then_stop(running: Child, server: Any, plan: Any) -> str:
    """Serve ``plan`` to the end, scrape every route, SIGTERM; everything it showed."""
    ids = server.add_conversations(plan)
    with trio.move_on_after(30):
        await server.wait_done(ids)
    logs = [server.conversation(cid) for cid in ids]
    assert {log.outcome for log in logs} == {"completed"}, (
        [(log.outcome, [c.status for c in log.calls], log.failures) for log in logs],
        running.output[-3000:],
    )
    shown = await scrape(running)
    running.process.send_signal(signal.SIGTERM)
    assert await running.wait(20) == 0, running.output
    return shown


def tool_plan() -> Any:
    return scenario(
        tool_turns(("ping", {"text": "hi"}), ("ping_sync", {"text": "there"}), agent_id="steady"),
        tool_turns(("fail", {}), agent_id="misbehaving"),
    )


AGENTS = [f"{KIT}:Steady", f"{KIT}:Misbehaving"]


@pytest.mark.slow
async def test_guarantee_7_no_canary_in_any_output_log_metric_status_or_report(tmp_path: Path) -> None:
    seen: dict[str, str] = {}  # what each run showed, by run

    async def start_sandbox(nursery: trio.Nursery, **settings: Any) -> Any:
        from orchestrator.sandbox.server import SandboxServer

        server = SandboxServer(SandboxSettings(**settings))
        await nursery.start(server.run)
        return server

    async def flag_text(nursery: trio.Nursery) -> None:
        server = await start_sandbox(nursery)
        args = [
            *AGENTS,
            "--url",
            server.conversimple_url,
            "--api-key",
            CANARIES["flag"],
            "--log-level",
            "debug",
        ]
        async with child(*args) as running:
            shown = await serve_then_stop(running, server, tool_plan())
        seen["flag, text"] = running.output + shown

    async def env_json(nursery: trio.Nursery) -> None:
        server = await start_sandbox(nursery)
        env = {"CONVERSIMPLE_API_KEY": CANARIES["env"], "CONVERSIMPLE_PLATFORM_URL": server.conversimple_url}
        async with child(*AGENTS, "--log-level", "debug", "--log-format", "json", env=env) as running:
            shown = await serve_then_stop(running, server, tool_plan())
        seen["env, json"] = running.output + shown

    async def toml_text(nursery: trio.Nursery) -> None:
        server = await start_sandbox(nursery)
        config = tmp_path / "orchestrator.toml"
        config.write_text(
            f'[platform]\nurl = "{server.conversimple_url}"\napi_key = "{CANARIES["toml"]}"\n'
            '[logging]\nlevel = "DEBUG"\n'
        )
        async with child(*AGENTS, "--config", str(config)) as running:
            shown = await serve_then_stop(running, server, tool_plan())
        seen["toml, text"] = running.output + shown

    async def refused(
        nursery: trio.Nursery,
        name: str,
        extra: list[str],
        env: dict[str, str],
        code: int,
        sandbox: dict[str, Any] | None = None,
    ) -> None:
        args = [*AGENTS, *extra, "--log-level", "debug"]
        if sandbox is not None:
            server = await start_sandbox(nursery, **sandbox)
            platform = "--platform" in extra
            args += ["--url", server.arinova_url if platform else server.conversimple_url]
        async with child(*args, env=env, http=False) as running:
            assert await running.wait(30) == code, running.output
        seen[name] = running.output

    async def arinova(nursery: trio.Nursery, json: bool) -> None:
        server = await start_sandbox(nursery)
        env = {"ARINOVA_BOT_TOKEN": CANARIES["bot token"]}
        args = ["examples/echo.py:EchoAgent", "--platform", "arinova", "--url", server.arinova_url]
        args += ["--log-level", "debug", "--log-format", "json" if json else "text", "--drain-timeout", "1"]
        plan = scenario({"agent_id": "echo", "platform": "arinova", "message": [{"content": "hello"}]})
        async with child(*args, env=env) as running:
            ids = server.add_conversations(plan)
            with trio.fail_after(30):
                await server.wait_done(ids)
            assert server.conversation(ids[0]).outcome == "completed"
            shown = await scrape(running)
            running.process.send_signal(signal.SIGTERM)
            assert await running.wait(20) == 0, running.output
        seen[f"arinova, {'json' if json else 'text'}"] = running.output + shown

    async def load_report(nursery: trio.Nursery) -> None:
        port = free_port()
        key = CANARIES["load test"]
        sandbox_args = ["--port", str(port), "--api-key", key, "--conversations", "5", "--calls", "3",
                        "--agent-id", "steady"]  # fmt: skip
        async with child(*sandbox_args, command="sandbox", http=False) as generator:
            url = f"ws://127.0.0.1:{port}/customer_sdk/websocket"
            await wait_until(lambda: b"listening" in generator.stderr, 20, "the sandbox to listen")
            run_args = [f"{KIT}:Steady", "--url", url, "--api-key", key, "--log-level", "debug"]
            async with child(*run_args, env={}) as running:
                assert await generator.wait(30) == 0, generator.output
                running.process.send_signal(signal.SIGTERM)
                await running.wait(20)
        seen["load generator report"] = generator.output
        seen["load test orchestrator"] = running.output

    async with trio.open_nursery() as platforms:  # the sandboxes, cancelled once every run is over
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flag_text, platforms)
            nursery.start_soon(env_json, platforms)
            nursery.start_soon(toml_text, platforms)
            nursery.start_soon(arinova, platforms, True)
            nursery.start_soon(arinova, platforms, False)
            nursery.start_soon(load_report, platforms)
            # Refused at the join (status "error", reason "unauthorized"): exit 3.
            wrong_key = {"api_keys": frozenset({"the-right-key"})}
            nursery.start_soon(
                refused, platforms, "join refused", ["--api-key", CANARIES["join refused"]], {}, 3, wrong_key
            )
            # Refused at the HTTP handshake (401): exit 3.
            at_handshake = {**wrong_key, "auth_at_handshake": True}
            nursery.start_soon(
                refused, platforms, "handshake refused", ["--log-format", "json"],
                {"CONVERSIMPLE_API_KEY": CANARIES["handshake refused"]}, 3, at_handshake,
            )  # fmt: skip
            # Arinova auth_error: exit 3.
            nursery.start_soon(
                refused, platforms, "bot refused", ["--platform", "arinova"],
                {"ARINOVA_BOT_TOKEN": CANARIES["bot refused"]}, 3, {"bot_tokens": {"the-right-token": "bot"}},
            )  # fmt: skip
            # A token-bearing URL the safety rules refuse, and a config file with a bad value: exit 2.
            unsafe = f"ws://10.1.2.3/customer_sdk/websocket?auth_token={CANARIES['unsafe url']}"
            nursery.start_soon(
                refused, platforms, "unsafe url", ["--url", unsafe, "--api-key", "x" * 12], {}, 2
            )
            bad_config = tmp_path / "bad.toml"
            bad_config.write_text(
                f'[platform]\napi_key = "{CANARIES["bad config"]}"\nurl = "ws://127.0.0.1:1/x"\n'
                'heartbeat_interval = "often"\nmax_attempts = -1.5\n'
            )
            nursery.start_soon(refused, platforms, "bad config", ["--config", str(bad_config)], {}, 2)

        platforms.cancel_scope.cancel()

    assert len(seen) == 12, sorted(seen)  # every run above reported
    found = {run: leaks(text) for run, text in seen.items() if leaks(text)}
    assert not found, {run: (names, excerpt(seen[run], names)) for run, names in found.items()}
    # The refusals still said what went wrong.
    assert "unauthorized" in seen["join refused"] and "401" in seen["handshake refused"]
    assert "refusing plain ws://" in seen["unsafe url"] and "heartbeat_interval" in seen["bad config"]


@pytest.mark.slow
async def test_guarantee_7_password_and_query_of_the_platform_url_never_reach_a_log_line(
    nursery: trio.Nursery,
) -> None:
    """A credential in the URL itself: a password (sent as ``Authorization: Basic``) and a
    query parameter the platform wants (``?key=…``, a signed URL's ``sig=…``). Redaction
    masks every query value of a URL; the debug wire log must not show them either."""
    from orchestrator.sandbox.server import SandboxServer

    server = SandboxServer()
    await nursery.start(server.run)
    url = server.conversimple_url.replace("ws://", f"ws://user:{CANARIES['url password']}@")
    url += f"?key={CANARIES['url query']}"
    args = [*AGENTS, "--url", url, "--api-key", CANARIES["flag"], "--log-level", "debug"]
    async with child(*args) as running:
        shown = await serve_then_stop(running, server, tool_plan())
    names = leaks(running.output + shown)
    assert not names, (names, excerpt(running.output, names))
    nursery.cancel_scope.cancel()


def excerpt(text: str, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        for form in forms(CANARIES[name]):
            at = text.find(form)
            if at >= 0:
                lines.append(text[max(0, at - 200) : at + 100])
    return lines


async def test_guarantee_7_in_process_log_records_reprs_and_errors_never_carry_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every log record the orchestrator emits (at the source, before any handler's
    masking), the reprs of its objects, and the exception a refused key raises."""
    key = "cnry-inproc-3Jd7Kq"
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with stack([Steady, Misbehaving], api_key=key, sandbox=SandboxSettings(timeout_seconds=1)) as s:
        ids = s.server.add_conversations(tool_plan())
        ids += s.server.add_conversations(scenario(tool_turns(("hang", {}), agent_id="misbehaving")))
        await wait_until(lambda: len(s.supervisor) > 0, 20, "a conversation")
        texts += [repr(c) for c in s.supervisor.list_conversations()]
        with trio.fail_after(30):
            await s.server.wait_done(ids)
        texts += [repr(s.platform), repr(s.platform.connect(_record())), str(s.supervisor.status())]
    refused = SandboxSettings(api_keys=frozenset({"the-right-key"}))
    with pytest.raises(BaseExceptionGroup) as caught:
        async with stack([Steady], sandbox=refused, api_key=key):
            pass
    assert caught.group_contains(PermanentLinkError)
    texts += [repr(caught.value), str(caught.value), *map(repr, _leaves(caught.value))]
    formatter = logging.Formatter()
    texts += [formatter.format(record) for record in caplog.records]
    leaked = [t for t in texts if key in t or key[5:] in t]
    assert not leaked, leaked[:3]
    assert any("unauthorized" in t for t in texts)


def _record() -> Any:
    from orchestrator.store import ConversationRecord

    return ConversationRecord("conv-x", "steady")


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    chain: list[BaseException] = [group]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        assert nxt is not None
        chain.append(nxt)
    return chain
