"""The feature store on real parts: Feast with its local provider (Parquet files, a SQLite online
store and a file registry in the test's folder), a real MLflow sqlite registry, the CLI.

What training reads is a point-in-time join (docs/feature-store.md): each label gets the feature values
known at its own time, never later ones. The tests run on a repository of their own where that makes a
difference, and on the project's bundled one, whose join gives back the bundled data set exactly.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import cli, data, feature_store, prediction_log
from {{ cookiecutter.package }}.prediction_log import PredictionLog
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params

DAY = datetime(2024, 3, 1, tzinfo=UTC)


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def bundled(settings, folder: str, suffix: str) -> Path:
    """A bundled file of the bake's data set, named as data.source (data/labels/<set>.csv) is:
    ("", ".csv") the data set the entity data was made from, ("features", ".parquet") the feature
    view's source."""
    labels = Path(settings.resolve(settings.params.data.source))
    return labels.parents[1] / folder / f"{labels.stem}{suffix}"


def client(settings) -> MlflowClient:
    """The scratch project's store, tracking and registry both (MLflow keeps the registry URI an
    earlier test set in the environment)."""
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def online(settings, keys: list[int]) -> pd.DataFrame:
    """The feature service's values the online store holds for `keys`, a row per key."""
    store = feature_store.open_store(feature_store.repo_of(settings))
    service = feature_store.feature_service(store, settings.params.feature_store.feature_service)
    rows = [{"patient_id": key} for key in keys]
    found = store.get_online_features(features=service, entity_rows=rows).to_dict()
    return pd.DataFrame(found).set_index("patient_id")


# The point-in-time join, on a repository where "the latest value" and "the value known then" differ

OWN_REPO_CONFIG = """\
project: point_in_time
provider: local
registry: data/registry.db
offline_store:
  type: file
online_store:
  type: sqlite
  path: data/online.db
entity_key_serialization_version: 3
"""
OWN_REPO_DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, FileSource, ValueType

patient = Entity(name="patient", join_keys=["patient_id"], value_type=ValueType.INT64)
snapshots = FileSource(path="snapshots.parquet", timestamp_field="event_timestamp")
vitals = FeatureView(name="vitals", entities=[patient], ttl=timedelta(days=365), source=snapshots)
model_features = FeatureService(name="model_features", features=[vitals])
"""


def test_each_label_gets_the_values_known_at_its_time_never_later_ones(project, settings):
    """Two snapshots per patient, labels between and after them, and one label from before the
    patient's first snapshot: the join takes the newest snapshot at or before each label's time,
    and nothing where nothing was known yet."""
    repo = project / "point_in_time"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(OWN_REPO_CONFIG)
    (repo / "features.py").write_text(OWN_REPO_DEFINITIONS)
    pd.DataFrame(
        {
            "patient_id": [1, 1, 2, 2],
            "event_timestamp": [DAY, DAY + timedelta(10), DAY + timedelta(2), DAY + timedelta(12)],
            "pressure": [10.0, 11.0, 20.0, 21.0],
            "weight": [70.0, 75.0, 80.0, 85.0],
        }
    ).to_parquet(repo / "snapshots.parquet", index=False)
    labels = pd.DataFrame(
        {
            "patient_id": [1, 2, 1, 2, 2, 1],
            "event_timestamp": [
                iso(DAY + timedelta(5)),  # between patient 1's snapshots: the first
                iso(DAY + timedelta(3)),  # between patient 2's: the first
                iso(DAY + timedelta(11)),  # after patient 1's second
                iso(DAY + timedelta(1)),  # before patient 2's first: nothing known yet
                iso(DAY + timedelta(12)),  # at the very time of patient 2's second: known
                iso(DAY + timedelta(5)),  # a second label of the same patient and time
            ],
            "target": [0, 1, 1, 0, 1, 1],
        }
    )
    labels.to_csv(project / "labels.csv", index=False)
    write_params(project, data={"source": "labels.csv"}, feature_store={"repo": repo.name})

    table = data.training_table(load_settings(project / "params.yaml"))

    # A row per label, by patient then time: (1, day 5) twice, (1, day 11), (2, day 1), (2, day 3),
    # (2, day 12).
    expected = pd.DataFrame(
        {
            "pressure": [10.0, 10.0, 11.0, np.nan, 20.0, 21.0],
            "weight": [70.0, 70.0, 75.0, np.nan, 80.0, 85.0],
            "target": [0, 1, 1, 0, 1, 1],
        }
    )
    pd.testing.assert_frame_equal(table, expected)


# The bundled repository and data


def test_the_bundled_join_gives_back_the_bundled_data_set(settings):
    """The entity data was made from the bundled data set: the join must return its rows, columns and
    types exactly, so validation, training and drift read what they read without the store."""
    table = data.training_table(settings)
    original = data.read_table(str(bundled(settings, "", ".csv")))
    pd.testing.assert_frame_equal(table, original)

    features = pd.read_parquet(bundled(settings, "features", ".parquet"))
    labels = pd.read_csv(bundled(settings, "labels", ".csv"), parse_dates=["event_timestamp"])
    assert features["patient_id"].tolist() == list(range(1, len(original) + 1))
    target = settings.params.data.target
    pd.testing.assert_frame_equal(
        features.drop(columns=["patient_id", "event_timestamp"]), original.drop(columns=[target])
    )
    assert labels["patient_id"].tolist() == features["patient_id"].tolist()
    assert (labels["event_timestamp"] - features["event_timestamp"] == timedelta(days=7)).all()


def test_train_records_the_feature_service_and_views_with_the_model(project, settings):
    assert run("train") == cli.EXIT_OK
    version = str(report(project, "train")["model_version"])
    store = client(settings)
    registered = store.get_model_version(settings.params.registry.model_name, version)
    tags, run_tags = registered.tags, store.get_run(registered.run_id).data.tags
    assert tags["feast_feature_service"] == run_tags["feast_feature_service"] == "model_features"
    assert tags["feast_feature_views"] == run_tags["feast_feature_views"]
    view = re.fullmatch(r"measurements@(latest|v\d+):([0-9a-f]{12})", tags["feast_feature_views"])
    assert view, tags["feast_feature_views"]

    # The digest is of the view's definition: change it and a model trained now says so.
    definitions = project / "feature_repo" / "features.py"
    text = definitions.read_text()
    assert "ttl=timedelta(days=365)" in text
    definitions.write_text(text.replace("ttl=timedelta(days=365)", "ttl=timedelta(days=30)"))
    feature_store.open_store.cache_clear()  # a new process would open the store afresh
    changed = feature_store.lineage(settings)["feast_feature_views"]
    assert changed.startswith("measurements@") and changed != tags["feast_feature_views"]


def test_materialize_loads_the_online_store_and_goes_on_from_where_it_ended(project, settings):
    features = pd.read_parquet(bundled(settings, "features", ".parquet")).set_index("patient_id")
    values = features.drop(columns=["event_timestamp"])
    middle = features.loc[100, "event_timestamp"] + timedelta(minutes=30)  # patients 1..100 known
    last = features["event_timestamp"].max() + timedelta(hours=1)

    assert run("materialize", "--end", middle.isoformat()) == cli.EXIT_OK
    [first] = report(project, "materialize")["views"]
    assert first == {
        "view": "measurements",
        "start": "1970-01-01T00:00:00+00:00",  # never loaded: from the start of its data
        "end": middle.isoformat(),
    }
    fetched = online(settings, [17, 100, 101])
    for key in (17, 100):
        assert fetched.loc[key, values.columns].tolist() == values.loc[key].tolist()
    assert fetched.loc[101].isna().all()  # after --end: not loaded yet

    assert run("materialize", "--end", last.isoformat()) == cli.EXIT_OK
    [second] = report(project, "materialize")["views"]
    assert (second["start"], second["end"]) == (middle.isoformat(), last.isoformat())
    fetched = online(settings, [101, len(values)])
    for key in (101, len(values)):
        assert fetched.loc[key, values.columns].tolist() == values.loc[key].tolist()


# Bad input: exit 2, a message naming what is wrong and where, and nothing registered


def without_patient_id(project: Path, source: Path) -> str:
    pd.read_csv(source).drop(columns=["patient_id"]).to_csv(source, index=False)
    return rf"{re.escape(str(source))} has no column \['patient_id'\]"


def with_unreadable_times(project: Path, source: Path) -> str:
    labels = pd.read_csv(source)
    labels.loc[[3, 5], "event_timestamp"] = "last tuesday"
    labels.to_csv(source, index=False)
    return rf"{re.escape(str(source))}: 2 rows have no readable 'event_timestamp' \(rows \[3, 5\]"


def with_an_unknown_feature_service(project: Path, source: Path) -> str:
    write_params(project, feature_store={"feature_service": "no_such_service"})
    return (
        r"feature_store.feature_service 'no_such_service' is not defined in .*feature_repo; "
        r"its feature services are \['model_features'\]"
    )


@pytest.mark.parametrize(
    "mistake", [without_patient_id, with_unreadable_times, with_an_unknown_feature_service]
)
def test_bad_entity_data_or_service_exits_2_naming_it_and_registers_nothing(
    project, settings, capsys, mistake
):
    message = mistake(project, Path(settings.resolve(settings.params.data.source)))

    assert run("train") == cli.EXIT_ERROR

    assert re.search(message, capsys.readouterr().err)
    assert client(settings).search_model_versions() == []
    assert not (project / "reports" / "train.json").exists()


# Drift: what the service fetched and logged, against the table training read

ROWS = 200


def test_drift_compares_logged_fetched_features_with_the_feast_training_table(project, settings):
    """The service logs the features it fetched by key; `drift` judges them against the joined
    training table: a window of fetched rows does not drift, the same rows with one feature moved
    by two standard deviations do."""
    write_params(
        project, monitoring={"prediction_log": "logs/predictions", "labels": "logs/labels"}
    )
    reference, _ = data.split_features_target(data.training_table(settings), settings.params.data)
    features = [str(name) for name in reference.columns]
    write_params(project, monitoring={"drift_share": 1 / len(features)})
    moved = next(name for name in features if reference[name].nunique() > 20)
    feature_store.materialize(settings)

    def fetched(seed: int) -> pd.DataFrame:
        """ROWS patients' features from the online store: training rows, sampled without
        replacement (no feature of either data set drifts by chance in such samples)."""
        rows = reference.sample(ROWS, random_state=seed)
        values = online(settings, [int(index) + 1 for index in rows.index])[features]
        np.testing.assert_array_equal(values.to_numpy(), rows.to_numpy())  # row k-1 is patient k
        return values

    prediction = 0 if settings.params.task == "classification" else 0.0
    log = PredictionLog(
        str(project / "logs" / "predictions"), features, 1, sample_rate=1.0, flush_seconds=3600
    )

    def serve(rows: pd.DataFrame) -> None:
        """What /predict_entity hands the log: one request per key, its fetched row."""
        for values in rows.to_numpy(dtype=np.float64):
            log.record(uuid.uuid4().hex, "predict_entity", values[None, :], [prediction], None)
        log.flush()

    serve(fetched(seed=1))
    time.sleep(0.1)
    boundary = datetime.now(UTC)  # the quiet window ends here, the shifted one starts
    time.sleep(0.5)  # longer than the quiet window's rows took: they all fall in the window before
    shifted = fetched(seed=2)
    shifted[moved] += 2 * reference[moved].std()
    serve(shifted)
    until = datetime.now(UTC) + timedelta(milliseconds=10)
    log.close()

    assert run("drift", "--since", iso(boundary), "--until", iso(until)) == cli.EXIT_CHECK_FAILED

    result = report(project, "drift")
    assert [(w["rows"], w["drifted"]) for w in result["windows"]] == [(ROWS, False), (ROWS, True)]
    assert result["drifted_features"] == [moved]
    assert sorted(result["features"]) == sorted(features)  # the fetched features, no entity key
    assert result["reference_rows"] == len(reference)
    assert result["reference"] == data.training_source(settings)
    assert "feature service model_features" in result["reference"]
    logged = prediction_log.read_log(
        str(project / "logs" / "predictions"), boundary - timedelta(hours=1), until, features
    )
    assert set(logged["endpoint"]) == {"predict_entity"}
