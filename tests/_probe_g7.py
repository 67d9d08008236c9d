import trio
from orchestrator.sandbox.server import SandboxServer
from .test_guarantee_7_secrets import tool_plan, AGENTS, CANARIES
from .test_guarantees import child

async def test_probe(nursery):
    server = SandboxServer()
    await nursery.start(server.run)
    env = {"CONVERSIMPLE_API_KEY": CANARIES["env"], "CONVERSIMPLE_PLATFORM_URL": server.conversimple_url}
    async with child(*AGENTS, "--log-level", "debug", "--log-format", "json", env=env) as running:
        ids = server.add_conversations(tool_plan())
        with trio.move_on_after(10):
            await server.wait_done(ids)
        for cid in ids:
            log = server.conversation(cid)
            print(cid, log.outcome, [(c.status, c.error) for c in log.calls], log.failures)
        print(running.output[-5000:])
