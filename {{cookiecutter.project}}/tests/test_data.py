"""Reading, fingerprinting and splitting data: what makes two runs comparable and reproducible."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import data, storage
from {{ cookiecutter.package }}.errors import DataError
from {{ cookiecutter.package }}.params import DataParams
from {{ cookiecutter.package }}.settings import Settings, load_settings

from .conftest import PROJECT_DIR


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The project's own params, read only: these tests need no scratch copy and no MLflow store."""
    return load_settings(PROJECT_DIR / "params.yaml")


@pytest.fixture
def frame(settings: Settings) -> pd.DataFrame:
    return data.read_table(settings.resolve(settings.params.data.source))


@pytest.fixture
def params(settings: Settings) -> DataParams:
    return settings.params.data


def holdout_index(frame: pd.DataFrame, params: DataParams) -> set:
    return set(data.train_holdout_split(frame, params)[2].index)


def test_fingerprint_is_the_same_from_csv_and_parquet(frame, tmp_path):
    """Converting the data set to Parquet is not a new data set; lineage must not say it is."""
    for name in ("copy.csv", "copy.parquet"):
        data.write_table(frame, str(tmp_path / name))
    from_csv = data.read_table(str(tmp_path / "copy.csv"))
    from_parquet = data.read_table(str(tmp_path / "copy.parquet"))
    assert data.fingerprint(from_csv) == data.fingerprint(from_parquet) == data.fingerprint(frame)
    assert data.fingerprint(frame) == data.fingerprint(frame.copy())


def test_fingerprint_changes_with_any_value_or_name(frame):
    before = data.fingerprint(frame)
    changed = frame.copy()
    changed.iloc[100, 2] = changed.iloc[100, 2] + 1
    assert data.fingerprint(changed) != before
    assert data.fingerprint(frame.rename(columns={frame.columns[0]: "renamed"})) != before
    assert data.fingerprint(frame.head(-1)) != before


def test_holdout_split_is_deterministic_and_near_the_fraction(frame, params):
    target, fraction = params.target, params.holdout_fraction
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(frame, params)
    assert len(x_train) + len(x_holdout) == len(frame)
    assert set(x_train.index).isdisjoint(x_holdout.index)
    assert list(y_holdout.index) == list(x_holdout.index)
    assert target not in x_train.columns and y_train.name == target
    assert abs(len(x_holdout) / len(frame) - fraction) < 0.05
    assert holdout_index(frame, params) == set(x_holdout.index)


def test_old_rows_keep_their_side_when_rows_are_appended_or_shuffled(frame, params):
    """The holdout stays frozen as data grows, so yesterday's champion is scored on the same rows."""
    old = frame.iloc[:300]
    before = holdout_index(old, params)
    after = holdout_index(frame, params)
    assert after & set(old.index) == before
    assert len(after) > len(before)
    shuffled = frame.sample(frac=1.0, random_state=1)
    assert holdout_index(shuffled, params) == after


def test_holdout_needs_enough_rows(frame, params):
    with pytest.raises(DataError, match="too few"):
        data.train_holdout_split(frame.head(1), params)


def test_unsupported_suffix_is_named(frame, tmp_path):
    location = str(tmp_path / "data.xlsx")
    with pytest.raises(DataError, match=re.escape(f"{location}: unsupported file type '.xlsx'")):
        data.read_table(location)
    with pytest.raises(DataError, match=re.escape("s3://bucket/data.json: unsupported")):
        data.write_table(frame, "s3://bucket/data.json")


def test_missing_file_is_named(tmp_path):
    location = str(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match=re.escape(f"{location}: file not found")):
        data.read_table(location)


def test_s3_uri_without_a_bucket_is_named():
    with pytest.raises(DataError, match=re.escape("s3:///data.csv: an S3 location needs a bucket")):
        data.read_table("s3:///data.csv")


def test_missing_target_is_named(frame, params):
    wrong = params.model_copy(update={"target": "label"})
    with pytest.raises(
        DataError, match=re.escape("data.target 'label' is not a column of data.csv")
    ):
        data.split_features_target(frame, wrong, "data.csv")


def test_roles_select_listed_features_and_leave_out_dropped_columns(frame, params):
    first, second, third = (str(name) for name in frame.columns[:3])
    dropped = params.model_copy(update={"drop": [first]})
    features, _ = data.split_features_target(frame, dropped)
    assert first not in features.columns and second in features.columns
    assert data.feature_roles(list(frame.columns), dropped, "d.csv")["dropped"] == [first]
    listed = params.model_copy(update={"features": [third, second]})
    assert list(data.split_features_target(frame, listed)[0].columns) == [third, second]
    for field in ("features", "drop"):
        wrong = params.model_copy(update={field: ["no_such_column"]})
        with pytest.raises(
            DataError,
            match=re.escape(f"data.{field} lists ['no_such_column'], not columns of d.csv"),
        ):
            data.split_features_target(frame, wrong, "d.csv")


def test_rows_without_a_target_are_left_out_up_to_the_allowed_share(frame, params):
    gaps = frame.copy()
    gaps.loc[gaps.index[:10], params.target] = None
    assert data.missing_targets(gaps, params, "d.csv") == 10
    assert len(data.split_features_target(gaps, params)[1]) == len(frame) - 10
    strict = params.model_copy(update={"max_missing_target_share": 0.001})
    with pytest.raises(DataError, match=re.escape("data.max_missing_target_share")):
        data.missing_targets(gaps, strict, "d.csv")


def test_parquet_keeps_dtypes_that_csv_cannot(tmp_path):
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-06-30"]), "x": [1, 2]})
    location = str(tmp_path / "nested" / "dates.parquet")
    data.write_table(frame, location)  # creates the folder
    back = data.read_table(location)
    assert back["when"].dtype.kind == "M"
    assert data.fingerprint(back) == data.fingerprint(frame)
    assert np.array_equal(back["x"], frame["x"])


@pytest.fixture
def forgotten_s3_client():
    """The process's S3 client is forgotten before and after: the test switches S3 servers."""
    storage.s3_client.cache_clear()
    yield
    storage.s3_client.cache_clear()


def test_one_s3_client_until_the_aws_settings_change(monkeypatch, forgotten_s3_client):
    """Reading thousands of log files must not make a client per file; a changed endpoint (another
    account, another S3 server) gets its own once the process forgets the first."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    first = storage.s3_client()
    assert storage.s3_client() is first
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    storage.s3_client.cache_clear()
    second = storage.s3_client()
    assert second is not first
    assert second.meta.endpoint_url == "http://127.0.0.1:2"


def test_local_files_are_listed_at_any_depth_and_appear_whole(tmp_path):
    folder = str(tmp_path / "labels")
    with pytest.raises(DataError, match="labels folder not found"):
        storage.require_folder(folder, "labels")
    assert storage.files(folder) == []
    storage.write_bytes(storage.join(folder, "2026/03/b.csv"), b"old")
    storage.write_bytes(storage.join(folder, "a.csv"), b"a")
    storage.write_bytes(storage.join(folder, "2026/03/b.csv"), b"new")  # replaced whole
    storage.require_folder(folder, "labels")
    assert storage.files(folder) == [f"{folder}/2026/03/b.csv", f"{folder}/a.csv"]
    assert [content for _, content in storage.read_many(storage.files(folder))] == [b"new", b"a"]
