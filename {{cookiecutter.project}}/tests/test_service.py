"""The served HTTP contract, against a real `bentoml serve` of a built bento."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from {{ cookiecutter.package }} import registry
from {{ cookiecutter.package }}.deploy import payloads
from {{ cookiecutter.package }}.deploy.server import Server
from {{ cookiecutter.package }}.serving import arrow

from .shared_bento import MAX_BATCH_ROWS, Built

pytestmark = pytest.mark.integration
ARROW = {"content-type": arrow.ARROW_STREAM}


@pytest.fixture
def http(built: Built, server: Server):
    headers = built.settings.client_headers()
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        yield client


def test_predictions_equal_the_registry_model_and_name_the_version(built: Built, http):
    rows = payloads.sample_rows(built.settings)
    records = payloads.as_records(rows)
    model = registry.Registry(built.settings).load_model(built.version)
    expected = model.predict(rows)

    single = [http.post("/predict", json=record).raise_for_status().json() for record in records]
    batch = http.post("/predict_batch", json={"rows": records}).raise_for_status().json()
    table = http.post("/predict_columns", json=payloads.as_table(rows)).raise_for_status().json()
    # Columns in another order are put back in the training order.
    reordered = payloads.as_table(rows[list(reversed(rows.columns))])
    shuffled = http.post("/predict_columns", json=reordered).raise_for_status().json()
    arrow = http.post(
        "/predict_arrow", content=payloads.as_arrow(rows), headers=ARROW
    ).raise_for_status()

    answers = [*single, batch, table, shuffled, arrow.json()]
    assert {answer["model_version"] for answer in answers} == {built.version}
    assert table["predictions"] == batch["predictions"]
    assert arrow.json() == table
    assert arrow.headers["x-model-version"] == str(built.version) and arrow.headers["x-request-id"]
    if built.settings.params.task == "classification":
        assert [answer["prediction"] for answer in single] == expected.tolist()
        assert batch["predictions"] == expected.tolist()
        top = model.predict_proba(rows).max(axis=1)
        assert np.allclose([answer["probability"] for answer in single], top)
        assert np.allclose(batch["probabilities"], top)
        assert np.allclose(table["probabilities"], top)
        assert shuffled["predictions"] == expected.tolist()
        assert np.allclose(shuffled["probabilities"], top)
    else:
        assert np.allclose([answer["prediction"] for answer in single], expected)
        assert np.allclose(batch["predictions"], expected)
        assert np.allclose(shuffled["predictions"], expected)


@pytest.mark.parametrize("problem", ["missing", "not a number", "NaN", "unknown field"])
def test_malformed_rows_get_a_4xx_naming_the_field(built: Built, http, problem: str):
    row = payloads.as_records(payloads.sample_rows(built.settings, rows=1))[0]
    feature = next(iter(row))
    if problem == "missing":
        del row[feature]
    elif problem == "not a number":
        row[feature] = "abc"
    elif problem == "NaN":
        row[feature] = float("nan")
    else:
        feature = "not_a_feature"
        row[feature] = 1.0
    # json.dumps writes NaN as the bare literal some clients send; httpx's json= would refuse it.
    body = json.dumps(row)
    answer = http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert feature in answer.text


def test_batches_must_hold_one_to_max_batch_rows_rows(built: Built, http):
    record = payloads.as_records(payloads.sample_rows(built.settings, rows=1))[0]
    assert http.post("/predict_batch", json={"rows": []}).status_code == 400
    too_many = http.post("/predict_batch", json={"rows": [record] * (MAX_BATCH_ROWS + 1)})
    assert too_many.status_code == 400 and "rows" in too_many.text
    full = http.post("/predict_batch", json={"rows": [record] * MAX_BATCH_ROWS})
    assert len(full.raise_for_status().json()["predictions"]) == MAX_BATCH_ROWS


def table_body(built: Built, value: str) -> str:
    """Two rows as /predict_columns JSON, the first feature of the second row written as `value`."""
    table = payloads.as_table(payloads.sample_rows(built.settings, rows=2))
    table["data"][1][0] = "VALUE"
    return json.dumps(table).replace('"VALUE"', value)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "true", '"12.5"', "1e308", "-1e308"], ids=str)
def test_table_values_that_are_no_usable_number_get_400_naming_row_and_feature(
    built: Built, http, value: str
):
    feature = str(payloads.sample_rows(built.settings, rows=1).columns[0])
    answer = http.post(
        "/predict_columns",
        content=table_body(built, value),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert [detail["field"] for detail in error["details"]] == [f"data.1.{feature}"]
    assert error["message"].startswith(f"data.1.{feature}: ")
    if value.endswith("e308"):  # the same words as a row's hard bound
        assert "should be" in error["message"] and "than or equal to" in error["message"]


def test_table_rows_and_columns_must_match_the_training_features(built: Built, http):
    rows = payloads.sample_rows(built.settings, rows=2)
    first, second = (str(column) for column in rows.columns[:2])

    def refused(table: dict) -> dict:
        answer = http.post("/predict_columns", json=table)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]

    short = payloads.as_table(rows)
    short["data"][1] = short["data"][1][:-1]
    assert refused(short)["details"][0]["field"] == "data.1"
    renamed = payloads.as_table(rows)
    renamed["columns"][0] = "not_a_feature"
    message = refused(renamed)["message"]
    assert message.startswith("columns: ") and "'not_a_feature'" in message and first in message
    repeated = payloads.as_table(rows)
    repeated["columns"][1] = first
    message = refused(repeated)["message"]
    assert f"repeated '{first}'" in message and f"missing '{second}'" in message
    assert refused({**payloads.as_table(rows), "data": []})["details"][0]["field"] == "data"
    full = payloads.as_table(payloads.sample_rows(built.settings, rows=1))
    full["data"] = full["data"] * (MAX_BATCH_ROWS + 1)
    assert "at most" in refused(full)["message"]
    full["data"] = full["data"][:MAX_BATCH_ROWS]
    answer = http.post("/predict_columns", json={**full, "index": list(range(MAX_BATCH_ROWS))})
    assert len(answer.raise_for_status().json()["predictions"]) == MAX_BATCH_ROWS


def test_arrow_bodies_are_checked_like_tables(built: Built, http):
    rows = payloads.sample_rows(built.settings, rows=3)
    first, second = (str(column) for column in rows.columns[:2])

    def refused(body: bytes) -> dict:
        answer = http.post("/predict_arrow", content=body, headers=ARROW)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]

    assert "not an Arrow IPC stream" in refused(b"not arrow at all")["message"]
    message = refused(payloads.as_arrow(rows.rename(columns={first: "not_a_feature"})))["message"]
    assert message.startswith("columns: ") and "'not_a_feature'" in message and first in message
    words = payloads.as_arrow(rows.astype({second: str}))
    assert f"{second} (string)" in refused(words)["message"]
    for bad in (np.inf, 1e308):  # NaN is a null, which the (imputing) model takes
        damaged = rows.astype(np.float64)  # an integer column could not hold NaN
        damaged.iloc[2, 1] = bad
        error = refused(payloads.as_arrow(damaged))
        assert [(detail["row"], detail["field"]) for detail in error["details"]] == [(2, second)]
        assert second in error["message"]
    assert "rows" in refused(payloads.as_arrow(rows.head(0)))["message"]
    many = rows.sample(n=MAX_BATCH_ROWS + 1, replace=True, random_state=0)
    assert f"send 1 to {MAX_BATCH_ROWS}" in refused(payloads.as_arrow(many))["message"]
    as_json = http.post("/predict_arrow", json=payloads.as_table(rows))
    assert as_json.status_code == 415 and ARROW["content-type"] in as_json.text
    as_arrow = http.post("/predict_columns", content=payloads.as_arrow(rows), headers=ARROW)
    assert as_arrow.status_code == 415 and "application/json" in as_arrow.text


def test_metadata_and_openapi_show_the_training_features(built: Built, http):
    features = list(payloads.sample_rows(built.settings, rows=1).columns)
    metadata = http.post("/metadata", json={}).raise_for_status().json()
    assert metadata["model_name"] == built.settings.params.registry.model_name
    assert metadata["model_version"] == built.version
    assert metadata["task"] == built.settings.params.task
    assert metadata["features"] == features
    assert metadata["max_batch_rows"] == MAX_BATCH_ROWS

    openapi = http.get("/docs.json").raise_for_status().json()
    schema = openapi["components"]["schemas"]
    assert any(set(features) <= set(item.get("properties", {})) for item in schema.values())


def test_health_endpoints_answer(http):
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200
