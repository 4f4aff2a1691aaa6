"""/predict_entity against the shared server (tests/shared_bento.py): the features come from a real
Feast online store (SQLite, loaded by `feature_store.materialize`) and answer exactly as the same
row sent whole to /predict."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import data, prediction_log
from {{ cookiecutter.package }}.deploy import payloads, smoke
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.errors import DataError, DeploymentError
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.serving.entities import REPO_VARIABLE

from .conftest import PROJECT_DIR
from .shared_bento import Built

pytestmark = pytest.mark.integration
{%- if cookiecutter.task == "classification" %}
BUNDLED = PROJECT_DIR / "data" / "breast_cancer.csv"  # row k-1 holds patient k's features
{%- else %}
BUNDLED = PROJECT_DIR / "data" / "diabetes.csv"  # row k-1 holds patient k's features
{%- endif %}
PATIENTS = [1, 17, 200, 321]
UNKNOWN = 99_999


@pytest.fixture
def http(built: Built, server: Server):
    with httpx.Client(
        base_url=server.url, timeout=30, headers=built.settings.client_headers()
    ) as client:
        yield client


def bundled_features(built: Built) -> pd.DataFrame:
    return data.read_table(str(BUNDLED)).drop(columns=[built.settings.params.data.target])


def full_row(built: Built, patient: int) -> dict:
    """Patient `patient`'s features as a /predict body, from the bundled data set."""
    return payloads.as_records(bundled_features(built).iloc[[patient - 1]])[0]


def test_an_entity_key_gets_the_answer_of_its_full_row(built: Built, http):
    for patient in PATIENTS:
        by_key = http.post("/predict_entity", json={"patient_id": patient})
        whole = http.post("/predict", json=full_row(built, patient)).raise_for_status()
        assert by_key.status_code == 200, by_key.text
        assert by_key.json() == whole.json(), patient
        assert by_key.headers["x-prediction"] == whole.headers["x-prediction"]


def test_an_unknown_entity_is_a_404_naming_its_key(http):
    answer = http.post("/predict_entity", json={"patient_id": UNKNOWN})
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["code"] == "not_found" and error["request_id"]
    assert f"patient_id={UNKNOWN}" in error["message"] and "materialize" in error["message"]
    documented = http.get("/docs.json").json()["paths"]["/predict_entity"]["post"]["responses"]
    assert "404" in documented


@pytest.mark.parametrize(
    "body", [{}, {"patient_id": 1.5}, {"patient_id": True}, {"patient_id": "17"}, {"other": 1}]
)
def test_a_body_without_a_usable_key_is_a_400_naming_the_field(http, body: dict):
    answer = http.post("/predict_entity", json=body)
    assert answer.status_code == 400, answer.text
    named = next(iter(body), "patient_id")
    assert named in answer.text


def test_predict_entity_needs_a_token(built: Built, server: Server):
    answer = httpx.post(f"{server.url}/predict_entity", json={"patient_id": 1}, timeout=30)
    assert answer.status_code == 401


def logged_rows(built: Built, request_ids: set[str], timeout: float = 30) -> pd.DataFrame:
    """The prediction log's rows of these requests, once the server has flushed them all."""
    features = list(bundled_features(built).columns)
    location = built.settings.resolve(built.settings.params.monitoring.prediction_log)
    since = datetime.now(UTC) - timedelta(hours=1)
    deadline = time.monotonic() + timeout
    mine = pd.DataFrame({"request_id": []})
    while len(mine) < len(request_ids) and time.monotonic() < deadline:
        time.sleep(0.5)
        with contextlib.suppress(DataError):  # the log's folder appears with its first flush
            log = prediction_log.read_log(location, since, datetime.now(UTC), features)
            mine = log[log["request_id"].isin(request_ids)]
    return mine.set_index("request_id")


def test_the_log_and_the_metrics_see_the_fetched_features(built: Built, http, server: Server):
    sent = {f"entity-{patient}-{time.time_ns()}": patient for patient in PATIENTS}
    for request_id, patient in sent.items():
        http.post(
            "/predict_entity", json={"patient_id": patient}, headers={"X-Request-ID": request_id}
        ).raise_for_status()

    logged = logged_rows(built, set(sent))
    assert set(logged.index) == set(sent)
    assert set(logged["endpoint"]) == {"predict_entity"}
    for request_id, patient in sent.items():
        row = full_row(built, patient)
        assert np.allclose(logged.loc[request_id, list(row)].to_numpy(float), list(row.values()))
    series = http.get("/metrics").text.splitlines()
    assert any(
        line.startswith("model_requests_total{")
        and 'endpoint="/predict_entity"' in line
        and 'status="200"' in line
        for line in series
    )


def test_the_smoke_test_checks_predict_entity(built: Built, server: Server):
    report = smoke.run(built.settings, Registry(built.settings), server.url, built.version)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["passed"], smoke.markdown(report)
    assert "patient_id=" in checks["predict_entity_matches_predict"]["detail"]


def test_the_environment_names_the_feature_repo_where_the_bento_runs(
    built: Built, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """A container mounts its own feature_store.yaml: $FEATURE_REPO replaces the build's folder, and
    a worker that cannot open it stops the server, saying why."""
    monkeypatch.setenv(REPO_VARIABLE, str(tmp_path))
    with pytest.raises(DeploymentError, match=f"{tmp_path}: no feature_store.yaml"):
        serve(built.settings, built.bento)
