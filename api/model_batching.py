"""Predictions that reach the model in the same turn of the event loop go out as one model call.

Under load, several GET /predict requests reach their model call in one turn of the API's
event loop (their requests arrived together). One HTTP exchange each costs both hops more
than the model's own work: the API's client and the model server's request handling cost
~20-40 µs of CPU a call each on this kind of machine, the prediction ~5 µs a row. So the rows of the
calls made in one turn go out together, as one CSV body (SageMaker's contract: one row per
line in, one probability per line back, in order), and each caller gets its own rows back.

    model = BatchingEndpoint(HttpModelEndpoint(...), max_rows=32)
    answer = await model.predict(rows)     # as the wrapped endpoint's, whoever shared the call

- Nobody waits for company: the first caller of a batch yields once to the event loop, and
  the batch leaves as soon as it resumes, with whatever joined in that turn. Alone, it makes
  its own call, exactly as without batching (one `asyncio.sleep(0)` more).
- What is batched: plain predictions (explanations go alone) while the batch holds at most
  `max_rows` rows (default 32, the model server's compiled evaluator's limit); a caller with
  more rows than that calls alone.
- Answers: each caller's slice of the probabilities, with the batch's model version and
  threshold. One answer scored every row, so a model swap never splits a batch.
- Failures: an unreachable or timed-out endpoint (503, 504) fails every caller of the batch,
  each with its own exception. An endpoint that answered an error (`ModelFailed`, 502) for a
  batch of several callers is asked again by each caller alone: one caller's rows never fail
  another's request, and each error names its own rows.
- A caller cancelled while it waits (its client went away) leaves the call to the others;
  the leader's call runs in a task of its own once anyone else joined.

Probabilities do not depend on how rows are batched: the model server answers every row with
XGBoost's own float32 value, bit for bit, whatever the rows beside it
(tests/api/test_batch_size_independence.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from api.model_endpoint import ModelAnswer, ModelEndpoint, ModelEndpointError, ModelFailed

_ALONE = object()  # a waiter's result: the batch failed with ModelFailed, ask again alone


class _Batch:
    __slots__ = ("callers", "rows")

    def __init__(self) -> None:
        self.rows: list[Sequence[Any]] = []
        self.callers: list[tuple[asyncio.Future, int, int]] = []  # (waiter, first row, rows)


class BatchingEndpoint(ModelEndpoint):
    """`inner` with the plain predictions of one event-loop turn sent as one call (module docstring)."""

    def __init__(self, inner: ModelEndpoint, max_rows: int, on_shared: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.max_rows = max_rows
        self._open: _Batch | None = None  # the batch taking callers in this turn
        self._calls: set[asyncio.Task] = set()  # shared calls in flight (the loop keeps only weak references)
        self._on_shared = on_shared or (lambda callers: None)  # the API's metrics: one call, this many callers

    def describe(self) -> str:
        return self.inner.describe()

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        await self.inner.aclose()

    async def predict(self, rows: Sequence[Sequence[Any]], explain: bool = False) -> ModelAnswer:
        if explain or self.max_rows <= 1 or len(rows) > self.max_rows:
            return await self.inner.predict(rows, explain)
        batch = self._open
        if batch is not None and len(batch.rows) + len(rows) <= self.max_rows:
            return await self._join(batch, rows)
        batch = self._open = _Batch()
        batch.rows.extend(rows)
        waiter: asyncio.Future | None = None
        cancelled = True
        try:
            await asyncio.sleep(0)  # one turn: the callers of this turn join the batch
            cancelled = False
        finally:
            if self._open is batch:
                self._open = None
            if batch.callers:  # others joined: the call is theirs too, even when this caller was just cancelled
                if not cancelled:
                    waiter = asyncio.get_running_loop().create_future()
                    batch.callers.insert(0, (waiter, 0, len(rows)))
                task = asyncio.ensure_future(self._call(batch))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        if waiter is None:
            return await self.inner.predict(rows)
        return await self._answer(waiter, rows)

    async def _join(self, batch: _Batch, rows: Sequence[Sequence[Any]]) -> ModelAnswer:
        waiter = asyncio.get_running_loop().create_future()
        batch.callers.append((waiter, len(batch.rows), len(rows)))
        batch.rows.extend(rows)
        return await self._answer(waiter, rows)

    async def _answer(self, waiter: asyncio.Future, rows: Sequence[Sequence[Any]]) -> ModelAnswer:
        answer = await waiter
        if answer is _ALONE:
            return await self.inner.predict(rows)
        return answer

    async def _call(self, batch: _Batch) -> None:
        self._on_shared(len(batch.callers))
        try:
            answer = await self.inner.predict(batch.rows)
        except ModelFailed:
            for waiter, _, _ in batch.callers:
                if not waiter.done():
                    waiter.set_result(_ALONE)
            return
        except ModelEndpointError as exc:
            for waiter, _, _ in batch.callers:
                if not waiter.done():
                    waiter.set_exception(type(exc)(exc.reason))
            return
        except asyncio.CancelledError:  # the loop is shutting down
            for waiter, _, _ in batch.callers:
                waiter.cancel()
            raise
        except Exception as exc:  # a bug: every caller sees it
            for waiter, _, _ in batch.callers:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter, first, count in batch.callers:
            if not waiter.done():
                waiter.set_result(
                    ModelAnswer(answer.probabilities[first : first + count], answer.model_version, answer.threshold)
                )
