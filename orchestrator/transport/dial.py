"""From a URL to an open byte stream: parse, refuse unsafe URLs, TCP, then TLS.

Both implementations dial through here, so URL safety, certificate checks and
the translation of socket and TLS errors are decided once. Nothing in this
module puts a URL's query string (which carries the auth token) into an error:
messages name :attr:`Target.redacted`.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import ssl
from urllib.parse import quote, unquote, urlsplit

import attrs
import trio

from ..errors import HandshakeError, PermanentLinkError, UnsafeURLError
from ..redact import redact_url

__all__ = [
    "PERMANENT_STATUSES",
    "Stream",
    "Target",
    "is_loopback",
    "open_stream",
    "parse_target",
    "rejection_error",
]

PERMANENT_STATUSES = frozenset({400, 401, 403})
"""Handshake statuses that retrying cannot fix (bad request, auth)."""

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]

# Characters left as they are when a path or query is percent-encoded (RFC 3986).
_URI_SAFE = "!#$%&'()*+,/:;=?@[]~"


@attrs.frozen
class Target:
    """Where to connect and what to ask for. ``repr`` omits the resource (it holds the token)."""

    secure: bool
    host: str
    port: int
    resource: str = attrs.field(repr=False)
    """Path and query sent in the request line (``/ws?auth_token=…``)."""
    redacted: str
    """The URL with query values masked: the only form allowed in messages."""
    authorization: str | None = attrs.field(default=None, repr=False)
    """``Basic …`` header value when the URL carries user info."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` (and ``*.localhost``) and loopback IP literals; no DNS."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=64)
def parse_target(url: str, *, allow_insecure: bool = False) -> Target:
    """Parse a ``ws://`` or ``wss://`` URL, refusing what the safe defaults forbid.

    Raises :class:`~orchestrator.errors.UnsafeURLError` for another scheme, a
    missing host, a bad port, or ``ws://`` to a host that is not loopback unless
    ``allow_insecure``. Does no I/O. Remembers the last URLs it parsed (a
    :class:`Target` is immutable): every conversation of a platform dials the same
    one, and parsing it (``urlsplit``, percent-encoding, redaction, the loopback
    check) was 1,400 of the 25,000 opcodes that opening a link cost.
    """
    redacted = redact_url(url)
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        # The parser's message may quote the URL, token included: do not chain it.
        raise UnsafeURLError(f"not a valid WebSocket URL: {redacted!r}") from None
    try:
        port = parts.port
    except ValueError:
        raise UnsafeURLError(f"bad port in {redacted!r} (a number from 0 to 65535)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise UnsafeURLError(f"only ws:// and wss:// URLs are allowed, not {redacted!r}")
    host = parts.hostname
    if not host:
        raise UnsafeURLError(f"no host in {redacted}")
    secure = scheme == "wss"
    if not secure and not allow_insecure and not is_loopback(host):
        raise UnsafeURLError(
            f"refusing plain ws:// to non-loopback host {host!r}: "
            "use wss://, or allow it explicitly (--allow-insecure)"
        )
    resource = quote(parts.path or "/", safe=_URI_SAFE)
    if parts.query:
        resource += "?" + quote(parts.query, safe=_URI_SAFE)
    authorization = None
    if username is not None:
        credentials = f"{unquote(username)}:{unquote(password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Target(
        secure=secure,
        host=host,
        port=port if port is not None else (443 if secure else 80),
        resource=resource,
        redacted=redacted,
        authorization=authorization,
    )


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system-trust, hostname-checking context shared by every ``wss://`` link."""
    return ssl.create_default_context()


async def open_stream(target: Target, ssl_context: ssl.SSLContext | None = None) -> Stream:
    """Open TCP (and TLS for ``wss://``) to ``target``, with the TLS handshake done.

    Raises :class:`~orchestrator.errors.PermanentLinkError` at once when the
    server's certificate fails verification, and
    :class:`~orchestrator.errors.HandshakeError` when the host cannot be reached
    (refused, reset, unresolvable) or TLS fails otherwise. Cancellation closes
    whatever was opened.
    """
    try:
        family = _address_family(target.host)
        if family is None:
            tcp = await trio.open_tcp_stream(target.host, target.port)
        else:
            tcp = await _connect_address(family, target.host, target.port)
    except OSError as exc:
        raise HandshakeError(f"cannot connect to {target.redacted}: {exc}") from exc
    if not target.secure:
        return tcp
    tls = trio.SSLStream(
        tcp,
        ssl_context or default_ssl_context(),
        server_hostname=target.host,
        https_compatible=True,
    )
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise PermanentLinkError(
                f"certificate of {target.redacted} failed verification: {cause.verify_message}"
            ) from exc
        raise HandshakeError(f"TLS handshake with {target.redacted} failed: {cause}") from exc
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


@functools.lru_cache(maxsize=64)
def _address_family(host: str) -> int | None:
    """The socket family of an IP literal; None for a name (that takes DNS)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET


async def _connect_address(family: int, host: str, port: int) -> trio.SocketStream:
    """TCP to an IP literal: one socket and its connect. ``trio.open_tcp_stream`` would
    resolve it, and race its one address in a nursery of its own, with a task for it.
    Cancelled or failed, the socket is closed."""
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def rejection_error(status: int, phrase: str, redacted: str) -> HandshakeError:
    """The error for a handshake answered with HTTP ``status`` instead of 101."""
    message = f"{redacted} refused the WebSocket handshake: HTTP {status} {phrase}".rstrip()
    if status in PERMANENT_STATUSES:
        return PermanentLinkError(message)
    return HandshakeError(message)
