"""Load shedding: a request the model could not start on within the deadline gets 503 at once.

The model runs in one thread, so every admitted row waits for the rows ahead of it. A request's
expected wait is the rows queued ahead of it (admitted, not answered yet) times the measured seconds
per row, a moving average of each model call's seconds over its rows. Under load the micro-batcher's
calls grow and a forest's time per row falls, so the estimate follows the batching; until the first
call is measured nothing is shed. A request past `serving.queue_deadline_ms` is refused with
Retry-After: the seconds the queue ahead needs, at least 1. /livez and /readyz never reach this.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.responses import JSONResponse

from ..errors import Overloaded, Unavailable
from .http_errors import error_body

# The weight of the latest call in the moving average of seconds per row.
SMOOTHING = 0.2


class LoadShedder:
    """Counts the rows waiting for the model and refuses what would wait past the deadline."""

    def __init__(self, deadline_ms: int | None, count_shed: Callable[[str], None]) -> None:
        self.deadline_seconds = None if deadline_ms is None else deadline_ms / 1000
        self.count_shed = count_shed  # by endpoint
        self.queued_rows = 0
        self.seconds_per_row = 0.0

    def expected_wait(self) -> float:
        """Seconds before the model starts on a row admitted now."""
        return self.queued_rows * self.seconds_per_row

    async def answer(self, endpoint: str, rows: int, score: Callable[[], Awaitable[Any]]) -> Any:
        """`score()` once `rows` are admitted; else the 503, counted by endpoint. A 503 too when no
        model answered (`fallback`)."""
        try:
            with self.admitted(rows):
                return await score()
        except Overloaded as problem:
            self.count_shed(endpoint)
            return unavailable_answer(problem)
        except Unavailable as problem:
            return unavailable_answer(problem)

    @contextlib.contextmanager
    def admitted(self, rows: int) -> Iterator[None]:
        """Hold `rows` in the queue for the block; Unavailable at once when they would wait too long."""
        wait = self.expected_wait()
        if self.deadline_seconds is not None and wait > self.deadline_seconds:
            raise Overloaded(
                f"overloaded: about {wait:.2f} s of rows queued ahead, past the deadline of "
                f"{self.deadline_seconds:.2f} s",
                retry_after=max(1, math.ceil(wait)),
            )
        self.queued_rows += rows
        try:
            yield
        finally:
            self.queued_rows -= rows

    def measured(self, rows: int, seconds: float) -> None:
        """One model call of `rows` rows took `seconds` (called in the model thread)."""
        per_row = seconds / max(rows, 1)
        if self.seconds_per_row == 0.0:
            self.seconds_per_row = per_row
        else:
            self.seconds_per_row += SMOOTHING * (per_row - self.seconds_per_row)


def unavailable_answer(problem: Unavailable) -> JSONResponse:
    """The 503 of a model that did not answer or of a shed request, Retry-After when waiting helps."""
    headers = {} if problem.retry_after is None else {"Retry-After": str(problem.retry_after)}
    return JSONResponse(error_body(503, str(problem)), status_code=503, headers=headers)
