"""py-spy on the system under test: a raw profile of the calls phase and its top functions.

``py-spy record --pid PID --format raw`` pauses the process for each sample
(``--nonblocking`` tears about half the stacks of a busy trio process), so a
profiled round's figures are a little lower than an unprofiled one's. The raw file has one line per distinct
stack, ``frame;frame;…;leaf COUNT``, each frame ``function (file:line)``: self time
is the leaf's, total time every function on the stack.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .processes import ROOT

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


ROOTS = ("_run_module_as_main", "_bootstrap", "<module>")
"""Where a whole stack starts (the main thread, a worker thread)."""
BOILERPLATE = {
    ("_run_module_as_main", "<frozen runpy>"),
    ("_run_code", "<frozen runpy>"),
    ("<module>", "orchestrator/__main__.py"),
    ("Command.__call__", "click/core.py"),
    ("Command.main", "click/core.py"),
    ("Group.invoke", "click/core.py"),
    ("Command.invoke", "click/core.py"),
    ("Context.invoke", "click/core.py"),
    ("run", "orchestrator/cli.py"),
    ("run_trio", "orchestrator/cli.py"),
    ("run", "trio/_core/_run.py"),
    ("unrolled_run", "trio/_core/_run.py"),
    ("_bootstrap", "stdlib/threading.py"),
    ("_bootstrap_inner", "stdlib/threading.py"),
    ("Thread.run", "stdlib/threading.py"),
    ("Thread._bootstrap", "stdlib/threading.py"),
    ("Thread._bootstrap_inner", "stdlib/threading.py"),
}
"""Frames on (nearly) every stack: left out of the inclusive ranking."""


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Profiler:
    """``py-spy record`` attached to ``pid`` from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = out.with_suffix(".log")

    def start(self) -> bool:
        exe = py_spy()
        if exe is None:
            return False
        argv = [
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--format",
            "raw",
            "--rate",
            str(self.rate),
            "--nonblocking",
            "-o",
            str(self.out),
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        return True

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            return {"error": f"py-spy wrote nothing (see {self.log.name})"}
        return top_functions(self.out)


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    file = match["file"].replace(str(ROOT) + "/", "")
    file = re.sub(r"^.*/site-packages/", "", file)
    file = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", file)
    return match["function"], file


def area(file: str) -> str:
    """Where a file belongs, for a rollup: ``trio``, ``orchestrator/transport``, ``json``…"""
    if file.startswith("orchestrator/"):
        parts = file.split("/")
        return "/".join(parts[:2]).removesuffix(".py")
    if file.startswith("stdlib/"):
        return "stdlib/" + file.split("/")[1].removesuffix(".py")
    for library in ("attrs", "cattrs"):
        if file.startswith(f"<{library} generated"):
            return f"{library} (generated)"
    return file.split("/")[0].removesuffix(".py") or "?"


def top_functions(path: Path, top: int = 15) -> dict[str, Any]:
    """The ``top`` functions by self samples and by total samples in a raw py-spy profile."""
    own: Counter[tuple[str, str]] = Counter()
    torn = 0
    total: Counter[tuple[str, str]] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[0][0] not in ROOTS:
            torn += count  # a partial stack (the thread was running while it was read)
        own[frames[-1]] += count
        for frame in set(frames):
            if frame not in BOILERPLATE:
                total[frame] += count

    def rows(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            {"function": fn, "file": file, "samples": n, "pct": round(n / samples * 100, 2)}
            for (fn, file), n in counter.most_common(top)
        ]

    areas: Counter[str] = Counter()
    for (_, file), n in own.items():
        areas[area(file)] += n
    return {
        "samples": samples,
        "self_by_area": {name: round(n / samples * 100, 2) for name, n in areas.most_common()},
        "partial_stacks": torn,
        "file": path.name,
        "top_self": rows(own),
        "top_total": rows(total),
    }
