"""The body of /predict_arrow: rows as an Arrow IPC stream, read into one float array.

What `pyarrow.ipc.new_stream` writes of a table whose columns are the training features: no JSON
parsing at all, the fastest way to send many rows. pyarrow is imported on the first body, not here:
`deployment` reads ARROW_STREAM without needing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BadRows
from ..profile import hard_bounds
from .schemas import column_problem

# The body of /predict_arrow: an Arrow IPC stream (every other API takes JSON).
ARROW_STREAM = "application/vnd.apache.arrow.stream"
BAD_VALUES_LISTED = 10  # of an Arrow body, in the 400's details


class ArrowRows:
    """Reads /predict_arrow bodies for one model's features, profile and batch limit.

    The checks are the single row's: each feature once (any order, integer or float types), 1 to
    `max_rows` rows, every value a finite number within its feature's hard bounds; BadRows naming
    what is wrong otherwise.
    """

    def __init__(
        self, features: list[str], profile: Mapping[str, Mapping[str, Any]], max_rows: int
    ) -> None:
        self.features, self.max_rows = features, max_rows
        bounds = [hard_bounds(profile[name]) for name in features]
        self.lowest = np.array([lowest for lowest, _ in bounds])
        self.highest = np.array([highest for _, highest in bounds])

    def __call__(self, body: bytes) -> np.ndarray:
        """The rows of an Arrow IPC stream as one float array in the training column order."""
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
        not_numbers = [
            f"{field.name} ({field.type})"
            for field in table.schema
            if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type))
        ]
        if not_numbers:
            raise BadRows(f"columns that are not numbers: {', '.join(not_numbers)}")
        features = np.column_stack(
            [table.column(name).to_numpy().astype(np.float64, copy=False) for name in self.features]
        )  # a null becomes NaN, refused below
        self._check_values(features)
        return features

    def _check_values(self, features: np.ndarray) -> None:
        """BadRows naming the first BAD_VALUES_LISTED values that are not finite or within bounds."""
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(features) | (features < self.lowest) | (features > self.highest)
        if not bad.any():
            return
        rows, columns = np.nonzero(bad)
        details = [
            {
                "row": int(row),
                "field": self.features[column],
                "problem": f"{features[row, column]:g} is not a finite number within "
                f"{self.lowest[column]:g} to {self.highest[column]:g}",
            }
            for row, column in zip(
                rows[:BAD_VALUES_LISTED], columns[:BAD_VALUES_LISTED], strict=True
            )
        ]
        named = sorted({detail["field"] for detail in details})
        raise BadRows(f"{len(rows)} values refused, in {', '.join(named)}", details)
