"""Interop: the real SDKs (conversimple-sdk 0.2.4, arinova-agent-sdk 0.0.1) against the sandbox.

Each SDK runs in its own process (it is asyncio; the sandbox is trio) from the
scripts in ``tests/sdk_agents/``, with its output in a log file shown on failure.
Every wait is bounded and the process is killed in ``finally``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from orchestrator.sandbox import ConversationPlan, MessageTurn, SandboxServer, Scenario, ToolTurn
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parent / "sdk_agents"
TIMEOUT = 60.0

TURNS = (
    ToolTurn("echo", {"text": "hello from the sandbox"}, expect_result={"text": "hello from the sandbox"}),
    ToolTurn("add", {"a": 2, "b": 40}, expect_result={"sum": 42}),
    ToolTurn("fail", {"message": "card declined"}, expect_error="card declined"),
    ToolTurn("echo", {"text": "ünïcødé ✓"}, expect_result={"text": "ünïcødé ✓"}),
)


@asynccontextmanager
async def sandbox(**settings: object) -> AsyncIterator[SandboxServer]:
    server = SandboxServer(**settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def sdk(script: str, *args: str, log: Path) -> AsyncIterator[trio.Process]:
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(SCRIPTS / script), *args], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        except BaseException:
            process.kill()
            await process.wait()
            output = await trio.Path(log).read_text(errors="replace")
            sys.stderr.write(f"--- {script} output ---\n{output[-8000:]}\n")
            raise
        finally:
            process.kill()
            await process.wait()


def plan(count: int, *, synthetic: int = 2) -> Scenario:
    return Scenario("sdk", (ConversationPlan("sdk-echo", turns=TURNS, synthetic=synthetic),) * count)


def assert_completed(server: SandboxServer, ids: list[str]) -> None:
    for cid in ids:
        log = server.conversation(cid)
        assert log.outcome == "completed", (cid, log.failures)
        assert [c.status for c in log.calls][:4] == ["ok", "ok", "error", "ok"]
        assert log.calls[2].error == "card declined"
        assert all(c.answers == 1 for c in log.calls)
    assert server.recorder.duplicates == 0 and server.recorder.violations == 0


async def test_conversimple_sdk_dispatcher_completes_conversations(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    async with (
        sandbox() as server,
        sdk("run_conversimple.py", "dispatcher", server.conversimple_url, "k", log=log),
    ):
        ids = server.add_conversations(plan(3))
        with trio.fail_after(TIMEOUT):
            await server.wait_done(ids)
        assert_completed(server, ids)
        # The dispatcher's agents each had their own socket; they leave once their conversation ends.
        await wait_until(lambda: server.conversimple.sockets_open == 1, TIMEOUT, "agents to disconnect")
    registered = [
        e.payload for e in server.conversation(ids[0]).entries if e.event == "register_conversation_tools"
    ]
    assert {t["name"] for t in registered[0]["tools"]} == {"echo", "add", "fail"}


async def test_conversimple_sdk_single_agent_completes_conversations(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    async with (
        sandbox() as server,
        sdk("run_conversimple.py", "agent", server.conversimple_url, "k", log=log),
    ):
        ids = server.add_conversations(plan(2, synthetic=1))
        with trio.fail_after(TIMEOUT):
            await server.wait_done(ids)
        assert_completed(server, ids)
        assert server.conversimple.sockets_open == 1


async def test_conversimple_sdk_answers_a_redelivered_call(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    async with sandbox(redelivery_delay=0.2) as server:
        async with sdk("run_conversimple.py", "dispatcher", server.conversimple_url, "k", log=log):
            (cid,) = server.add_conversations(plan(1, synthetic=0))
            server.drop_after_next_request(cid)  # the link drops right after the first request
            with trio.fail_after(TIMEOUT):
                await server.wait_done([cid])
        assert_completed(server, [cid])
        assert server.conversation(cid).calls[0].deliveries == 2


async def test_conversimple_sdk_stops_after_an_unauthorized_join(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    async with (
        sandbox(api_keys={"good"}) as server,
        sdk("run_conversimple.py", "agent", server.conversimple_url, "bad", log=log) as process,
    ):
        with trio.fail_after(TIMEOUT):
            await process.wait()
        assert process.returncode == 3
    joins = [e for e in server.recorder.other if e.event == "phx_join"]
    assert len(joins) == 1  # the SDK's breaker opened: no retry


async def test_arinova_sdk_echo_streams_chunks_in_order(tmp_path: Path) -> None:
    messages = (MessageTurn("hello there sandbox", expect_reply="hello there sandbox"), MessageTurn("one"))
    scenario = Scenario("sdk", (ConversationPlan("echo", "arinova", messages=messages, synthetic=2),) * 4)
    async with (
        sandbox() as server,
        sdk("run_arinova.py", server.arinova_url, "tok", log=tmp_path / "sdk.log"),
    ):
        ids = server.add_conversations(scenario)
        with trio.fail_after(TIMEOUT):
            await server.wait_done(ids)
    for cid in ids:
        log = server.conversation(cid)
        assert log.outcome == "completed", log.failures
        for reply in log.replies:
            assert reply.status == "ok" and reply.reply == reply.content
            assert reply.chunks == [w + " " for w in reply.content.split(" ")[:-1]] + [
                reply.content.split(" ")[-1]
            ]
    assert server.report(ids).chunks == sum(
        len(r.chunks) for cid in ids for r in server.conversation(cid).replies
    )


async def test_arinova_sdk_stops_on_auth_error(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    async with (
        sandbox(bot_tokens={"good": "echo"}) as server,
        sdk("run_arinova.py", server.arinova_url, "bad", log=log) as process,
    ):
        with trio.fail_after(TIMEOUT):
            await process.wait()
    assert "Agent auth failed: invalid bot token" in log.read_text()
    assert [e.event for e in server.recorder.other].count("agent_auth") == 1


async def test_arinova_sdk_bot_dropped_mid_reply(tmp_path: Path) -> None:
    messages = (MessageTurn("first reply is cut"), MessageTurn("second one works"))
    scenario = Scenario("sdk", (ConversationPlan("echo", "arinova", messages=messages),))
    log = tmp_path / "sdk.log"
    async with (
        sandbox(reply_timeout=3.0) as server,
        sdk("run_arinova.py", server.arinova_url, "tok", "0.1", log=log),
    ):
        server.drop_bot_after_next_chunk()
        (cid,) = server.add_conversations(scenario)
        with trio.fail_after(TIMEOUT):
            await server.wait_done([cid])
    first, second = server.conversation(cid).replies
    assert first.status == "lost" and first.chunks == ["first "]  # this SDK never reports the cut reply
    assert second.status == "ok" and second.reply == "second one works"
