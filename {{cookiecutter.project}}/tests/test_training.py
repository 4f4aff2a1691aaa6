"""Training from params, and what a run records in MLflow (real sqlite tracking store)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import data, profile, training
from {{ cookiecutter.package }}.errors import SettingsError
from {{ cookiecutter.package }}.params import ModelParams
from {{ cookiecutter.package }}.registry import CHALLENGER, Registry
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params


@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS["{{ cookiecutter.task }}"]))
def test_every_listed_estimator_builds_and_fits(settings, frame, estimator):
    params = ModelParams(estimator=estimator, hyperparameters={})
    pipeline = training.build_pipeline(settings.params.task, params)
    features = frame.drop(columns=[settings.params.data.target])
    pipeline.fit(features, frame[settings.params.data.target])
    assert len(pipeline.predict(features.head(3))) == 3


def test_unknown_estimator_and_bad_hyperparameters_are_named(settings):
    with pytest.raises(ValueError, match="'svm' is not a {{ cookiecutter.task }} estimator"):
        training.build_pipeline(settings.params.task, ModelParams(estimator="svm"))
    estimator = sorted(training.ESTIMATORS["{{ cookiecutter.task }}"])[0]
    bad = ModelParams(estimator=estimator, hyperparameters={"no_such_knob": 1})
    with pytest.raises(ValueError, match="no_such_knob"):
        training.build_pipeline(settings.params.task, bad)


def test_estimators_by_dotted_path_and_their_mistakes_are_named(settings):
    task = settings.params.task
    other = "regression" if task == "classification" else "classification"
    path = {
        "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
        "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
    }
    pipeline = training.build_pipeline(task, ModelParams(estimator=path[task]))
    assert type(pipeline.named_steps["model"]).__name__ == path[task].rsplit(".", 1)[1]
    mistakes = {
        "sklearn.ensemble.NoSuchModel": "cannot be imported",
        "no_such_package.Model": "cannot be imported",
        path[other]: f"is not a {task} estimator",
        "sklearn.preprocessing.StandardScaler": f"is not a {task} estimator",
    }
    for estimator, why in mistakes.items():
        with pytest.raises(SettingsError, match=f"model.estimator '{estimator}' {why}"):
            training.build_pipeline(task, ModelParams(estimator=estimator))


def test_missing_values_are_imputed_before_the_estimator(settings, frame):
    """The default pipeline takes rows with gaps; without imputation, the same rows are refused."""
    features, labels = data.split_features_target(frame, settings.params.data)
    gaps = features.mask(np.random.default_rng(0).random(features.shape) < 0.1)
    pipeline = training.build_pipeline(settings.params.task, settings.params.model)
    assert pipeline.steps[0][0] == "impute"
    assert len(pipeline.fit(gaps, labels).predict(gaps)) == len(gaps)
    bare = settings.params.model.model_copy(update={"impute": "none"})
    with pytest.raises(ValueError, match="NaN"):
        training.build_pipeline(settings.params.task, bare).fit(gaps, labels)


def with_a_category(settings, frame):
    """The project's features with a text column that moves the target, gaps in it included."""
    features, target = data.split_features_target(frame, settings.params.data)
    rng = np.random.default_rng(0)
    ranks = target.rank(pct=True).to_numpy()
    grade = np.where(ranks > 0.5, "high", "low").astype(object)
    grade[rng.random(len(grade)) < 0.1] = None
    return profile.as_model_input(features.assign(grade=grade), ["grade"]), target


@pytest.mark.parametrize("native", [False, True])
def test_text_columns_are_encoded_inside_the_pipeline(settings, frame, native):
    """One-hot categories, or for HistGradientBoosting its own categorical support: either way a
    gap and a category training never saw are answered, not refused."""
    features, target = with_a_category(settings, frame)
    task = settings.params.task
    estimator = (
        "sklearn.ensemble.HistGradientBoosting"
        + ("Classifier" if task == "classification" else "Regressor")
        if native
        else settings.params.model.estimator
    )
    params = settings.params.model.model_copy(
        update={"estimator": estimator, "hyperparameters": {}}
    )
    pipeline = training.build_pipeline(task, params, ["grade"]).fit(features, target)
    encoder = pipeline.named_steps["columns"].named_transformers_["categories"]
    if native:
        assert type(encoder).__name__ == "OrdinalEncoder"
        assert pipeline.named_steps["model"].categorical_features == [0]
    else:
        assert sorted(encoder.named_steps["encode"].categories_[0]) == ["high", "low", "missing"]
    odd = features.head(3).assign(grade=["never seen", None, "high"])
    assert len(pipeline.predict(profile.as_model_input(odd, ["grade"]))) == 3
    high, low = (pipeline.predict(features.head(50).assign(grade=g)) for g in ("high", "low"))
    assert (high != low).any()  # the category reaches the model


def test_a_text_column_is_recorded_as_categorical_with_the_model(settings, registry, frame):
    features, target = with_a_category(settings, frame)
    labelled = features.assign(**{settings.params.data.target: target})
    training.train(settings, registry, labelled)
    info = mlflow.models.get_model_info(registry.model_uri(1))
    assert info.metadata["feature_roles"]["categorical"] == ["grade"]
    grade = info.metadata["feature_profile"]["grade"]
    assert grade["kind"] == "categorical" and grade["categories"] == ["high", "low"]
    inputs = {spec["name"]: spec["type"] for spec in info.signature.inputs.to_dict()}
    assert inputs["grade"] == "string"
    numeric = next(name for name in features.columns if name != "grade")
    assert info.metadata["feature_profile"][numeric]["nullable"] is True  # model.impute: median


def test_train_registers_a_challenger_with_lineage(settings, registry, frame):
    result = training.train(settings, registry, frame)
    assert result.model_version == 1
    assert registry.aliases() == {"challenger": 1}

    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["data_fingerprint"] == result.data_fingerprint
    assert run.data.tags["params_hash"] == result.params_hash
    assert "git_sha" in run.data.tags
    assert run.data.params["estimator"] == settings.params.model.estimator
    primary = settings.params.gate.primary_metric
    assert run.data.metrics[f"holdout_{primary}"] == pytest.approx(result.metrics[primary])

    version = client.get_model_version(settings.params.registry.model_name, "1")
    assert version.tags["data_fingerprint"] == result.data_fingerprint
    model_info = mlflow.models.get_model_info(registry.model_uri(1))
    assert model_info.signature is not None
    assert model_info.saved_input_example_info is not None
    roles = model_info.metadata["feature_roles"]
    target = settings.params.data.target
    features = [c for c in frame.columns if c != target]
    assert roles == {"features": features, "dropped": [], "categorical": []}
    assert "feature_profile" in model_info.metadata
    requirements = mlflow.pyfunc.get_model_dependencies(registry.model_uri(1))
    pinned = Path(requirements).read_text()
    assert "scikit-learn==" in pinned and "pytest" not in pinned

    second = training.train(settings, registry, frame)
    assert second.model_version == 2
    assert registry.alias_version(CHALLENGER) == 2
    assert second.params_hash == result.params_hash  # same params, same hash


@pytest.mark.parametrize(
    "estimator",
    [
        *sorted(training.ESTIMATORS["{{ cookiecutter.task }}"]),
        "sklearn.ensemble.HistGradientBoosting{{ 'Classifier' if cookiecutter.task == 'classification' else 'Regressor' }}",
    ],
)
def test_registered_model_predicts_like_the_trained_pipeline(project, estimator):
    """Every estimator survives the round trip through the registry (skops trusted types included),
    also one named by dotted path whose types skops does not trust by default."""
    write_params(project, model={"estimator": estimator, "hyperparameters": {}})
    settings = load_settings(project / "params.yaml")
    frame = data.training_table(settings)
    registry = Registry(settings)
    result = training.train(settings, registry, frame)
    loaded = registry.load_model(result.model_version)
    x_train, y_train, x_holdout, _ = data.train_holdout_split(frame, settings.params.data)
    refit = training.build_pipeline(settings.params.task, settings.params.model)
    refit.fit(x_train, y_train)
    np.testing.assert_allclose(loaded.predict(x_holdout), refit.predict(x_holdout))
