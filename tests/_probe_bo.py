import collections, trio
import orchestrator.backoff as bo
from orchestrator.connection import LinkPolicy
from orchestrator.sandbox.settings import SandboxSettings
from .test_guarantee_2_outage import Gated
from .test_guarantees import scenario, stack, tool_turns, wait_until
N=1000
LOG=[]
orig = bo.Backoff.next_delay
def nd(self):
    a = self.attempt
    d = orig(self)
    LOG.append((trio.current_time(), a, d, self.policy.base))
    return d
bo.Backoff.next_delay = nd
from orchestrator.transport import sansio
CL=[]
oa = sansio.SansIOWebSocket.aclose
async def aclose(self, *a, **k):
    t = trio.current_time()
    await oa(self, *a, **k)
    CL.append(trio.current_time() - t)
sansio.SansIOWebSocket.aclose = aclose
LAG=[]
import time as _t
class Prof(trio.abc.Instrument):
    def __init__(self): self.on=False; self.acc=collections.Counter(); self.cnt=collections.Counter(); self.t=0
    def before_task_step(self, task):
        self.t=_t.perf_counter()
    def after_task_step(self, task):
        if self.on:
            n = task.name.split('.')[-1] if task.name else '?'
            self.acc[task.name[-60:]] += _t.perf_counter()-self.t; self.cnt[task.name[-60:]] += 1
PROF=Prof()
async def ticker():
    while True:
        t = trio.current_time()
        await trio.sleep(0.01)
        LAG.append((t, trio.current_time() - t - 0.01))

async def test_probe():
    Gated.gate, Gated.runs = trio.Event(), {}
    policy = LinkPolicy(backoff_initial=2.0, backoff_max=8.0)
    sandbox = SandboxSettings(record_messages=False, register_timeout=60, call_timeout=180, timeout_seconds=150)
    plan = tool_turns(("before", {"n": 1}), ("during", {"n": 2}), agent_id="gated", repeat=N)
    async with stack([Gated], policy=policy, sandbox=sandbox, via_proxy=True) as s:
        ids = s.server.add_conversations(scenario(plan))
        logs = [s.server.conversation(cid) for cid in ids]
        await wait_until(lambda: all(len(log.calls) == 2 for log in logs), 90, "second call")
        n0 = len(s.proxy.statistics().accept_times)
        LOG.clear(); CL.clear()
        t0 = trio.current_time()
        trio.lowlevel.add_instrument(PROF); PROF.on=True
        async with trio.open_nursery() as nn:
          nn.start_soon(ticker)
          with trio.move_on_after(3):
            await s.proxy.down_for(20)
          nn.cancel_scope.cancel()
        PROF.on=False
        print("PROBE prof", [(k, round(v,3), PROF.cnt[k]) for k, v in PROF.acc.most_common(12)])
        print("PROBE lag", [(round(t - t0, 2), round(l, 3)) for t, l in LAG if l > 0.05])
        print("PROBE aclose n", len(CL), "max", max(CL, default=0), "sum", sum(CL))
        at = [t - t0 for t in s.proxy.statistics().accept_times[n0:]]
        print("PROBE attempts in 3s", len(at), collections.Counter(int(t*4)/4 for t in at))
        print("PROBE delays", collections.Counter((a, round(d, 0)) for _, a, d, b in LOG).most_common(12))
        print("PROBE nd calls", len(LOG), "bases", collections.Counter(b for *_, b in LOG))
        Gated.gate.set()
