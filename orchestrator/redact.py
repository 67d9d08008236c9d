"""Keep credentials out of errors, reprs and logs.

The platform's auth token travels in the WebSocket URL's query string
(``?customer_id=…&auth_token=…``) or in a frame (``{"botToken": …}``). Everything
that may print a URL goes through :func:`redact_url`; a :class:`SecretFilter` on
the log handlers catches what slips through::

    >>> redact_url("wss://u:pw@host/ws?customer_id=c1&auth_token=s3cret")
    'wss://u:***@host/ws?customer_id=***&auth_token=***'

Redaction is one-way and lossy by design: a redacted URL is for humans, never
for connecting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "SecretFilter", "redact_secrets", "redact_text", "redact_url"]

MASK = "***"

# A key that names a credential, then `=` or `:` (optionally quoted, as in JSON),
# then the value up to a delimiter. Matches `auth_token=…`, `token=…`, `api_key=…`,
# `"botToken": "…"`, `password=…`, and `Authorization: Bearer …`.
_KEYED_SECRET = re.compile(
    r"""(?ix)
    (?P<key>[\w-]*(?:token|api[_-]?key|password|secret))
    (?P<sep>["']?\s*[=:]\s*["']?)
    (?P<value>[^\s&"',;}\]]+)
    """
)
_BEARER = re.compile(r"(?i)(?P<key>\bbearer)(?P<sep>\s+)(?P<value>[\w.~+/-]+=*)")
# A URL in running text ends before the punctuation that follows it ("…: reason").
_URL_IN_TEXT = re.compile(r"(?i)\b(?:wss?|https?)://[^\s\"'<>]*[^\s\"'<>:,.;)]")
# An HTTP request line (as a WebSocket handshake logs it): its query is masked whole.
_REQUEST_LINE = re.compile(r"(?P<head>\b(?:GET|POST|PUT|HEAD)\s+[^\s?]*\?)(?P<query>\S+)")
# Any Authorization header: the scheme stays, the credentials go.
_AUTHORIZATION = re.compile(r"(?i)(?P<key>\bauthorization)(?P<sep>\s*:\s*(?:\w+\s+)?)(?P<value>\S+)")
_FORMATTER = logging.Formatter()


def redact_url(url: str) -> str:
    """Return ``url`` with every query value, the password and the fragment masked.

    Keys stay readable (``?customer_id=***&auth_token=***``) so a log still says
    which parameters were sent. A query part without ``=`` is masked whole. A
    string that does not parse as a URL keeps only what precedes its first ``?`` or
    ``#``, its password masked.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        cut = re.search(r"[?#]", url)
        head = _mask_password(url if cut is None else url[: cut.end()])
        return head if cut is None else head + MASK
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = "&".join(_mask_query_part(part) for part in parts.query.split("&"))
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_password(text: str) -> str:
    """``text`` with the password of its authority masked, read as :func:`redact_url` reads a
    parsed URL (user info up to the last ``@``, the password after its first ``:``)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    end = re.search(r"[/?#]", rest)
    authority = rest if end is None else rest[: end.start()]
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{MASK}@{hostport}{rest[len(authority) :]}"


def _mask_query_part(part: str) -> str:
    if part == "":
        return part
    key, eq, _value = part.partition("=")
    return f"{key}={MASK}" if eq else MASK


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with credentials masked.

    Masks every occurrence of each non-empty string in ``secrets`` (longest
    first, so a secret containing another is masked whole), then the query
    values of every ``ws(s)://``/``http(s)://`` URL, then credential-looking
    ``key=value`` pairs (see :data:`_KEYED_SECRET`) and bearer tokens.
    """
    text = redact_secrets(text, secrets)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _REQUEST_LINE.sub(
        lambda m: m.group("head") + "&".join(_mask_query_part(p) for p in m.group("query").split("&")), text
    )
    text = _AUTHORIZATION.sub(_mask_match, text)
    text = _KEYED_SECRET.sub(_mask_match, text)
    return _BEARER.sub(_mask_match, text)


SHORT_SECRET = 8
"""A secret shorter than this is masked only where it stands alone, not inside a word."""


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by ``***``.

    A short secret (a test key such as ``k``) is masked where it is not part of a
    longer word, so ``handshake`` stays readable while ``auth_token=k`` does not.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", MASK, text)
    return text


def _mask_match(match: re.Match[str]) -> str:
    if match.group("value").rstrip(":.") == MASK:  # masked already (the colon is the message's)
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{MASK}"


class SecretFilter(logging.Filter):
    """A logging filter that masks credentials in every record it sees.

    Attach it to *handlers* (a filter on a logger does not see records that
    propagate from child loggers)::

        handler.addFilter(SecretFilter([settings.auth_token]))

    It formats the message with its arguments, masks registered secrets and
    anything :func:`redact_text` recognises, and stores the result as the
    record's message with no arguments left. Tracebacks and stack info are
    masked the same way. It never drops a record.
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self._secrets: set[str] = {s for s in secrets if s}

    def add_secret(self, secret: str) -> None:
        """Register one more string to mask (an empty string is ignored)."""
        if secret:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        """Mask registered secrets and recognised credentials in ``text``."""
        return redact_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # Mismatched %-arguments: mask the parts separately, as logging would show them.
            message = f"{record.msg} {record.args}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True
