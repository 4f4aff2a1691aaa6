"""The benchmarks' own pieces that a wrong number would hide (the runs themselves: `make bench*`)."""

from __future__ import annotations

import json
import math

import httpx
import joblib
import pytest
from benchmarks import serving
from benchmarks.grpc_load import grpc_frame, percentile

from {{ cookiecutter.package }} import data
from {{ cookiecutter.package }}.deploy.payloads import as_records
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import load_settings


def test_grpc_frame_prefixes_a_zero_and_the_length_big_endian() -> None:
    # 300 bytes: a length over 255 tells big from little endian.
    assert grpc_frame(b"x" * 300) == b"\x00\x00\x00\x01\x2c" + b"x" * 300


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([7.0], 0.99) == 7.0


def test_the_in_process_measurements_run_on_the_projects_rows(tmp_path, monkeypatch) -> None:
    """The prediction log's, the guard's and the profile check's own work, as `make bench` measures
    them first (fewer requests): each a time per request, the guard's with tokens above without."""
    monkeypatch.setattr(serving, "LOG_REQUESTS", 500)
    monkeypatch.setattr(serving, "GUARD_BLOCK", 200)
    settings = load_settings("params.yaml")
    features, _ = data.split_features_target(data.training_table(settings), settings.params.data)
    record_us, write_us = serving.prediction_log_work(
        tmp_path, list(features.columns), features.to_numpy()[0]
    )
    guarded_us, open_us = serving.guard_work(json.dumps(as_records(features.head(1))[0]).encode())
    profile_us = serving.profile_check_work(features)
    timings = [record_us, write_us, guarded_us, open_us, profile_us]
    assert all(math.isfinite(us) and us > 0 for us in timings), timings
    assert guarded_us > open_us * 0.5  # the same requests, the guard's work added


@pytest.mark.integration
def test_the_baseline_is_served_the_rows_it_takes_and_answers_as_the_model(project, settings):
    """The article's app, started as the benchmark starts it (uvicorn, its model.pkl in the working
    directory), answers the harness's body with the registered model's own prediction."""
    from {{ cookiecutter.package }} import training

    frame = data.training_table(settings)
    models = Registry(settings)
    model = models.load_model(training.train(settings, models, frame).model_version)
    joblib.dump(model, project / serving.BASELINE_MODEL)
    features, _ = data.split_features_target(frame, settings.params.data)
    rows = features.head(5)
    with serving.baseline_server(project / serving.BASELINE_MODEL, 1, project / "log") as (url, _):
        for record, expected in zip(as_records(rows), model.predict(rows), strict=True):
            body = serving.article_body(record, list(features.columns))
            answer = httpx.post(f"{url}/predict", content=body, headers=serving.JSON, timeout=10)
            assert answer.status_code == 200, answer.text
            # To BLAS's last bits: one row scored alone, not among five.
            assert answer.json()["prediction"] == pytest.approx([expected.item()], rel=1e-9)
