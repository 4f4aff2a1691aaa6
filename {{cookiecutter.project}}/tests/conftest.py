"""Shared fixtures: a private copy of the project (params, data, suite) with its own MLflow store."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient
from moto.server import ThreadedMotoServer

from {{ cookiecutter.package }} import data, reports, storage
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import Settings, load_settings

PROJECT_DIR = Path(__file__).resolve().parents[1]
# What a scratch project copies of this one (besides params.yaml).
{%- if cookiecutter.feature_store == "feast" %}
PROJECT_FOLDERS = ("data", "validation", "feature_repo")
{%- else %}
PROJECT_FOLDERS = ("data", "validation")
{%- endif %}
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def empty_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its tables created once: creating them takes seconds per test."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_tracking_store: Path) -> Path:
    """A scratch project folder: params.yaml, data/, validation/ and an empty tracking store."""
    copy_project(tmp_path)
    shutil.copy(empty_tracking_store, tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REPORTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_project(destination: Path) -> None:
    """This project's params.yaml and PROJECT_FOLDERS in `destination`, without the SQLite files
    (*.db) that local runs left in them (a Feast registry and online store)."""
    for name in PROJECT_FOLDERS:
        shutil.copytree(
            PROJECT_DIR / name, destination / name, ignore=shutil.ignore_patterns("*.db")
        )
    shutil.copy(PROJECT_DIR / "params.yaml", destination / "params.yaml")


def write_params(project: Path, **changes: dict | None) -> Path:
    """Update sections of the scratch project's params.yaml, e.g. model={"hyperparameters": {...}};
    a section given as None is removed (feature_store=None: data.source holds the features)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        if values is None:
            params.pop(section, None)
            continue
        params[section] = (
            {**params.get(section, {}), **values} if isinstance(values, dict) else values
        )
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "params.yaml")


@pytest.fixture
def registry(settings: Settings) -> Registry:
    """The scratch project's model registry, made as a command makes it."""
    return Registry(settings)


@pytest.fixture
def frame(settings: Settings):
    """The table training reads (data.training_table)."""
    return data.training_table(settings)


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


# S3 for real, offline: a moto server on 127.0.0.1 that boto3 finds through the environment only.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with boto3 (here and in servers started now) pointed at moto."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    storage.s3_client.cache_clear()  # boto3 reads the settings above when a client is made
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def keys(bucket: str, prefix: str = "") -> list[str]:
    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def approve(settings, models: Registry, version: int, champion: int) -> None:
    """Record the gate approving `version` over `champion`, as `evaluate` does (its report and the
    registry's tag), without the comparison: for tests whose candidates are made to pass or fail
    what comes after the gate."""
    evaluated = {
        "candidate_version": version,
        "champion_version": champion,
        "decision": "promote",
        "reasons": ["approved for this test"],
    }
    reports.write_report(settings.reports_dir, "evaluate", evaluated)
    models.tag_version(version, {"gate_decision": "promote"})


def probe_livez(url: str, seconds: list[float], done: threading.Event, pause: float = 0) -> None:
    """GET /livez until `done`, recording how long each answer took: is the server still quick
    while something else loads it?"""
    with httpx.Client(base_url=url) as client:
        while not done.is_set():
            started = time.perf_counter()
            client.get("/livez").raise_for_status()
            seconds.append(time.perf_counter() - started)
            time.sleep(pause)
