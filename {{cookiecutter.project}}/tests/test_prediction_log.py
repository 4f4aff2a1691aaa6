"""The prediction log and the service's metrics: unit checks, then real servers under load.

The servers are real `bentoml serve` processes on 127.0.0.1; S3 is a moto server that the server's
boto3 finds through the environment, as a pod finds AWS.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package }} import prediction_log, storage
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.payloads import as_records, sample_rows
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.registry import Registry

from .conftest import keys
from .shared_bento import Built, shared_build

FEATURES = ["alpha", "beta"]
DAY_MS = 86_400_000


def read_log(location: str | Path) -> pd.DataFrame:
    """Every row of a local prediction log, with the day partition as the `date` column."""
    frame = ds.dataset(location, format="parquet", partitioning="hive").to_table().to_pandas()
    return frame.sort_values(["request_id", "row"], ignore_index=True)


def wait_for_rows(read, rows: int, timeout: float = 30) -> pd.DataFrame:
    """What `read()` returns once it holds `rows` rows (the server writes every flush_seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            frame = read()
        except FileNotFoundError:
            frame = pd.DataFrame()
        if len(frame) >= rows or time.monotonic() > deadline:
            return frame
        time.sleep(0.2)


def test_the_sample_is_decided_by_the_request_id():
    ids = [f"request-{index}" for index in range(20_000)]
    picked = [prediction_log.sampled(request_id, 0.25) for request_id in ids]
    assert 0.23 < np.mean(picked) < 0.27
    assert picked == [prediction_log.sampled(request_id, 0.25) for request_id in ids]
    assert all(prediction_log.sampled(request_id, 1.0) for request_id in ids[:100])
    assert not any(prediction_log.sampled(request_id, 0.0) for request_id in ids[:100])


def test_each_row_names_the_version_that_answered_it(tmp_path):
    """The served version, or its fallback's when the fallback answered: A/B tests and the
    performance windows judge each version on its own answers."""
    log = prediction_log.PredictionLog(str(tmp_path / "log"), FEATURES, 7, 1.0, 3600)
    log.record("served", "predict", np.array([[1.0, 2.0]]), [0], None)
    log.record("fell-back", "predict_batch", np.array([[1.0, 2.0], [3.0, 4.0]]), [1, 1], None, 6)
    assert log.flush() == 3
    log.close()
    written = read_log(tmp_path / "log")
    assert dict(zip(written["request_id"], written["model_version"], strict=True)) == {
        "fell-back": 6,
        "served": 7,
    }


def test_rows_are_written_in_the_partition_of_their_utc_day(tmp_path, monkeypatch):
    log = prediction_log.PredictionLog(str(tmp_path / "log"), FEATURES, 7, 1.0, 3600)
    late_evening = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp() * 1e9
    for request_id, nanoseconds in [("a", late_evening), ("b", late_evening + 2e9)]:
        monkeypatch.setattr(prediction_log.time, "time_ns", lambda at=nanoseconds: int(at))
        log.record(request_id, "predict_batch", np.array([[1.0, 2.0], [3.0, 4.0]]), [0, 1], None)
    assert log.flush() == 4
    log.close()

    written = read_log(tmp_path / "log")
    assert sorted(path.parent.name for path in (tmp_path / "log").rglob("*.parquet")) == [
        "date=2026-11-30",
        "date=2026-12-01",
    ]
    assert written["date"].astype(str).tolist() == ["2026-11-30"] * 2 + ["2026-12-01"] * 2
    assert written["request_id"].tolist() == ["a", "a", "b", "b"]
    assert written["row"].tolist() == [0, 1, 0, 1]
    assert written[FEATURES].to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]] * 2
    assert written["prediction"].tolist() == [0, 1, 0, 1]
    assert written["probability"].isna().all()
    assert set(written["model_version"]) == {7}
    assert str(written["logged_at"].dt.tz) == "UTC"


def test_rows_wait_while_the_destination_refuses_writes(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    log = prediction_log.PredictionLog(str(blocker / "log"), FEATURES, 1, 1.0, 3600)
    log.record("kept", "predict", np.array([[1.0, 2.0]]), [1.5], None)
    assert log.flush() == 0  # the write failed, logged, nothing lost
    blocker.unlink()
    assert log.flush() == 1
    log.close()
    assert read_log(blocker / "log")["request_id"].tolist() == ["kept"]


def test_categories_nulls_and_every_class_probability_are_logged_and_read_back(tmp_path):
    features, classes = ["colour", "size"], ["no", "yes"]
    log = prediction_log.PredictionLog(
        str(tmp_path / "log"), features, 2, 1.0, 3600, categorical=["colour"], classes=classes
    )
    rows = np.array([["red", None], [None, 2.5], [np.nan, np.nan]], dtype=object)
    log.record("mixed", "predict_batch", rows, ["yes", "no", "no"], np.array([[0.2, 0.8]] * 3))
    assert log.flush() == 3
    log.close()

    since = datetime(2000, 1, 1, tzinfo=UTC)
    written = prediction_log.read_log(str(tmp_path / "log"), since, datetime.now(UTC), features)
    assert written["colour"].tolist() == ["red", None, None]
    assert written["size"].isna().tolist() == [True, False, True] and written["size"][1] == 2.5
    assert written["prediction"].tolist() == ["yes", "no", "no"]
    assert written["probability"].tolist() == [0.8] * 3
    assert written["class_probabilities"].tolist() == [{"no": 0.2, "yes": 0.8}] * 3


@pytest.mark.integration
def test_the_log_goes_to_s3_when_its_location_is_a_bucket(bucket):
    log = prediction_log.PredictionLog(f"s3://{bucket}/served", FEATURES, 3, 1.0, 3600)
    # the client is made at start, not by the first flush beside the answers in flight
    assert storage.s3_client.cache_info().currsize == 1
    log.record("to-s3", "predict", np.array([[5.0, 6.0]]), [1], None)
    log.close()  # flushes
    (key,) = keys(bucket)
    today = datetime.now(UTC).date().isoformat()
    assert key.startswith(f"served/date={today}/") and key.endswith(".parquet")


# --- real servers ------------------------------------------------------------------------------

SAMPLE_RATE = 0.5


@pytest.fixture(scope="module")
def sampling_bento(tmp_path_factory, empty_tracking_store) -> tuple[Built, str]:
    """A bento of the shared model that logs half of the requests and writes twice a second."""
    built = shared_build(tmp_path_factory, empty_tracking_store)
    params = built.settings.params
    monitoring = params.monitoring.model_copy(
        update={"sample_rate": SAMPLE_RATE, "flush_seconds": 0.5}
    )
    settings = built.settings.model_copy(
        update={"params": params.model_copy(update={"monitoring": monitoring})}
    )
    return built, build(settings, Registry(settings), built.version)


def serve_logging_to(built: Built, bento: str, location: str) -> Server:
    monitoring = built.settings.params.monitoring.model_copy(update={"prediction_log": location})
    params = built.settings.params.model_copy(update={"monitoring": monitoring})
    return serve(built.settings.model_copy(update={"params": params}), bento)


def send_load(built: Built, server: Server, requests: int) -> dict[str, dict]:
    """`requests` single rows (and a batch of 5 rows every tenth) from 16 threads; answers by id."""
    records = as_records(sample_rows(built.settings, rows=50))

    def send(index: int) -> tuple[str, dict]:
        request_id = f"load-{index:04d}"
        headers = {**built.settings.client_headers(), "X-Request-ID": request_id}
        if index % 10 == 0:
            body, path = {"rows": records[:5]}, "/predict_batch"
        else:
            body, path = records[index % len(records)], "/predict"
        answer = httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)
        return request_id, {"body": body, "answer": answer.raise_for_status().json()}

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(send, range(requests)))


def rows_of(requests: dict[str, dict]) -> int:
    return sum(len(item["body"].get("rows", [None])) for item in requests.values())


@pytest.mark.integration
def test_a_server_under_load_logs_exactly_the_sampled_requests(sampling_bento, tmp_path):
    built, bento = sampling_bento
    with serve_logging_to(built, bento, str(tmp_path / "log")) as server:
        sent = send_load(built, server, 300)
        chosen = {rid: sent[rid] for rid in sent if prediction_log.sampled(rid, SAMPLE_RATE)}
        logged = wait_for_rows(lambda: read_log(tmp_path / "log"), rows_of(chosen))

    assert 0 < len(chosen) < len(sent)
    assert sorted(set(logged["request_id"])) == sorted(chosen)
    assert len(logged) == rows_of(chosen)
    today = datetime.now(UTC).date().isoformat()
    assert set(logged["date"].astype(str)) == {today}
    assert set(logged["model_version"]) == {built.version}
    for request_id, group in logged.groupby("request_id"):
        body, answer = chosen[request_id]["body"], chosen[request_id]["answer"]
        records = body.get("rows", [body])
        features = list(records[0])
        assert group["endpoint"].iloc[0] == ("predict_batch" if "rows" in body else "predict")
        assert np.allclose(group[features].to_numpy(), [list(r.values()) for r in records])
        predictions = answer.get("predictions", [answer.get("prediction")])
        assert np.allclose(group["prediction"].to_numpy(dtype=float), predictions)


@pytest.mark.integration
def test_a_server_logs_to_the_bucket_it_is_given(sampling_bento, bucket):
    built, bento = sampling_bento
    with serve_logging_to(built, bento, f"s3://{bucket}/prediction-log") as server:
        sent = send_load(built, server, 40)
        chosen = {rid: sent[rid] for rid in sent if prediction_log.sampled(rid, SAMPLE_RATE)}
        logged = wait_for_rows(lambda: read_s3_log(bucket, "prediction-log/"), rows_of(chosen))
    assert all(key.startswith("prediction-log/date=") for key in keys(bucket))
    assert sorted(set(logged["request_id"])) == sorted(chosen)
    assert len(logged) == rows_of(chosen)


def read_s3_log(bucket: str, prefix: str) -> pd.DataFrame:
    client = boto3.client("s3")
    parts = [
        pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
        for key in keys(bucket, prefix)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def scrape(server: Server) -> dict[str, list]:
    """The samples on the server's /metrics page, by metric family name."""
    text = httpx.get(f"{server.url}/metrics").raise_for_status().text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


@pytest.mark.integration
def test_metrics_carry_the_model_version_status_latency_and_predictions(
    built: Built, server: Server
):
    version = str(built.version)
    before = scrape(server)
    records = as_records(sample_rows(built.settings, rows=10))
    with httpx.Client(base_url=server.url, headers=built.settings.client_headers()) as http:
        for record in records:
            http.post("/predict", json=record).raise_for_status()
        http.post("/predict_batch", json={"rows": records}).raise_for_status()
    assert httpx.post(f"{server.url}/predict", json=records[0]).status_code == 401
    after = scrape(server)

    def total(metrics: dict, family: str, suffix: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in metrics.get(family, [])
            if sample.name == family + suffix
            and all(sample.labels.get(key) == value for key, value in labels.items())
        )

    def grew(family: str, suffix: str, **labels: str) -> float:
        return total(after, family, suffix, **labels) - total(before, family, suffix, **labels)

    answered = {"endpoint": "/predict", "model_version": version}
    assert grew("model_requests", "_total", status="200", **answered) == 10
    assert grew("model_requests", "_total", status="401", **answered) == 1
    assert grew("model_requests", "_total", endpoint="/predict_batch", status="200") == 1
    assert grew("model_request_duration_seconds", "_count", **answered) == 11
    bounds = {
        sample.labels["le"]
        for sample in after["model_request_duration_seconds"]
        if sample.name.endswith("_bucket")
    }
    assert {"0.5", "+Inf"} <= bounds
    if built.settings.params.task == "classification":
        assert grew("model_predictions", "_total", model_version=version) == 20
    else:
        assert grew("model_prediction_value", "_count", model_version=version) == 20
        buckets = {s.labels["le"] for s in after["model_prediction_value"] if "le" in s.labels}
        assert len(buckets - {"+Inf"}) >= 5  # the training target's deciles
