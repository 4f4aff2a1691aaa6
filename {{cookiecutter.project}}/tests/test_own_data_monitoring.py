"""Bring your own data, after the model is out: batch scoring, data drift and performance on the data
sets of `test_own_data` (text categories, gaps, string and multiclass labels, a regression).

The prediction log is written here as the service writes it (`prediction_log.write_partition`, one
column per feature: float64, or text for a categorical one), so no server is started.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from {{ cookiecutter.package }} import cli, data, prediction_log
from {{ cookiecutter.package }}.batch import chunked
from {{ cookiecutter.package }}.errors import DataError
from {{ cookiecutter.package }}.metrics import Classes
from {{ cookiecutter.package }}.monitoring import drift, performance
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.rollout import nginx
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params
from .test_own_data import CATEGORICAL, walk_to_batch

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW_ROWS = 120


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def served(model, rows: pd.DataFrame, start: datetime, categorical: set[str]) -> pa.Table:
    """`rows` answered by `model` one request each over the hour from `start`, as the service logs
    them: the log's columns, categorical features as text, a gap as null."""
    count = len(rows)
    logged_at = int(start.timestamp() * 1000) + np.arange(count) * (3_600_000 // count)
    probability = (
        pa.array(model.predict_proba(rows).max(axis=1))
        if hasattr(model, "classes_")
        else pa.nulls(count, pa.float64())
    )
    columns = {
        prediction_log.REQUEST_ID: [uuid.uuid4().hex for _ in range(count)],
        prediction_log.ROW: pa.array(np.zeros(count), pa.int32()),
        prediction_log.LOGGED_AT: pa.array(logged_at, pa.timestamp("ms", tz="UTC")),
        prediction_log.MODEL_VERSION: pa.array(np.ones(count), pa.int64()),
        prediction_log.ENDPOINT: ["predict"] * count,
        **{
            name: pa.array(rows[name], pa.string() if name in categorical else pa.float64())
            for name in rows.columns
        },
        prediction_log.PREDICTION: pa.array(model.predict(rows)),
        prediction_log.PROBABILITY: probability,
    }
    return pa.table(columns)


def shifted(rows: pd.DataFrame, feature: str, seed: int) -> pd.DataFrame:
    """The rows with most of `feature` moved to its first category."""
    rng = np.random.default_rng(seed)
    first = sorted(rows[feature].dropna().unique())[0]
    return rows.assign(**{feature: rows[feature].mask(rng.random(len(rows)) < 0.85, first)})


def check_batch(scored: pd.DataFrame, task: str, model) -> None:
    """Labels in their own type and, for a classifier, every class's probability beside them."""
    probabilities = [name for name in scored.columns if name.startswith("probability_")]
    assert scored["prediction"].notna().all()
    if task == "regression":
        assert probabilities == [] and scored["prediction"].dtype == "float64"
        return
    classes = list(model.classes_)
    assert probabilities == [f"probability_{label}" for label in classes]
    assert set(scored["prediction"]) <= set(classes)
    assert all(isinstance(label, str) for label in scored["prediction"])
    np.testing.assert_allclose(scored[probabilities].sum(axis=1), 1.0)
    best = np.array(classes)[scored[probabilities].to_numpy().argmax(axis=1)]
    assert (best == scored["prediction"].to_numpy()).all()


@pytest.mark.parametrize("name", sorted(CATEGORICAL))
def test_batch_drift_and_performance_on_own_data(project, name):
    """batch, then a log of two served hours: like training (no drift; labels the model got right:
    no decay), then the category mix moved (drift naming it; labels shuffled: decay)."""
    scored = walk_to_batch(project, name)
    write_params(
        project,
        monitoring={
            "prediction_log": "logs/predictions",
            "labels": "logs/labels",
            "window_hours": 1,
            "min_window_rows": 50,
        },
    )
    settings = load_settings(project / "params.yaml")
    task, feature = settings.params.task, CATEGORICAL[name]
    model = Registry(settings).load_model(1)
    check_batch(scored, task, model)

    reference, _ = data.split_features_target(
        data.read_table(settings.resolve(settings.params.data.source)), settings.params.data
    )
    write_params(project, monitoring={"drift_share": 1 / len(reference.columns)})
    calm = reference.sample(WINDOW_ROWS, random_state=1).reset_index(drop=True)
    moved = shifted(
        reference.sample(WINDOW_ROWS, random_state=2).reset_index(drop=True), feature, 3
    )
    labels = project / "logs" / "labels"
    labels.mkdir(parents=True)
    for hour, rows in enumerate([calm, moved]):
        table = served(model, rows, START + timedelta(hours=hour), {feature})
        prediction_log.write_partition(str(project / "logs" / "predictions"), "2026-03-01", table)
        label = table[prediction_log.PREDICTION].to_pandas()
        if hour == 1:  # the model is wrong now: the labels belong to other rows
            label = label.sample(frac=1, random_state=4).reset_index(drop=True)
        pd.DataFrame(
            {"request_id": table[prediction_log.REQUEST_ID].to_pandas(), "label": label}
        ).to_csv(labels / f"hour-{hour}.csv", index=False)

    assert run("drift", "--until", iso(START + timedelta(hours=1))) == cli.EXIT_OK
    assert report(project, "drift")["drifted_features"] == []
    assert run("drift", "--until", iso(START + timedelta(hours=2))) == cli.EXIT_CHECK_FAILED
    result = report(project, "drift")
    assert result["drifted_features"] == [feature]
    assert result["features"][feature]["method"].split()[0] in {"Z-test", "chi-square"}

    until = iso(START + timedelta(hours=2))
    assert run("performance", "--since", iso(START), "--until", until) == cli.EXIT_CHECK_FAILED
    result = report(project, "performance")
    assert [w["decayed"] for w in result["windows"]] == [False, True]
    assert [w["labelled_rows"] for w in result["windows"]] == [WINDOW_ROWS, WINDOW_ROWS]


# The pieces, on hand-made data


def test_text_categories_go_to_evidently_as_categories_and_gaps_do_not_crash_it():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "size": rng.normal(0, 1, 300),
            # more colours than a numeric feature may have to count as categories
            "colour": rng.choice([f"colour {n:02d}" for n in range(12)], 300),
        }
    )
    window = reference.sample(150, random_state=0).reset_index(drop=True)
    window.loc[:9, "size"], window.loc[10:19, "colour"] = np.nan, None

    result = drift.data_drift(reference, window, 0.5)

    assert drift.categorical_features(reference) == ["colour"]
    assert result["features"]["colour"]["method"].split()[0] == "chi-square"
    assert result["drifted_features"] == []
    window["colour"] = "colour 00"
    assert drift.data_drift(reference, window, 0.5)["drifted_features"] == ["colour"]


def joined(labels: list, predictions: list, probability: list | None = None) -> pd.DataFrame:
    count = len(labels)
    log = pd.DataFrame(
        {
            "request_id": [str(n) for n in range(count)],
            "row": 0,
            "prediction": predictions,
            "probability": probability or [None] * count,
        }
    )
    answers = pd.DataFrame({"request_id": log["request_id"], "row": 0, "label": labels})
    return performance.join_labels(log, answers)


def test_binary_text_labels_are_scored_with_their_positive_class():
    rows = joined(["yes", "no", "yes", "no"], ["yes", "no", "no", "no"], [0.9, 0.8, 0.6, 0.7])
    classes = Classes.of(["no", "yes"])

    value, why = performance.window_metric("classification", "roc_auc", rows, classes)

    # P(yes) is 0.9, 0.2, 0.4, 0.3: each "yes" outranks each "no"
    assert (value, why) == (1.0, None)
    f1, _ = performance.window_metric("classification", "f1", rows, classes)
    assert f1 == pytest.approx(2 / 3)


def test_multiclass_is_judged_by_the_model_classes_and_not_on_one_probability():
    """A window that never saw "c" is still scored over the model's three classes; roc_auc needs
    every class's probability, which rows without the service's class_probabilities do not hold."""
    rows = joined(["a", "b", "a", "b"], ["a", "b", "b", "b"], [0.9, 0.8, 0.6, 0.7])
    classes = Classes.of(["a", "b", "c"])

    f1, _ = performance.window_metric("classification", "f1", rows, classes)
    auc, why = performance.window_metric("classification", "roc_auc", rows, classes)

    assert f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)  # macro over a, b and the unseen c
    assert auc is None and "every class's probability" in why

    # Logged by the service, every class's probability judges log_loss over all three classes.
    logged = [{"a": 0.9, "b": 0.05, "c": 0.05}, {"a": 0.1, "b": 0.8, "c": 0.1}] * 2
    with_classes = rows.assign(class_probabilities=logged)
    loss, why = performance.window_metric("classification", "log_loss", with_classes, classes)
    picked = [0.9, 0.8, 0.9, 0.8]  # each row's probability of its label ("a", "b", "a", "b")
    assert why is None and loss == pytest.approx(-np.mean(np.log(picked)))


def test_numeric_labels_still_have_to_be_numbers():
    with pytest.raises(DataError, match="not a number"):
        joined(["1", "one"], [1, 0])
    assert joined(["1", "0"], [1, 0])["label"].tolist() == [1, 0]


def test_batch_scores_text_categories_with_gaps(tmp_path):
    frame = pd.DataFrame(
        {
            "size": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0] * 10,
            "colour": ["red", "blue", "red", np.nan, "blue", "red"] * 10,
            "kind": ["x", "y", "x", "y", "y", "x"] * 10,
        }
    )
    encode = ColumnTransformer(
        [
            ("numbers", SimpleImputer(), ["size"]),
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["colour"],
            ),
        ]
    )
    model = make_pipeline(encode, LogisticRegression()).fit(
        frame[["size", "colour"]], frame["kind"]
    )
    source, destination = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.drop(columns="kind").to_csv(source, index=False)

    chunked.score_file(
        model, ["size", "colour"], 3, str(source), str(destination), 25, categorical={"colour"}
    )

    scored = pd.read_csv(destination)
    assert list(scored.columns) == [
        "size", "colour", "prediction", "probability_x", "probability_y", "model_version", "scored_at"
    ]  # fmt: skip
    assert set(scored["prediction"]) <= {"x", "y"} and len(scored) == len(frame)
    assert scored["colour"].isna().sum() == 10  # a gap is passed through as a gap
    # and scored as the model was fitted on it: filled with "missing", not taken as unknown
    expected = model.predict_proba(frame[["size", "colour"]])
    np.testing.assert_allclose(scored[["probability_x", "probability_y"]], expected)


def test_rollout_compares_labels_by_equality_and_numbers_within_tolerance():
    assert nginx.agree('["setosa","virginica"]', '["setosa","virginica"]', None) is True
    assert nginx.agree('["setosa","virginica"]', '["setosa","versicolor"]', None) is False
    assert (
        nginx.agree('["yes"]', '["yes"]', 0.05) is True
    )  # labels even where numbers are tolerated
    assert nginx.agree("[100.0]", "[104.0]", 0.05) is True
