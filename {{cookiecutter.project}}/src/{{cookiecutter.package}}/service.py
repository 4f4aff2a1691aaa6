"""The HTTP service: one registered model, packed into the bento, answering JSON requests.

`deployment.build` imports one registered MLflow model version into the BentoML model store and builds
a bento of this module with two bento arguments, `model_tag` (the stored model to serve) and
`max_batch_rows`. The bento keeps its arguments and `bentoml serve` hands them back to this module, so
a bento and its container need no params.yaml and no MLflow server. What the model is (registered
name, version, task) travels with the stored model as labels; the request schema is built from the
MLflow signature saved with it, so the OpenAPI page at /docs lists the real features.

Health and readiness are BentoML's own /livez and /readyz (ready once the model is loaded).
"""

from __future__ import annotations

import json
import warnings
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
NUMERIC_TYPES = {"double", "float", "long", "integer"}
# Answers of up to this many rows also carry their predictions in the X-Prediction header, where a
# proxy can log them without reading bodies: a shadow rollout compares champion and candidate there.
PREDICTION_HEADER_ROWS = 100


class ServiceArgs(BaseModel):
    """The bento arguments `deployment.build` writes into the bento."""

    model_tag: str
    max_batch_rows: int = Field(1000, ge=1)


def signature_columns(model_dir: Path) -> list[str]:
    """The training columns, in order, from the MLflow signature stored with the model.

    Read from the MLmodel file directly: importing mlflow here would add seconds to the start of the
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
    return [spec["name"] for spec in specs]


ARGS = bentoml.use_arguments(ServiceArgs)
STORED_MODEL = bentoml.models.get(ARGS.model_tag)
FEATURES = signature_columns(Path(STORED_MODEL.path_of(MLFLOW_MODEL_FOLDER)))
MODEL_NAME = STORED_MODEL.info.labels["registered_model"]
MODEL_VERSION = int(STORED_MODEL.info.labels["registered_version"])
TASK = STORED_MODEL.info.labels["task"]

# Attribute names are positional; the JSON keys (aliases) are the training column names, whatever
# characters they contain. Extra keys, missing keys, non-numbers, NaN and infinity are all a 400.
_ATTRIBUTES = [f"feature_{index}" for index in range(len(FEATURES))]
Row = create_model(
    "Row",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    __doc__=f"One row of {MODEL_NAME} v{MODEL_VERSION} features, keyed by training column name.",
    **{
        attribute: (float, Field(alias=column, title=column))
        for attribute, column in zip(_ATTRIBUTES, FEATURES, strict=True)
    },
)
_row_values = attrgetter(*_ATTRIBUTES)


class Prediction(BaseModel):
    prediction: float | int | str
    probability: float | None = Field(
        None, description="classification only: the model's probability of the predicted class"
    )
    model_version: int


class BatchPrediction(BaseModel):
    predictions: list[float | int | str] = Field(description="in the order of the rows sent")
    probabilities: list[float] | None = Field(
        None, description="classification only: probability of each predicted class"
    )
    model_version: int


class Metadata(BaseModel):
    model_name: str
    model_version: int
    task: str
    features: list[str]
    bento_model: str
    max_batch_rows: int


@bentoml.service(
    name="model_service",
    description=f"Serves {MODEL_NAME} v{MODEL_VERSION} ({TASK}).",
    # One worker per container, more replicas to scale: several workers on one socket accept unevenly.
    workers=1,
    traffic={"timeout": 30},
)
class ModelService:
    """Loads the packed model once per worker; every answer names the model version behind it.

    APIs are `async def`: the model runs in the event loop, which measured faster than BentoML's
    thread pool for plain `def` APIs (about 620 against 450 requests/s for a linear model).
    """

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)

    def __init__(self) -> None:
        import mlflow.sklearn

        # Rows reach the pipeline as a float array in the training column order (checked below), a
        # few times faster than a one-row DataFrame; sklearn would warn about that on every request.
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )

        self.model = mlflow.sklearn.load_model(self.bento_model.path_of(MLFLOW_MODEL_FOLDER))
        trained_on = [str(name) for name in getattr(self.model, "feature_names_in_", FEATURES)]
        if trained_on != FEATURES:
            raise RuntimeError(f"signature columns {FEATURES} differ from the model's {trained_on}")
        self.with_probability = TASK == "classification" and hasattr(self.model, "predict_proba")

    def _score(self, rows: list[Any], ctx: bentoml.Context) -> tuple[list, list[float] | None]:
        """Predictions (and predicted-class probabilities) for validated rows, in order."""
        features = np.array([_row_values(row) for row in rows], dtype=np.float64)
        features = features.reshape(len(rows), len(FEATURES))
        predictions = self.model.predict(features).tolist()
        ctx.response.headers["X-Model-Version"] = str(MODEL_VERSION)
        if len(predictions) <= PREDICTION_HEADER_ROWS:
            ctx.response.headers["X-Prediction"] = json.dumps(predictions, separators=(",", ":"))
        if not self.with_probability:
            return predictions, None
        return predictions, self.model.predict_proba(features).max(axis=1).tolist()

    @bentoml.api
    async def predict(self, row: Row, /, ctx: bentoml.Context) -> Prediction:  # type: ignore[valid-type]
        """Score one row. The body is the row itself: {"<feature>": <number>, ...}."""
        predictions, probabilities = self._score([row], ctx)
        return Prediction(
            prediction=predictions[0],
            probability=None if probabilities is None else probabilities[0],
            model_version=MODEL_VERSION,
        )

    @bentoml.api
    async def predict_batch(
        self,
        rows: Annotated[list[Row], Field(min_length=1, max_length=ARGS.max_batch_rows)],  # type: ignore[valid-type]
        ctx: bentoml.Context,
    ) -> BatchPrediction:
        """Score up to max_batch_rows rows: {"rows": [{...}, ...]}."""
        predictions, probabilities = self._score(rows, ctx)
        return BatchPrediction(
            predictions=predictions, probabilities=probabilities, model_version=MODEL_VERSION
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
            max_batch_rows=ARGS.max_batch_rows,
        )
