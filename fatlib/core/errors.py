"""The one base class of errors a user can cause (bad input, bad flags, mismatched artifacts)."""


class UserError(Exception):
    """Something the user can fix; jobs print it as one line and exit with code 2."""
