"""Score a whole file with the champion, chunk by chunk, so memory stays flat however large it is."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import data

PREDICTION, MODEL_VERSION, SCORED_AT = "prediction", "model_version", "scored_at"


def read_chunks(location: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Local files are streamed; S3 objects are read once, then sliced."""
    if location.startswith("s3://"):
        frame = data.read_table(location)
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows]
    elif location.lower().endswith(".parquet"):
        for batch in pq.ParquetFile(location).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    else:
        try:
            yield from pd.read_csv(location, chunksize=chunk_rows)
        except FileNotFoundError:
            raise data.DataError(f"{location}: file not found") from None


def score_chunk(model, chunk: pd.DataFrame, features: list[str], version: int) -> pd.DataFrame:
    """The chunk's rows with prediction, model version and timestamp columns added."""
    missing = [name for name in features if name not in chunk.columns]
    if missing:
        raise data.DataError(f"batch input lacks the model's feature columns {missing}")
    scored = chunk.copy()
    scored[PREDICTION] = model.predict(chunk[features])
    scored[MODEL_VERSION] = version
    scored[SCORED_AT] = datetime.now(UTC).isoformat(timespec="seconds")
    return scored


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
        writer = None
        for chunk in read_chunks(source, chunk_rows):
            scored = score_chunk(model, chunk, features, version)
            if is_parquet:
                table = pa.Table.from_pandas(scored, preserve_index=False)
                writer = writer or pq.ParquetWriter(staged, table.schema)
                writer.write_table(table.cast(writer.schema))
            else:
                scored.to_csv(staged, mode="a", header=chunks == 0, index=False)
            rows, chunks = rows + len(scored), chunks + 1
        if writer is not None:
            writer.close()
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
