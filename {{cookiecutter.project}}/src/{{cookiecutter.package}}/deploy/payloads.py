"""Request bodies for the service's endpoints, from a fixed sample of the project's rows.

The smoke test, the load test, rollout traffic, the tests and the benchmarks all send these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import data
from ..settings import Settings

SAMPLE_ROWS = 20  # the smoke test's rows


def sample_rows(settings: Settings, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """A fixed sample of the project's feature rows (the model's columns), the same on every run.

    Rows with a missing value are left out: the model imputes them, but the service does not take
    `null` in a request yet (issue 17).
    """
    frame = data.read_table(settings.resolve(settings.params.data.source))
    features, _ = data.split_features_target(frame, settings.params.data)
    complete = features.dropna()
    return complete.sample(n=min(rows, len(complete)), random_state=0)


def as_records(rows: pd.DataFrame) -> list[dict[str, float]]:
    """Rows as JSON-ready dicts of plain floats (full precision, unlike DataFrame.to_json)."""
    return [
        {str(column): float(value) for column, value in zip(rows.columns, values, strict=True)}
        for values in rows.itertuples(index=False)
    ]


def as_table(rows: pd.DataFrame) -> dict[str, list]:
    """Rows as the body of /predict_columns: column names once, then rows of plain floats.

    What `rows.to_json(orient="split", index=False)` writes, at full precision (to_json rounds to
    10 significant digits unless given double_precision=15).
    """
    return {
        "columns": [str(column) for column in rows.columns],
        "data": rows.to_numpy(dtype=np.float64).tolist(),
    }


def as_arrow(rows: pd.DataFrame) -> bytes:
    """Rows as the body of /predict_arrow (media type serving.arrow.ARROW_STREAM): an Arrow IPC stream of
    their columns, with the types they have."""
    import pyarrow as pa

    table = pa.Table.from_pandas(rows, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()
