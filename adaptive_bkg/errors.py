"""User-facing errors.

Anything a user can cause (bad config, unknown skim, corrupt file, wrong checkpoint) raises
`UserError` with a one-line message naming the problem and, where possible, the fix. The CLI
prints that line and exits 2; a traceback means a bug in adaptive-bkg, not in the input.
"""


class UserError(Exception):
    """An error in the user's input, reported as one line and exit status 2."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): what a
    one-line error quotes from a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """`TypeName: first line of the message` (or just the type name): how a one-line error
    quotes a failure in a user's code, where the exception type is part of the story."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {first_line(exc)}" if text else type(exc).__name__
