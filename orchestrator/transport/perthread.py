"""Per-thread state of the compiled transport modules, in a module that is not compiled.

mypyc would compile a ``threading.local`` subclass in :mod:`.frames` or :mod:`.pipe`
as a native class: one object every thread shares (and it cannot build it as a plain
Python class there either). Two trio runs in two threads would then read into one
buffer, and a read releases the GIL. Defined here, they stay per thread.
"""

from __future__ import annotations

import threading

__all__ = ["MaskPool", "ReadBuffer", "Unyielded"]


class MaskPool(threading.local):
    """Random bytes to cut 4-byte frame masks from, per thread (see :mod:`.frames`)."""

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0


class ReadBuffer(threading.local):
    """The buffer every read of this thread lands in (see :mod:`.pipe`)."""

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))
        self.into = (self.view,)


class Unyielded(threading.local):
    """Steps that finished at once since the last one that yielded, per thread."""

    def __init__(self) -> None:
        self.count = 0
