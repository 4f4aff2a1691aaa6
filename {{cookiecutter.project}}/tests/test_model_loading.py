"""The one model loader (integrity): tampered model files are refused by every loader before anything
in them is deserialised.

Each tampered model carries a payload that writes a marker file when it is deserialised: a pickle
whose loading calls `Path.write_text`, or a skops object whose state setter does. The registry's
loader (what the gate, `batch` and the smoke test call), the build, and a real `bentoml serve` must
refuse it, and the marker must never exist. Real MLflow (sqlite and a local artifact store), real
BentoML.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import yaml
from sklearn.linear_model import LogisticRegression, Ridge
from skops import io as skops_io

from {{ cookiecutter.package }} import data, integrity, training
from {{ cookiecutter.package }}.deploy.bento import bentoml_stores, build
from {{ cookiecutter.package }}.deploy.server import serve
from {{ cookiecutter.package }}.errors import DeploymentError, SecurityError, SettingsError
from {{ cookiecutter.package }}.registry import Registry
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import write_params
from .misbehaving import Misbehaving, allow_pickled_models, register
from .shared_bento import Built


class PicklePayload:
    """Unpickled, it writes the marker: what a model switched to cloudpickle can do on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "deserialised")


class SkopsPayload:
    """Built by skops from a model file, it writes the marker (skops sets its state on load)."""

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("deserialised")


class OwnClassifier(LogisticRegression):
    """A classifier outside scikit-learn, NumPy and SciPy, named by dotted path in params."""


class OwnRegressor(Ridge):
    """A regressor outside scikit-learn, NumPy and SciPy, named by dotted path in params."""


OWN_ESTIMATOR = {"classification": OwnClassifier, "regression": OwnRegressor}


def switch_to_cloudpickle(folder: Path, marker: Path) -> None:
    """The MLmodel names a cloudpickle file whose loading writes the marker."""
    (folder / "model.pkl").write_bytes(pickle.dumps(PicklePayload(marker)))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavour = mlmodel["flavors"]["sklearn"]
    flavour.update(pickled_model="model.pkl", serialization_format="cloudpickle")
    flavour.pop("skops_trusted_types", None)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def add_untrusted_type(folder: Path, marker: Path) -> None:
    """The skops file holds SkopsPayload, and the MLmodel trusts it (as MLflow's loader would)."""
    payload = SkopsPayload()
    payload.__dict__["marker"] = str(marker)
    (folder / "model.skops").write_bytes(skops_io.dumps(payload))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = skops_io.get_untrusted_types(
        file=folder / "model.skops"
    )
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def change_a_file(folder: Path, marker: Path) -> None:
    with (folder / "model.skops").open("ab") as weights:
        weights.write(b"\0")


def registered_folder(registry: Registry, version: int) -> Path:
    """Where the artifact store keeps `version`'s files (a local folder in these tests)."""
    uri = registry.client.get_model_version_download_uri(registry.model_name, str(version))
    return Path(uri.removeprefix("file://"))


TAMPERING = {
    "changed_file": change_a_file,
    "cloudpickle": switch_to_cloudpickle,
    "untrusted_type": add_untrusted_type,
}


@pytest.mark.parametrize(
    ("tampering", "digest_rewritten", "refusal"),
    [
        ("changed_file", False, "model files changed since registration"),
        ("cloudpickle", False, "model files changed since registration"),
        ("untrusted_type", False, "model files changed since registration"),
        # Someone with registry write access also recorded the new files' digest:
        ("cloudpickle", True, "is stored as cloudpickle, which can run code"),
        ("untrusted_type", True, "types outside sklearn, numpy, scipy: .*SkopsPayload"),
    ],
)
def test_the_registry_loader_and_the_build_refuse_tampered_files_unread(
    settings, registry, frame, tmp_path, tampering, digest_rewritten, refusal
):
    version = training.train(settings, registry, frame).model_version
    marker = tmp_path / "marker"
    TAMPERING[tampering](registered_folder(registry, version), marker)
    if digest_rewritten:
        registry.record_digest(version)
    with pytest.raises(SecurityError, match=f"{registry.model_name} v{version}: .*{refusal}"):
        registry.load_model(version)  # as the gate, `batch` and the smoke test load
    with pytest.raises(DeploymentError, match=refusal):
        build(settings, registry, version)
    assert not marker.exists()
    assert not list((settings.bentoml_home / "bentos").rglob("bento.yaml"))  # nothing was built


@pytest.mark.parametrize(
    ("model_file", "refusal"),
    [
        ("model.skops", "model.skops is not a readable skops file"),  # a pickle named skops
        ("../model.skops", "the model file '../model.skops' is not a file of the model folder"),
    ],
)
def test_a_model_file_that_is_not_what_the_mlmodel_says_is_refused(tmp_path, model_file, refusal):
    folder, marker = tmp_path / "model", tmp_path / "marker"
    folder.mkdir()
    payload = pickle.dumps(PicklePayload(marker))
    (folder / "model.skops").write_bytes(payload)
    (tmp_path / "model.skops").write_bytes(payload)
    flavour = {"pickled_model": model_file, "serialization_format": "skops"}
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": flavour}}))
    with pytest.raises(SecurityError, match=f"the model: {refusal}"):
        integrity.load_model(folder, integrity.artifact_digest(folder), "the model")
    assert not marker.exists()


def test_pickled_models_load_only_when_allowed_and_still_verified(
    settings, registry, frame, monkeypatch, caplog, tmp_path
):
    """The opt-in of tests/misbehaving.py loads a pickled model, loudly; a changed one never."""
    features, target = data.split_features_target(frame, settings.params.data)
    model = training.fit(settings, features, target, "the test data")
    version = register(settings, Misbehaving(model), features)
    with pytest.raises(SecurityError, match=f"v{version}: the model is stored as cloudpickle"):
        registry.load_model(version)
    allow_pickled_models(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert isinstance(registry.load_model(version), Misbehaving)
    assert "LOADING A PICKLED MODEL" in caplog.text and "ALLOW_PICKLED_MODELS=1" in caplog.text
    marker = tmp_path / "marker"
    folder = registered_folder(registry, version)
    (folder / "model.pkl").write_bytes(pickle.dumps(PicklePayload(marker)))
    with pytest.raises(SecurityError, match="model files changed since registration"):
        registry.load_model(version)
    assert not marker.exists()


def test_training_refuses_a_model_the_loader_would_not_trust(project, settings, frame):
    own = OWN_ESTIMATOR[settings.params.task].__name__
    write_params(project, model={"estimator": f"{__name__}.{own}"})
    settings = load_settings(project / "params.yaml")
    registry = Registry(settings)
    with pytest.raises(
        SettingsError, match=rf"does not trust \(tests\.test_model_loading\.{own}\)"
    ):
        training.train(settings, registry, frame)
    assert registry.alias_version("challenger") is None  # nothing was registered


@pytest.mark.integration
def test_the_service_refuses_files_changed_after_the_build_whatever_sits_beside_them(
    built: Built, tmp_path
):
    """The digest the service trusts is the bento's argument, pinned by the build: a cloudpickle
    switch with a matching digest written into the stored model's own labels is still refused."""
    import bentoml

    settings = built.settings
    bento = build(settings, Registry(settings), built.version)
    marker = tmp_path / "marker"
    with bentoml_stores(settings.bentoml_home):
        stored = bentoml.models.get(bentoml.bentos.get(bento).info.args["model_tag"])
    folder = Path(stored.path_of(integrity.MLFLOW_MODEL_FOLDER))
    switch_to_cloudpickle(folder, marker)
    model_yaml = Path(stored.path) / "model.yaml"
    info = yaml.safe_load(model_yaml.read_text())
    info["labels"][integrity.DIGEST_TAG] = integrity.artifact_digest(folder)
    model_yaml.write_text(yaml.safe_dump(info))
    with pytest.raises(DeploymentError, match="model files changed since registration"):
        serve(settings, bento).stop()  # stopped, should it ever start
    assert not marker.exists()
