"""What a batch amounts to: pass rate, pass^k, outcome and end-reason counts.

**pass^k** (as in tau-bench) is the chance that *all* of k independent samples
of a scenario pass. For a scenario with n samples of which c passed, the
unbiased estimate is ``C(c, k) / C(n, k)``; the batch's pass^k is the mean over
scenarios with at least k samples. pass^1 is the mean per-scenario pass rate;
pass^k falls as k grows unless the agent is consistent. The summary reports
pass^k for every k from 1 to the sample count.

The **pass rate** (what ``--pass-rate`` gates on) is passed simulations over
all simulations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from math import comb

import attrs

from .batch import BatchRun, SimulationRecord


def pass_hat_k(passed: int, samples: int, k: int) -> float:
    """``C(passed, k) / C(samples, k)``: the chance k samples drawn without replacement all pass."""
    if not 0 <= passed <= samples or not 1 <= k <= samples:
        raise ValueError(f"need 0 <= passed <= samples and 1 <= k <= samples, got {passed}, {samples}, {k}")
    return comb(passed, k) / comb(samples, k)


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _outcome(record: SimulationRecord) -> str:
    outcome = record.result.conversation.outcome
    return outcome.name if outcome is not None else "none"


@attrs.frozen
class ScenarioSummary:
    """One scenario's samples: how many passed, their outcomes and end reasons."""

    name: str
    samples: int
    passed: int
    outcomes: Mapping[str, int]
    end_reasons: Mapping[str, int]

    @property
    def pass_rate(self) -> float:
        """Passed samples over samples."""
        return self.passed / self.samples if self.samples else 0.0


@attrs.frozen
class BatchSummary:
    """The whole batch; ``pass_hat_k`` maps k (1..samples) to pass^k."""

    total: int
    passed: int
    samples: int
    pass_hat_k: Mapping[int, float]
    outcomes: Mapping[str, int]
    end_reasons: Mapping[str, int]
    scenarios: tuple[ScenarioSummary, ...]
    duration_seconds: float = 0.0
    resumed: int = 0

    @property
    def pass_rate(self) -> float:
        """Passed simulations over all simulations (0.0 for an empty batch)."""
        return self.passed / self.total if self.total else 0.0

    def meets(self, threshold: float) -> bool:
        """Whether the pass rate reaches ``threshold`` (0..1)."""
        return self.pass_rate >= threshold

    @classmethod
    def from_records(
        cls, records: Iterable[SimulationRecord], samples: int, duration: float = 0.0, resumed: int = 0
    ) -> BatchSummary:
        """Summarise ``records`` of a batch run with ``samples`` samples per scenario."""
        records = list(records)
        by_scenario: dict[str, list[SimulationRecord]] = {}
        for record in records:
            by_scenario.setdefault(record.scenario, []).append(record)
        scenarios = tuple(
            ScenarioSummary(
                name,
                len(group),
                sum(r.passed for r in group),
                _counts(_outcome(r) for r in group),
                _counts(r.result.end_reason.value for r in group),
            )
            for name, group in by_scenario.items()
        )
        hat: dict[int, float] = {}
        for k in range(1, samples + 1):
            eligible = [s for s in scenarios if s.samples >= k]
            if eligible:
                hat[k] = sum(pass_hat_k(s.passed, s.samples, k) for s in eligible) / len(eligible)
        return cls(
            total=len(records),
            passed=sum(r.passed for r in records),
            samples=samples,
            pass_hat_k=hat,
            outcomes=_counts(_outcome(r) for r in records),
            end_reasons=_counts(r.result.end_reason.value for r in records),
            scenarios=scenarios,
            duration_seconds=duration,
            resumed=resumed,
        )

    @classmethod
    def from_run(cls, run: BatchRun, samples: int) -> BatchSummary:
        """Summarise a :class:`BatchRun`."""
        return cls.from_records(run.records, samples, run.duration_seconds, run.resumed)
