"""Bring your own data: the loop on data sets the template does not bundle, and the mistakes a user
makes on the way, each an exit 2 naming the field.

The data is generated here, small: three string-labelled classes with a text category and gaps in the
features, a binary target labelled "yes"/"no" with a text category, and a regression with a text
category, gaps and an id column to leave out.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import cli, data
from {{ cookiecutter.package }}.deploy import payloads, server
from {{ cookiecutter.package }}.registry import CHAMPION, Registry
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params

ROWS = 300
SPECIES = ("setosa", "versicolor", "virginica")
HABITATS = ("meadow", "forest", "shore")


def flowers(rng: np.random.Generator) -> pd.DataFrame:
    """Three species told apart by their petals, some measurements missing, a few unlabelled."""
    species = rng.integers(0, 3, ROWS)
    frame = pd.DataFrame(
        {
            "sepal_length": 5 + 0.6 * species + rng.normal(0, 0.4, ROWS),
            "sepal_width": 3 + rng.normal(0, 0.3, ROWS),
            "petal_length": 1.5 + 2 * species + rng.normal(0, 0.4, ROWS),
            "petal_width": 0.2 + 0.9 * species + rng.normal(0, 0.2, ROWS),
            # Mostly where the species grows, else anywhere; a few unrecorded.
            "habitat": np.where(
                rng.random(ROWS) < 0.7,
                np.array(HABITATS)[species],
                np.array(HABITATS)[rng.integers(0, 3, ROWS)],
            ).astype(object),
            "species": np.array(SPECIES)[species],
        }
    )
    frame.loc[rng.random(ROWS) < 0.05, "sepal_width"] = np.nan
    frame.loc[rng.random(ROWS) < 0.05, "petal_width"] = np.nan
    frame.loc[rng.random(ROWS) < 0.05, "habitat"] = None
    frame.loc[frame.index[:4], "species"] = None  # 4 of 300: under data.max_missing_target_share
    return frame


def churn(rng: np.random.Generator) -> pd.DataFrame:
    """Customers who left ("yes") or stayed ("no"), on one of three contracts."""
    tenure = rng.integers(1, 72, ROWS)
    calls = rng.poisson(2, ROWS)
    contract = rng.choice(["monthly", "yearly", "two-year"], ROWS, p=[0.5, 0.3, 0.2])
    risk = -0.08 * tenure + 0.8 * calls + (contract == "monthly") + rng.normal(0, 1, ROWS)
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": rng.uniform(20, 120, ROWS).round(2),
            "support_calls": calls,
            "contract": contract,
            "churned": np.where(risk > np.median(risk), "yes", "no"),
        }
    )


def prices(rng: np.random.Generator) -> pd.DataFrame:
    """Prices of flats in three districts, with an id (not a feature) and some unknown ages."""
    area = rng.uniform(30, 150, ROWS)
    rooms = np.clip((area / 30).round() + rng.integers(-1, 2, ROWS), 1, None)
    age = rng.uniform(0, 80, ROWS)
    district = rng.choice(["centre", "harbour", "suburbs"], ROWS)
    premium = np.select([district == "centre", district == "harbour"], [60_000, 25_000], 0)
    frame = pd.DataFrame(
        {
            "listing_id": rng.permutation(np.arange(100_000, 100_000 + ROWS)),
            "area": area.round(1),
            "rooms": rooms,
            "age": age.round(),
            "district": district,
            "price": (3_000 * area - 500 * age + premium + rng.normal(0, 20_000, ROWS)).round(),
        }
    )
    frame.loc[rng.random(ROWS) < 0.08, "age"] = np.nan
    return frame


# Each data set's text column: the model takes it as categories.
CATEGORICAL = {"flowers": "habitat", "churn": "contract", "prices": "district"}
CLASSIFIER = {"estimator": "logistic_regression", "hyperparameters": {"max_iter": 1000}}
# name -> (data, params sections, rows without a target)
DATA_SETS = {
    "flowers": (
        flowers,
        {
            "task": "classification",
            "data": {"target": "species"},
            "model": CLASSIFIER,
            "gate": {"primary_metric": "f1", "guards": {"accuracy": 0.01}},
        },
        4,
    ),
    "churn": (
        churn,
        {
            "task": "classification",
            "data": {"target": "churned"},
            "model": {
                **CLASSIFIER,
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "hyperparameters": {"max_iter": 50},
            },
            "gate": {"primary_metric": "roc_auc", "guards": {"accuracy": 0.01}},
        },
        0,
    ),
    "prices": (
        prices,
        {
            "task": "regression",
            "data": {"target": "price", "drop": ["listing_id"]},
            "model": {"estimator": "ridge", "hyperparameters": {"alpha": 1.0}},
            "gate": {"primary_metric": "rmse", "guards": {"mae": 1000.0}},
        },
        0,
    ),
}


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def bring(project: Path, name: str) -> pd.DataFrame:
    """The data set `name` written into the scratch project, and params.yaml pointed at it."""
    make, sections, _ = DATA_SETS[name]
    frame = make(np.random.default_rng(7))
    data.write_table(frame, str(project / "data" / f"{name}.csv"))
    location = f"data/{name}.csv"
    write_params(
        project,
        task=sections["task"],
        data={**sections["data"], "source": location},
        validation={"suite": f"validation/{name}.json"},
        model={**sections["model"], "scale_features": True},
        gate=sections["gate"],
        batch={"input": location, "output": f"reports/{name}-predictions.parquet"},
        feature_store=None,  # a file with the features in it, as a user first brings data
    )
    return frame


def walk_to_batch(project: Path, name: str) -> pd.DataFrame:
    """suggest-suite, validate, train, evaluate, promote and batch on `name`; the scored rows."""
    frame = bring(project, name)
    for command in ("suggest-suite", "validate", "train", "evaluate", "promote", "batch"):
        assert run(command) == cli.EXIT_OK, command
    missing = DATA_SETS[name][2]
    assert report(project, "train")["dropped_rows_missing_target"] == missing
    evaluated = report(project, "evaluate")
    assert evaluated["dropped_rows_missing_target"] == missing
    assert evaluated["decision"] == "promote"
    assert report(project, "batch")["rows"] == len(frame)
    return data.read_table(str(project / "reports" / f"{name}-predictions.parquet"))


@pytest.mark.parametrize("name", sorted(DATA_SETS))
def test_the_loop_runs_on_data_the_template_does_not_bundle(project, name):
    scored = walk_to_batch(project, name)
    settings = load_settings(project / "params.yaml")
    target = settings.params.data.target
    metrics = report(project, "evaluate")["candidate_metrics"]
    if settings.params.task == "classification":
        labels = set(
            data.read_table(settings.resolve(settings.params.data.source))[target].dropna()
        )
        assert set(scored["prediction"]) <= labels and len(set(scored["prediction"])) > 1
        assert metrics["accuracy"] > 0.7 and 0 < metrics["log_loss"] < 1
        assert (project / "reports" / "plots" / "confusion_matrix.png").exists()
    else:
        assert metrics["r2"] > 0.8
    info = mlflow.models.get_model_info(Registry(settings).model_uri(1))
    roles = info.metadata["feature_roles"]
    assert roles["dropped"] == list(settings.params.data.drop)
    assert target not in roles["features"] and "listing_id" not in roles["features"]
    assert roles["categorical"] == [CATEGORICAL[name]]
    category = info.metadata["feature_profile"][CATEGORICAL[name]]
    assert category["kind"] == "categorical" and len(category["categories"]) == 3
    assert Registry(settings).alias_version(CHAMPION) == 1


@pytest.mark.integration
@pytest.mark.parametrize("name", ["churn", "flowers"])
def test_own_classes_are_served_by_their_labels(project, name):
    """build, serve and smoke the champion through a real server; the answer is the label itself."""
    walk_to_batch(project, name)
    assert run("build") == cli.EXIT_OK
    settings = load_settings(project / "params.yaml")
    with server.serve(settings, report(project, "build")["bento"]) as running:
        assert run("smoke", "--url", running.url) == cli.EXIT_OK
        row = payloads.as_records(payloads.sample_rows(settings, 1))[0]
        answer = httpx.post(
            f"{running.url}/predict", json=row, headers=settings.client_headers(), timeout=30
        )
    assert report(project, "smoke")["passed"] is True
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] in (SPECIES if name == "flowers" else ("yes", "no"))


def test_a_champion_trained_on_other_features_is_scored_with_its_own(project, capsys):
    """data.drop changes between two versions: the gate scores each on the same holdout rows with
    the columns it was trained on; a column the champion reads that the data lost is an exit 2."""
    frame = walk_to_batch(project, "prices")
    settings = load_settings(project / "params.yaml")
    write_params(
        project, data={**settings.params.data.model_dump(), "drop": ["listing_id", "rooms"]}
    )
    assert run("train") == cli.EXIT_OK
    assert run("evaluate") == cli.EXIT_OK
    evaluated = report(project, "evaluate")
    assert (evaluated["candidate_version"], evaluated["champion_version"]) == (2, 1)
    assert evaluated["champion_metrics"]["r2"] > 0.8  # v1 read rooms, which v2 does not

    data.write_table(frame.drop(columns=["rooms"]), settings.resolve(settings.params.data.source))
    write_params(project, data=settings.params.data.model_dump())  # rooms no longer to drop
    capsys.readouterr()
    assert run("evaluate") == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "a model to compare reads columns ['rooms']" in error and "Traceback" not in error


def mistake(project: Path, capsys, suggest: bool = False, **sections) -> str:
    """Train with these params changed (`suggest`: on a suite suggested from the data, so that
    validation passes): exit 2, and the error line."""
    write_params(project, **sections)
    if suggest:
        assert run("suggest-suite", "--use") == cli.EXIT_OK
    assert run("train") == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


def test_target_not_in_the_data_is_named(project, capsys):
    error = mistake(project, capsys, data={"target": "outcome"})
    assert "data.target 'outcome' is not a column of" in error
    assert str(project / "data") in error


def test_listed_feature_or_dropped_column_not_in_the_data_is_named(project, capsys):
    error = mistake(project, capsys, data={"features": ["no_such_feature"]})
    assert "data.features lists ['no_such_feature']" in error
    error = mistake(project, capsys, data={"features": None, "drop": ["no_such_id"]})
    assert "data.drop lists ['no_such_id']" in error


def test_a_single_class_is_named(project, settings, frame, capsys):
    target = settings.params.data.target
    if settings.params.task != "classification":
        pytest.skip("a regression target has no classes")
    data.write_table(frame.assign(**{target: frame[target].iloc[0]}), str(project / "one.csv"))
    error = mistake(project, capsys, True, data={"source": "one.csv"}, feature_store=None)
    assert f"data.target {target!r}" in error and "single class" in error


# An estimator of each task that refuses the bundled data when it fits: negative scaled features for
# the classifier, more than one feature for the regressor.
UNFIT_ESTIMATOR = {
    "classification": "sklearn.naive_bayes.MultinomialNB",
    "regression": "sklearn.isotonic.IsotonicRegression",
}


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"estimator": "sklearn.ensemble.NoSuchForest"}, "model.estimator"),
        ({"estimator": "sklearn.cluster.KMeans", "hyperparameters": {}}, "model.estimator"),
        ({"hyperparameters": {"no_such_knob": 1}}, "model.hyperparameters"),
        ({"estimator": UNFIT_ESTIMATOR, "hyperparameters": {}}, "cannot be fitted"),
    ],
)
def test_estimator_mistakes_are_named_with_the_params_file(project, settings, capsys, model, named):
    if model.get("estimator") is UNFIT_ESTIMATOR:
        model = {**model, "estimator": UNFIT_ESTIMATOR[settings.params.task]}
    error = mistake(project, capsys, model=model)
    assert named in error and str(project / "params.yaml") in error


def test_too_many_rows_without_a_target_are_refused(project, settings, frame, capsys):
    target = settings.params.data.target
    gaps = frame.astype({target: "float64"})
    gaps.loc[gaps.index[: len(gaps) // 10], target] = np.nan
    data.write_table(gaps, str(project / "gaps.csv"))
    error = mistake(project, capsys, True, data={"source": "gaps.csv"}, feature_store=None)
    assert "data.max_missing_target_share" in error
