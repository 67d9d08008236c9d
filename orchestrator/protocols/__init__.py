"""Wire protocols: sans-IO adapters from frames to :mod:`orchestrator.events` and back.

One module per platform wire format, plus :mod:`.codec`, the one module that knows
JSON. Nothing here does I/O or imports trio: a session object turns received text
into typed values and outbound commands into text, and the connection moves the text.
"""

from __future__ import annotations

from orchestrator.protocols import arinova, codec, conversimple
from orchestrator.protocols.arinova import ArinovaClient, ArinovaServer
from orchestrator.protocols.codec import decode_frame, encode_frame
from orchestrator.protocols.conversimple import ConversimpleClient, ConversimpleServer

__all__ = [
    "ArinovaClient",
    "ArinovaServer",
    "ConversimpleClient",
    "ConversimpleServer",
    "arinova",
    "codec",
    "conversimple",
    "decode_frame",
    "encode_frame",
]
