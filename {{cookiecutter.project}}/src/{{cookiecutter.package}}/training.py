"""Fit a scikit-learn Pipeline from params and record it in MLflow as the new `challenger`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from importlib.metadata import version

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from . import data, evaluation, profile
from .errors import SettingsError
from .registry import CHALLENGER, Registry
from .settings import ModelParams, Settings

# The estimators params.yaml may name, per task. Add yours here; everything else follows.
ESTIMATORS: dict[str, dict[str, type[BaseEstimator]]] = {
    "classification": {
        "logistic_regression": LogisticRegression,
        "random_forest": RandomForestClassifier,
        "gradient_boosting": GradientBoostingClassifier,
    },
    "regression": {
        "ridge": Ridge,
        "random_forest": RandomForestRegressor,
        "gradient_boosting": GradientBoostingRegressor,
    },
}

# Tree models are stored with skops, which loads only the types it is told to trust.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree", "sklearn._loss.link.Interval"]


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    model_version: int
    metrics: dict[str, float]
    data_fingerprint: str
    params_hash: str
    git_sha: str


def build_pipeline(task: str, params: ModelParams) -> Pipeline:
    """The unfitted model: optional scaling, then the estimator named in params."""
    choices = ESTIMATORS[task]
    if params.estimator not in choices:
        raise SettingsError(
            f"model.estimator {params.estimator!r} is not a {task} estimator; "
            f"choose from {sorted(choices)}"
        )
    estimator_class = choices[params.estimator]
    hyperparameters = dict(params.hyperparameters)
    if "random_state" in estimator_class().get_params():
        hyperparameters.setdefault("random_state", params.random_state)
    try:
        estimator = estimator_class(**hyperparameters)
    except TypeError as error:
        raise SettingsError(f"model.hyperparameters for {params.estimator}: {error}") from None
    steps = [("scale", StandardScaler())] if params.scale_features else []
    return Pipeline([*steps, ("model", estimator)])


def params_hash(settings: Settings) -> str:
    """Identifies the exact params behind a run, so two runs can be compared at a glance."""
    canonical = json.dumps(settings.params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def git_sha(settings: Settings) -> str:
    if settings.env.github.sha:
        return settings.env.github.sha
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; explicit, because inference is slow and adds test tools."""
    return [f"{name}=={version(name)}" for name in ("scikit-learn", "pandas", "numpy", "skops")]


def flatten(prefix: str, values: dict) -> dict[str, object]:
    return {f"{prefix}.{key}": value for key, value in values.items()}


def train(settings: Settings, registry: Registry, frame: pd.DataFrame) -> TrainingResult:
    """Fit on the training rows, score on the frozen holdout, register, and alias as `challenger`."""
    params = settings.params
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(
        frame, params.data.target, params.data.holdout_fraction
    )
    pipeline = build_pipeline(params.task, params.model).fit(x_train, y_train)
    metrics = evaluation.score(pipeline, x_holdout, y_holdout, params.task)

    lineage = {
        "git_sha": git_sha(settings),
        "data_fingerprint": data.fingerprint(frame),
        "data_source": params.data.source,
        "params_hash": params_hash(settings),
    }
    registry.configure()  # the run goes to the project's experiment
    with mlflow.start_run(run_name=f"train-{params.model.estimator}") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params(
            {
                "estimator": params.model.estimator,
                "scale_features": params.model.scale_features,
                "holdout_fraction": params.data.holdout_fraction,
                "train_rows": len(x_train),
                "holdout_rows": len(x_holdout),
                **flatten("hp", params.model.hyperparameters),
            }
        )
        mlflow.log_metrics({f"holdout_{name}": value for name, value in metrics.items()})
        example = x_train.head(5)
        model_info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=params.registry.model_name,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            # In the MLmodel file: the service judges requests against it, monitoring traffic.
            metadata={
                "feature_profile": profile.feature_profile(x_train),
                **(
                    {"prediction_buckets": profile.prediction_buckets(y_train)}
                    if params.task == "regression"
                    else {}
                ),
            },
        )
    model_version = int(model_info.registered_model_version)
    registry.tag_version(model_version, lineage)
    registry.record_digest(model_version)
    registry.move_alias(CHALLENGER, model_version, why="newly trained")
    return TrainingResult(
        run_id=run.info.run_id,
        model_version=model_version,
        metrics=metrics,
        data_fingerprint=lineage["data_fingerprint"],
        params_hash=lineage["params_hash"],
        git_sha=lineage["git_sha"],
    )
