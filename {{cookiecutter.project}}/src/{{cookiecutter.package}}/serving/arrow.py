"""The body of /predict_arrow: rows as an Arrow IPC stream, read into one array.

What `pyarrow.ipc.new_stream` writes of a table whose columns are the training features: no JSON
parsing at all, the fastest way to send many rows. pyarrow is imported on the first body, not here:
`deployment` reads ARROW_STREAM without needing it.

A stream is checked from its metadata before any batch is decoded: the schema (the model's
features, each once, of the right type), then every batch's header (no body compression, rows
within the budget). Compressed or dictionary-heavy bodies could otherwise inflate a few KB into
GBs of memory before any check ran; the service runs this in a thread, off the event loop.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BadRows
from ..profile import hard_bounds, is_categorical, takes_null
from .column_names import column_problem, listed
from .row_values import rows_dtype

# The body of /predict_arrow: an Arrow IPC stream (every other API takes JSON).
ARROW_STREAM = "application/vnd.apache.arrow.stream"
BAD_VALUES_LISTED = 10  # of an Arrow body, in the 400's details
# Positions of fields in Arrow's Message.fbs tables (the flatbuffers of each message's metadata).
_MESSAGE_HEADER, _DICTIONARY_DATA, _BATCH_LENGTH, _BATCH_COMPRESSION = 2, 1, 0, 3


class ArrowRows:
    """Reads /predict_arrow bodies for one model's features, profile and budgets.

    The checks are the single row's: each feature once (any order), 1 to `max_rows` rows, integer
    or float columns for numeric features and string (or dictionary of string) columns for
    categorical ones, every number finite and within its feature's hard bounds, nulls only where
    the model takes them (NaN counts as null); no compressed batch, and at most `max_bytes` of
    text once decoded; BadRows naming what is wrong otherwise.
    """

    def __init__(
        self,
        features: list[str],
        profile: Mapping[str, Mapping[str, Any]],
        max_rows: int,
        max_bytes: int,
    ) -> None:
        self.features, self.max_rows, self.max_bytes = features, max_rows, max_bytes
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
        """The rows of an Arrow IPC stream as one array (row_values.rows_dtype) in training order."""
        import pyarrow as pa

        try:
            reader = pa.ipc.open_stream(body)  # reads the schema message, no batch yet
            self._check_schema(reader.schema)
            self._check_batch_headers(body)
            table = reader.read_all()  # uncompressed and within the row budget by now
        except (pa.ArrowException, struct.error) as error:
            raise BadRows(f"the body is not an Arrow IPC stream: {error}") from None
        text_bytes = sum(
            _text_bytes(chunk) for name in self.categorical for chunk in table.column(name).chunks
        )
        if text_bytes > self.max_bytes:
            raise BadRows(f"the text columns hold over {self.max_bytes} bytes once decoded")
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

    def _check_schema(self, schema: Any) -> None:
        """BadRows unless the stream's columns are the features, each once, of the right types."""
        problem = column_problem(self.features, schema.names)
        if problem:
            raise BadRows(f"columns: {problem}")
        wrong_types = [
            f"{field.name} ({field.type})"
            for field in schema
            if not _takes_type(field.type, field.name in self.categorical)
        ]
        if wrong_types:
            raise BadRows(
                "columns of the wrong type (numbers for numeric features, strings for "
                f"categorical ones): {listed(wrong_types)}"
            )

    def _check_batch_headers(self, body: bytes) -> None:
        """BadRows for a compressed batch or rows past the budget, from the batches' headers
        alone: nothing is decoded, nor inflated, yet."""
        import pyarrow as pa

        rows = 0
        for message in pa.ipc.MessageReader.open_stream(body):
            if message.type not in ("record batch", "dictionary"):
                continue
            length, compressed = _batch_header(
                message.metadata.to_pybytes(), dictionary=message.type == "dictionary"
            )
            if compressed:
                raise BadRows("compressed Arrow batches are refused: send the stream uncompressed")
            rows += length if message.type == "record batch" else 0
            if rows > self.max_rows:
                raise BadRows(f"over {self.max_rows} rows; send 1 to {self.max_rows}")
        if rows == 0:
            raise BadRows(f"no rows; send 1 to {self.max_rows}")

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


def _text_bytes(chunk: Any) -> int:
    """The bytes of text a categorical column's chunk holds once decoded: a dictionary's value
    counts once for every row that points to it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(chunk.type):
        return 0
    if pa.types.is_dictionary(chunk.type):
        lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
    else:
        lengths = pc.binary_length(chunk)
    return pc.sum(lengths).as_py() or 0


def _batch_header(metadata: bytes, dictionary: bool) -> tuple[int, bool]:
    """(rows, compressed) of a record batch message's header, read from its flatbuffer metadata
    (Arrow's format/Message.fbs; pyarrow has verified it): a dictionary batch's are its data's."""
    header = _table_at(metadata, _field(metadata, _table_at(metadata, 0), _MESSAGE_HEADER))
    if dictionary:
        header = _table_at(metadata, _field(metadata, header, _DICTIONARY_DATA))
    length = _field(metadata, header, _BATCH_LENGTH)
    rows = struct.unpack_from("<q", metadata, length)[0] if length is not None else 0
    return rows, _field(metadata, header, _BATCH_COMPRESSION) is not None


def _field(buffer: bytes, table: int, index: int) -> int | None:
    """Where field `index` of the flatbuffer table at `table` is, or None when absent (default)."""
    vtable = table - struct.unpack_from("<i", buffer, table)[0]
    (vtable_size,) = struct.unpack_from("<H", buffer, vtable)
    slot = 4 + 2 * index  # after the vtable's own size and its table's
    if slot >= vtable_size:
        return None
    (offset,) = struct.unpack_from("<H", buffer, vtable + slot)
    return table + offset if offset else None


def _table_at(buffer: bytes, position: int | None) -> int:
    """The flatbuffer table that the offset at `position` points to (0: the root table)."""
    if position is None:
        raise struct.error("a batch message without its header")
    return position + struct.unpack_from("<I", buffer, position)[0]
