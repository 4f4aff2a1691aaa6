"""The model card: logged with every trained version, refreshed by the gate, linked from the pull
request comment, written by `model-card` and served at GET /model_card."""

from __future__ import annotations

import json
import shutil
import tomllib

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import cli, model_card
from {{ cookiecutter.package }}.deploy.server import Server
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import PROJECT_DIR
from .shared_bento import Built


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def test_a_version_carries_its_card_from_training_through_the_gate_to_the_comment(
    project, monkeypatch
):
    shutil.copy(PROJECT_DIR / "pyproject.toml", project / "pyproject.toml")
    monkeypatch.setenv("ARTIFACT_URL", "https://example.com/artifact/7")
    assert run("train") == cli.EXIT_OK
    trained = report(project, "train")
    version = trained["model_version"]
    registry = Registry(load_settings(project / "params.yaml"))
    card = model_card.read(registry, version)
    assert card == report(project, "model_card")
    assert card["model"]["version"] == version and card["gate"] is None
    assert card["holdout_metrics"] == trained["holdout_metrics"]
    for key in ("run_id", "params_hash", "git_sha", "data_fingerprint"):
        assert card["lineage"][key] == trained[key]
    about = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert card["intended_use"] == about["description"]
    data = card["training_data"]
    assert set(card["feature_profile"]) == set(data["feature_roles"]["features"])
    if "classes" in data["target"]:
        assert (
            sum(seen["rows"] for seen in data["target"]["classes"].values()) == data["train_rows"]
        )
    else:
        assert data["target"]["min"] <= data["target"]["median"] <= data["target"]["max"]

    assert run("evaluate", "--version", str(version)) == cli.EXIT_OK
    evaluated = report(project, "evaluate")
    refreshed = model_card.read(registry, version)
    assert refreshed == report(project, "model_card")
    assert refreshed["gate"]["decision"] == evaluated["decision"]
    assert refreshed["gate"]["reasons"] == evaluated["reasons"]
    logged = mlflow.artifacts.load_text(f"runs:/{trained['run_id']}/{model_card.CARD_MARKDOWN}")
    assert f"## Gate: {evaluated['decision']}" in logged

    assert run("comment") == cli.EXIT_OK
    body = (project / "reports" / "comment.md").read_text()
    assert f"### Model card\n\nThe model card of v{version}" in body
    assert (
        "`model_card.md` in [the `model-report` artifact](https://example.com/artifact/7)" in body
    )

    (project / "reports" / "model_card.json").unlink()
    assert run("model-card", "--version", str(version)) == cli.EXIT_OK
    assert report(project, "model_card") == refreshed
    assert (project / "reports" / "model_card.md").read_text() == model_card.markdown(refreshed)


def classification_facts(labels: list[str], predictions: list[str]) -> model_card.Facts:
    return model_card.Facts(
        model_name="model",
        version=4,
        task="classification",
        estimator="logistic_regression",
        about={"owner": "Team", "intended_use": "Screening | triage"},
        source="data/x.csv",
        train_target=pd.Series(["a", "a", "a", "b"]),
        holdout_labels=np.array(labels),
        holdout_predictions=np.array(predictions),
        holdout_metrics={"f1": 0.5},
        feature_profile={
            "size": {"kind": "numeric", "missing_rate": 0.0, "min": 1.0, "max": 9.0, "mean": 4.0},
            "colour": {"kind": "categorical", "missing_rate": 0.1, "categories": ["r", "g"]},
        },
        feature_roles={
            "features": ["size", "colour"],
            "dropped": ["id"],
            "categorical": ["colour"],
        },
        lineage={"data_fingerprint": "f" * 16, "run_id": "r1", "git_sha": "abc"},
    )


def test_classes_often_missed_on_the_holdout_are_known_limits_and_the_gate_is_added():
    labels = ["a"] * 10 + ["b"] * 10
    predictions = ["a"] * 15 + ["b"] * 5  # b: recall 0.5
    card = model_card.build(classification_facts(labels, predictions))
    json.dumps(card)  # the card is JSON as it is
    assert card["training_data"]["target"]["classes"]["a"] == {"rows": 3, "share": 0.75}
    assert card["known_limits"][0].startswith("class b: recall 0.500 on the 10 holdout rows")
    assert not any(limit.startswith("class a") for limit in card["known_limits"])
    text = model_card.markdown(card)
    assert "- class b: recall 0.500" in text
    assert "Screening \\| triage" in text  # escaped like every report cell
    assert "Not evaluated yet" in text

    evaluated = {
        "decision": "promote",
        "reasons": ["f1 improves by +0.0200 (needs at least 0.005)"],
        "champion_version": 2,
        "primary_metric": "f1",
        "candidate_metrics": {"f1": 0.5},
        "champion_metrics": {"f1": 0.48},
        "interval": [0.01, 0.03],
        "holdout_rows": 20,
    }
    gated = model_card.with_gate(card, evaluated)
    assert card["gate"] is None and gated["gate"]["bootstrap_interval"] == [0.01, 0.03]
    text = model_card.markdown(gated)
    assert "## Gate: promote\n\nAgainst champion v2 on 20 holdout rows, by f1." in text
    assert "[+0.0100, +0.0300]" in text
    assert "- f1 improves by +0.0200" in text


@pytest.mark.integration
def test_the_server_answers_the_served_versions_card_to_token_holders_only(
    built: Built, server: Server
):
    expected = model_card.read(Registry(built.settings), built.version)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.get("/model_card")
        answer = client.get("/model_card", headers=built.settings.client_headers())
        documented = client.get("/docs.json").json()["paths"]["/model_card"]["get"]
    assert refused.status_code == 401
    assert documented["security"] == [{"bearer": []}]  # /docs.json lists it, behind the token
    assert sorted(documented["responses"]) == ["200", "401", "404", "429"]
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected
    assert answer.json()["model"]["version"] == built.version
    assert answer.headers["x-model-version"] == str(built.version)
