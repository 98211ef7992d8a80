"""The one exception type for user errors.

Library code raises :class:`JetquantError` for anything the user can fix (bad
input, stale cache, impossible request). The CLI catches it and prints the
message on one line; nothing else is caught there, so genuine bugs still show
a traceback.
"""


class JetquantError(Exception):
    """A user error: the message names the input, what is wrong and the fix."""
