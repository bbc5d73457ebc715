"""Stage-by-stage progress a person can follow: what runs, how long it took, what it found."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, prog: str, stream: TextIO | None = None) -> None:
        self._prog = prog
        self._stream = stream or sys.stderr
        self._durations: dict[str, float] = {}

    def _say(self, text: str) -> None:
        print(f"[{self._prog}] {text}", file=self._stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[str], None]]:
        """Time a stage; the yielded function records one line of findings, printed at the end."""
        notes: list[str] = []
        self._say(f"{name} ...")
        started = time.perf_counter()
        try:
            yield notes.append
        except BaseException:
            self._say(f"{name} failed after {time.perf_counter() - started:.1f} s")
            raise
        elapsed = time.perf_counter() - started
        self._durations[name] = round(elapsed, 2)
        self._say(f"{name} done in {elapsed:.1f} s" + (f": {'; '.join(notes)}" if notes else ""))

    def durations(self) -> dict[str, float]:
        return dict(self._durations)
