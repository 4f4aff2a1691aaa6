"""Bring your own data, served: models with a text category and gaps, through a real BentoML server.

The data sets and the walk from suggest-suite to batch are test_own_data's; the champion is then
built and served on 127.0.0.1: a row with a category as text and a numeric feature null is answered
on every endpoint, with the label and every class's probability; an unseen category is flagged, or
refused under the reject policy; and the smoke test passes on the sample rows, gaps included.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest

from {{ cookiecutter.package }} import cli, data
from {{ cookiecutter.package }}.deploy import payloads, server
from {{ cookiecutter.package }}.serving.arrow import ARROW_STREAM
from {{ cookiecutter.package }}.serving.grpc.client import ModelClient, label
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params
from .test_own_data import SPECIES, bring, report, run, walk_to_batch

pytestmark = pytest.mark.integration

# A flower with its habitat as text and one width unmeasured.
FLOWER = {
    "sepal_length": 6.0,
    "sepal_width": None,
    "petal_length": 4.2,
    "petal_width": 1.3,
    "habitat": "forest",
}


def served(project: Path) -> server.Server:
    """The project's champion, built and served (params.yaml's serving settings)."""
    assert run("build") == cli.EXIT_OK
    settings = load_settings(project / "params.yaml")
    return server.serve(settings, report(project, "build")["bento"])


def post(running: server.Server, path: str, **body) -> httpx.Response:
    headers = load_settings(Path("params.yaml")).client_headers() | body.pop("headers", {})
    return httpx.post(f"{running.url}{path}", headers=headers, timeout=30, **body)


def assert_every_class(class_probabilities: dict, probability: float) -> None:
    assert set(class_probabilities) == set(SPECIES)
    assert sum(class_probabilities.values()) == pytest.approx(1)
    assert probability == max(class_probabilities.values())


def test_a_flower_with_a_category_and_a_gap_is_answered_on_every_endpoint(project):
    walk_to_batch(project, "flowers")
    with served(project) as running:
        assert run("smoke", "--url", running.url) == cli.EXIT_OK
        single = post(running, "/predict", json=FLOWER)
        table = post(running, "/predict_columns", json=payloads.as_table(pd.DataFrame([FLOWER])))
        arrow = post(
            running,
            "/predict_arrow",
            content=payloads.as_arrow(pd.DataFrame([FLOWER])),
            headers={"Content-Type": ARROW_STREAM},
        )
        unseen = post(running, "/predict", json={**FLOWER, "habitat": "desert"})
        token = load_settings(Path("params.yaml")).api_token()
        with ModelClient(str(running.grpc_address), token) as client:  # text and null in a Struct
            over_grpc = client.predict(FLOWER)
        metadata = post(running, "/metadata", json={}).json()
        series = httpx.get(f"{running.url}/metrics", timeout=30).text.splitlines()
    assert report(project, "smoke")["passed"] is True
    assert single.status_code == 200, single.text
    answer = single.json()
    assert answer["prediction"] in SPECIES and answer["out_of_profile"] == []
    assert_every_class(answer["class_probabilities"], answer["probability"])
    assert label(over_grpc.prediction) == answer["prediction"]
    assert dict(over_grpc.class_probabilities) == answer["class_probabilities"]
    for batch in (table, arrow):
        assert batch.status_code == 200, batch.text
        assert batch.json()["predictions"] == [answer["prediction"]]
        (every_class,) = batch.json()["class_probabilities"]
        assert_every_class(every_class, batch.json()["probabilities"][0])
    assert unseen.status_code == 200 and unseen.json()["out_of_profile"] == ["habitat"]
    # Prometheus counts the predictions by their label, and the unseen habitat by its feature.
    counted = [line for line in series if line.startswith("model_predictions_total{")]
    assert any(f'prediction="{answer["prediction"]}"' in line for line in counted), counted
    assert any(
        line.startswith("out_of_profile_values_total{") and 'feature="habitat"' in line
        for line in series
    )
    habitat = metadata["feature_profile"]["habitat"]
    assert (habitat["kind"], habitat["nullable"]) == ("categorical", True)
    assert metadata["feature_profile"]["sepal_width"]["kind"] == "numeric"


def test_an_unseen_category_is_refused_under_the_reject_policy(project):
    walk_to_batch(project, "flowers")
    write_params(project, serving={"out_of_profile": "reject"})
    with served(project) as running:
        refused = post(running, "/predict", json={**FLOWER, "habitat": "desert"})
        wrong_kind = post(running, "/predict", json={**FLOWER, "habitat": 3})
    assert refused.status_code == 422, refused.text
    (detail,) = refused.json()["error"]["details"]
    assert detail["field"] == "habitat" and "'desert'" in detail["problem"]
    assert "forest" in detail["problem"]
    assert wrong_kind.status_code == 400 and "habitat" in wrong_kind.text


def test_a_regression_of_own_data_is_served_and_smoke_tested(project):
    walk_to_batch(project, "prices")
    flat = {"area": 80.0, "rooms": 3.0, "age": None, "district": "harbour"}
    with served(project) as running:
        assert run("smoke", "--url", running.url) == cli.EXIT_OK
        answer = post(running, "/predict", json=flat)
    assert report(project, "smoke")["passed"] is True
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] > 0 and answer.json()["class_probabilities"] is None


def test_what_the_server_logged_is_judged_by_drift_and_performance(project):
    """The loop's end through the real server: flowers sent as a table (text habitats, gaps), the
    server's own prediction log read back by `drift` (no drift: the rows are the data's) and by
    `performance` with the labels that arrive later, log_loss judged from every class's logged
    probability."""
    write_params(
        project,
        monitoring={
            "prediction_log": "logs/predictions",
            "labels": "logs/labels",
            "sample_rate": 1.0,
            "min_window_rows": 50,
        },
    )
    walk_to_batch(project, "flowers")
    frame = bring(project, "flowers").dropna(subset=["species"]).head(120)
    rows = data.model_input(frame.drop(columns=["species"]))
    with served(project) as running:
        answer = post(
            running,
            "/predict_columns",
            json=payloads.as_table(rows),
            headers={"X-Request-ID": "flowers-120"},
        )
    assert answer.status_code == 200, answer.text  # the server flushed its log when it stopped
    labels = project / "logs" / "labels"
    labels.mkdir(parents=True)
    pd.DataFrame(
        {"request_id": "flowers-120", "row": range(len(frame)), "label": frame["species"]}
    ).to_csv(labels / "flowers-120.csv", index=False)

    assert run("drift") == cli.EXIT_OK
    drifted = report(project, "drift")
    assert drifted["judged"] and drifted["rows"] >= len(frame) and not drifted["drifted"]
    assert drifted["features"]["habitat"]["method"].split()[0] in {"chi-square", "Z-test"}
    write_params(project, gate={"primary_metric": "log_loss"})
    assert run("performance") == cli.EXIT_OK
    judged = report(project, "performance")
    latest = judged["windows"][-1]
    assert latest["labelled_rows"] == len(frame) and latest["metric"] is not None, judged
    assert not latest["decayed"], judged
