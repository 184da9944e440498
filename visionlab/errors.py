"""The one exception a user's mistake raises.

The command line turns a ``UserError`` into one line on stderr and exit code 2, with no
traceback. It subclasses ``ValueError`` so library callers can catch it as the bad-value
error it is (a malformed idx or .mat file is a ``ValueError`` naming the file).
"""


class UserError(ValueError):
    """Bad input from the user: a path, a file, a config value. The message says what to do."""


def check_writable_dir(out) -> None:
    """Create the output folder ``out`` and prove a file can be written there, before any work:
    a user's unwritable --out is one line now, not a traceback after an hour of training."""
    from pathlib import Path

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.strerror or exc}); choose another --out") from None
