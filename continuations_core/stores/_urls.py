"""Keeping store credentials out of error messages.

A store URL may carry a password (``postgresql://app:secret@db/agents``, ``redis://:secret@host``,
``?password=secret``, or libpq's ``password=secret`` conninfo). Errors name the store with
:func:`redact`, and text that came from a driver goes through :func:`scrub` first, because
drivers sometimes repeat parts of the URL they could not parse.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = ["redact", "scrub", "secrets_of"]

MASK = "***"
# Query or conninfo parameters that hold a secret (libpq's, redis-py's and common spellings).
_SECRET_KEYS = frozenset({"password", "pass", "passwd", "pwd", "secret", "token", "sslpassword"})
# libpq conninfo: key = value, the value bare or single-quoted with backslash escapes.
_CONNINFO_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def redact(url: str) -> str:
    """``url`` fit for a message: password masked, query and fragment dropped.

    A conninfo string (``host=... password=...``) keeps its keys but masks secret values.
    """
    if "://" not in url:
        if _CONNINFO_PAIR.search(url):
            return _CONNINFO_PAIR.sub(
                lambda m: f"{m[1]}={MASK}" if m[1].lower() in _SECRET_KEYS else m[0], url
            )
        return url
    scheme = url.partition("://")[0]
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: show no more than the scheme
        return f"{scheme}://(unparsable URL)"
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    else:
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def secrets_of(url: str) -> set[str]:
    """Every secret spelled in ``url``, raw and percent-decoded."""
    found: set[str] = set()
    if "://" in url:
        # An unparsable URL (say an unclosed IPv6 bracket) is read by hand below.
        with contextlib.suppress(ValueError):
            found.add(urlsplit(url).password or "")
        netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
        userinfo, at, _ = netloc.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.partition(":")[2])
        query = url.partition("?")[2].split("#", 1)[0]
        found.update(
            v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in _SECRET_KEYS
        )
        for raw in query.split("&"):
            key, _, value = raw.partition("=")
            if key.lower() in _SECRET_KEYS:
                found.add(value)
    else:
        for key, value in _CONNINFO_PAIR.findall(url):
            if key.lower() in _SECRET_KEYS:
                found.update({value, value.strip("'")})
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` masked (longest first, so none is left in part)."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
