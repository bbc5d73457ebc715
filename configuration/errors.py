"""Errors a user can fix, and how entry points report them."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

# A line that names a raised exception, as a traceback ends: "psycopg.OperationalError: connection failed".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Refused)\b[^\s]*:?\s")


class UserError(Exception):
    """A problem with the input, the configuration or the state that the user can fix.

    The message is one line that says what is wrong and what to do.
    """

    exit_code = 2


def excerpt(text: str, limit: int = 120) -> str:
    """At most `limit` characters of `text` for a message: control characters shown as `?`, the length told when cut.

    A user's file or request may hold anything (a binary header, a 1 MB line): a message
    quotes only this much of it, so it stays one short, printable line.
    """
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"


def last_error_line(text: str, limit: int = 400) -> str:
    """What a failed program said last, for a one-line message: the last exception a traceback names, else the
    last line mentioning an error, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    errors = [line for line in lines if "error" in line.lower()]
    return (raised or errors or lines or ["no output"])[-1][:limit]


def run_cli(main: Callable[[], int | None], prog: str) -> None:
    """Run an entry point, turning a UserError into one line on stderr instead of a traceback."""
    try:
        code = main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
