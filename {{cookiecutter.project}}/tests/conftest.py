"""Shared fixtures: a private copy of the project (params, data, suite) with its own MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }} import data
from {{ cookiecutter.package }}.settings import Settings, load_settings

PROJECT_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def empty_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its tables created once: creating them takes seconds per test."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_tracking_store: Path) -> Path:
    """A scratch project folder: params.yaml, data/, validation/ and an empty tracking store."""
    for name in ("data", "validation"):
        shutil.copytree(PROJECT_DIR / name, tmp_path / name)
    shutil.copy(PROJECT_DIR / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(empty_tracking_store, tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REPORTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(project: Path, **changes: dict) -> Path:
    """Update sections of the scratch project's params.yaml, e.g. model={"hyperparameters": {...}}."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section] = (
            {**params.get(section, {}), **values} if isinstance(values, dict) else values
        )
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "params.yaml")


@pytest.fixture
def frame(settings: Settings):
    return data.read_table(settings.resolve(settings.params.data.source))


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, empty_tracking_store: Path):
    """Two registered versions and a bento of the first, built once and shared (tests/shared_bento.py)."""
    from .shared_bento import shared_build

    return shared_build(tmp_path_factory, empty_tracking_store)


@pytest.fixture
def server(built, request: pytest.FixtureRequest):
    """A running server of the shared bento, started once and stopped at the end of the session."""
    from .shared_bento import shared_server

    return shared_server(built, request.config)
