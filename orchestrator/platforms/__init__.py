"""Platforms: the I/O side of each wire protocol (connections, dispatch).

:func:`build_platform` turns settings into the :class:`~orchestrator.dispatcher.Platform`
the service runs.
"""

from __future__ import annotations

from ..config import Settings
from ..dispatcher import Platform
from ..errors import ConfigError


def build_platform(settings: Settings) -> Platform:
    """The platform named by ``settings.platform.kind``; ConfigError if it cannot work."""
    kind = settings.platform.kind
    if kind == "conversimple":
        from .conversimple import ConversimplePlatform

        return ConversimplePlatform.from_settings(settings.platform)
    if kind == "arinova":
        from .arinova import ArinovaPlatform

        return ArinovaPlatform.from_settings(settings.platform)
    raise ConfigError(f"unknown platform {kind!r}: use conversimple or arinova")


__all__ = ["build_platform"]
