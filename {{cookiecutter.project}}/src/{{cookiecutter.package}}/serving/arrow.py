"""The body of /predict_arrow: rows as an Arrow IPC stream, read into one array.

What `pyarrow.ipc.new_stream` writes of a table whose columns are the training features: no JSON
parsing at all, the fastest way to send many rows. pyarrow is imported on the first body, not here:
`deployment` reads ARROW_STREAM without needing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BadRows
from ..profile import hard_bounds, is_categorical, takes_null
from .schemas import column_problem, rows_dtype

# The body of /predict_arrow: an Arrow IPC stream (every other API takes JSON).
ARROW_STREAM = "application/vnd.apache.arrow.stream"
BAD_VALUES_LISTED = 10  # of an Arrow body, in the 400's details


class ArrowRows:
    """Reads /predict_arrow bodies for one model's features, profile and batch limit.

    The checks are the single row's: each feature once (any order), 1 to `max_rows` rows, integer
    or float columns for numeric features and string (or dictionary of string) columns for
    categorical ones, every number finite and within its feature's hard bounds, nulls only where
    the model takes them (NaN counts as null); BadRows naming what is wrong otherwise.
    """

    def __init__(
        self, features: list[str], profile: Mapping[str, Mapping[str, Any]], max_rows: int
    ) -> None:
        self.features, self.max_rows = features, max_rows
        self.categorical = {name for name in features if is_categorical(profile[name])}
        self.nullable = np.array([takes_null(profile[name]) for name in features])
        bounds = [
            (-np.inf, np.inf) if name in self.categorical else hard_bounds(profile[name])
            for name in features
        ]
        self.lowest = np.array([lowest for lowest, _ in bounds])
        self.highest = np.array([highest for _, highest in bounds])
        self.dtype = rows_dtype(features, profile)

    def __call__(self, body: bytes) -> np.ndarray:
        """The rows of an Arrow IPC stream as one array (schemas.rows_dtype) in training order."""
        import pyarrow as pa

        try:
            table = pa.ipc.open_stream(body).read_all()
        except (pa.ArrowException, ValueError) as error:
            raise BadRows(f"the body is not an Arrow IPC stream: {error}") from None
        problem = column_problem(self.features, table.column_names)
        if problem:
            raise BadRows(f"columns: {problem}")
        if not 1 <= table.num_rows <= self.max_rows:
            raise BadRows(f"{table.num_rows} rows; send 1 to {self.max_rows}")
        wrong_types = [
            f"{field.name} ({field.type})"
            for field in table.schema
            if not _takes_type(field.type, field.name in self.categorical)
        ]
        if wrong_types:
            raise BadRows(
                "columns of the wrong type (numbers for numeric features, strings for "
                f"categorical ones): {', '.join(wrong_types)}"
            )
        numbers = np.column_stack(
            [
                np.full(table.num_rows, 0.0)
                if name in self.categorical
                else table.column(name).to_numpy().astype(np.float64, copy=False)
                for name in self.features
            ]
        )  # a null becomes NaN
        self._check_values(numbers)
        if self.dtype is np.float64:
            return numbers
        rows = numbers.astype(object)
        for index, name in enumerate(self.features):
            if name in self.categorical:
                rows[:, index] = table.column(name).cast(pa.string()).to_pylist()
        return rows

    def _check_values(self, numbers: np.ndarray) -> None:
        """BadRows naming the first BAD_VALUES_LISTED numbers that are infinite, beyond the hard
        bounds, or missing where the model takes no null."""
        with np.errstate(invalid="ignore"):
            bad = (numbers < self.lowest) | (numbers > self.highest) | np.isinf(numbers)
        bad |= np.isnan(numbers) & ~self.nullable
        if not bad.any():
            return
        rows, columns = np.nonzero(bad)
        details = [
            {
                "row": int(row),
                "field": self.features[column],
                "problem": "null, which the model does not take"
                if np.isnan(numbers[row, column])
                else f"{numbers[row, column]:g} is not a finite number within "
                f"{self.lowest[column]:g} to {self.highest[column]:g}",
            }
            for row, column in zip(
                rows[:BAD_VALUES_LISTED], columns[:BAD_VALUES_LISTED], strict=True
            )
        ]
        named = sorted({detail["field"] for detail in details})
        raise BadRows(f"{len(rows)} values refused, in {', '.join(named)}", details)


def _takes_type(arrow_type: Any, categorical: bool) -> bool:
    """Whether a column of this Arrow type may carry a feature: text for a categorical feature
    (plain, large or dictionary-encoded), integers or floats for a numeric one; only nulls for
    either (what pandas writes of a column of None)."""
    import pyarrow as pa

    if pa.types.is_null(arrow_type):
        return True
    if categorical:
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
