"""S3 for real, offline: a moto S3 server, boto3 as in production, and one real MLflow tracking server.

Nothing is mocked inside the process: the code under test talks HTTP to 127.0.0.1, found through the
same variables (AWS_ENDPOINT_URL_S3, MLFLOW_S3_ENDPOINT_URL, MLFLOW_TRACKING_URI) a deployment sets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package }} import data, evaluation, registry, training
from {{ cookiecutter.package }}.errors import DataError
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import DUMMY_AWS, free_port, keys, write_params
from .postgres import stop_group, wait_healthy

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_tables_round_trip_through_s3(frame, bucket, suffix):
    uri = f"s3://{bucket}/data/nested/table.{suffix}"
    data.write_table(frame, uri)
    assert keys(bucket) == [f"data/nested/table.{suffix}"]
    back = data.read_table(uri)
    assert data.fingerprint(back) == data.fingerprint(frame)


def test_a_missing_key_is_named(bucket):
    uri = f"s3://{bucket}/nowhere/table.parquet"
    with pytest.raises(DataError, match=re.escape(f"{uri}: cannot read from S3")):
        data.read_table(uri)


@pytest.fixture
def mlflow_server(
    bucket: str, moto_endpoint: str, tmp_path: Path, empty_tracking_store: Path
) -> Iterator[str]:
    """`mlflow server` storing artifacts in the moto bucket (proxied), as a deployment would."""
    port = free_port()
    shutil.copy(empty_tracking_store, tmp_path / "server.db")  # skips seconds of table creation
    log = (tmp_path / "mlflow-server.log").open("wb")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", f"s3://{bucket}/mlflow",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        **DUMMY_AWS,
        "MLFLOW_S3_ENDPOINT_URL": moto_endpoint,
        # The job runner (GenAI scorers) starts seven huey consumers: 20+ s on two cores, unused here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    # A session of its own: the server starts a uvicorn process that must go down with it.
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, tmp_path / "mlflow-server.log")
        yield url
    finally:
        stop_group(process)
        log.close()


def test_training_against_a_tracking_server_stores_the_model_in_s3(
    project, bucket, mlflow_server, monkeypatch
):
    """Data read from S3, model trained, registered on the server, artifacts in S3, loaded back."""
    source = f"s3://{bucket}/data/train.parquet"
    local = load_settings(project / "params.yaml")
    data.write_table(data.training_table(local), source)
    write_params(project, data={"source": source}, feature_store=None)  # the features in the file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = load_settings(project / "params.yaml")
    assert settings.tracking_uri == mlflow_server
    frame = data.read_table(settings.resolve(settings.params.data.source))

    models = registry.Registry(settings)
    result = training.train(settings, models, frame)

    assert result.model_version == 1
    assert models.alias_version(registry.CHALLENGER) == 1
    stored = keys(bucket, "mlflow/")
    assert any(key.endswith("/MLmodel") for key in stored), stored
    assert not (project / "mlartifacts").exists() and not (project / "mlruns").exists()

    model = models.load_model(result.model_version)
    x_train, y_train, x_holdout, y_holdout = data.train_holdout_split(frame, settings.params.data)
    assert evaluation.score(
        model, x_holdout, y_holdout, settings.params.task, settings.params.gate
    ) == pytest.approx(result.metrics)
    refit = training.build_pipeline(settings.params.task, settings.params.model).fit(
        x_train, y_train
    )
    np.testing.assert_allclose(model.predict(x_holdout), refit.predict(x_holdout))
