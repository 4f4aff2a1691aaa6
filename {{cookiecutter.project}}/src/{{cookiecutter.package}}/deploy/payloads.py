"""Request bodies for the service's endpoints, from a fixed sample of the project's rows.

The smoke test, the load test, rollout traffic, the tests and the benchmarks all send these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .. import data
from ..profile import takes_null
from ..settings import Settings

Profile = Mapping[str, Mapping[str, Any]]  # a model's feature_profile

SAMPLE_ROWS = 20  # the smoke test's rows


def sample_rows(
    settings: Settings, rows: int = SAMPLE_ROWS, profile: Profile | None = None
) -> pd.DataFrame:
    """A fixed sample of the project's feature rows (the model's columns), the same on every run.

    Rows with a gap in a feature the model takes no null for are left out: every row with a gap
    without the model's `profile` (its feature_profile, whose `nullable` says which it takes).
    """
    frame = data.training_table(settings)
    features, _ = data.split_features_target(frame, settings.params.data)
    required = [
        name
        for name in features.columns
        if profile is None or not takes_null(profile.get(str(name), {}))
    ]
    complete = features.dropna(subset=required)
    return complete.sample(n=min(rows, len(complete)), random_state=0)


def plain(value: Any) -> float | str | None:
    """One value as JSON carries it: text stays text, a gap is null, any other value a float
    (booleans as 0/1)."""
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else float(value)


def as_records(rows: pd.DataFrame) -> list[dict[str, float | str | None]]:
    """Rows as JSON-ready dicts of plain values (floats at full precision, unlike
    DataFrame.to_json; categories as text; gaps as None)."""
    columns = [str(column) for column in rows.columns]
    return [
        {column: plain(value) for column, value in zip(columns, values, strict=True)}
        for values in rows.itertuples(index=False)
    ]


def as_table(rows: pd.DataFrame) -> dict[str, list]:
    """Rows as the body of /predict_columns: column names once, then rows of plain values.

    What `rows.to_json(orient="split", index=False)` writes, at full precision (to_json rounds to
    10 significant digits unless given double_precision=15).
    """
    return {
        "columns": [str(column) for column in rows.columns],
        "data": [[plain(value) for value in values] for values in rows.itertuples(index=False)],
    }


def as_arrow(rows: pd.DataFrame) -> bytes:
    """Rows as the body of /predict_arrow (media type serving.arrow.ARROW_STREAM): an Arrow IPC stream of
    their columns, with the types they have (text as strings; a gap, None or NaN, as null)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(rows, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()
