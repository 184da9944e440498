"""The one exception a user's mistake raises.

The command line turns a ``UserError`` into one line on stderr and exit code 2, with no
traceback. It subclasses ``ValueError`` so library callers can catch it as the bad-value
error it is (a malformed idx or .mat file is a ``ValueError`` naming the file).
"""


class UserError(ValueError):
    """Bad input from the user: a path, a file, a config value. The message says what to do."""
