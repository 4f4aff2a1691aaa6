"""Single rows scored together: the micro-batcher of /predict, and the model's warning filter.

While the model works on one call (in a thread of its own, so the server keeps reading requests),
the rows that arrive wait and go to the next call as one array. A forest scores 64 rows in about the
time it takes for one, so under load this multiplies requests/s; alone, a request waits for nothing
(benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import numpy as np


class Scores(NamedTuple):
    """Predictions, every class's probabilities (rows x classes) of a classifier or None, and the
    version of the model that made them (the fallback's when the served model raised)."""

    predictions: list
    probabilities: np.ndarray | None
    model_version: int


@contextlib.contextmanager
def warnings_ignored() -> Iterator[None]:
    """Run the block under one warning filter, "ignore", instead of the process's list.

    scikit-learn re-applies every warning filter of the process around each tree of a forest's
    predict (`sklearn.utils.parallel`): about 0.2 ms per filter per call for 100 trees, and a
    worker holds 17 filters once BentoML, MLflow, numpy and scipy are imported, over a third of a
    RandomForest's single-row time (benchmarks/README.md). What the model would warn about here,
    on every request, is noise (rows reach it as arrays, so scikit-learn's "X does not have valid
    feature names"); training and evaluation run the same model with every filter in place. For
    that time the whole process ignores warnings, and `warnings.catch_warnings` is not thread-safe
    before Python 3.14: only the model thread uses this.
    """
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("ignore")
        yield


def trust_checked_rows() -> None:
    """The model thread's initializer: scikit-learn skips its scan of every input for NaN and
    infinity, about a third of a one-row LogisticRegression call (benchmarks/README.md). The rows are
    checked before they get here: numbers finite (the request models, Arrow and the online store's
    rows refuse infinity) and NaN only in features the model was trained with gaps in, which its
    pipeline imputes. scikit-learn's configuration is per thread: nothing else is affected."""
    import sklearn

    sklearn.set_config(assume_finite=True)


class MicroBatcher:
    """Scores single rows in as few model calls as the load allows, with no batching window.

    The first row runs at once; rows that arrive while a call is running wait for it to end and then
    go to the model together (up to `max_rows` a call). So a lone request never waits, and under load
    the batch grows with the queue. BentoML's own adaptive batching (`batchable=True`) needs the
    public API to take a list, and answers 503 when its latency budget runs out; this keeps /predict
    a one-row API, and the service sheds before a row gets here (`shedding`).
    """

    def __init__(self, score: Callable[[np.ndarray], Awaitable[Scores]], max_rows: int) -> None:
        self._score, self._max_rows = score, max_rows
        self._waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def score(self, values: np.ndarray) -> tuple[Any, np.ndarray | None, int]:
        """The prediction (every class's probability, or None) and model version for one row."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((values, answer))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_rows]
                del self._waiting[: self._max_rows]
                features = np.stack([values for values, _ in batch])  # float64, or object
                try:
                    scored = await self._score(features)
                except Exception as error:  # every waiting request fails as the call did
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for index, (_, answer) in enumerate(batch):
                    if not answer.done():  # a client that went away cancelled its future
                        probabilities = scored.probabilities
                        probability = None if probabilities is None else probabilities[index]
                        answer.set_result(
                            (scored.predictions[index], probability, scored.model_version)
                        )
        finally:
            self._draining = None
