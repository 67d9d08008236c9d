"""A disk cache of LLM completions, keyed by a hash of the request.

The key is the SHA-256 of the canonical JSON of the client's ``identity``
(endpoint and model, never the key) and the whole :class:`CompletionRequest`
(messages, temperature, seed, ``variant``...). A rerun of the same simulations
therefore makes zero requests and yields the same transcripts. One file per
entry, ``<dir>/<key[:2]>/<key>.json``, written atomically (temp file + rename),
so a crash never leaves a torn entry and concurrent batches may share a
directory. Identical requests in flight at once are sent only once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import attrs
import cattrs
import trio

from .llm import Completion, CompletionRequest, LLMClient
from .models import converter


@attrs.frozen
class CacheStatistics:
    """Counts since the cache was created: ``requests`` = misses sent to the provider."""

    hits: int
    requests: int


def request_key(identity: str, request: CompletionRequest) -> str:
    """The cache key of ``request`` sent to the client named ``identity``."""
    document = {"identity": identity, "request": converter.unstructure(request)}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


class CachedLLMClient(LLMClient):
    """Serves completions from ``directory`` and stores what ``inner`` returns."""

    def __init__(self, inner: LLMClient, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.directory = Path(directory)
        self._hits = 0
        self._requests = 0
        self._in_flight: dict[str, trio.Event] = {}

    @property
    def identity(self) -> str:
        return self.inner.identity

    def statistics(self) -> CacheStatistics:
        """Hits and requests so far."""
        return CacheStatistics(self._hits, self._requests)

    def path_for(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.directory / key[:2] / f"{key}.json"

    async def complete(self, request: CompletionRequest) -> Completion:
        """From the cache if present, else from ``inner`` (then stored). Cancellable."""
        key = request_key(self.identity, request)
        while (pending := self._in_flight.get(key)) is not None:
            await pending.wait()
        cached = await self._load(key)
        if cached is not None:
            self._hits += 1
            return cached
        done = self._in_flight[key] = trio.Event()
        try:
            self._requests += 1
            completion = await self.inner.complete(request)
            await self._store(key, request, completion)
            return completion
        finally:
            del self._in_flight[key]
            done.set()

    async def _load(self, key: str) -> Completion | None:
        text = await trio.to_thread.run_sync(_read, self.path_for(key))
        if text is None:
            return None
        try:
            return converter.structure(json.loads(text)["completion"], Completion)
        except (ValueError, KeyError, TypeError, cattrs.BaseValidationError):
            return None  # an unreadable entry is a miss; the new completion overwrites it

    async def _store(self, key: str, request: CompletionRequest, completion: Completion) -> None:
        document = {
            "identity": self.identity,
            "request": converter.unstructure(request),
            "completion": converter.unstructure(completion),
        }
        text = json.dumps(document, indent=1, ensure_ascii=False)
        await trio.to_thread.run_sync(_write_atomically, self.path_for(key), text)
