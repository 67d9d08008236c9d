"""orchestrator: a trio runtime hosting thousands of live customer/AI-agent conversations."""

from __future__ import annotations

__version__ = "0.1.0"
