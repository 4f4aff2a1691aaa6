"""The prediction log: a sample of what the service answered, kept as Parquet files, one folder a day.

The service hands every answered request to `PredictionLog.record`, which only decides from the
request id whether the request is in the sample and appends it to a list: no conversion and no I/O
on the request path. A writer thread turns what piled up into Parquet every `flush_seconds` (and at
shutdown), one file per day under `<location>/date=YYYY-MM-DD/`, on local disk or in S3 (boto3, so
the AWS_* settings apply). `monitoring` reads the files back to judge drift and decay.

Columns: request_id, row (position in the request), logged_at (UTC, ms), model_version, endpoint,
one float column per feature (the training column names), prediction, probability (classification).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# Overrides the location packed in the bento: `deployment.serve` points local servers at the
# project's folder; "off" turns the log off (pods with nowhere durable to write).
LOCATION_VARIABLE = "PREDICTION_LOG"
OFF = "off"
# Rows kept waiting while the destination refuses writes; past this the oldest are dropped (and
# counted in the server log) rather than letting a broken bucket exhaust the server's memory.
MAX_PENDING_ROWS = 100_000
MS_PER_DAY = 86_400_000
logger = logging.getLogger("bentoml.service.prediction_log")


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the sample. Decided by a hash of its id, not by chance, so replicas,
    retries and tests agree on which requests are logged."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


class Entry(NamedTuple):
    """One answered request, as the service had it. A named tuple: made on the request path, where it
    costs half of what a frozen dataclass does."""

    request_id: str
    endpoint: str
    logged_at_ms: int
    features: np.ndarray  # rows x features, float64
    predictions: list[Any]
    probabilities: list[float] | None


def partition_key(location: str, day: str) -> str:
    """Where the files of one UTC day go: `<location>/date=<day>` (Hive style, which readers know)."""
    return f"{location.rstrip('/')}/date={day}"


def to_table(entries: list[Entry], features: list[str], model_version: int):
    """The entries of one day as a pyarrow Table in the log's column order.

    Built column by column in numpy and Arrow, not row by row in Python: a batch request brings a
    thousand rows, and this runs beside the server's own work.
    """
    import pyarrow as pa

    rows = [len(entry.predictions) for entry in entries]
    owner = np.repeat(np.arange(len(entries)), rows)  # the entry each row comes from
    columns: dict[str, Any] = {
        "request_id": pa.array([entry.request_id for entry in entries], pa.string()).take(owner),
        "row": pa.array(np.concatenate([np.arange(count) for count in rows]), pa.int32()),
        "logged_at": pa.array(
            np.array([entry.logged_at_ms for entry in entries])[owner],
            pa.timestamp("ms", tz="UTC"),
        ),
        "model_version": pa.array(np.full(len(owner), model_version), pa.int64()),
        "endpoint": pa.array([entry.endpoint for entry in entries], pa.string()).take(owner),
    }
    by_feature = np.vstack([entry.features for entry in entries]).T.copy()  # a row per feature
    for name, values in zip(features, by_feature, strict=True):
        columns[name] = pa.array(values, pa.float64())
    columns["prediction"] = pa.array(list(chain.from_iterable(e.predictions for e in entries)))
    columns["probability"] = pa.array(
        list(
            chain.from_iterable(
                entry.probabilities or [None] * len(entry.predictions) for entry in entries
            )
        ),
        pa.float64(),
    )
    return pa.table(columns)


def write_partition(location: str, day: str, table, s3: Any = None) -> str:
    """Write `table` as a new file in the day's folder of the log; returns where it went.

    Locally the file appears whole or not at all (written aside, then renamed), so a reader listing
    `*.parquet` never meets half a file; in S3 a put is atomic anyway. `s3`: a boto3 S3 client.
    """
    import pyarrow.parquet as pq

    name = f"{uuid.uuid4().hex}.parquet"
    # Dictionary encoding only where values repeat: tried on every float column it made writing
    # about 8 times slower, for files no smaller.
    options = {"use_dictionary": ["request_id", "endpoint"]}
    folder = partition_key(location, day)
    if folder.startswith("s3://"):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **options)
        bucket, _, prefix = folder.removeprefix("s3://").partition("/")
        key = f"{prefix}/{name}".lstrip("/")
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        return f"s3://{bucket}/{key}"
    Path(folder).mkdir(parents=True, exist_ok=True)
    partial = Path(folder) / f".{name}.partial"
    pq.write_table(table, partial, **options)
    os.replace(partial, Path(folder) / name)
    return str(Path(folder) / name)


class PredictionLog:
    """Samples answered requests and writes them, in batches, from a thread of its own."""

    def __init__(
        self,
        location: str,
        features: list[str],
        model_version: int,
        sample_rate: float,
        flush_seconds: float,
    ) -> None:
        self.location = location if "://" in location else str(Path(location).resolve())
        self.features, self.model_version = features, model_version
        self.sample_rate, self.flush_seconds = sample_rate, flush_seconds
        self._pending: list[Entry] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._s3: Any = None
        self._writer = threading.Thread(target=self._write_until_closed, name="prediction-log")
        self._writer.daemon = True  # close() flushes; a killed worker must not hang on it
        self._writer.start()

    def record(
        self,
        request_id: str,
        endpoint: str,
        features: np.ndarray,
        predictions: list[Any],
        probabilities: list[float] | None,
    ) -> None:
        """Queue one answered request if it is in the sample. Called on the request path: cheap."""
        if not sampled(request_id, self.sample_rate):
            return
        entry = Entry(
            request_id, endpoint, time.time_ns() // 1_000_000, features, predictions, probabilities
        )
        with self._lock:
            self._pending.append(entry)

    def flush(self) -> int:
        """Write what is queued now; returns the rows written. A failed write keeps them queued."""
        with self._lock:
            entries, self._pending = self._pending, []
        if not entries:
            return 0
        by_day: dict[int, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_day[entry.logged_at_ms // MS_PER_DAY].append(entry)
        written = 0
        for day_number, day_entries in sorted(by_day.items()):
            day = datetime.fromtimestamp(day_number * 86_400, UTC).date().isoformat()
            try:
                self._write(day, to_table(day_entries, self.features, self.model_version))
            except Exception:  # a full disk or an unreachable bucket must not end the server
                logger.exception("prediction log: cannot write to %s; will retry", self.location)
                self._requeue(day_entries)
                continue
            written += sum(len(entry.predictions) for entry in day_entries)
        return written

    def close(self) -> None:
        """Stop the writer after a last flush (the server is shutting down)."""
        self._closing.set()
        self._writer.join(timeout=max(30.0, self.flush_seconds))

    def _write_until_closed(self) -> None:
        while not self._closing.wait(self.flush_seconds):
            self.flush()
        self.flush()

    def _requeue(self, entries: list[Entry]) -> None:
        with self._lock:
            self._pending[:0] = entries
            rows = sum(len(entry.predictions) for entry in self._pending)
            dropped = 0
            while rows > MAX_PENDING_ROWS and self._pending:
                oldest = self._pending.pop(0)
                rows -= len(oldest.predictions)
                dropped += len(oldest.predictions)
        if dropped:
            logger.error("prediction log: dropped the %d oldest unwritten rows", dropped)

    def _write(self, day: str, table) -> None:
        if self.location.startswith("s3://") and self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        write_partition(self.location, day, table, self._s3)
