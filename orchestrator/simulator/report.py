"""Reports of a batch: a readable terminal report, a JSON summary, JUnit XML.

* :func:`render_report` — rich tables: per scenario passed/samples, outcomes
  and end reasons; totals, pass rate and pass^k; then each failing simulation
  with the verdicts that failed.
* :func:`summary_json` — the :class:`~.summary.BatchSummary` as JSON (for dashboards).
* :func:`junit_xml` — one ``<testcase>`` per simulation (``classname`` the
  scenario, ``name`` the sample), a ``<failure>`` listing failed verdicts or an
  ``<error>`` for a simulation that crashed, the transcript in ``<system-out>``.

Nothing here sees an API key: reports are built from records only.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from .batch import SimulationRecord
from .judge import render_transcript
from .models import EndReason, converter
from .summary import BatchSummary


def summary_json(summary: BatchSummary) -> str:
    """The summary as indented JSON, with ``pass_rate`` added."""
    document = converter.unstructure(summary)
    document["pass_rate"] = summary.pass_rate
    document["pass_hat_k"] = {str(k): v for k, v in summary.pass_hat_k.items()}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def failure_lines(record: SimulationRecord) -> list[str]:
    """Why ``record`` failed: the error, or each failed verdict with its reason."""
    result = record.result
    if result.end_reason is EndReason.ERROR:
        return [f"error: {result.end_detail}"]
    evaluation = result.evaluation
    verdicts = evaluation.verdicts if evaluation is not None else ()
    return [f"{v.criterion}: {v.reason}" for v in verdicts if not v.passed]


def junit_xml(records: Sequence[SimulationRecord], summary: BatchSummary, name: str = "simulate") -> str:
    """JUnit XML for CI: one test case per simulation."""
    failures = sum(1 for r in records if not r.passed and r.result.end_reason is not EndReason.ERROR)
    errors = sum(1 for r in records if r.result.end_reason is EndReason.ERROR)
    suites = ET.Element("testsuites", name=name)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=name,
        tests=str(len(records)),
        failures=str(failures),
        errors=str(errors),
        time=f"{summary.duration_seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="pass_rate", value=f"{summary.pass_rate:.4f}")
    for k, value in summary.pass_hat_k.items():
        ET.SubElement(properties, "property", name=f"pass^{k}", value=f"{value:.4f}")
    for record in records:
        result = record.result
        case = ET.SubElement(
            suite,
            "testcase",
            classname=record.scenario,
            name=f"sample-{record.sample}",
            time=f"{result.duration_seconds:.3f}",
        )
        if not record.passed:
            tag = "error" if result.end_reason is EndReason.ERROR else "failure"
            lines = failure_lines(record)
            problem = ET.SubElement(case, tag, message=lines[0] if lines else "failed")
            problem.text = "\n".join(lines)
        outcome = result.conversation.outcome
        header = f"end: {result.end_reason.value} {result.end_detail}".rstrip()
        header += f"\noutcome: {outcome.name if outcome else 'none'}\n"
        ET.SubElement(case, "system-out").text = header + render_transcript(result.conversation)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "-"


def render_report(
    summary: BatchSummary,
    records: Sequence[SimulationRecord],
    console: Console,
    *,
    max_failures: int = 10,
) -> None:
    """Print the batch report to ``console``."""
    table = Table(title="Simulations", title_justify="left")
    table.add_column("scenario")
    table.add_column("passed", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("outcomes")
    table.add_column("end reasons")
    for scenario in summary.scenarios:
        style = "green" if scenario.passed == scenario.samples else "red" if not scenario.passed else "yellow"
        table.add_row(
            scenario.name,
            f"{scenario.passed}/{scenario.samples}",
            f"[{style}]{scenario.pass_rate:.0%}[/{style}]",
            _counts(scenario.outcomes),
            _counts(scenario.end_reasons),
        )
    console.print(table)
    console.print(f"outcomes:    {_counts(summary.outcomes)}")
    console.print(f"end reasons: {_counts(summary.end_reasons)}")
    hat = "  ".join(f"pass^{k} {summary.pass_hat_k[k]:.3f}" for k in _shown_ks(summary.pass_hat_k))
    resumed = f" ({summary.resumed} resumed)" if summary.resumed else ""
    seconds = summary.duration_seconds
    took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
    console.print(
        f"[bold]{summary.passed}/{summary.total} passed[/bold] "
        f"(pass rate {summary.pass_rate:.1%}){resumed} in {took}   {hat}",
        soft_wrap=True,  # one line even when the output is not a terminal
    )
    failed = [record for record in records if not record.passed]
    for record in failed[:max_failures]:
        console.print(f"[red]✗[/red] {record.scenario} sample {record.sample}:", highlight=False)
        for line in failure_lines(record):
            console.print(f"    {line}", highlight=False, markup=False)
    if len(failed) > max_failures:
        console.print(f"... and {len(failed) - max_failures} more failures (see the JUnit report)")


def _shown_ks(pass_hat_k: Mapping[int, float]) -> list[int]:
    """The k of pass^k worth a place on the summary line: 1 to 3, round numbers, the last.
    (With ``--samples 300`` the line held 300 of them; summary.json and the JUnit XML
    keep every k.)"""
    last = max(pass_hat_k, default=0)
    return [k for k in pass_hat_k if k <= 3 or k == last or k in _ROUND_KS]


_ROUND_KS = frozenset(m * 10**e for e in range(7) for m in (1, 2, 5))
