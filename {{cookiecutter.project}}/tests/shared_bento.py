"""One trained registry, one bento and one running server, shared by test_service and test_deployment.

Training two versions, building a bento and starting a BentoML server take tens of seconds on a small
machine, so the first test that needs them builds them and every later one, in either file, reuses
them; the server stops when the session ends. The `built` and `server` fixtures in conftest.py wrap
these cached functions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

{% if cookiecutter.feature_store == "feast" -%}
from {{ cookiecutter.package }} import data, feature_store, training
{% else -%}
from {{ cookiecutter.package }} import data, training
{% endif -%}
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import Settings, load_settings

from .conftest import copy_project, write_params

# The second version is trained far from the first, so their predictions differ on the smoke rows.
FAR_APART = {
    "classification": {"estimator": "logistic_regression", "hyperparameters": {"C": 1e-6}},
    "regression": {"estimator": "ridge", "hyperparameters": {"alpha": 1e6}},
}
MAX_BATCH_ROWS = 25  # above the smoke test's 20 rows, small enough to test the limit cheaply


@dataclass(frozen=True)
class Built:
    """A scratch project with two registered versions and a bento of `version`."""

    project: Path
    settings: Settings
    version: int
    other_version: int
    bento: str


_CACHE: dict[str, object] = {}


def _scratch_settings(project: Path) -> Settings:
    """The scratch project's settings, whatever MLFLOW_TRACKING_URI or REPORTS_DIR say outside."""
    settings = load_settings(project / "params.yaml")
    outside = {"tracking_uri": None, "reports_dir": None}
    return settings.model_copy(update={"env": settings.env.model_copy(update=outside)})


def shared_build(tmp_path_factory: pytest.TempPathFactory, empty_tracking_store: Path) -> Built:
    """Train two versions in a scratch project and build a bento of the first (once per session)."""
    if "built" not in _CACHE:
        project = tmp_path_factory.mktemp("deployed")
        copy_project(project)
        shutil.copy(empty_tracking_store, project / "mlflow.db")
        write_params(project, serving={"max_batch_rows": MAX_BATCH_ROWS})
        settings = _scratch_settings(project)
        frame = data.training_table(settings)
        version = training.train(settings, Registry(settings), frame).model_version
        write_params(project, model=FAR_APART[settings.params.task])
        other = _scratch_settings(project)
        other_version = training.train(other, Registry(other), frame).model_version
        bento = build(settings, Registry(settings), version)
{%- if cookiecutter.feature_store == "feast" %}
        feature_store.materialize(settings)  # as cd.yml does before a deploy (/predict_entity)
{%- endif %}
        _CACHE["built"] = Built(project, settings, version, other_version, bento)
    return _CACHE["built"]  # type: ignore[return-value]


def shared_server(built: Built, config: pytest.Config) -> Server:
    """The bento of `built.version`, served on a free port until the session ends."""
    if "server" not in _CACHE:
        running = serve(built.settings, built.bento)
        config.add_cleanup(running.stop)
        _CACHE["server"] = running
    return _CACHE["server"]  # type: ignore[return-value]
