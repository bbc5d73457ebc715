"""Errors a user can fix, and how entry points report them."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the input, the configuration or the state that the user can fix.

    The message is one line that says what is wrong and what to do.
    """

    exit_code = 2


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
