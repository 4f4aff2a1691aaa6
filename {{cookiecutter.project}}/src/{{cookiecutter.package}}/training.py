"""Fit a scikit-learn Pipeline from params and record it in MLflow as the new `challenger`."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils import get_tags
{% if cookiecutter.feature_store == "feast" %}
from . import data, datasets, evaluation, feature_store, integrity, model_card, profile
{%- else %}
from . import data, datasets, evaluation, integrity, model_card, profile
{%- endif %}
from .errors import DataError, SettingsError
from .params import ModelParams, Params
from .registry import CHALLENGER, Registry
from .settings import Settings

# Short names params.yaml may use for model.estimator, per task; any other scikit-learn-compatible
# class is named by its dotted path (`estimator_class`). The gate, the service and the reports follow.
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


class _NoPipVersionWarning(logging.Filter):
    """MLflow writes the training environment's pip version into the model's conda.yaml and warns
    at every training when there is none: uv's venvs have no pip. Nothing installs the model from
    conda.yaml (the bento and batch use `pip_requirements`), so the warning says nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to resolve installed pip version" not in record.getMessage()


logging.getLogger("mlflow.utils.environment").addFilter(_NoPipVersionWarning())


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    model_version: int
    metrics: dict[str, float]
    data_fingerprint: str
    params_hash: str
    git_sha: str
    dropped_rows_missing_target: int
    card: dict


def estimator_class(task: str, name: str) -> type[BaseEstimator]:
    """A short name of ESTIMATORS, or any importable class by dotted path (`package.module.Class`)."""
    choices = ESTIMATORS[task]
    if name in choices:
        return choices[name]
    module_name, _, class_name = name.rpartition(".")
    if not module_name:
        raise SettingsError(
            f"model.estimator {name!r} is not a {task} estimator; choose from {sorted(choices)} "
            "or give a class by dotted path, e.g. sklearn.ensemble.HistGradientBoostingClassifier"
        )
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise SettingsError(f"model.estimator {name!r} cannot be imported: {error}") from None
    if not isinstance(found, type):
        raise SettingsError(f"model.estimator {name!r} is not a class")
    return found


def build_pipeline(task: str, params: ModelParams, categorical: Sequence[str] = ()) -> Pipeline:
    """The unfitted model: missing numbers filled and optionally scaled, categories encoded, then the
    estimator. Without categorical features it is the plain Pipeline numeric models always had."""
    estimator = build_estimator(task, params)
    numeric_steps = []
    if params.impute != "none":
        numeric_steps.append(("impute", SimpleImputer(strategy=params.impute)))
    if params.scale_features:
        numeric_steps.append(("scale", StandardScaler()))
    if not categorical:
        return Pipeline([*numeric_steps, ("model", estimator)])
    columns = ColumnTransformer(
        [("categories", category_encoder(estimator, params, len(categorical)), list(categorical))],
        remainder=Pipeline(numeric_steps) if numeric_steps else "passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline([("columns", columns), ("model", estimator)])


def build_estimator(task: str, params: ModelParams) -> BaseEstimator:
    """The estimator of params, checked to fit the task; a mistake is a SettingsError naming the field."""
    estimator_type = estimator_class(task, params.estimator)
    hyperparameters = dict(params.hyperparameters)
    try:
        if "random_state" in estimator_type().get_params():
            hyperparameters.setdefault("random_state", params.random_state)
        estimator = estimator_type(**hyperparameters)
    except TypeError as error:
        raise SettingsError(f"model.hyperparameters for {params.estimator}: {error}") from None
    fits_task = is_classifier if task == "classification" else is_regressor
    if not fits_task(estimator):
        raise SettingsError(f"model.estimator {params.estimator!r} is not a {task} estimator")
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        raise SettingsError(
            f"model.estimator {params.estimator!r} gives no class probabilities (predict_proba), "
            "which roc_auc and log_loss need"
        )
    return estimator


def category_encoder(estimator: BaseEstimator, params: ModelParams, count: int) -> BaseEstimator:
    """How the `count` categorical columns (first in the ColumnTransformer's output) reach the model.

    One-hot columns, a gap being the category "missing". An estimator with categorical support of
    its own (HistGradientBoosting's `categorical_features`) gets one column of category codes each,
    and is told which: fewer columns, and splits on sets of categories. Either way categories rarer
    than model.min_category_share are grouped, and one training never saw is taken as rare (one-hot)
    or missing (codes), never an error.
    """
    rare = params.min_category_share or None
    if "categorical_features" in estimator.get_params():
        if "categorical_features" not in params.hyperparameters:
            estimator.set_params(categorical_features=list(range(count)))
        return OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            min_frequency=rare,
        )
    return Pipeline(
        [
            ("fill", SimpleImputer(strategy="constant", fill_value="missing")),
            (
                "encode",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist", min_frequency=rare, sparse_output=False
                ),
            ),
        ]
    )


def takes_missing_numbers(pipeline: Pipeline, params: ModelParams) -> bool:
    """Whether the model answers for a row with a number missing: it fills them, or its estimator
    takes NaN as it is (HistGradientBoosting does)."""
    return params.impute != "none" or get_tags(pipeline.named_steps["model"]).input_tags.allow_nan


def fit(settings: Settings, x_train: pd.DataFrame, y_train: pd.Series, source: str) -> Pipeline:
    """The pipeline of params fitted on the training rows; a mistake of params is a SettingsError
    naming the params file and the field, never a traceback."""
    params = settings.params
    if params.task == "classification" and y_train.nunique() < 2:
        raise DataError(
            f"data.target {params.data.target!r} of {source} has a single class "
            f"({y_train.unique().tolist()}) in the training rows; a classifier needs two or more"
        )
    try:
        pipeline = build_pipeline(params.task, params.model, profile.categorical_columns(x_train))
    except SettingsError as error:
        raise SettingsError(f"{settings.params_file}: {error}") from None
    try:
        return pipeline.fit(x_train, y_train)
    except (ValueError, TypeError) as error:
        raise SettingsError(
            f"{settings.params_file}: model.estimator {params.model.estimator!r} with "
            f"model.hyperparameters {dict(params.model.hyperparameters)} cannot be fitted "
            f"on {source}: {error}"
        ) from None


def trusted_types(settings: Settings, pipeline: Pipeline) -> list[str]:
    """The types skops must be told to trust to save `pipeline` (MLflow checks them on saving).

    skops trusts few types by default (tree models hold others). Every load trusts only the types of
    `integrity.TRUSTED_MODULES`, whatever the model's files say; a pipeline holding any other type
    could never be loaded, so it is refused here, before it is registered. The registry's integrity
    digest guards the files against a change after registration.
    """
    from skops import io as skops_io

    types = skops_io.get_untrusted_types(data=skops_io.dumps(pipeline))
    if refused := integrity.untrusted(types):
        raise SettingsError(
            f"{settings.params_file}: model.estimator {settings.params.model.estimator!r} holds "
            f"types the loader does not trust ({', '.join(refused)}); it loads types of "
            f"{', '.join(integrity.TRUSTED_MODULES)} only (integrity.TRUSTED_MODULES)"
        )
    return types


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


def run_params(params: Params, train_rows: int, holdout_rows: int) -> dict[str, object]:
    """The training run's MLflow params: the model's settings and how many rows each side had."""
    return {
        "estimator": params.model.estimator,
        "impute": params.model.impute,
        "scale_features": params.model.scale_features,
        "min_category_share": params.model.min_category_share,
        "holdout_fraction": params.data.holdout_fraction,
        "train_rows": train_rows,
        "holdout_rows": holdout_rows,
        **flatten("hp", params.model.hyperparameters),
    }


def model_metadata(
    settings: Settings,
    pipeline: Pipeline,
    x_train: pd.DataFrame,
    y_train: pd.Series,
    roles: dict[str, list[str]],
) -> dict:
    """In the MLmodel file: the service judges requests against the profile, monitoring traffic;
    the roles say which columns of the data the model reads (and which as categories) and which it
    was told to leave out."""
    metadata = {
        "feature_profile": profile.feature_profile(
            x_train, takes_missing_numbers(pipeline, settings.params.model)
        ),
        "feature_roles": {**roles, "categorical": profile.categorical_columns(x_train)},
    }
    if settings.params.task == "regression":
        metadata["prediction_buckets"] = profile.prediction_buckets(y_train)
    return metadata


def log_card(
    settings: Settings,
    registry: Registry,
    version: int,
    pipeline: Pipeline,
    split: tuple,
    metrics: dict[str, float],
    metadata: dict,
    lineage: dict[str, str],
) -> dict:
    """The version's model card, from what training knows, logged with the version."""
    _, y_train, x_holdout, y_holdout = split
    params = settings.params
    facts = model_card.Facts(
        model_name=params.registry.model_name,
        version=version,
        task=params.task,
        estimator=params.model.estimator,
        about=model_card.about(settings.project_dir),
        source=params.data.source,
        train_target=y_train,
        holdout_labels=np.asarray(y_holdout),
        holdout_predictions=np.asarray(pipeline.predict(x_holdout)),
        holdout_metrics=metrics,
        feature_profile=metadata["feature_profile"],
        feature_roles=metadata["feature_roles"],
        lineage=lineage,
    )
    card = model_card.build(facts)
    model_card.log(registry, card)
    return card


def input_example(x_train: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """Rows saved with the model as its example (the service's /docs page shows the first):
    complete ones, where there are enough."""
    complete = x_train.dropna()
    return (complete if len(complete) >= rows else x_train).head(rows)


def train(
    settings: Settings, registry: Registry, frame: pd.DataFrame, alias: bool = True
) -> TrainingResult:
    """Fit on the training rows, score on the frozen holdout, register, and alias as `challenger`
    (`alias` False: registered only, as pull request runs do, which never move an alias)."""
    params = settings.params
    source = settings.resolve(params.data.source)
    missing_target = data.missing_targets(frame, params.data, source)
    roles = data.feature_roles([str(name) for name in frame.columns], params.data, source)
    split = data.train_holdout_split(frame, params.data, source)
    x_train, y_train, x_holdout, y_holdout = split
    pipeline = fit(settings, x_train, y_train, source)
    trusted = trusted_types(settings, pipeline)  # refused here, before anything is registered
    metrics = evaluation.score(pipeline, x_holdout, y_holdout, params.task, params.gate)
    lineage = {
        "git_sha": git_sha(settings),
        "data_fingerprint": data.fingerprint(frame),
        "data_source": params.data.source,
        "params_hash": params_hash(settings),
    }
    if version_id := datasets.source_version(params.data.source):
        lineage[model_card.LINEAGE_S3_VERSION] = version_id
{%- if cookiecutter.feature_store == "feast" %}
    # Which feature service and views made the model, at which versions.
    if settings.params.feature_store is not None:
        lineage |= feature_store.lineage(settings)
{%- endif %}
    metadata = model_metadata(settings, pipeline, x_train, y_train, roles)
    registry.configure()  # the run goes to the project's experiment
    with mlflow.start_run(run_name=f"train-{params.model.estimator}") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params(run_params(params, train_rows=len(x_train), holdout_rows=len(x_holdout)))
        mlflow.log_metrics({f"holdout_{name}": value for name, value in metrics.items()})
        datasets.log_training_data(frame, x_train.index, x_holdout.index, params.data, version_id)
        example = input_example(x_train)
        model_info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=params.registry.model_name,
            skops_trusted_types=trusted,
            metadata=metadata,
        )
    model_version = int(model_info.registered_model_version)
    registry.tag_version(model_version, lineage)
    lineage |= {"run_id": run.info.run_id, "model_sha256": registry.record_digest(model_version)}
    card = log_card(settings, registry, model_version, pipeline, split, metrics, metadata, lineage)
    if alias:
        registry.move_alias(CHALLENGER, model_version, why="newly trained")
    return TrainingResult(
        run_id=run.info.run_id,
        model_version=model_version,
        metrics=metrics,
        data_fingerprint=lineage["data_fingerprint"],
        params_hash=lineage["params_hash"],
        git_sha=lineage["git_sha"],
        dropped_rows_missing_target=missing_target,
        card=card,
    )
