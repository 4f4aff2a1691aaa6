"""The HTTP service: one registered model, packed into the bento, answering JSON requests.

`deployment.build` imports one registered MLflow model version into the BentoML model store and builds
a bento of this module with its arguments (`settings.ServiceArgs`: the stored model to serve, and the
serving and monitoring settings of params.yaml). The bento keeps its arguments and `bentoml serve` hands them back to this
module, so a bento and its container need no params.yaml and no MLflow server. What the model is
(registered name, version, task, digest) travels with the stored model as labels; the request schema
is built from the MLflow signature and the feature profile saved with it, so the OpenAPI page at /docs
lists the real features and their bounds.

Single rows sent to /predict at the same time are scored together: while the model works on one
call (in a thread of its own, so the server keeps reading requests), the rows that arrive wait and
go to the next call as one array. A forest scores 64 rows in about the time it takes for one, so under load
this multiplies requests/s; alone, a request waits for nothing (benchmarks/README.md).

Many rows go in one request to /predict_batch as objects, to /predict_columns as a table (what
pandas' `to_json(orient="split")` writes), checked as one array, or fastest to /predict_arrow as an
Arrow IPC stream, which needs no JSON parsing at all (a small Starlette app mounted beside the APIs).

In front of the APIs runs `security.Guard` (tokens, rate limits, body limits, request ids, one error
shape). Health and readiness are BentoML's own /livez and /readyz (ready once the model is loaded).

For monitoring, /metrics carries, besides BentoML's own series, every API answer by endpoint, status
and model version (`model_requests_total`, `model_request_duration_seconds`), the predictions made
(`model_predictions_total` by class, or the `model_prediction_value` histogram) and the values outside
the training profile; `prediction_log` keeps a sample of requests and answers for drift checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import yaml
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import prediction_log, security
from .errors import BadRows, SecurityError
from .settings import ServiceArgs

NUMERIC_TYPES = {"double", "float", "long", "integer"}
# Answers of up to this many rows also carry their predictions in the X-Prediction header, where a
# proxy can log them without reading bodies: a shadow rollout compares champion and candidate there.
PREDICTION_HEADER_ROWS = 100
# Most single rows scored in one model call when many arrive at once.
MICRO_BATCH_ROWS = 128
# Values further than this many training ranges beyond the training min or max are refused as input
# errors whatever the out_of_profile policy: no real feature is that far, and the model's arithmetic
# may overflow (StandardScaler on 1e308 does).
HARD_BOUND_RANGES = 10
# Seconds; the rollout's and the alerts' latency limit (500 ms) falls on a bound.
REQUEST_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
logger = logging.getLogger("bentoml.service")
logging.getLogger("bentoml._internal.server.http_app").addFilter(security.QuietClientErrors())


def read_model_meta(model_dir: Path) -> tuple[list[str], dict[str, dict]]:
    """The training columns, in order, and their profile, from the model's MLmodel file.

    Read from the file directly: importing mlflow here would add seconds to the start of the
    serving process, which only needs the names (the workers import mlflow to load the model).
    """
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    inputs = (meta.get("signature") or {}).get("inputs")
    specs = json.loads(inputs) if inputs else []
    if not specs or any("name" not in spec for spec in specs):
        raise RuntimeError(f"{model_dir}: the MLflow model has no column-based input signature")
    for spec in specs:
        if spec.get("type") not in NUMERIC_TYPES:
            raise RuntimeError(
                f"feature {spec['name']!r} is {spec.get('type')}; only numbers serve"
            )
    columns = [spec["name"] for spec in specs]
    profile = (meta.get("metadata") or {}).get("feature_profile") or {}
    unprofiled = [column for column in columns if column not in profile]
    if unprofiled:
        raise RuntimeError(f"{model_dir}: no training profile for features {unprofiled}")
    return columns, profile


def prediction_buckets(model_dir: Path) -> list[float] | None:
    """The training target's deciles saved with a regression model: its prediction histogram's buckets."""
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    return (meta.get("metadata") or {}).get("prediction_buckets")


def example_row(model_dir: Path) -> dict[str, float] | None:
    """The first row of the input example saved with the model: the example on the /docs page."""
    path = model_dir / "input_example.json"
    if not path.exists():
        return None
    example = json.loads(path.read_text())
    return dict(zip(example["columns"], example["data"][0], strict=True))


def hard_bounds(stats: dict[str, Any]) -> tuple[float, float]:
    """The lowest and highest value a feature may take at all (HARD_BOUND_RANGES), from its profile."""
    spread = (stats["max"] - stats["min"]) or abs(stats["max"]) or 1.0
    return stats["min"] - HARD_BOUND_RANGES * spread, stats["max"] + HARD_BOUND_RANGES * spread


def feature_field(column: str, stats: dict[str, Any]) -> Any:
    """One feature's schema: keyed by its column name, within the hard bounds of its profile."""
    lowest, highest = hard_bounds(stats)
    return Field(
        alias=column,
        title=column,
        ge=lowest,
        le=highest,
        description=f"trained on {stats['min']:g} to {stats['max']:g}",
    )


ARGS = bentoml.use_arguments(ServiceArgs)
STORED_MODEL = bentoml.models.get(ARGS.model_tag)
MODEL_DIR = Path(STORED_MODEL.path_of(security.MLFLOW_MODEL_FOLDER))
FEATURES, PROFILE = read_model_meta(MODEL_DIR)
MODEL_NAME = STORED_MODEL.info.labels["registered_model"]
MODEL_VERSION = int(STORED_MODEL.info.labels["registered_version"])
TASK = STORED_MODEL.info.labels["task"]
VERSION_LABEL = str(MODEL_VERSION)


class Metrics:
    """The service's own Prometheus series, each labelled with the model version."""

    def __init__(self) -> None:
        self.requests = bentoml.metrics.Counter(
            name="model_requests",
            documentation="API answers (refusals included) by endpoint, HTTP status, model version",
            labelnames=["endpoint", "status", "model_version"],
        )
        self.request_seconds = bentoml.metrics.Histogram(
            name="model_request_duration_seconds",
            documentation="Seconds from a request's arrival to the last byte of its answer",
            labelnames=["endpoint", "model_version"],
            buckets=REQUEST_SECONDS_BUCKETS,
        )
        if TASK == "classification":
            self.predicted_classes = bentoml.metrics.Counter(
                name="model_predictions",
                documentation="Predictions made, by predicted class",
                labelnames=["model_version", "prediction"],
            )
        else:
            buckets = prediction_buckets(MODEL_DIR)
            self.predicted_values = bentoml.metrics.Histogram(
                name="model_prediction_value",
                documentation="Predicted values; the buckets cut the training target in ten shares",
                labelnames=["model_version"],
                **({"buckets": buckets} if buckets else {}),
            )
        self.out_of_profile_values = bentoml.metrics.Counter(
            name="out_of_profile_values",
            documentation="Values outside the training profile, by feature (flagged or refused)",
            labelnames=["feature", "model_version"],
        )

    def answer(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(
            endpoint=endpoint, status=str(status), model_version=VERSION_LABEL
        ).inc()
        self.request_seconds.labels(endpoint=endpoint, model_version=VERSION_LABEL).observe(seconds)

    def predictions(self, predictions: list) -> None:
        if TASK == "classification":
            for label, count in Counter(predictions).items():
                self.predicted_classes.labels(
                    model_version=VERSION_LABEL, prediction=str(label)
                ).inc(count)
        else:
            histogram = self.predicted_values.labels(model_version=VERSION_LABEL)
            for value in predictions:
                histogram.observe(value)

    def out_of_profile(self, feature: str) -> None:
        self.out_of_profile_values.labels(feature=feature, model_version=VERSION_LABEL).inc()


@functools.cache
def metrics() -> Metrics:
    """Made once per serving worker, by ModelService.__init__ before any request: builds import
    this module too, sometimes twice in one process, and a series registered twice is an error."""
    return Metrics()


def observe_answer(endpoint: str, status: int, seconds: float) -> None:
    """security.Guard calls this once an API answer's last byte is sent."""
    metrics().answer(endpoint, status, seconds)


# Attribute names are positional; the JSON keys (aliases) are the training column names, whatever
# characters they contain. Extra keys, missing keys, non-numbers (strings and booleans included),
# NaN, infinity and values beyond the hard bounds are all a 400 naming the feature.
_ATTRIBUTES = [f"feature_{index}" for index in range(len(FEATURES))]
Row = create_model(
    "Row",
    __config__=ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={"example": example} if (example := example_row(MODEL_DIR)) else None,
    ),
    __doc__=f"One row of {MODEL_NAME} v{MODEL_VERSION} features, keyed by training column name.",
    **{
        attribute: (float, feature_field(column, PROFILE[column]))
        for attribute, column in zip(_ATTRIBUTES, FEATURES, strict=True)
    },
)
_row_values = attrgetter(*_ATTRIBUTES)
PROFILE_CHECK = security.ProfileCheck(FEATURES, PROFILE)
# A table's values (/predict_columns) are held to one range, the widest of the features' hard
# bounds: the OpenAPI 3.0 document cannot give each position in a row bounds of its own, and the
# document must say exactly what is accepted. A value past its own feature's hard bounds but within
# this range is still far outside the profile: flagged or refused by the out_of_profile policy.
_TABLE_LOWEST = min(hard_bounds(PROFILE[column])[0] for column in FEATURES)
_TABLE_HIGHEST = max(hard_bounds(PROFILE[column])[1] for column in FEATURES)


def rows_as_array(rows: list[Any]) -> np.ndarray:
    """Validated rows as one float array, in the training column order."""
    features = np.array([_row_values(row) for row in rows], dtype=np.float64)
    return features.reshape(len(rows), len(FEATURES))


def column_problem(columns: list[str]) -> str | None:
    """What is wrong with the column names of a table, if anything: each training feature once."""
    missing = [name for name in FEATURES if name not in columns]
    unknown = [name for name in dict.fromkeys(columns) if name not in PROFILE]
    repeated = [name for name in dict.fromkeys(columns) if columns.count(name) > 1]
    problems = [
        f"{what} {', '.join(map(repr, names))}"
        for what, names in (("missing", missing), ("unknown", unknown), ("repeated", repeated))
        if names
    ]
    return "; ".join(problems) or None


def _named_positions(error: ValidationError, body: bytes | str) -> ValidationError:
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


class Columns(BaseModel):
    """Rows as a table: the training features' names once, then rows of numbers in that order.

    The fast way to send many rows: pandas writes it (`DataFrame.to_json(orient="split",
    index=False)`; an `index` is accepted and ignored) and the service checks it as one numpy array,
    about twice as fast as the same rows as /predict_batch objects (benchmarks/README.md).
    The checks and errors are the rows' own: each feature once, in any order; finite numbers, a
    400 naming row and feature ("data.3.<feature>") otherwise. One difference: every value is held
    to the widest of the features' hard bounds (_TABLE_LOWEST, _TABLE_HIGHEST), not its own.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra=(
            {"example": {"columns": list(example), "data": [list(example.values())]}}
            if example
            else None
        ),
    )

    columns: list[str] = Field(
        min_length=len(FEATURES),
        max_length=len(FEATURES),
        description="the training features, each once, in any order",
        # Documented exactly; checked by column_problem, whose message names what is wrong.
        json_schema_extra={"items": {"type": "string", "enum": FEATURES}, "uniqueItems": True},
    )
    index: list[int | str] | None = Field(None, description="ignored: answers follow data's order")
    data: Annotated[
        list[
            Annotated[
                list[Annotated[float, Field(ge=_TABLE_LOWEST, le=_TABLE_HIGHEST)]],
                Field(min_length=len(FEATURES), max_length=len(FEATURES)),
            ]
        ],
        Field(
            min_length=1,
            max_length=ARGS.serving.max_batch_rows,
            description="the rows, each its values in the order of columns",
        ),
    ]
    _features: np.ndarray = PrivateAttr()

    @classmethod
    def model_validate_json(cls, json_data: bytes | str, **kwargs: Any) -> Columns:
        """pydantic's own checks, with errors naming the feature rather than its position in a row.

        Renamed here, on the error path only: a wrap validator could rename them too, but makes
        pydantic turn every body into Python objects before checking it (about 2 ms more on 1,000
        rows). BentoML parses request bodies through this method.
        """
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as error:
            raise _named_positions(error, json_data) from None

    @model_validator(mode="after")
    def _as_array(self) -> Columns:
        problem = column_problem(self.columns)
        if problem:
            error = PydanticCustomError("column_names", "{problem}", {"problem": problem})
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error, loc=("columns",), input=self.columns)],
            )
        features = np.array(self.data, dtype=np.float64)
        if self.columns != FEATURES:
            features = features[:, [self.columns.index(name) for name in FEATURES]]
        self._features = features
        return self

    @property
    def features(self) -> np.ndarray:
        """The rows as one float array in the training column order."""
        return self._features


_HARD_LOWEST = np.array([hard_bounds(PROFILE[column])[0] for column in FEATURES])
_HARD_HIGHEST = np.array([hard_bounds(PROFILE[column])[1] for column in FEATURES])
BAD_VALUES_LISTED = 10  # of an Arrow body, in the 400's details


def arrow_rows(body: bytes) -> np.ndarray:
    """The rows of an Arrow IPC stream as one float array in the training column order.

    /predict_arrow's body: what `pyarrow.ipc.new_stream` writes of a table whose columns are the
    training features (any order, integer or float types). The checks are the single row's: each
    feature once, 1 to max_batch_rows rows, every value a finite number within its feature's hard
    bounds; BadRows naming what is wrong otherwise.
    """
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowException, ValueError) as error:
        raise BadRows(f"the body is not an Arrow IPC stream: {error}") from None
    problem = column_problem(table.column_names)
    if problem:
        raise BadRows(f"columns: {problem}")
    if not 1 <= table.num_rows <= ARGS.serving.max_batch_rows:
        raise BadRows(f"{table.num_rows} rows; send 1 to {ARGS.serving.max_batch_rows}")
    not_numbers = [
        f"{field.name} ({field.type})"
        for field in table.schema
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type))
    ]
    if not_numbers:
        raise BadRows(f"columns that are not numbers: {', '.join(not_numbers)}")
    features = np.column_stack(
        [table.column(name).to_numpy().astype(np.float64, copy=False) for name in FEATURES]
    )  # a null becomes NaN, refused below
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(features) | (features < _HARD_LOWEST) | (features > _HARD_HIGHEST)
    if bad.any():
        rows, columns = np.nonzero(bad)
        details = [
            {
                "row": int(row),
                "field": FEATURES[column],
                "problem": f"{features[row, column]:g} is not a finite number within "
                f"{_HARD_LOWEST[column]:g} to {_HARD_HIGHEST[column]:g}",
            }
            for row, column in zip(
                rows[:BAD_VALUES_LISTED], columns[:BAD_VALUES_LISTED], strict=True
            )
        ]
        named = sorted({detail["field"] for detail in details})
        raise BadRows(f"{len(rows)} values refused, in {', '.join(named)}", details)
    return features


Scores = tuple[list, list[float] | None]  # predictions, and predicted-class probabilities or None


@contextlib.contextmanager
def warnings_ignored() -> Iterator[None]:
    """Run the block under one warning filter, "ignore", instead of the process's list.

    scikit-learn re-applies every warning filter of the process around each tree of a forest's
    predict (`sklearn.utils.parallel`): about 0.2 ms per filter per call for 100 trees, and a
    worker holds 17 filters once BentoML, MLflow, numpy and scipy are imported, over a third of a
    RandomForest's single-row time (benchmarks/README.md). What the model would warn about here,
    on every request, is noise (rows reach it as arrays, so scikit-learn's "X does not have valid
    feature names"); training and evaluation run the same model with every filter in place. For
    that time the whole process ignores warnings, and `warnings.catch_warnings` is not thread-safe
    before Python 3.14: only the model thread uses this.
    """
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("ignore")
        yield


class MicroBatcher:
    """Scores single rows in as few model calls as the load allows, with no batching window.

    The first row runs at once; rows that arrive while a call is running wait for it to end and then
    go to the model together (up to `max_rows` a call). So a lone request never waits, and under load
    the batch grows with the queue. BentoML's own adaptive batching (`batchable=True`) needs the
    public API to take a list, and answers 503 when its latency budget runs out; this keeps /predict
    a one-row API and sheds nothing.
    """

    def __init__(self, score: Callable[[np.ndarray], Awaitable[Scores]], max_rows: int) -> None:
        self._score, self._max_rows = score, max_rows
        self._waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def score(self, values: np.ndarray) -> tuple[Any, float | None]:
        """The prediction (and probability) for one row of feature values."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((values, answer))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_rows]
                del self._waiting[: self._max_rows]
                features = np.array([values for values, _ in batch], dtype=np.float64)
                try:
                    predictions, probabilities = await self._score(features)
                except Exception as error:  # every waiting request fails as the call did
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for index, (_, answer) in enumerate(batch):
                    if not answer.done():  # a client that went away cancelled its future
                        probability = None if probabilities is None else probabilities[index]
                        answer.set_result((predictions[index], probability))
        finally:
            self._draining = None


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


def _configured_tokens() -> tuple[list[str] | None, str | None]:
    """The accepted tokens (None: auth off) and what is wrong with them, raised when serving starts.

    Not raised here: `bentoml build` imports this module too, where no token needs to exist.
    """
    if not ARGS.serving.require_auth:
        return None, None
    try:
        tokens = security.load_tokens()
    except SecurityError as error:
        return [], str(error)
    if not tokens:
        return [], (
            f"serving.require_auth is true but neither {security.TOKENS_VARIABLE} nor "
            f"{security.TOKENS_FILE_VARIABLE} holds a token"
        )
    return tokens, None


TOKENS, TOKEN_PROBLEM = _configured_tokens()


def request_id_of(scope: dict[str, Any]) -> str:
    """The request's id, which security.Guard sets on every request and answer."""
    return scope["state"]["request_id"]


def prediction_header(predictions: list) -> dict[str, str]:
    """Answers small enough carry their predictions in a header too (proxies can log them there)."""
    if len(predictions) > PREDICTION_HEADER_ROWS:
        return {}
    return {"X-Prediction": json.dumps(predictions, separators=(",", ":"))}


async def predict_arrow(request: Request) -> Response:
    """POST /predict_arrow: up to max_batch_rows rows as an Arrow IPC stream (see arrow_rows).

    The answer is /predict_batch's. Served by a Starlette app mounted beside the BentoML APIs, as
    BentoML's own APIs parse every body as JSON; security.Guard protects it like them.
    """
    try:
        features = arrow_rows(await request.body())
    except BadRows as problem:
        body = security.error_body(400, str(problem), details=problem.details)
        return JSONResponse(body, status_code=400)
    service: ModelService = bentoml.get_current_service()
    answer = await service.scored_rows(features, request_id_of(request.scope), "predict_arrow")
    if isinstance(answer, JSONResponse):
        return answer
    return Response(
        answer.model_dump_json(),
        media_type="application/json",
        headers=prediction_header(answer.predictions),
    )


ARROW_APP = Starlette(routes=[Route("/predict_arrow", predict_arrow, methods=["POST"])])
# BentoML documents its own APIs only: /docs.json gets this one from security.Guard.
_ANSWER_SCHEMA = BatchPrediction.model_json_schema(ref_template="#/components/schemas/{model}")
_ANSWER_SCHEMA.pop("$defs", None)  # RowOutOfProfile is in the document's components already
ARROW_OPERATION = {
    "post": {
        "summary": "predict_arrow",
        "description": (
            "Score up to max_batch_rows rows sent as an Arrow IPC stream: what "
            "pyarrow.ipc.new_stream writes of a table whose columns are the training features "
            "(any order, integer or float). The fastest way to send many rows; the answer is "
            "/predict_batch's."
        ),
        "requestBody": {
            "required": True,
            "content": {security.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "200": {
                "description": "Successful Response",
                "content": {"application/json": {"schema": _ANSWER_SCHEMA}},
            }
        },
    }
}


@bentoml.asgi_app(ARROW_APP, path="/")  # only its own routes match: the rest stays BentoML's
@bentoml.service(
    name="model_service",
    description=f"Serves {MODEL_NAME} v{MODEL_VERSION} ({TASK}).",
    # serving.workers (default 1): scale with replicas first, several workers share one socket.
    workers=ARGS.serving.workers,
    traffic={"timeout": 30},
    # BentoML would open OpenTelemetry spans (for the request and each of its messages) and write an
    # access log line for every request: with the spans thrown away (no exporter) and nginx or the
    # ingress logging access, that was half of /predict's requests/s (benchmarks/README.md).
    tracing={} if ARGS.serving.tracing else {"excluded_urls": [".*"]},
    logging={"access": {"enabled": ARGS.serving.access_log}},
)
class ModelService:
    """Loads the packed model once per worker; every answer names the model version behind it.

    APIs are `async def` and the model runs in a thread of its own (`scores`): the event loop
    goes on reading requests meanwhile, and /predict batches the rows that pile up.
    """

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import mlflow.sklearn

        if TOKEN_PROBLEM:
            raise SecurityError(TOKEN_PROBLEM)
        if TOKENS is None:
            logger.warning(
                "AUTHENTICATION IS OFF (serving.require_auth: false): anyone who reaches this "
                "server can call its APIs. Only for local development."
            )
        model_dir = self.bento_model.path_of(security.MLFLOW_MODEL_FOLDER)
        security.verify_artifacts(
            model_dir,
            self.bento_model.info.labels.get(security.DIGEST_TAG),
            f"{MODEL_NAME} v{MODEL_VERSION} ({self.bento_model.tag})",
        )
        self.model = mlflow.sklearn.load_model(model_dir)
        trained_on = [str(name) for name in getattr(self.model, "feature_names_in_", FEATURES)]
        if trained_on != FEATURES:
            raise RuntimeError(f"signature columns {FEATURES} differ from the model's {trained_on}")
        self.with_probability = TASK == "classification" and hasattr(self.model, "predict_proba")
        metrics()  # before the first request, whose threads would race to make them
        log_location = (
            os.environ.get(prediction_log.LOCATION_VARIABLE) or ARGS.monitoring.prediction_log
        )
        self.prediction_log = None
        if ARGS.monitoring.sample_rate > 0 and log_location != prediction_log.OFF:
            self.prediction_log = prediction_log.PredictionLog(
                log_location,
                FEATURES,
                MODEL_VERSION,
                ARGS.monitoring.sample_rate,
                ARGS.monitoring.flush_seconds,
            )
        # The one thread that runs the model, so that only it swaps the warning filters.
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.batcher = MicroBatcher(self.scores, MICRO_BATCH_ROWS)
        # What is loaded by now (imports, the model) lives as long as the worker. Frozen, it is left
        # out of the garbage collector's full passes, which otherwise walk it again and again and
        # stall every answer meanwhile (LR at concurrency 64: p99 241 -> 87 ms, benchmarks/README.md).
        gc.collect()
        gc.freeze()

    def _profiled(self, features: np.ndarray) -> dict[int, list[str]] | JSONResponse:
        """The rows with features that training never saw, by row, counted in the metrics.

        Under the reject policy, a row outside the profile makes the answer a 422 instead.
        """
        outside = PROFILE_CHECK.outside(features) if ARGS.serving.out_of_profile != "off" else {}
        for names in outside.values():
            for name in names:
                metrics().out_of_profile(name)
        if ARGS.serving.out_of_profile == "reject" and outside:
            return _refuse_out_of_profile(features, outside)
        return outside

    async def scores(self, features: np.ndarray) -> Scores:
        """_model_scores in the model thread: the event loop goes on reading requests meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.model_thread, self._model_scores, features)

    def _model_scores(self, features: np.ndarray) -> Scores:
        """Predictions (and predicted-class probabilities) for rows of features, in order.

        A classifier runs once: its prediction is the class of highest probability, which is how
        scikit-learn's classifiers predict (a forest would otherwise walk every tree twice).
        """
        with warnings_ignored():
            if not self.with_probability:
                predictions = self.model.predict(features).tolist()
                metrics().predictions(predictions)
                return predictions, None
            probabilities = self.model.predict_proba(features)
        best = probabilities.argmax(axis=1)
        predictions = self.model.classes_.take(best).tolist()
        metrics().predictions(predictions)
        return predictions, probabilities[np.arange(len(best)), best].tolist()

    def _log(
        self,
        request_id: str,
        endpoint: str,
        features: np.ndarray,
        predictions: list,
        probabilities: list[float] | None,
    ) -> None:
        """Hand the answer to the prediction log (it keeps the sampled requests)."""
        if self.prediction_log is not None:
            self.prediction_log.record(request_id, endpoint, features, predictions, probabilities)

    @bentoml.on_shutdown
    def _flush_prediction_log(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.close()

    @bentoml.api
    async def predict(self, row: Row, /, ctx: bentoml.Context) -> Prediction:  # type: ignore[valid-type]
        """Score one row. The body is the row itself: {"<feature>": <number>, ...}."""
        features = rows_as_array([row])
        outside = self._profiled(features)
        if isinstance(outside, JSONResponse):
            ctx.response.status_code = outside.status_code  # BentoML answers with the context's
            return outside
        prediction, probability = await self.batcher.score(features[0])
        ctx.response.headers.update(prediction_header([prediction]))
        self._log(
            request_id_of(ctx.request.scope),
            "predict",
            features,
            [prediction],
            None if probability is None else [probability],
        )
        return Prediction(
            prediction=prediction,
            probability=probability,
            model_version=MODEL_VERSION,
            out_of_profile=outside.get(0, []),
        )

    @bentoml.api
    async def predict_batch(
        self,
        rows: Annotated[list[Row], Field(min_length=1, max_length=ARGS.serving.max_batch_rows)],  # type: ignore[valid-type]
        ctx: bentoml.Context,
    ) -> BatchPrediction:
        """Score up to max_batch_rows rows: {"rows": [{...}, ...]}.

        Kept for clients that hold rows as objects; /predict_columns takes the same rows as a table
        and answers the same, about twice as fast (each object here is checked on its own).
        """
        return await self._batch_api(rows_as_array(rows), ctx, "predict_batch")

    @bentoml.api
    async def predict_columns(self, table: Columns, /, ctx: bentoml.Context) -> BatchPrediction:
        """Score up to max_batch_rows rows sent as a table (what pandas' to_json orient="split" writes).

        The body is {"columns": [<feature>, ...], "data": [[<number>, ...], ...]}: the fast way to
        score many rows as JSON (POST /predict_arrow takes them as an Arrow IPC stream, faster
        still). The answer is /predict_batch's.
        """
        return await self._batch_api(table.features, ctx, "predict_columns")

    async def _batch_api(
        self, features: np.ndarray, ctx: bentoml.Context, endpoint: str
    ) -> BatchPrediction | JSONResponse:
        """scored_rows for a BentoML API: status and header go through the context it answers from."""
        answer = await self.scored_rows(features, request_id_of(ctx.request.scope), endpoint)
        if isinstance(answer, JSONResponse):
            ctx.response.status_code = answer.status_code  # BentoML answers with the context's
        else:
            ctx.response.headers.update(prediction_header(answer.predictions))
        return answer

    async def scored_rows(
        self, features: np.ndarray, request_id: str, endpoint: str
    ) -> BatchPrediction | JSONResponse:
        """The batch endpoints' answer for checked rows: one model call in the model thread."""
        outside = self._profiled(features)
        if isinstance(outside, JSONResponse):
            return outside
        predictions, probabilities = await self.scores(features)
        self._log(request_id, endpoint, features, predictions, probabilities)
        return BatchPrediction(
            predictions=predictions,
            probabilities=probabilities,
            model_version=MODEL_VERSION,
            out_of_profile=[
                RowOutOfProfile(row=index, features=names) for index, names in outside.items()
            ],
        )

    @bentoml.api
    async def metadata(self) -> Metadata:
        """Which model this server runs and the features it expects (POST, like every BentoML API)."""
        return Metadata(
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            task=TASK,
            features=FEATURES,
            bento_model=str(self.bento_model.tag),
            max_batch_rows=ARGS.serving.max_batch_rows,
            out_of_profile=ARGS.serving.out_of_profile,
            feature_profile=PROFILE,
        )


def _refuse_out_of_profile(features: np.ndarray, outside: dict[int, list[str]]) -> JSONResponse:
    """The 422 of the reject policy, naming each row, feature, value and the training range."""
    details = [
        {
            "row": row,
            "field": name,
            "problem": (
                f"{features[row, FEATURES.index(name)]:g} is outside what training saw "
                f"({PROFILE[name]['min']:g} to {PROFILE[name]['max']:g}"
                + (
                    f", categories {PROFILE[name]['categories']}"
                    if PROFILE[name]["categories"]
                    else ""
                )
                + ")"
            ),
        }
        for row, names in outside.items()
        for name in names
    ]
    named = sorted({detail["field"] for detail in details})
    body = security.error_body(
        422, f"values outside the training profile: {', '.join(named)}", details=details
    )
    return JSONResponse(body, status_code=422)


ModelService.add_asgi_middleware(
    security.Guard,
    protected={
        **{api.route: "application/json" for api in ModelService.apis.values()},
        "/predict_arrow": security.ARROW_STREAM,
    },
    documented={"/predict_arrow": ARROW_OPERATION},
    tokens=TOKENS,
    rate_limit=ARGS.serving.rate_limit,
    max_body_bytes=ARGS.serving.max_body_bytes,
    model_version=MODEL_VERSION,
    observe=observe_answer,
)
