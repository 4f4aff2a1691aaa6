"""The request and answer models of the service's JSON APIs, made from a model's features.

`row_model` and `columns_model` build the request bodies from the training features, their profile
and the batch limit, so the OpenAPI page lists the real features and their bounds; the answers are
the same for every model. No `from __future__ import annotations` here: the models made inside the
factories have field types that name the factories' own variables, which pydantic must see as values.
"""

import json
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Self

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..profile import hard_bounds

# Answers of up to this many rows also carry their predictions in the X-Prediction header, where a
# proxy can log them without reading bodies: a shadow rollout compares champion and candidate there.
PREDICTION_HEADER_ROWS = 100
Example = Mapping[str, float] | None  # the first row of the model's input example, if saved


def _attributes(count: int) -> list[str]:
    """A row's attribute names: positional, as the column names may hold any character."""
    return [f"feature_{index}" for index in range(count)]


def feature_field(column: str, stats: Mapping[str, Any]) -> Any:
    """One feature's schema: keyed by its column name, within the hard bounds of its profile."""
    lowest, highest = hard_bounds(stats)
    return Field(
        alias=column,
        title=column,
        ge=lowest,
        le=highest,
        description=f"trained on {stats['min']:g} to {stats['max']:g}",
    )


def row_model(
    features: list[str], profile: Mapping[str, Mapping[str, Any]], title: str, example: Example
) -> type[BaseModel]:
    """One row of features (/predict, /predict_batch), keyed by training column name.

    Attribute names are positional; the JSON keys (aliases) are the training column names, whatever
    characters they contain. Extra keys, missing keys, non-numbers (strings and booleans included),
    NaN, infinity and values beyond the hard bounds are all a 400 naming the feature.
    """
    return create_model(
        "Row",
        __config__=ConfigDict(
            extra="forbid",
            allow_inf_nan=False,
            strict=True,
            json_schema_extra={"example": dict(example)} if example else None,
        ),
        __doc__=f"One row of {title} features, keyed by training column name.",
        **{
            attribute: (float, feature_field(column, profile[column]))
            for attribute, column in zip(_attributes(len(features)), features, strict=True)
        },
    )


def rows_reader(count: int) -> Callable[[list[Any]], np.ndarray]:
    """rows_as_array for rows of `row_model` with `count` features."""
    row_values = attrgetter(*_attributes(count))

    def rows_as_array(rows: list[Any]) -> np.ndarray:
        """Validated rows as one float array, in the training column order."""
        values = np.array([row_values(row) for row in rows], dtype=np.float64)
        return values.reshape(len(rows), count)

    return rows_as_array


def column_problem(features: list[str], columns: list[str]) -> str | None:
    """What is wrong with the column names of a table, if anything: each training feature once."""
    missing = [name for name in features if name not in columns]
    unknown = [name for name in dict.fromkeys(columns) if name not in features]
    repeated = [name for name in dict.fromkeys(columns) if columns.count(name) > 1]
    problems = [
        f"{what} {', '.join(map(repr, names))}"
        for what, names in (("missing", missing), ("unknown", unknown), ("repeated", repeated))
        if names
    ]
    return "; ".join(problems) or None


def named_positions(error: ValidationError, body: bytes | str) -> ValidationError:
    """`error` with each value's position in a row ("data.3.7") replaced by its column's name."""
    try:
        columns = json.loads(body).get("columns")
    except (ValueError, AttributeError):
        columns = None
    if not isinstance(columns, list):
        return error
    details = []
    for item in error.errors():
        loc = item["loc"]
        if len(loc) == 3 and loc[0] == "data" and isinstance(loc[2], int) and loc[2] < len(columns):
            loc = (*loc[:2], str(columns[loc[2]]))
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(item["type"], "{message}", {"message": item["msg"]}),
                loc=loc,
                input=item["input"],
            )
        )
    return ValidationError.from_exception_data(error.title, details)


def table_bounds(
    features: list[str], profile: Mapping[str, Mapping[str, Any]]
) -> tuple[float, float]:
    """The one range a table's values are held to: the widest of the features' hard bounds.

    The OpenAPI 3.0 document cannot give each position in a row bounds of its own, and the document
    must say exactly what is accepted. A value past its own feature's hard bounds but within this
    range is still far outside the profile: flagged or refused by the out_of_profile policy.
    """
    bounds = [hard_bounds(profile[column]) for column in features]
    return min(lowest for lowest, _ in bounds), max(highest for _, highest in bounds)


class Table(BaseModel):
    """Rows as a table: the training features' names once, then rows of numbers in that order.

    The fast way to send many rows: pandas writes it (`DataFrame.to_json(orient="split",
    index=False)`; an `index` is accepted and ignored) and the service checks it as one numpy array,
    about twice as fast as the same rows as /predict_batch objects (benchmarks/README.md).
    The checks and errors are the rows' own: each feature once, in any order; finite numbers, a
    400 naming row and feature ("data.3.<feature>") otherwise. One difference: every value is held
    to the widest of the features' hard bounds, not its own.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    training_order: ClassVar[list[str]] = []
    _features: np.ndarray = PrivateAttr()

    @classmethod
    def model_validate_json(cls, json_data: bytes | str, **kwargs: Any) -> Self:
        """pydantic's own checks, with errors naming the feature rather than its position in a row.

        Renamed here, on the error path only: a wrap validator could rename them too, but makes
        pydantic turn every body into Python objects before checking it (about 2 ms more on 1,000
        rows). BentoML parses request bodies through this method.
        """
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as error:
            raise named_positions(error, json_data) from None

    @model_validator(mode="after")
    def _as_array(self) -> Self:
        columns: list[str] = self.columns  # type: ignore[attr-defined]
        problem = column_problem(self.training_order, columns)
        if problem:
            error = PydanticCustomError("column_names", "{problem}", {"problem": problem})
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error, loc=("columns",), input=columns)],
            )
        features = np.array(self.data, dtype=np.float64)  # type: ignore[attr-defined]
        if columns != self.training_order:
            features = features[:, [columns.index(name) for name in self.training_order]]
        self._features = features
        return self

    @property
    def features(self) -> np.ndarray:
        """The rows as one float array in the training column order."""
        return self._features


def columns_model(
    features: list[str],
    profile: Mapping[str, Mapping[str, Any]],
    max_rows: int,
    example: Example,
) -> type[Table]:
    """The /predict_columns body for these features: a Table of 1 to `max_rows` rows."""
    width = len(features)
    lowest, highest = table_bounds(features, profile)

    class Columns(Table):
        __doc__ = Table.__doc__
        model_config = ConfigDict(
            json_schema_extra=(
                {"example": {"columns": list(example), "data": [list(example.values())]}}
                if example
                else None
            ),
        )
        training_order: ClassVar[list[str]] = features

        columns: list[str] = Field(
            min_length=width,
            max_length=width,
            description="the training features, each once, in any order",
            # Documented exactly; checked by column_problem, whose message names what is wrong.
            json_schema_extra={"items": {"type": "string", "enum": features}, "uniqueItems": True},
        )
        index: list[int | str] | None = Field(
            None, description="ignored: answers follow data's order"
        )
        data: Annotated[
            list[
                Annotated[
                    list[Annotated[float, Field(ge=lowest, le=highest)]],
                    Field(min_length=width, max_length=width),
                ]
            ],
            Field(
                min_length=1,
                max_length=max_rows,
                description="the rows, each its values in the order of columns",
            ),
        ]

    return Columns


def prediction_header(predictions: list) -> dict[str, str]:
    """Answers small enough carry their predictions in a header too (proxies can log them there)."""
    if len(predictions) > PREDICTION_HEADER_ROWS:
        return {}
    return {"X-Prediction": json.dumps(predictions, separators=(",", ":"))}


class Prediction(BaseModel):
    prediction: float | int | str
    probability: float | None = Field(
        None, description="classification only: the model's probability of the predicted class"
    )
    model_version: int
    out_of_profile: list[str] = Field(
        default_factory=list,
        description="features whose value training never saw (out_of_profile: flag)",
    )


class RowOutOfProfile(BaseModel):
    row: int = Field(description="position in the rows sent, from 0")
    features: list[str]


class BatchPrediction(BaseModel):
    predictions: list[float | int | str] = Field(description="in the order of the rows sent")
    probabilities: list[float] | None = Field(
        None, description="classification only: probability of each predicted class"
    )
    model_version: int
    out_of_profile: list[RowOutOfProfile] = Field(
        default_factory=list, description="rows with values training never saw (flag policy)"
    )


class Metadata(BaseModel):
    model_name: str
    model_version: int
    task: str
    features: list[str]
    bento_model: str
    max_batch_rows: int
    out_of_profile: str
    feature_profile: dict[str, dict[str, Any]]
