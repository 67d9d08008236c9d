"""The server's end of an accepted WebSocket.

A module of its own so that it is compiled with :mod:`.sansio` (see ``setup.py``):
a compiled class cannot have an interpreted subclass, and :mod:`.server` is not
compiled (mypyc does not compile ``except*`` yet).
"""

from __future__ import annotations

from collections.abc import Mapping

import attr

from .sansio import SansIOWebSocket

__all__ = ["SansIOServerWebSocket"]


@attr.s(auto_attribs=True, eq=False, repr=False, slots=True)
class SansIOServerWebSocket(SansIOWebSocket):
    """The server's end of an accepted WebSocket; see :class:`.ServerWebSocket`."""

    _path: str = attr.ib(default="/", kw_only=True)
    _query: Mapping[str, str] = attr.ib(factory=dict, kw_only=True)
    _headers: Mapping[str, str] = attr.ib(factory=dict, kw_only=True)

    @property
    def path(self) -> str:
        return self._path

    @property
    def query(self) -> Mapping[str, str]:
        return self._query

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers
