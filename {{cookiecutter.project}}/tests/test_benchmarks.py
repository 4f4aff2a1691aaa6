"""The benchmarks' own pieces that a wrong number would hide (the runs themselves: `make bench*`)."""

from __future__ import annotations

import json
import math

from benchmarks import serving
from benchmarks.grpc_load import grpc_frame, percentile

from {{ cookiecutter.package }} import data
from {{ cookiecutter.package }}.deploy.payloads import as_records
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
