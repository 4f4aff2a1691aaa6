"""The one-machine engine: score a whole file with the champion, chunk by chunk, so memory stays flat however large it is.

Chunks are Arrow tables from end to end: pyarrow parses the CSV (on every core, numeric feature
columns straight to float64, categorical ones as text) or reads the Parquet row groups, the model
scores the feature columns, and the prediction columns (a classifier's: the label and every class's
probability) are appended to the same table for the Parquet or CSV writer, so no chunk goes
through pandas' slower parser and writer. Three threads pass chunks along: one reads, this one
scores, one writes the staged output; the parsers, the model's numpy code and the writers release
the GIL. At most one chunk waits between two threads, so memory stays a few chunks above the
imports whatever the file size (a Parquet output adds its row groups' metadata, one row group per
chunk, kept until the file closes: about 1.5 MB per million rows). An S3 input is downloaded to a
temporary file first, then streamed like a local file.
"""

from __future__ import annotations

import contextlib
import csv
import queue
import re
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .. import data, storage
from ..errors import DataError
from ..profile import as_model_input
from . import MODEL_VERSION, PREDICTION, PROBABILITY_PREFIX, SCORED_AT

# Bytes of CSV parsed per step (pyarrow splits them across the cores); chunks are then cut to
# chunk_rows. With 256 KB the batch command peaked 40 MB lower than with pyarrow's default 1 MB and
# still outran a plain pandas loop (benchmarks/README.md).
CSV_BLOCK_BYTES = 256 << 10


def use_compact_memory_pool() -> None:
    """Make Arrow allocate from jemalloc in this process, where the pyarrow build has it (not on Windows).

    For a one-shot command such as `batch`: jemalloc hands the memory of chunks already written back
    sooner than Arrow's default pool (mimalloc), which held the command's peak 20 to 40 MB higher.
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def csv_types(features: list[str], categorical: Collection[str]) -> pa_csv.ConvertOptions:
    """How a CSV's columns are typed, by either engine: features as float64, categorical ones as
    text, and an empty cell (or NA, null...) of a text column a gap, as training read it."""
    return pa_csv.ConvertOptions(
        strings_can_be_null=True,
        column_types={
            name: pa.string() if name in categorical else pa.float64() for name in features
        },
    )


def read_chunks(
    location: str, features: list[str], chunk_rows: int, categorical: Collection[str] = ()
) -> Iterator[pa.Table]:
    """The file's rows, `chunk_rows` at a time (the last chunk holds the rest).

    Local files and S3 objects alike are streamed; an S3 object is downloaded to a temporary file.
    A CSV's feature columns are read as float64 (what the model takes), its `categorical` ones as
    text (a category "01" stays "01"); other columns keep the types pyarrow infers from the start of
    the file and pass through to the output.
    """
    if storage.in_s3(location):
        _, key = storage.split_s3(location)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / Path(key).name
            storage.download(location, local)
            yield from read_chunks(str(local), features, chunk_rows, categorical)
        return
    if not Path(location).exists():
        raise DataError(f"{location}: file not found")
    try:
        if location.lower().endswith(".parquet"):
            batches: Iterable[pa.RecordBatch] = pq.ParquetFile(location).iter_batches(chunk_rows)
        else:
            batches = pa_csv.open_csv(
                location,
                read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                convert_options=csv_types(features, categorical),
            )
        yield from rechunked(batches, chunk_rows)
    except pa.ArrowInvalid as error:  # a value that is not a number in a feature column, say
        raise DataError(f"{location}: {_with_column_name(location, str(error))}") from None


def _with_column_name(location: str, message: str) -> str:
    """pyarrow names a CSV column by position ("In CSV column #3: ..."): add its header."""
    found = re.match(r"In CSV column #(\d+)", message)
    if not found:
        return message
    with open(location, newline="") as file:
        header = next(csv.reader(file), [])
    position = int(found.group(1))
    return f"column {header[position]!r}: {message}" if position < len(header) else message


def rechunked(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The same rows as tables of exactly `rows` rows but the last (slices: the data is not copied)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


_DONE = object()


def prefetched(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The same chunks, read one ahead in a thread of its own; its errors are raised here, in order."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        source = iter(chunks)
        try:
            for chunk in source:
                if not offer(chunk):
                    return
        except BaseException as error:
            offer(error)
            return
        finally:
            if hasattr(source, "close"):
                source.close()  # a generator's cleanup (an S3 download's folder) runs now, here
        offer(_DONE)

    reader = threading.Thread(target=read, name="batch-reader", daemon=True)
    reader.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early or failed: let the reader go
        reader.join()


def score_chunk(
    model, chunk: pa.Table, features: list[str], version: int, categorical: Collection[str] = ()
) -> pa.Table:
    """The chunk's rows with prediction (a classifier's: and every class's probability), model
    version and timestamp columns added."""
    from sklearn.base import is_classifier

    missing = [name for name in features if name not in chunk.column_names]
    if missing:
        raise DataError(f"batch input lacks the model's feature columns {missing}")
    rows = as_model_input(chunk.select(features).to_pandas(), categorical)
    if not is_classifier(model):
        scored = chunk.append_column(PREDICTION, pa.array(model.predict(rows)))
    else:
        # One model call: the prediction is the class of highest probability, as scikit-learn's
        # classifiers predict (a forest would otherwise walk every tree twice).
        probabilities = model.predict_proba(rows)
        predictions = model.classes_.take(probabilities.argmax(axis=1))
        scored = chunk.append_column(PREDICTION, pa.array(predictions))
        for label, column in zip(model.classes_, probabilities.T, strict=True):
            scored = scored.append_column(f"{PROBABILITY_PREFIX}{label}", pa.array(column))
    scored_at = datetime.now(UTC).isoformat(timespec="seconds")
    return scored.append_column(
        MODEL_VERSION, pa.array(np.full(chunk.num_rows, version))
    ).append_column(SCORED_AT, pa.array([scored_at] * chunk.num_rows, pa.string()))


class StagedWriter:
    """Appends scored chunks to the staged file from a thread of its own, one chunk behind.

    A context manager: leaving the block writes what is queued and closes the file, and raises the
    writer's error if it had one. `write` raises it too, as soon as it is known.
    """

    def __init__(self, path: Path, is_parquet: bool) -> None:
        self.path, self.is_parquet = path, is_parquet
        self._chunks: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)

    def __enter__(self) -> StagedWriter:
        self._thread.start()
        return self

    def write(self, chunk: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._chunks.put(None)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def _run(self) -> None:
        writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        schema: pa.Schema | None = None  # the first chunk's: later chunks are cast to it
        try:
            while (chunk := self._chunks.get()) is not None:
                if self._error is not None:
                    continue  # keep taking chunks so the reader never blocks on a dead writer
                try:
                    if writer is None:
                        kind = pq.ParquetWriter if self.is_parquet else pa_csv.CSVWriter
                        writer, schema = kind(self.path, chunk.schema), chunk.schema
                    writer.write_table(chunk.cast(schema))
                except BaseException as error:
                    self._error = error
        finally:
            if writer is not None:
                writer.close()


def score_file(
    model,
    features: list[str],
    version: int,
    source: str,
    destination: str,
    chunk_rows: int,
    categorical: Collection[str] = (),
) -> dict:
    """Score `source` into `destination` one chunk at a time and return a summary for the report.

    Output is staged in a local file, appended chunk by chunk, then moved or uploaded in one step, so
    a failure halfway never leaves a partial file at the destination.
    """
    is_parquet = data.suffix(destination) == ".parquet"
    rows = chunks = 0
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / f"predictions{data.suffix(destination)}"
        with StagedWriter(staged, is_parquet) as writer:
            for chunk in prefetched(read_chunks(source, features, chunk_rows, categorical)):
                scored = score_chunk(model, chunk, features, version, categorical)
                writer.write(scored)
                rows, chunks = rows + len(scored), chunks + 1
        if chunks == 0:
            raise DataError(f"{source}: no rows to score")
        storage.publish(staged, destination)
    return {
        "input": source,
        "output": destination,
        "rows": rows,
        "chunks": chunks,
        "model_version": version,
    }
