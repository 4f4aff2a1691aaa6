"""Baked projects work: their own test suites and linters pass on every Python version, and the demo
story holds step by step.

One environment per Python version holds the generated project's whole stack and is shared by every
bake that uses that version (the projects themselves go in with `--no-deps`, so switching between bakes
takes a second). These tests start real servers (BentoML, moto S3, mlflow server): they are `slow`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import demo
import pytest
from conftest import COMBINATIONS, answers, bake

pytestmark = pytest.mark.slow

# Bakes whose own test suite runs here: each task, S3, and each Python version at least once.
SUITE_RUNS = ["DEFAULT", "REGRESSION", "WITH_S3", "PY311", "PY313", "CUSTOM_NAMES"]


def interpreter(version: str) -> str:
    """A local CPython of this minor version (uv may not download one here): pyenv's, else PATH's."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python")) if root else []
    candidate = found[-1] if found else shutil.which(f"python{version}")
    if not candidate:
        pytest.fail(f"no Python {version} on this machine (pyenv or PATH); CI needs all three")
    return candidate


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1500
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """stack(project) -> a venv with the project's dependencies, shared per Python version."""
    venvs: dict[str, Path] = {}

    def get(project: Path) -> Path:
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
        version = pyproject["project"]["requires-python"].removeprefix(">=")
        if version not in venvs:
            venv = tmp_path_factory.mktemp(f"stack-{version}") / "venv"
            run(["uv", "venv", "--quiet", "--python", interpreter(version), str(venv)], project)
            requirements = [
                *pyproject["project"]["dependencies"],
                *pyproject["dependency-groups"]["dev"],
            ]
            run(["uv", "pip", "install", "--quiet", "--python", str(venv / "bin/python"),
                 *requirements], project)
            venvs[version] = venv
        demo.install(project, venvs[version])
        return venvs[version]

    return get


@pytest.mark.parametrize("name", SUITE_RUNS)
def test_baked_project_passes_its_own_tests_and_linters(name, tmp_path, stack):
    project = bake(tmp_path, **COMBINATIONS[name])
    venv = stack(project)
    run([str(venv / "bin/ruff"), "check", "src", "tests"], project)
    run([str(venv / "bin/ruff"), "format", "--check", "src", "tests"], project)
    done = run([str(venv / "bin/pytest"), "-q", "-p", "no:cacheprovider"], project)
    assert " passed" in done.stdout and " failed" not in done.stdout
    expected = answers(**COMBINATIONS[name])
    assert f"Python {expected['python_version']}" in run(
        [str(venv / "bin/python"), "--version"], project
    ).stdout


def test_the_demo_story(tmp_path, stack):
    """The README's story, asserted from the JSON reports and the registry's audit trail."""
    project_dir = bake(tmp_path)
    project = demo.Project(project_dir, stack(project_dir))
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
