"""Score a whole file with the champion, chunk by chunk, so memory stays flat however large it is.

Three threads pass chunks along: one reads, this one scores, one converts and writes the staged
output. pandas' CSV parser, the model's numpy code and the Parquet writer release the GIL, so on two
cores the output costs little more time than a plain read-and-predict loop. At most one chunk waits
between two threads, so memory stays a few chunks above the imports whatever the file size. An S3
input is downloaded to a temporary file first, then streamed like a local file.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import data

PREDICTION, MODEL_VERSION, SCORED_AT = "prediction", "model_version", "scored_at"


def read_chunks(location: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Local files and S3 objects alike are streamed; an S3 object is downloaded to a temporary file."""
    if location.startswith("s3://"):
        bucket, key = data._split_s3(location)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / Path(key).name
            try:
                data.s3_client().download_file(bucket, key, str(local))
            except Exception as error:
                raise data.DataError(f"{location}: cannot read from S3: {error}") from error
            yield from read_chunks(str(local), chunk_rows)
    elif location.lower().endswith(".parquet"):
        for batch in pq.ParquetFile(location).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    else:
        try:
            yield from pd.read_csv(location, chunksize=chunk_rows)
        except FileNotFoundError:
            raise data.DataError(f"{location}: file not found") from None


_DONE = object()


def prefetched(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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


def score_chunk(model, chunk: pd.DataFrame, features: list[str], version: int) -> pd.DataFrame:
    """The chunk's rows with prediction, model version and timestamp columns added."""
    missing = [name for name in features if name not in chunk.columns]
    if missing:
        raise data.DataError(f"batch input lacks the model's feature columns {missing}")
    scored = chunk.copy(deep=False)  # new columns go to the copy; the input's data is shared
    scored[PREDICTION] = model.predict(chunk[features])
    scored[MODEL_VERSION] = version
    scored[SCORED_AT] = datetime.now(UTC).isoformat(timespec="seconds")
    return scored


class StagedWriter:
    """Appends scored chunks to the staged file from a thread of its own, one chunk behind.

    A context manager: leaving the block writes what is queued and closes the file, and raises the
    writer's error if it had one. `write` raises it too, as soon as it is known.
    """

    def __init__(self, path: Path, is_parquet: bool) -> None:
        self.path, self.is_parquet = path, is_parquet
        self._chunks: queue.Queue[pd.DataFrame | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)

    def __enter__(self) -> StagedWriter:
        self._thread.start()
        return self

    def write(self, chunk: pd.DataFrame) -> None:
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
        writer: pq.ParquetWriter | None = None
        first = True
        try:
            while (chunk := self._chunks.get()) is not None:
                if self._error is not None:
                    continue  # keep taking chunks so the reader never blocks on a dead writer
                try:
                    if self.is_parquet:
                        table = pa.Table.from_pandas(chunk, preserve_index=False)
                        writer = writer or pq.ParquetWriter(self.path, table.schema)
                        writer.write_table(table.cast(writer.schema))
                    else:
                        chunk.to_csv(self.path, mode="a", header=first, index=False)
                    first = False
                except BaseException as error:
                    self._error = error
        finally:
            if writer is not None:
                writer.close()


def score_file(
    model, features: list[str], version: int, source: str, destination: str, chunk_rows: int
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
            for chunk in prefetched(read_chunks(source, chunk_rows)):
                scored = score_chunk(model, chunk, features, version)
                writer.write(scored)
                rows, chunks = rows + len(scored), chunks + 1
        if chunks == 0:
            raise data.DataError(f"{source}: no rows to score")
        data.publish_file(staged, destination)
    return {
        "input": source,
        "output": destination,
        "rows": rows,
        "chunks": chunks,
        "model_version": version,
    }
