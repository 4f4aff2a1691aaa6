"""The prediction log: a sample of what the service answered, kept as Parquet files, one folder a day.

The one contract for the log's files: this module writes them (for the service) and reads them back
(for `monitoring`). The service hands every answered request to `PredictionLog.record`, which only
decides from the request id whether the request is in the sample and appends it to a list: no
conversion and no I/O on the request path. A writer thread turns what piled up into Parquet every
`flush_seconds` (and at shutdown), one file per flush and day under `<location>/date=YYYY-MM-DD/`,
on local disk or in S3 (`storage`). `read_log` reads the day folders of a time range back.

Columns: request_id, row (position in the request), logged_at (UTC, ms), model_version, endpoint,
one column per feature (the training column names: float for a numeric feature, string for a
categorical one, null where the request had none), prediction (the label in its training type, or
the value), probability (of the predicted class) and, for a classifier, class_probabilities (every
class's probability, a map keyed by the label as text; a dict per row once read back).
pandas and pyarrow are imported where they are used: the serving process imports this module.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import storage
from .errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# Overrides the location packed in the bento: `deploy.server.serve` points local servers at the
# project's folder; "off" turns the log off (pods with nowhere durable to write).
LOCATION_VARIABLE = "PREDICTION_LOG"
OFF = "off"
# Rows kept waiting while the destination refuses writes; past this the oldest are dropped (and
# counted in the server log) rather than letting a broken bucket exhaust the server's memory.
MAX_PENDING_ROWS = 100_000
MS_PER_DAY = 86_400_000
REQUEST_ID, ROW, LOGGED_AT, MODEL_VERSION = "request_id", "row", "logged_at", "model_version"
ENDPOINT, PREDICTION, PROBABILITY = "endpoint", "prediction", "probability"
CLASS_PROBABILITIES = "class_probabilities"
# Every file's columns: these, with the model's features between ENDPOINT and PREDICTION.
LOG_COLUMNS = (REQUEST_ID, ROW, LOGGED_AT, MODEL_VERSION, ENDPOINT, PREDICTION, PROBABILITY)
# Written by classifiers only (and not before issue 17): a reader cannot require it.
OPTIONAL_COLUMNS = (CLASS_PROBABILITIES,)
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
    model_version: int  # the version that answered: the served one's, or its fallback's
    features: np.ndarray  # rows x features: float64, or object with categorical features
    predictions: list[Any]
    probabilities: list[float] | None  # of each row's predicted class, of a classifier
    class_probabilities: np.ndarray | None = None  # rows x classes, in the log's `classes` order


def partition_key(location: str, day: str) -> str:
    """Where the files of one UTC day go: `<location>/date=<day>` (Hive style, which readers know)."""
    return storage.join(location, f"date={day}")


def to_table(
    entries: list[Entry],
    features: list[str],
    categorical: Collection[str] = (),
    classes: Sequence[str] = (),
):
    """The entries of one day as a pyarrow Table in the log's column order: `categorical` features
    as strings, and with a classifier's `classes` (labels as text) every class's probability.

    Built column by column in numpy and Arrow, not row by row in Python: a batch request brings a
    thousand rows, and this runs beside the server's own work.
    """
    import pyarrow as pa

    rows = [len(entry.predictions) for entry in entries]
    owner = np.repeat(np.arange(len(entries)), rows)  # the entry each row comes from
    columns: dict[str, Any] = {
        REQUEST_ID: pa.array([entry.request_id for entry in entries], pa.string()).take(owner),
        ROW: pa.array(np.concatenate([np.arange(count) for count in rows]), pa.int32()),
        LOGGED_AT: pa.array(
            np.array([entry.logged_at_ms for entry in entries])[owner],
            pa.timestamp("ms", tz="UTC"),
        ),
        MODEL_VERSION: pa.array(
            np.array([entry.model_version for entry in entries], np.int64)[owner], pa.int64()
        ),
        ENDPOINT: pa.array([entry.endpoint for entry in entries], pa.string()).take(owner),
    }
    by_feature = np.vstack([entry.features for entry in entries]).T.copy()  # a row per feature
    for name, values in zip(features, by_feature, strict=True):
        if name in categorical:  # None and NaN both null
            columns[name] = pa.array(values.tolist(), pa.string(), from_pandas=True)
        else:
            columns[name] = pa.array(values.astype(np.float64, copy=False), pa.float64())
    columns[PREDICTION] = pa.array(list(chain.from_iterable(e.predictions for e in entries)))
    columns[PROBABILITY] = pa.array(
        list(
            chain.from_iterable(
                entry.probabilities or [None] * len(entry.predictions) for entry in entries
            )
        ),
        pa.float64(),
    )
    if classes:  # a classifier's every entry has them (ModelService logs `classes` only then)
        by_class = np.vstack([entry.class_probabilities for entry in entries]).tolist()
        columns[CLASS_PROBABILITIES] = pa.array(
            [list(zip(classes, row, strict=True)) for row in by_class],
            pa.map_(pa.string(), pa.float64()),
        )
    return pa.table(columns)


def write_partition(location: str, day: str, table) -> str:
    """Write `table` as a new file in the day's folder of the log; returns where it went.

    The file appears whole or not at all (`storage.write_bytes`), so a reader listing the folder
    never meets half a file.
    """
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    # Dictionary encoding only where values repeat: tried on every float column it made writing
    # about 8 times slower, for files no smaller.
    pq.write_table(table, buffer, use_dictionary=[REQUEST_ID, ENDPOINT])
    destination = storage.join(partition_key(location, day), f"{uuid.uuid4().hex}.parquet")
    storage.write_bytes(destination, buffer.getvalue())
    return destination


def prepare_writing(location: str) -> None:
    """Pay the writer's first-use costs now: importing pyarrow's Parquet writer and, for S3, making
    boto3's client hold the interpreter for about a second. A server calls this at start; on its
    first flush that second would stall the answers in flight (and the shedder, taking the stall
    for the model's pace, would refuse the requests behind them)."""
    import pyarrow.parquet  # noqa: F401

    if storage.in_s3(location):
        storage.s3_client()


class PredictionLog:
    """Samples answered requests and writes them, in batches, from a thread of its own."""

    def __init__(
        self,
        location: str,
        features: list[str],
        model_version: int,
        sample_rate: float,
        flush_seconds: float,
        categorical: Collection[str] = (),
        classes: Sequence[str] = (),
    ) -> None:
        """`categorical`: the features logged as strings; `classes`: a classifier's labels as text,
        in the order of the probabilities `record` gets (none for a regression)."""
        self.location = location if "://" in location else str(Path(location).resolve())
        self.features, self.model_version = features, model_version
        self.categorical, self.classes = frozenset(categorical), tuple(classes)
        self.sample_rate, self.flush_seconds = sample_rate, flush_seconds
        self._pending: list[Entry] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        prepare_writing(self.location)
        self._writer = threading.Thread(target=self._write_until_closed, name="prediction-log")
        self._writer.daemon = True  # close() flushes; a killed worker must not hang on it
        self._writer.start()

    def record(
        self,
        request_id: str,
        endpoint: str,
        features: np.ndarray,
        predictions: list[Any],
        class_probabilities: np.ndarray | None,
        answered_by: int | None = None,
    ) -> None:
        """Queue one answered request if it is in the sample. Called on the request path: cheap.

        `class_probabilities`: a classifier's, rows x classes in the order of the log's `classes`;
        the predicted class's is the most probable (as the model predicts). `answered_by`: the
        version that answered when it is not the served one (a fallback)."""
        if not sampled(request_id, self.sample_rate):
            return
        predicted = None if class_probabilities is None else class_probabilities.max(axis=1)
        entry = Entry(
            request_id,
            endpoint,
            time.time_ns() // 1_000_000,
            answered_by or self.model_version,
            features,
            predictions,
            None if predicted is None else predicted.tolist(),
            class_probabilities,
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
                table = to_table(day_entries, self.features, self.categorical, self.classes)
                write_partition(self.location, day, table)
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


# Reading the log back (monitoring)


def _days(start: datetime, end: datetime) -> list[str]:
    """The UTC days that overlap [start, end), and the day after: a writer that flushes just after
    midnight files the last seconds of a day under the next one."""
    last = (end - timedelta(microseconds=1)).date()  # `end` is exclusive
    count = (last - start.date()).days + 2
    return [(start.date() + timedelta(days=n)).isoformat() for n in range(count)]


def partition_files(location: str, start: datetime, end: datetime) -> list[str]:
    """The Parquet files of the day partitions that may hold rows logged in [start, end)."""
    storage.require_folder(location, "prediction log")
    return [
        path
        for day in _days(start, end)
        for path in storage.files(partition_key(location, day))
        if path.endswith(".parquet")
    ]


def check_columns(columns: list[str], features: list[str], where: str) -> None:
    """The log must carry the contract's columns and exactly the model's features."""
    missing = [name for name in (*LOG_COLUMNS, *features) if name not in columns]
    known = (*LOG_COLUMNS, *OPTIONAL_COLUMNS, *features)
    unknown = [name for name in columns if name not in known]
    if missing or unknown:
        problems = [f"missing columns {missing}"] if missing else []
        problems += [f"unknown columns {unknown} (not training features)"] if unknown else []
        raise DataError(f"{where}: prediction log does not fit the model: {'; '.join(problems)}")


def _rows_logged(path: str, content: bytes, since: datetime, until: datetime, features):
    """One file's rows with since <= logged_at < until, as a pyarrow Table; checked against the
    contract (and the model's `features`, when given), a DataError naming the file otherwise."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(content))
    except Exception as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error
    if features is not None:
        check_columns(table.column_names, features, path)
    elif LOGGED_AT not in table.column_names:
        raise DataError(f"{path}: prediction log file without a {LOGGED_AT} column")
    logged_at = table[LOGGED_AT]
    if not pa.types.is_timestamp(logged_at.type):
        raise DataError(f"{path}: {LOGGED_AT} holds {logged_at.type}, not times")
    if logged_at.type.tz is None:  # naive times are UTC
        logged_at = logged_at.cast(pa.timestamp(logged_at.type.unit, "UTC"))
        table = table.set_column(table.schema.get_field_index(LOGGED_AT), LOGGED_AT, logged_at)
    in_range = pc.and_(pc.greater_equal(logged_at, since), pc.less(logged_at, until))
    return table.filter(in_range)


def read_log(
    location: str, since: datetime, until: datetime, features: list[str] | None = None
) -> pd.DataFrame:
    """Logged rows with since <= logged_at < until, read from the day partitions in range only,
    oldest first.

    With `features`, every file's columns are checked against the contract and the model's features
    (a DataError names the file). An empty frame with the contract's columns when nothing was logged.
    """
    import pandas as pd
    import pyarrow as pa

    tables = [
        _rows_logged(path, content, since, until, features)
        for path, content in storage.read_many(partition_files(location, since, until))
    ]
    if not tables:
        return pd.DataFrame(columns=[*LOG_COLUMNS, *(features or [])]).astype(
            {LOGGED_AT: "datetime64[ms, UTC]"}
        )
    # permissive: files of different model versions may differ in a column's type (int, float)
    log = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if CLASS_PROBABILITIES in log:  # pyarrow gives a map as (key, value) pairs
        log[CLASS_PROBABILITIES] = [
            None if pairs is None else dict(pairs) for pairs in log[CLASS_PROBABILITIES]
        ]
    return log.sort_values(LOGGED_AT, kind="stable")
