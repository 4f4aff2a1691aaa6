"""`import-champion`: a pull request compares with the registry's champion without writing to it.

Two real MLflow sqlite stores: the team's registry (the tracking server in production) and the job's
throwaway store the pull request's stages write to.
"""

from __future__ import annotations

import shutil

import pytest
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import cli, reports, training
from {{ cookiecutter.package }}.registry import CHAMPION, Registry
from {{ cookiecutter.package }}.settings import load_settings


@pytest.fixture
def team(project, frame, empty_tracking_store, monkeypatch) -> str:
    """The team's registry with a champion (v2: v1 is a rejected candidate), as a tracking URI."""
    path = project / "team.db"
    shutil.copy(empty_tracking_store, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    settings = load_settings(project / "params.yaml")
    registry = Registry(settings)
    versions = [training.train(settings, registry, frame).model_version for _ in range(2)]
    registry.move_alias(CHAMPION, versions[1], why="test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return uri


def team_client(uri: str) -> MlflowClient:
    """A client of the team's store (the registry URI too: MLflow's global one is the job's store)."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def team_versions(uri: str) -> list[str]:
    return sorted(v.version for v in team_client(uri).search_model_versions())


def test_the_champion_is_copied_and_the_candidate_evaluated_without_touching_the_registry(
    project, team, monkeypatch
):
    before = team_versions(team)
    assert cli.main(["import-champion", "--from", team]) == 0
    imported = reports.read_report(project / "reports", "import-champion")
    assert (imported["registry_version"], imported["champion"]) == (2, 1)
    assert cli.main(["train", "--no-alias"]) == 0
    assert cli.main(["evaluate", "--version", "2"]) == 0
    evaluated = reports.read_report(project / "reports", "evaluate")
    assert (evaluated["candidate_version"], evaluated["champion_version"]) == (2, 1)
    # Same files, same scores: the copy is the registry's champion, its holdout metric included.
    settings = load_settings(project / "params.yaml")
    local, metric = Registry(settings), settings.params.gate.primary_metric
    assert (
        local.recorded_digest(1)
        == team_client(team).get_model_version(local.model_name, "2").tags["model_sha256"]
    )
    assert local.holdout_metric(1, metric) == pytest.approx(evaluated["champion_metrics"][metric])
    assert team_versions(team) == before  # nothing of the pull request reached the registry
    monkeypatch.setenv("CHAMPION_MODE", "server")  # as ci.yml passes it
    assert cli.main(["comment"]) == 0
    comment = (project / "reports" / "comment.md").read_text()
    assert "the registry's champion v2, copied into this job's own store" in comment


def test_a_champion_changed_since_registration_is_refused_before_it_is_loaded(
    project, team, capsys
):
    """The flavour switched in MLmodel, as a payload would be: refused on the digest, unread."""
    mlmodels = sorted(project.glob("mlartifacts/models/m-*/artifacts/MLmodel"))
    assert len(mlmodels) == 2
    for path in mlmodels:  # whichever is the champion's
        path.write_text(path.read_text() + "# flavors: python_function: cloudpickle\n")
    assert cli.main(["import-champion", "--from", team]) == 1
    assert "model files changed since registration" in capsys.readouterr().err
    local = Registry(load_settings(project / "params.yaml"))
    assert local.alias_version(CHAMPION) is None  # nothing registered in the local store


def test_without_a_champion_there_is_nothing_to_copy(project, empty_tracking_store):
    path = project / "empty-team.db"
    shutil.copy(empty_tracking_store, path)
    assert cli.main(["import-champion", "--from", f"sqlite:///{path}"]) == 0
    imported = reports.read_report(project / "reports", "import-champion")
    assert imported["champion"] is None


def test_import_champion_writes_only_to_a_local_store(project, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert cli.main(["import-champion", "--from", "https://mlflow.example.com"]) == 2
    assert "writes only to a local sqlite store" in capsys.readouterr().err
