"""The A/B test on live labels, on real parts: two versions registered in a real MLflow sqlite store,
v2 trained where the strongest feature's relation to the target is broken for half of the data, answer
real rows in turns through the service's own prediction log writer (two writers, one location), and
labels arrive in two files. `ab-test` must call no winner before enough labels, then name v2 worse.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import cli, data, prediction_log, registry, rollout, training
from {{ cookiecutter.package }}.monitoring import ab_test
from {{ cookiecutter.package }}.rollout import Measurement, Traffic, UpstreamStats

from .conftest import write_params

MIN_ROWS = 150  # per version; the default bake's data gives each version about 220 to 285 rows


def broken_on_a_slice(frame: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    """The data with the target turned against the strongest feature where it is above its median
    (classification: the class flipped; regression: mirrored around the slice's mean)."""
    features = frame.drop(columns=[target]).select_dtypes("number")
    strongest = features.corrwith(frame[target]).abs().idxmax()
    in_slice = frame[strongest] > frame[strongest].median()
    broken = frame.copy()
    y = broken.loc[in_slice, target]
    broken.loc[in_slice, target] = 1 - y if task == "classification" else 2 * y.mean() - y
    return broken


def serve_in_turns(models: dict, rows: pd.DataFrame, location: str, task: str) -> pd.DataFrame:
    """Requests of 1, 2 and 3 rows answered by the versions in turns, each logged by its version's
    own `PredictionLog` as the service logs them; returns the labels (request_id, row, label)."""
    features = [name for name in rows.columns if name != "target"]
    logs = {
        version: prediction_log.PredictionLog(
            location,
            features,
            version,
            1.0,
            3600,
            classes=[str(c) for c in model.classes_] if task == "classification" else (),
        )
        for version, model in models.items()
    }
    labels, start = [], 0
    for turn, size in enumerate(itertools.cycle((1, 2, 3))):
        request = rows.iloc[start : start + size]
        if request.empty:
            break
        start += size
        version = list(models)[turn % 2]
        model, request_id = models[version], uuid.uuid4().hex
        if task == "classification":
            probabilities = model.predict_proba(request[features])
            predictions = model.classes_.take(probabilities.argmax(axis=1)).tolist()
        else:
            probabilities, predictions = None, model.predict(request[features]).tolist()
        values = request[features].to_numpy(np.float64)
        logs[version].record(request_id, "predict", values, predictions, probabilities)
        labels += [(request_id, row, label) for row, label in enumerate(request["target"])]
    for log in logs.values():
        log.close()
    return pd.DataFrame(labels, columns=["request_id", "row", "label"])


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project: Path) -> dict:
    return json.loads((project / "reports" / "ab_test.json").read_text())


@pytest.fixture
def two_versions(project, settings, frame) -> dict:
    """v1 trained on the data, v2 on the data broken on a slice: both real registered versions."""
    models = registry.Registry(settings)
    task, target = settings.params.task, settings.params.data.target
    good = training.train(settings, models, frame).model_version
    worse = training.train(settings, models, broken_on_a_slice(frame, target, task)).model_version
    return {version: models.load_model(version) for version in (good, worse)}


def test_ab_test_names_the_worse_version_once_enough_labels_arrived(
    project, settings, frame, two_versions
):
    write_params(
        project,
        monitoring={
            "prediction_log": "logs/predictions",
            "labels": "logs/labels",
            "ab_min_labelled_rows": MIN_ROWS,
        },
    )
    task = settings.params.task
    rows = data.split_features_target(frame, settings.params.data)[0].assign(
        target=frame[settings.params.data.target]
    )
    labels = serve_in_turns(two_versions, rows, str(project / "logs" / "predictions"), task)
    written = list((project / "logs" / "predictions").rglob("*.parquet"))
    assert len(written) == 2  # one file per writer: neither overwrote the other's
    (project / "logs" / "labels").mkdir(parents=True)
    labels.iloc[:100].to_csv(project / "logs" / "labels" / "first.csv", index=False)

    assert run("ab-test") == cli.EXIT_OK
    early = report(project)
    assert (early["decision"], early["winner"], early["interval"]) == (ab_test.TOO_FEW, None, None)
    assert early["a"]["labelled_rows"] + early["b"]["labelled_rows"] == 100

    labels.iloc[100:].to_csv(project / "logs" / "labels" / "rest.csv", index=False)
    assert run("ab-test") == cli.EXIT_OK
    result = report(project)
    good, worse = two_versions
    assert (result["a"]["version"], result["b"]["version"]) == (good, worse)
    assert result["a"]["labelled_rows"] + result["b"]["labelled_rows"] == len(rows)
    assert (result["decision"], result["winner"]) == (ab_test.A_BETTER, good)
    low, high = result["interval"]
    assert low <= result["gain"] <= high < 0
    markdown = (project / "reports" / "ab_test.md").read_text()
    assert f"**A better: v{good}**" in markdown

    # A and B named the other way round: the same difference, seen from the other side
    assert run("ab-test", "--versions", str(worse), str(good)) == cli.EXIT_OK
    assert (report(project)["decision"], report(project)["winner"]) == (ab_test.B_BETTER, good)

    # the rollout report of these two versions carries the A/B test
    outcome = rollout.run(
        rollout.RolloutParams(strategy="blue-green"), Healthy(), sleep=lambda seconds: None
    )
    rolled = {
        **rollout.report(outcome, good, worse),
        "ab_test": ab_test.for_versions(result, (good, worse)),
    }
    assert "A/B test on live labels" in rollout.markdown(rolled)
    assert ab_test.for_versions(result, (good, 99)) is None


def test_versions_must_be_two(project, settings, capsys):
    write_params(project, monitoring={"prediction_log": "logs/predictions"})
    (project / "logs" / "predictions").mkdir(parents=True)
    (project / "logs" / "labels").mkdir(parents=True)

    assert run("ab-test", "--versions", "3", "3") == cli.EXIT_ERROR
    assert "A and B are both v3" in capsys.readouterr().err
    assert run("ab-test") == cli.EXIT_ERROR
    assert "holds versions [], not two" in capsys.readouterr().err


class Healthy:
    """A traffic target whose every step is healthy: the rollout report around the A/B test."""

    def route(self, traffic: Traffic) -> None:
        pass

    def measure(self) -> Measurement:
        return Measurement(candidate=UpstreamStats(50, 0, 10.0))
