"""The one exception type users see as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input or environment: the message names the thing and says what to do."""
