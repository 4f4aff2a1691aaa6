"""The named option combinations, and fixtures that bake each once and install stacks once per session."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import BakedProject, bake, find_python, install_editable

# Named option combinations: each differs from the defaults in the answers it names, and together they
# take every choice and every optional file both ways.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "DEFAULT": {},
    "REGRESSION": {"task": "regression"},
    "REGRESSION_MAE_STRICT": {
        "task": "regression",
        "primary_metric": "mae",
        "min_improvement": "0.5",
        "gate_requires_significance": True,
    },
    "CLASSIFICATION_ROC_AUC": {
        "primary_metric": "roc_auc",
        "min_improvement": "0",
        "license": "BSD-3-Clause",
    },
    "WITH_S3": {"s3_bucket": "my-models-bucket", "aws_region": "eu-west-1"},
    "PY311": {"python_version": "3.11", "license": "Apache-2.0"},
    "PY313": {"python_version": "3.13"},
    "PROPRIETARY": {
        "license": "Proprietary",
        "task": "regression",
        "s3_bucket": "models.example-corp",
        "feature_store": "feast",
    },
    "FEAST": {"feature_store": "feast"},
    "CUSTOM_NAMES": {
        "project_name": "Churn Predictor",
        "project": "churn-predictor",
        "package": "churn",
        "description": "Predicts churn; 'quoted' and \"double-quoted\" words, ümlauts & <tags> stay intact.",
        "author": 'Ana O\'Neil "Ops" & Co',
        "github_owner": "Acme-Corp",
    },
}


@pytest.fixture(scope="session")
def baked(tmp_path_factory: pytest.TempPathFactory):
    """baked(name) -> the project baked from COMBINATIONS[name], baked once per test session."""
    cache: dict[str, BakedProject] = {}

    def get(name: str) -> BakedProject:
        if name not in cache:
            cache[name] = bake(tmp_path_factory.mktemp(name.lower()), **COMBINATIONS[name])
        return cache[name]

    return get


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1500
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """stack(project) -> a venv with the baked project's dependencies, its extras (pyspark) and its dev
    tools, shared by the bakes with the same Python version and requirements.

    The project itself goes in with `--no-deps` (editable), so switching between bakes takes a second.
    An option that adds a dependency (feature_store: feast) gets a venv of its own rather than changing
    what the other bakes' suites import (Feast moves prometheus-client back, for one).
    Used by tests/test_generated.py and tests/test_workflows_act.py.
    """
    venvs: dict[tuple[str, ...], Path] = {}

    def get(project: BakedProject) -> Path:
        pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
        version = pyproject["project"]["requires-python"].removeprefix(">=")
        extras = pyproject["project"].get("optional-dependencies", {}).values()
        requirements = [
            *pyproject["project"]["dependencies"],
            *(requirement for extra in extras for requirement in extra),
            *pyproject["dependency-groups"]["dev"],
        ]
        key = (version, *sorted(requirements))
        if key not in venvs:
            venv = tmp_path_factory.mktemp(f"stack-{version}") / "venv"
            run(["uv", "venv", "--quiet", "--python", find_python(version), str(venv)], project.path)
            run(
                ["uv", "pip", "install", "--quiet", "--python", str(venv / "bin/python"), *requirements],
                project.path,
            )
            venvs[key] = venv
        install_editable(project, venvs[key])
        return venvs[key]

    return get


def pytest_configure(config: pytest.Config) -> None:
    """Refuse `--dist loadgroup` where it would not keep an xdist_group together: pytest 9 ignores
    the group suffix pytest-xdist 3.8 puts on node ids, so each worker built its own act world."""
    loadgroup = config.getoption("dist", "no") == "loadgroup"
    if loadgroup and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(
            f"pytest {pytest.__version__} splits xdist groups across workers; "
            "install the pytest that tests/requirements.txt pins"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable order otherwise): with two xdist workers, the longest pieces (the act
    scenarios, the baked suites, the demo) start at once instead of after the quick ones."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
