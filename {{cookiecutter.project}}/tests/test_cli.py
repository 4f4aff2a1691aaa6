"""The CLI as the workflows call it: exit codes, reports, and what it refuses."""

from __future__ import annotations

import json

from {{ cookiecutter.package }} import cli, data, registry

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


def test_invalid_data_stops_training_and_registers_nothing(project, settings, frame, capsys):
    first_feature = frame.columns[0]
    broken = frame.drop(columns=[first_feature])
    data.write_table(broken, str(project / settings.params.data.source))
    assert run("train") == cli.EXIT_CHECK_FAILED
    assert "data invalid" in capsys.readouterr().err
    assert report(project, "validate")["success"] is False
    assert registry.alias_version(settings, registry.CHALLENGER) is None
    assert not (project / "reports" / "train.json").exists()


def test_train_evaluate_promote_reject_rollback(project, settings):
    assert run("train") == cli.EXIT_OK
    assert run("evaluate") == cli.EXIT_OK
    assert report(project, "evaluate")["decision"] == "promote"
    assert run("promote") == cli.EXIT_OK
    assert registry.alias_version(settings, registry.CHAMPION) == 1

    assert run("train") == cli.EXIT_OK  # same params: no better
    assert run("evaluate") == cli.EXIT_OK  # a rejection is a normal outcome
    evaluated = report(project, "evaluate")
    assert (evaluated["decision"], evaluated["candidate_version"]) == ("reject", 2)
    assert evaluated["interval"] is not None
    assert (project / "reports" / "evaluate.md").read_text().count("REJECT") == 1
    assert run("evaluate", "--fail-on-reject") == cli.EXIT_CHECK_FAILED
    assert run("promote") == cli.EXIT_CHECK_FAILED
    assert registry.alias_version(settings, registry.CHAMPION) == 1

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
