"""Monitoring on real parts: Evidently on logged windows, labels joined to a real registry's champion.

Prediction logs are written here with pyarrow in exactly the service's format (see `write_log`), in
local day folders or in a moto S3 server, and read back by the code under test.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import yaml

from {{ cookiecutter.package }} import cli, data, prediction_log, registry, training
from {{ cookiecutter.package }}.errors import DataError
from {{ cookiecutter.package }}.monitoring import drift, windows

from .conftest import PROJECT_DIR, write_params

START = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # windows cross midnight: two day partitions
ROWS = 200


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def logged(
    features: pd.DataFrame,
    start: datetime,
    hours: float = 1,
    *,
    task: str,
    model=None,
    version: int = 1,
) -> pd.DataFrame:
    """Log rows for `features`, spread evenly over [start, start + hours); predictions by `model`."""
    count = len(features)
    frame = features.reset_index(drop=True).astype("float64")
    if model is None:
        frame["prediction"] = np.zeros(count, "int64" if task == "classification" else "float64")
        frame["probability"] = 1.0 if task == "classification" else None
    else:
        frame["prediction"] = model.predict(features)
        frame["probability"] = (
            model.predict_proba(features).max(axis=1) if task == "classification" else None
        )
    offsets = pd.to_timedelta(np.arange(count) * hours * 3600 / count, unit="s")
    return frame.assign(
        request_id=[uuid.uuid4().hex for _ in range(count)],
        row=0,
        logged_at=pd.Timestamp(start) + offsets,
        model_version=version,
        endpoint="predict",
    )


def write_log(location: str, frame: pd.DataFrame, features: list[str], task: str) -> None:
    """`frame` as the service would have logged it: the service's own table builder and writer,
    one file per UTC day under a folder or s3:// prefix."""
    for (day, version), rows in frame.groupby([frame["logged_at"].dt.date, "model_version"]):
        values = rows[features].to_numpy(dtype=np.float64)
        moments = (rows["logged_at"].astype("int64") // 10**6).tolist()  # ns -> ms
        probabilities = rows["probability"].tolist()
        entries = [
            prediction_log.Entry(
                request_id,
                endpoint,
                moment,
                int(version),
                values[index : index + 1],
                [prediction],
                None if task == "regression" else [probabilities[index]],
            )
            for index, (request_id, endpoint, moment, prediction) in enumerate(
                zip(
                    rows["request_id"],
                    rows["endpoint"],
                    moments,
                    rows["prediction"].tolist(),
                    strict=True,
                )
            )
        ]
        table = prediction_log.to_table(entries, features)
        prediction_log.write_partition(location, day.isoformat(), table)


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


@pytest.fixture(autouse=True)
def local_log_and_labels(project) -> None:
    """Local folders for the log and the labels, whatever the bake (with s3_bucket they are in S3;
    the S3 test below sets its own)."""
    write_params(
        project, monitoring={"prediction_log": "logs/predictions", "labels": "logs/labels"}
    )


@pytest.fixture
def reference(settings, frame) -> pd.DataFrame:
    return data.split_features_target(frame, settings.params.data)[0]


def training_sample(reference: pd.DataFrame, rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Rows of the training data without replacement: no feature of either data set drifts by chance
    in such samples (40 seeds checked), where bootstrap samples sometimes do."""
    return reference.sample(rows, random_state=seed).reset_index(drop=True)


def continuous_feature(reference: pd.DataFrame) -> str:
    return next(name for name in reference.columns if reference[name].nunique() > 20)


# Reading the log


def test_read_log_reads_only_the_partitions_in_range(settings, reference, project):
    location = str(project / "logs" / "predictions")
    features = list(reference.columns)
    window = logged(training_sample(reference), START, 4, task=settings.params.task)
    write_log(location, window, features, settings.params.task)
    junk = project / "logs" / "predictions" / "date=2026-02-27" / "broken.parquet"
    junk.parent.mkdir()
    junk.write_bytes(b"not parquet")  # read only if its day were listed

    since, until = START + timedelta(hours=1), START + timedelta(hours=3)
    log = prediction_log.read_log(location, since, until, features)

    assert len(log) == ROWS // 2
    assert log["logged_at"].min() >= pd.Timestamp(since)
    assert log["logged_at"].max() < pd.Timestamp(until)
    assert sorted(log["logged_at"].dt.date.unique()) == [
        START.date(),
        (START + timedelta(1)).date(),
    ]
    with pytest.raises(DataError, match=r"broken\.parquet"):
        prediction_log.read_log(location, START - timedelta(days=2), until, features)


def test_windows_end_at_until_and_the_streak_skips_unjudged_windows():
    periods = windows.windows(windows.Window(START, START + timedelta(hours=5)), 2)
    assert [(p.start.hour, p.end.hour) for p in periods] == [(22, 23), (23, 1), (1, 3)]
    assert windows.consecutive_latest([True, False, True, True, None]) == 2
    assert windows.consecutive_latest([True, True, False]) == 0


# Data drift


def test_a_window_from_the_training_distribution_does_not_drift(settings, reference):
    result = drift.data_drift(reference, training_sample(reference), 0.5)
    assert set(result["features"]) == set(reference.columns)
    assert result["drifted"] is False
    assert result["share_drifted"] < 0.2, result["drifted_features"]


def test_a_feature_moved_by_two_standard_deviations_drifts(settings, reference):
    feature = continuous_feature(reference)
    window = training_sample(reference)
    window[feature] += 2 * reference[feature].std()

    result = drift.data_drift(reference, window, 1 / len(reference.columns))

    assert result["drifted_features"] == [feature]
    assert result["share_drifted"] == pytest.approx(1 / len(reference.columns))
    assert result["drifted"] is True
    moved = result["features"][feature]
    assert moved["method"].startswith("K-S") and moved["score"] < moved["threshold"]


def test_a_changed_category_mix_drifts(settings, reference):
    """diabetes has `sex` (two values); breast_cancer has no feature with few distinct values, so
    there the test adds one to both sides: the first feature cut into three quantile bins."""
    reference = reference.copy()
    categorical = drift.categorical_features(reference)
    if categorical:
        feature = categorical[0]
    else:
        feature = "grade"
        reference[feature] = pd.qcut(reference.iloc[:, 0], 3, labels=False).astype("float64")
        assert drift.categorical_features(reference) == [feature]
    window = training_sample(reference)
    values = sorted(reference[feature].unique())
    rng = np.random.default_rng(0)
    mix = [0.85, *[0.15 / (len(values) - 1)] * (len(values) - 1)]
    window[feature] = rng.choice(values, size=len(window), p=mix)

    result = drift.data_drift(reference, window, 1 / len(reference.columns))

    assert result["drifted_features"] == [feature]
    assert result["features"][feature]["method"].split()[0] in {"Z-test", "chi-square"}


def test_drift_command_judges_the_window_and_writes_its_reports(project, settings, reference):
    features, task = list(reference.columns), settings.params.task
    feature = continuous_feature(reference)
    write_params(project, monitoring={"window_hours": 1, "drift_share": 1 / len(features)})
    location = str(project / settings.params.monitoring.prediction_log)
    quiet = logged(training_sample(reference, seed=1), START, task=task)
    moved = training_sample(reference, seed=2)
    moved[feature] += 2 * reference[feature].std()
    write_log(location, quiet, features, task)
    write_log(location, logged(moved, START + timedelta(hours=1), task=task), features, task)
    write_log(location, logged(moved, START + timedelta(hours=2), task=task), features, task)

    assert run("drift", "--until", iso(START + timedelta(hours=1))) == cli.EXIT_OK
    calm = report(project, "drift")
    assert (calm["drifted"], calm["rows"], calm["retrain"]) == (False, ROWS, False)
    assert calm["model_versions"] == [1]

    assert run("drift", "--until", iso(START + timedelta(hours=2))) == cli.EXIT_CHECK_FAILED
    first = report(project, "drift")
    assert first["drifted"] is True and first["drifted_features"] == [feature]
    assert first["features"][feature]["drifted"] is True
    assert (first["consecutive_windows"], first["retrain"]) == (1, False)
    assert [w["drifted"] for w in first["windows"]] == [False, True]

    assert run("drift", "--until", iso(START + timedelta(hours=3))) == cli.EXIT_CHECK_FAILED
    second = report(project, "drift")
    assert (second["consecutive_windows"], second["retrain"]) == (2, True)
    assert second["window"] == {
        "start": (START + timedelta(hours=2)).isoformat(),
        "end": (START + timedelta(hours=3)).isoformat(),
    }
    html = (project / "reports" / "drift.html").read_text()
    assert f"Value Drift for column {feature}" in html  # Evidently's report of the window
    assert feature in (project / "reports" / "drift.md").read_text()


def test_too_few_rows_are_not_judged(project, settings, reference):
    task = settings.params.task
    location = str(project / settings.params.monitoring.prediction_log)
    write_log(
        location, logged(training_sample(reference, 10), START, task=task), list(reference), task
    )
    (project / "reports").mkdir()
    (project / "reports" / "drift.html").write_text("an older report")

    assert run("drift", "--since", iso(START), "--until", iso(START + timedelta(hours=1))) == 0

    result = report(project, "drift")
    assert (result["judged"], result["drifted"], result["rows"]) == (False, False, 10)
    assert "too few rows to judge" in result["reason"]
    assert "too few rows to judge" in (project / "reports" / "drift.md").read_text()
    assert not (project / "reports" / "drift.html").exists()


def test_monitor_turns_the_verdicts_into_step_outputs_and_the_issue_text(
    project, settings, reference, champion, tmp_path, monkeypatch
):
    """What monitor.yml runs: exit 0 whatever the verdicts, which go to $GITHUB_OUTPUT, the job
    summary and the issue body; drift persisting for retrain_after_windows windows asks to retrain."""
    features, task = list(reference.columns), settings.params.task
    feature = continuous_feature(reference)
    write_params(
        project,
        monitoring={
            "window_hours": 1,
            "drift_share": 1 / len(features),
            "retrain_after_windows": 1,
        },
    )
    (project / settings.params.monitoring.labels).mkdir(parents=True)  # no ground truth yet
    moved = training_sample(reference, seed=3)
    moved[feature] += 2 * reference[feature].std()
    recent = datetime.now(UTC) - timedelta(minutes=30)
    location = str(project / settings.params.monitoring.prediction_log)
    write_log(location, logged(moved, recent, hours=0.25, task=task), features, task)
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert run("monitor", "--issue-body", str(tmp_path / "issue" / "body.md")) == cli.EXIT_OK

    assert outputs.read_text().splitlines() == ["alert=true", "retrain=true"]
    marker, heading, *story = (tmp_path / "issue" / "body.md").read_text().splitlines()
    assert marker.startswith("<!--") and heading == "## Model monitoring: data drift"
    assert "- not judged (too little data): performance" in story
    assert any(feature in line for line in story)  # the drift report's table names it
    assert "## Model monitoring: data drift" in summary.read_text()
    assert (report(project, "monitor")["alert"], report(project, "monitor")["retrain"]) == (
        True,
        True,
    )


# Performance against the champion


@pytest.fixture
def champion(project, settings, frame):
    """A trained and promoted v1 in the project's sqlite registry."""
    models = registry.Registry(settings)
    trained = training.train(settings, models, frame)
    models.promote(trained.model_version, None, why="test champion")
    return models.load_model(trained.model_version)


def labels_for(
    window: pd.DataFrame, task: str, changed: float = 0.0, seed: int = 0
) -> pd.DataFrame:
    """Labels equal to the logged predictions; with `changed`, that share of rows follows another
    relationship (classification: the class flipped; regression: mirrored around the mean)."""
    rng = np.random.default_rng(seed)
    label = window["prediction"].to_numpy().copy()
    chosen = rng.random(len(label)) < changed
    if task == "classification":
        label[chosen] = 1 - label[chosen]
    else:
        label[chosen] = 2 * label.mean() - label[chosen]
    return pd.DataFrame({"request_id": window["request_id"], "label": label})


def test_performance_flags_decay_per_window_and_asks_for_retraining(
    project, settings, reference, champion
):
    task, features = settings.params.task, list(reference.columns)
    location = str(project / settings.params.monitoring.prediction_log)
    labels = project / settings.params.monitoring.labels
    labels.mkdir(parents=True)
    for hour, changed in enumerate([0.0, 0.4, 0.4, None]):
        window = logged(training_sample(reference, 80, seed=hour), START + timedelta(hours=hour),
                        task=task, model=champion)  # fmt: skip
        write_log(location, window, features, task)
        if changed is not None:  # the latest window has no labels yet
            answer = labels_for(window, task, changed, seed=hour)
            answer.to_csv(labels / f"hour-{hour}.csv", index=False)
    since, until = iso(START), iso(START + timedelta(hours=4))

    assert run("performance", "--since", since, "--until", until, "--window-hours", "1") == 1

    result = report(project, "performance")
    metric = settings.params.gate.primary_metric
    assert result["metric"] == metric and result["champion"]["version"] == 1
    assert [w["decayed"] for w in result["windows"]] == [False, True, True, None]
    assert [w["labelled_rows"] for w in result["windows"]] == [80, 80, 80, 0]
    assert "too few labelled rows" in result["windows"][-1]["reason"]
    assert result["windows"][0]["metric"] == pytest.approx(1.0)  # labels are the predictions
    assert result["windows"][1]["drop"] > result["tolerance"]
    assert (result["consecutive_windows"], result["retrain"]) == (2, True)
    assert result["latest_judged"]["start"] == (START + timedelta(hours=2)).isoformat()
    assert "not judged" in (project / "reports" / "performance.md").read_text()

    # the first window alone: labels that match the model raise no alert
    assert run("performance", "--since", since, "--until", iso(START + timedelta(hours=1))) == 0
    calm = report(project, "performance")
    assert (calm["decayed"], calm["retrain"], len(calm["windows"])) == (False, False, 1)


@pytest.mark.skipif(
    yaml.safe_load((PROJECT_DIR / "params.yaml").read_text())["task"] != "classification",
    reason="roc_auc and log_loss are classification metrics",
)
def test_probability_metrics_need_the_logged_probability(project, settings, reference, champion):
    write_params(project, gate={"primary_metric": "roc_auc", "guards": {}})
    task, features = settings.params.task, list(reference.columns)
    location = str(project / settings.params.monitoring.prediction_log)
    labels = project / settings.params.monitoring.labels
    labels.mkdir(parents=True)
    window = logged(training_sample(reference, 120), START, 2, task=task, model=champion)
    window.loc[window.index >= 60, "probability"] = None  # the second hour lost its probabilities
    write_log(location, window, features, task)
    true_label = (window["prediction"] + (np.arange(len(window)) % 10 == 0)) % 2  # 10% flipped
    pd.DataFrame({"request_id": window["request_id"], "label": true_label}).to_parquet(
        labels / "labels.parquet"
    )

    code = run("performance", "--since", iso(START), "--until", iso(START + timedelta(hours=2)),
               "--window-hours", "1")  # fmt: skip

    result = report(project, "performance")
    first, second = result["windows"]
    model_scores = champion.predict_proba(window[features].iloc[:60])[:, 1]
    from sklearn.metrics import roc_auc_score

    assert first["metric"] == pytest.approx(roc_auc_score(true_label[:60], model_scores))
    assert second["decayed"] is None and "needs the logged probability" in second["reason"]
    assert code == (cli.EXIT_CHECK_FAILED if first["decayed"] else cli.EXIT_OK)


# Bad input


def test_bad_input_exits_2_and_says_what_and_where(project, settings, reference, capsys):
    task, features = settings.params.task, list(reference.columns)
    location = project / settings.params.monitoring.prediction_log
    window = logged(training_sample(reference), START, task=task).rename(
        columns={features[0]: "surprise"}
    )
    write_log(str(location), window, ["surprise", *features[1:]], task)
    until = iso(START + timedelta(hours=1))

    assert run("drift", "--until", until) == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "unknown columns ['surprise']" in error and f"date={START.date()}" in error

    assert run("drift", "--since", "yesterday") == cli.EXIT_ERROR
    assert "--since: 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err

    assert run("drift", "--since", until, "--until", until) == cli.EXIT_ERROR
    assert "is not before --until" in capsys.readouterr().err

    assert run("performance", "--until", until) == cli.EXIT_ERROR
    assert "no champion" in capsys.readouterr().err


def test_missing_labels_folder_exits_2_and_names_it(project, settings, champion, capsys):
    assert run("performance") == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "labels folder not found" in error and settings.params.monitoring.labels in error
    assert not (project / "reports" / "performance.json").exists()


# S3


@pytest.mark.integration
def test_log_and_labels_are_read_from_s3(project, settings, reference, champion, bucket):
    task, features = settings.params.task, list(reference.columns)
    prefix, labels = f"s3://{bucket}/prediction-log", f"s3://{bucket}/labels"
    write_params(
        project, monitoring={"prediction_log": prefix, "labels": labels, "window_hours": 2}
    )
    window = logged(
        training_sample(reference), START + timedelta(hours=1), task=task, model=champion
    )
    write_log(prefix, window, features, task)
    write_log(prefix, logged(training_sample(reference, 30), START, task=task), features, task)
    body = labels_for(window, task).to_csv(index=False).encode()
    boto3.client("s3").put_object(Bucket=bucket, Key="labels/2026/03/batch.csv", Body=body)
    until = iso(START + timedelta(hours=2))

    assert run("drift", "--until", until) == cli.EXIT_OK
    drift = report(project, "drift")
    assert drift["judged"] is True and drift["rows"] == ROWS + 30

    assert run("performance", "--until", until, "--window-hours", "1") == cli.EXIT_OK
    windows = report(project, "performance")["windows"]
    assert [w["labelled_rows"] for w in windows[-2:]] == [0, ROWS]
    assert windows[-1]["metric"] == pytest.approx(1.0)

    write_params(project, monitoring={"labels": f"s3://{bucket}-missing/labels"})
    assert run("performance", "--until", until) == cli.EXIT_ERROR
