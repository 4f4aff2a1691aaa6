"""The CLI as the workflows call it: exit codes, reports, and what it refuses."""

from __future__ import annotations

import json

import pytest

from {{ cookiecutter.package }} import cli, data
from {{ cookiecutter.package }}.auth_off import KUBERNETES_VARIABLE, OVERRIDE_VARIABLE
from {{ cookiecutter.package }}.registry import CHALLENGER, CHAMPION

from .conftest import write_params


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", *args])


def report(project, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


def test_bad_params_exit_2_and_name_the_field(project, capsys):
    write_params(project, gate={"primary_metric": "mape"})
    assert run("validate") == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "params.yaml" in error and "mape" in error


def test_missing_data_file_exits_2_and_names_it(project, capsys):
    write_params(project, data={"source": "data/nowhere.csv"})
    assert run("train") == cli.EXIT_ERROR
    assert "data/nowhere.csv" in capsys.readouterr().err


def test_invalid_data_stops_training_and_registers_nothing(project, settings, registry, capsys):
    # Targets far outside what the suite allows, in data.source (the entity frame, with a feature
    # store: the features come from Feast, the labels from this file).
    source, target = str(project / settings.params.data.source), settings.params.data.target
    broken = data.read_table(source)
    broken[target] = broken[target].max() * 1000 + 7
    data.write_table(broken, source)
    assert run("train") == cli.EXIT_CHECK_FAILED
    assert "data invalid" in capsys.readouterr().err
    assert report(project, "validate")["success"] is False
    assert registry.alias_version(CHALLENGER) is None
    assert not (project / "reports" / "train.json").exists()


def test_promotion_names_the_version_the_gate_approved(project, registry, capsys):
    """`challenger` moves between the gate and the promotion (another run trained meanwhile, as a pull
    request run in server mode would): the deploy's `promote --version` still promotes the gated
    version, and no other version can be promoted on that gate's report."""
    assert run("train") == cli.EXIT_OK
    assert run("evaluate") == cli.EXIT_OK  # the gate approves v1
    assert run("train") == cli.EXIT_OK  # challenger -> v2, never evaluated
    assert registry.alias_version(CHALLENGER) == 2

    assert run("promote", "--version", "2") == cli.EXIT_ERROR
    assert "evaluation is of v1, not v2" in capsys.readouterr().err
    assert (
        registry.alias_version(CHAMPION) is None and registry.history()[-1]["alias"] == CHALLENGER
    )

    # A report that claims an approval the registry never recorded is refused too.
    forged = {**report(project, "evaluate"), "candidate_version": 2}
    (project / "reports" / "evaluate.json").write_text(json.dumps(forged))
    assert run("promote", "--version", "2") == cli.EXIT_ERROR
    assert "records no approval of v2" in capsys.readouterr().err
    assert registry.alias_version(CHAMPION) is None

    assert run("evaluate", "--version", "1") == cli.EXIT_OK
    assert run("promote", "--version", "1") == cli.EXIT_OK
    assert (registry.alias_version(CHAMPION), registry.alias_version(CHALLENGER)) == (1, 2)


def test_a_rollout_that_would_promote_must_name_the_version(project, capsys):
    assert run("rollout", "--promote") == cli.EXIT_ERROR
    assert "--promote needs --version" in capsys.readouterr().err


def test_train_evaluate_promote_reject_rollback(project, registry):
    assert run("train") == cli.EXIT_OK
    assert run("evaluate") == cli.EXIT_OK
    assert report(project, "evaluate")["decision"] == "promote"
    assert run("promote") == cli.EXIT_OK
    assert registry.alias_version(CHAMPION) == 1

    assert run("train") == cli.EXIT_OK  # same params: no better
    assert run("evaluate") == cli.EXIT_OK  # a rejection is a normal outcome
    evaluated = report(project, "evaluate")
    assert (evaluated["decision"], evaluated["candidate_version"]) == ("reject", 2)
    assert evaluated["interval"] is not None
    assert (project / "reports" / "evaluate.md").read_text().count("REJECT") == 1
    assert run("evaluate", "--fail-on-reject") == cli.EXIT_CHECK_FAILED
    assert run("promote") == cli.EXIT_CHECK_FAILED
    assert registry.alias_version(CHAMPION) == 1

    assert run("rollback") == cli.EXIT_ERROR  # v1 is the first champion: nowhere to go
    assert run("history") == cli.EXIT_OK
    assert report(project, "history")["aliases"]["champion"] == 1


def test_batch_scores_with_the_champion(project, settings):
    assert run("batch") == cli.EXIT_ERROR  # no champion yet
    run("train"), run("evaluate"), run("promote")
    assert run("batch", "--output", "reports/scored.csv") == cli.EXIT_OK
    summary = report(project, "batch")
    assert summary["model_version"] == 1
    assert summary["rows"] == len(data.read_table(str(project / settings.params.batch.input)))


def test_guarded_rollback_undoes_only_this_runs_promotion(project, registry):
    """What cd.yml's rollback job runs: `rollback --if-champion N` after a failure past promotion."""
    run("train"), run("evaluate"), run("promote")
    # v2 was never promoted: nothing changes
    assert run("rollback", "--if-champion", "2", "--reason", "x") == cli.EXIT_OK
    assert report(project, "rollback")["skipped"] is True
    assert registry.alias_version(CHAMPION) == 1

    # v1 was the first champion: undoing its promotion leaves no champion, as pipeline does
    assert run("rollback", "--if-champion", "1", "--reason", "deploy failed") == cli.EXIT_OK
    assert registry.alias_version(CHAMPION) is None
    assert run("rollback", "--to-version", "") == cli.EXIT_ERROR  # "" is "previous": there is none


@pytest.mark.integration
def test_pipeline_promotes_deploys_and_smoke_tests_the_first_model(project, registry):
    """The whole loop through a real `bentoml serve`: what `make pipeline` and the demo run."""
    assert run("pipeline") == cli.EXIT_OK
    result = report(project, "pipeline")
    assert (result["decision"], result["deployed"], result["champion"]) == ("promote", True, 1)
    assert report(project, "smoke")["passed"] is True
    assert registry.alias_version(CHAMPION) == 1


@pytest.fixture
def auth_off(project, monkeypatch):
    """serving.require_auth: false, on no CI, in no pod and without the override (each test sets
    what it is about)."""
    write_params(project, serving={"require_auth": False})
    for name in ("CI", KUBERNETES_VARIABLE, OVERRIDE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    return project


@pytest.mark.parametrize(
    ("variable", "value", "where"),
    [("CI", "true", "CI is set"), (KUBERNETES_VARIABLE, "10.0.0.1", "a Kubernetes pod")],
)
def test_build_and_serve_refuse_auth_off_under_ci_or_in_a_pod(
    auth_off, monkeypatch, capsys, variable, value, where
):
    """Refused before anything is built or started, naming the setting, the place and the override."""
    monkeypatch.setenv(variable, value)
    for command in ("build", "serve"):
        assert run(command) == cli.EXIT_ERROR, command
        error = capsys.readouterr().err
        assert "serving.require_auth is false" in error and where in error, error
        assert f"{OVERRIDE_VARIABLE}=1" in error, error
    assert not (auth_off / "reports" / "build.json").exists()


def test_the_override_lets_ci_build_a_bento_without_authentication(auth_off, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv(OVERRIDE_VARIABLE, "1")
    assert run("train") == cli.EXIT_OK
    assert run("build", "--version", "1") == cli.EXIT_OK
    assert report(auth_off, "build")["model_version"] == 1
