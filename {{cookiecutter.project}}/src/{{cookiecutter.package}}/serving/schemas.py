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
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, from_json

from ..errors import BadRows
from ..profile import hard_bounds, is_categorical, takes_null
from .column_names import column_problem
from .http_errors import invalid_fields
from .row_values import misplaced_values, rows_dtype, value_kinds

# Answers of up to this many rows also carry their predictions in the X-Prediction header, where a
# proxy can log them without reading bodies: a shadow rollout compares champion and candidate there.
PREDICTION_HEADER_ROWS = 100
Example = Mapping[str, Any] | None  # the first row of the model's input example, if saved
LISTED_CATEGORIES = 20  # named in a categorical feature's description


def _attributes(count: int) -> list[str]:
    """A row's attribute names: positional, as the column names may hold any character."""
    return [f"feature_{index}" for index in range(count)]


def feature_type(stats: Mapping[str, Any]) -> Any:
    """A feature's value type: text for a categorical feature, else a number; or null if nullable."""
    kind = str if is_categorical(stats) else float
    return kind | None if takes_null(stats) else kind


def feature_field(column: str, stats: Mapping[str, Any]) -> Any:
    """One feature's schema: keyed by its column name; a number within the hard bounds of its
    profile, or any text for a categorical feature (not an enum: an unseen category is for the
    out_of_profile policy to judge), its training categories in the description."""
    unknown = "; null if unknown" if takes_null(stats) else ""
    # Said outright: BentoML's document keeps only the first choice of pydantic's anyOf [..., null].
    nullable = {"nullable": True} if takes_null(stats) else None
    if is_categorical(stats):
        categories = stats["categories"]
        listed = ", ".join(map(repr, categories[:LISTED_CATEGORIES]))
        more = len(categories) - LISTED_CATEGORIES
        listed += f" and {more} more" if more > 0 else ""
        return Field(
            alias=column,
            title=column,
            description=f"a category, trained on {listed}{unknown}",
            examples=categories[:1],
            json_schema_extra=nullable,
        )
    lowest, highest = hard_bounds(stats)
    return Field(
        alias=column,
        title=column,
        ge=lowest,
        le=highest,
        description=f"trained on {stats['min']:g} to {stats['max']:g}{unknown}",
        json_schema_extra=nullable,
    )


def row_model(
    features: list[str], profile: Mapping[str, Mapping[str, Any]], title: str, example: Example
) -> type[BaseModel]:
    """One row of features (/predict, /predict_batch), keyed by training column name.

    Attribute names are positional; the JSON keys (aliases) are the training column names, whatever
    characters they contain. Extra keys, missing keys, a value of the wrong kind (text for a number,
    a number for a category, a boolean for either), a null where the model takes none, NaN,
    infinity and values beyond the hard bounds are all a 400 naming the feature.
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
            attribute: (feature_type(profile[column]), feature_field(column, profile[column]))
            for attribute, column in zip(_attributes(len(features)), features, strict=True)
        },
    )


def batch_model(row: type[BaseModel], max_rows: int) -> type[BaseModel]:
    """The /predict_batch body: {"rows": [...]} of 1 to `max_rows` rows, no other key (as /predict)."""
    rows = Annotated[list[row], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
    return create_model("Rows", __config__=ConfigDict(extra="forbid"), rows=(rows, ...))


def rows_reader(
    features: list[str], profile: Mapping[str, Mapping[str, Any]]
) -> Callable[[list[Any]], np.ndarray]:
    """rows_as_array for rows of `row_model` with these features."""
    count, dtype = len(features), rows_dtype(features, profile)
    row_values = attrgetter(*_attributes(count))

    def rows_as_array(rows: list[Any]) -> np.ndarray:
        """Validated rows as one array (see rows_dtype), in the training column order."""
        values = np.array([row_values(row) for row in rows], dtype=dtype)
        return values.reshape(len(rows), count)

    return rows_as_array


def row_body_reader(
    row: type[BaseModel], rows_as_array: Callable[[list[Any]], np.ndarray]
) -> Callable[[bytes], np.ndarray]:
    """/predict's body, one row as a JSON object, as a one-row array; BadRows naming each bad field."""

    def read(body: bytes) -> np.ndarray:
        try:
            return rows_as_array([row.model_validate_json(body)])
        except ValidationError as error:
            message, details = invalid_fields(error.errors(include_url=False, include_input=False))
            raise BadRows(message, details) from None

    return read


def named_positions(error: ValidationError, body: bytes | str) -> ValidationError:
    """`error` with each value's position in a row ("data.3.7") replaced by its column's name."""
    try:  # pydantic's parser: nesting too deep is a ValueError, never a RecursionError
        columns = from_json(body).get("columns")
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
    Categorical features have no bounds (nor, with only those, has the table).
    """
    bounds = [
        hard_bounds(profile[column]) for column in features if not is_categorical(profile[column])
    ]
    return (
        min((lowest for lowest, _ in bounds), default=0.0),
        max((highest for _, highest in bounds), default=0.0),
    )


class Table(BaseModel):
    """Rows as a table: the training features' names once, then rows of values in that order.

    The fast way to send many rows: what pandas writes (`to_json(orient="split", index=False)`; an
    `index` is ignored), checked as one numpy array, twice as fast as /predict_batch's objects
    (benchmarks/README.md). The checks and errors are the rows' (a 400 naming "data.3.<feature>"),
    but every number is held to the widest of the features' hard bounds, not its own.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    training_order: ClassVar[list[str]] = []
    training_kinds: ClassVar[tuple[np.ndarray, np.ndarray]] = (np.array([]), np.array([]))
    training_dtype: ClassVar[type] = np.float64  # rows_dtype of the features
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
        features = np.array(self.data, dtype=self.training_dtype)  # type: ignore[attr-defined]
        if columns != self.training_order:
            features = features[:, [columns.index(name) for name in self.training_order]]
        misplaced = misplaced_values(features, self.training_order, *self.training_kinds)
        if misplaced:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_kind", problem),
                        loc=("data", row, name),
                        input=None,
                    )
                    for row, name, problem in misplaced
                ],
            )
        self._features = features
        return self

    @property
    def features(self) -> np.ndarray:
        """The rows as one array (see rows_dtype) in the training column order."""
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
    value: Any = Annotated[float, Field(ge=lowest, le=highest)]
    dtype = rows_dtype(features, profile)
    if dtype is object:
        value = value | str
    if any(takes_null(profile[name]) for name in features):
        value = value | None

    one_row = Annotated[list[value], Field(min_length=width, max_length=width)]

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
        training_kinds: ClassVar[tuple[np.ndarray, np.ndarray]] = value_kinds(features, profile)
        training_dtype: ClassVar[type] = dtype

        columns: list[str] = Field(
            min_length=width,
            max_length=width,
            description="the training features, each once, in any order",
            # Documented exactly; checked by column_problem, whose message names what is wrong.
            json_schema_extra={"items": {"type": "string", "enum": features}, "uniqueItems": True},
        )
        index: list[int | str] | None = Field(
            None, max_length=max_rows, description="ignored: answers follow data's order"
        )
        data: Annotated[
            list[one_row],
            Field(
                min_length=1,
                max_length=max_rows,
                description="the rows, each its values in the order of columns",
            ),
        ]

    return Columns


def prediction_header(predictions: list, model_version: int) -> dict[str, str]:
    """The version that answered (the fallback's, when it did), and the predictions of answers small
    enough (proxies can log them there)."""
    version = {"X-Model-Version": str(model_version)}
    if len(predictions) > PREDICTION_HEADER_ROWS:
        return version
    return {**version, "X-Prediction": json.dumps(predictions, separators=(",", ":"))}


# A class label in its training type (text, integer, boolean), or a regression's value. Documented as
# any value: BentoML's document keeps only the first choice of an anyOf.
LABEL_SCHEMA = {"description": "a class label as training had it, or the predicted value"}
Label = Annotated[bool | int | float | str, WithJsonSchema(LABEL_SCHEMA)]
ClassProbabilities = dict[str, float]  # every class's probability, keyed by the label as text


def probability_fields(probabilities: np.ndarray | None, classes: list[str]) -> dict[str, list]:
    """A batch answer's probabilities (rows x classes, in `classes` order): of each row's predicted
    class (the most probable, as the model predicts) and of every class; none for a regression."""
    if probabilities is None:
        return {}
    return {
        "probabilities": probabilities.max(axis=1).tolist(),
        "class_probabilities": [
            dict(zip(classes, row, strict=True)) for row in probabilities.tolist()
        ],
    }


class Prediction(BaseModel):
    prediction: Label
    probability: float | None = Field(
        None, description="classification only: the model's probability of the predicted class"
    )
    class_probabilities: ClassProbabilities | None = Field(
        None, description="classification only: every class's probability, keyed by its label"
    )
    model_version: int
    fallback: bool = Field(False, description="the fallback model answered: the served one raised")
    out_of_profile: list[str] = Field(
        default_factory=list,
        description="features whose value training never saw (out_of_profile: flag)",
    )


class RowOutOfProfile(BaseModel):
    row: int = Field(description="position in the rows sent, from 0")
    features: list[str]


class BatchPrediction(BaseModel):
    predictions: list[Label] = Field(description="in the order of the rows sent")
    probabilities: list[float] | None = Field(
        None, description="classification only: probability of each predicted class"
    )
    class_probabilities: list[ClassProbabilities] | None = Field(
        None, description="classification only: per row, every class's probability by its label"
    )
    model_version: int
    fallback: bool = Field(False, description="the fallback model answered: the served one raised")
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
    feature_profile: dict[str, dict[str, Any]] = Field(
        description="what training saw of each feature: its kind (numeric or categorical), "
        "whether it takes null (nullable), its range or categories"
    )
