"""The one base class of errors a user can cause (bad input, bad flags, mismatched artifacts),
and the redaction every printed location goes through."""

import re

# scheme://[userinfo@]host/path[?query]: the userinfo and the query are what may hold secrets.
_URI = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/@'\"]*@)?"
                  r"(?P<rest>[^\s?'\"]*)(?P<query>\?[^\s'\"]*)?")


class UserError(Exception):
    """Something the user can fix; jobs print it as one line and exit with code 2."""


def redact(text: str) -> str:
    """text with every URI's userinfo and query string removed (they may carry secrets)."""
    def strip(m: re.Match) -> str:
        query = m.group("query") or ""
        return m.group("scheme") + m.group("rest") + (":" if query.endswith(":") else "")

    return _URI.sub(strip, text)
