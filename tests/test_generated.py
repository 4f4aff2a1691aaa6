"""Baked projects work: their own test suites pass on every Python version, and the demo
story holds step by step.

One environment per Python version holds the generated project's whole stack and is shared by every
bake that uses that version (the projects themselves go in with `--no-deps`, so switching between bakes
takes a second). These tests start real servers (BentoML, moto S3, mlflow server): they are `slow`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import demo
import pytest
from conftest import COMBINATIONS, run
from helpers import bake, find_python, promtool

pytestmark = pytest.mark.slow

# Bake -> the arguments of its own pytest run. The default bake's suite but its rollouts runs as
# ci.yml's `test` job, the way a pull request runs it, in tests/test_workflows_act.py (scenario 1), so
# here the default bake runs only the rollouts through nginx (minutes, the same for every task) and
# the Spark engine's tests (a JVM; the act job's environment has no pyspark, an optional extra).
# The regression bake with the feature store (feast), on the newest Python, runs every test but the
# rollouts, the files that bring their own data and task, and the servers' armour, loading and
# process handling, the registry's races and the EMR submission, which no task, feature store or
# Python version changes (the same in every bake): so the feast bake's own tests
# (tests/test_feature_store*.py) and every test of what reads the training table or serves the model
# run with Feast in the loop, on Python 3.13. The oldest Python runs the unit tests, in a bake that
# also takes the options that change names and files but not the servers (one suite run checks
# them all). test_bake lints every bake and compiles it on its Python.
BAKE_INDEPENDENT = [
    "--ignore=tests/test_own_data_serving.py",
    "--ignore=tests/test_own_data_monitoring.py",
    "--ignore=tests/test_security.py",
    "--ignore=tests/test_model_loading.py",
    "--ignore=tests/test_champion_copy.py",
    "--ignore=tests/test_registry_server.py",
    "--ignore=tests/test_batch_emr.py",
    "--deselect=tests/test_deployment.py::test_smoke_fails_against_a_server_without_authentication",
    "--deselect=tests/test_deployment.py::test_stop_ends_the_workers_of_a_server_that_was_killed",
    "--deselect=tests/test_deployment.py::test_stop_ends_what_the_server_started_even_after_the_server_died",
    "--deselect=tests/test_deployment.py::test_stop_ends_the_server_and_what_it_started",
]
SUITE_RUNS = {
    "DEFAULT": ["-m", "rollout or spark"],
    "PY313+REGRESSION+FEAST": ["-m", "not rollout and not spark", *BAKE_INDEPENDENT],
    "PY311+CUSTOM_NAMES+WITH_S3": ["-m", "not integration and not spark"],
}
# Tests that skip where a tool is missing (promtool, Java) and must run in CI, where .ci/run installs it.
MUST_NOT_SKIP = ("test_monitoring_files", "test_batch_spark")


@pytest.mark.parametrize(("name", "selection"), SUITE_RUNS.items(), ids=list(SUITE_RUNS))
def test_baked_project_passes_its_own_tests(name, selection, tmp_path, stack):
    # Without promtool the baked suites check their alert rules by schema only and skip the rules'
    # unit tests: fine on a laptop, not in CI, where .ci/run installs it.
    if os.environ.get("CI") and promtool() is None:
        pytest.fail("promtool is not installed: .ci/run installs it from Debian's prometheus package")
    options = {key: value for part in name.split("+") for key, value in COMBINATIONS[part].items()}
    project = bake(tmp_path, **options)
    venv = stack(project)
    done = run([str(venv / "bin/pytest"), "-q", "-p", "no:cacheprovider", *selection], project.path)
    assert " passed" in done.stdout and " failed" not in done.stdout
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    if os.environ.get("CI"):
        assert not [line for line in skipped if any(name in line for name in MUST_NOT_SKIP)], skipped
    version = project.answers["python_version"]
    assert f"Python {version}" in run([str(venv / "bin/python"), "--version"], project.path).stdout


def test_the_demo_story(tmp_path, stack):
    """The README's story, asserted from the JSON reports and the registry's audit trail."""
    baked = bake(tmp_path)
    project = demo.Project(baked.path, stack(baked))
    outcomes = demo.tell(project)
    assert [title for title, _, _ in outcomes] == [title for title, _ in demo.STORY]

    aliases = project.aliases()
    assert aliases == {"champion": 1, "challenger": 4}  # rollback removed `previous`: v1 was first
    history = project.report("history")["history"]
    promotions = [e["after"] for e in history if e["action"] == "promote"]
    assert promotions == [1, 3, 4]  # v2 was rejected by the gate; nothing of the corrupted run
    rollbacks = [(e["before"], e["after"], e["why"]) for e in history if e["action"] == "rollback"]
    assert rollbacks[0][:2] == (4, 3) and "deployment of v4 failed" in rollbacks[0][2]
    assert rollbacks[1][:2] == (3, 1) and "demo" in rollbacks[1][2]
    assert project.report("batch")["output"].endswith("predictions.parquet")


def test_make_install_works_with_no_uv_on_path_and_names_the_python_to_pass(tmp_path):
    """A newcomer's machine: python3 with pip, no uv. `make install` gets uv with pip; asked for a
    Python it cannot find or download, it lists the interpreters it found and says what to pass."""
    baked = bake(tmp_path)
    bare = tmp_path / "bare"  # a python3 with pip and nothing else, first on PATH
    subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
    environ = {**os.environ, "PATH": f"{bare / 'bin'}:/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never"}
    environ.pop("UV", None)

    def make_install(*arguments: str) -> subprocess.CompletedProcess:
        command = ["make", "install", *arguments]
        return subprocess.run(
            command, cwd=baked.path, env=environ, capture_output=True, text=True, timeout=600
        )

    refused = make_install("PYTHON=3.99")
    assert refused.returncode != 0
    assert "No Python 3.99 here" in refused.stderr
    assert "make install PYTHON=/path/to/python3" in refused.stderr
    assert not (baked.path / ".venv").exists()

    python = find_python(baked.answers["python_version"])
    installed = make_install(f"PYTHON={python}")
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert (bare / "bin" / "uv").exists()  # pip put it there: nothing else had it
    package = baked.answers["package"]
    check = [str(baked.path / ".venv/bin/python"), "-c", f"import {package}, bentoml, mlflow"]
    subprocess.run(check, check=True, timeout=300)
