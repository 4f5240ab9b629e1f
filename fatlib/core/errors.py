"""The one base class of errors a user can cause (bad input, bad flags, mismatched artifacts),
and the redaction every printed location goes through."""

import re

# scheme:// and the run of characters after it up to white space. Everything up to its last '@'
# is taken for userinfo: a secret may hold '/', '?' or '#' (AWS secrets hold '/'), so no URI
# grammar can tell where it ends, and a key with an '@' in its name is shown cut (hidden too
# much, never a secret shown).
_URI = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>\S*)")
# Punctuation a message puts after a location ("s3://b/x: not found", "'s3://b/x'").
_TRAILING = re.compile(r"[:'\")\]},;.]*$")
HIDDEN = "***"


class UserError(Exception):
    """Something the user can fix; jobs print it as one line and exit with code 2."""


def redact(text: str) -> str:
    """text with every URI's userinfo and query string (which may carry secrets) replaced by
    ***, and a host whose "port" is no number (key:secret without the '@') as well."""
    return _URI.sub(lambda m: m.group("scheme") + _redact_location(m.group("rest")), text)


def _redact_location(rest: str) -> str:
    """What follows scheme:// with its secrets hidden, the message's punctuation kept."""
    tail = _TRAILING.search(rest).group()
    body = rest[: len(rest) - len(tail)]
    if "@" in body:
        body = f"{HIDDEN}@{body[body.rindex('@') + 1 :]}"
    if "?" in body:
        body = f"{body[: body.index('?')]}?{HIDDEN}"
    hidden, at, location = body.rpartition("@")
    authority, slash, path = location.partition("/")
    if ":" in authority and not authority.partition(":")[2].isdigit():
        authority = HIDDEN
    return f"{hidden}{at}{authority}{slash}{path}{tail}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(text: str, limit: int | None = None) -> str:
    """The first non-blank line of an error message, without colour codes, at most limit
    characters ('' for none): what a one-line error shows of a library's longer message."""
    lines = [line.strip() for line in strip_colour(text).splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def strip_colour(text: str) -> str:
    """text without terminal colour codes (Ray colours the tracebacks it forwards)."""
    return _ANSI.sub("", text)
