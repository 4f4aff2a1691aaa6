"""Model files -> a scikit-learn model, verified before anything is deserialised: the one loader.

Registration records `artifact_digest` of the model's files as a registry tag (DIGEST_TAG). Every
load (the gate, `batch`, the smoke test, the build, the service) goes through `load_model` or, where
nothing needs to run yet (the build), `checked_model_file`: the folder's digest first, then the format
and the types in the files, all decided here in code and never by the model's own `MLmodel`, which
travels with the files it would vouch for. Only skops files are loaded, and only with types from
TRUSTED_MODULES; pickle and cloudpickle (which run code on load) are refused unless
ALLOW_PICKLED_MODELS is set, which only the tests of deliberately misbehaving models do.
Imports nothing heavy at import time: the serving process loads it before any worker starts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import SecurityError

MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
# The registry tag holding the digest recorded at registration.
DIGEST_TAG = "model_sha256"
# The file MLflow adds next to a model when it is downloaded through the registry: not the model.
REGISTRY_NOTE = "registered_model_meta"
# Types skops does not trust by default that a model may still hold: whatever scikit-learn, NumPy
# and SciPy define (trees, dtypes, loss links), and functools.partial (HistGradientBoosting keeps one
# around a scikit-learn function; what it wraps is checked like any other type).
TRUSTED_MODULES = ("sklearn", "numpy", "scipy")
TRUSTED_TYPES = frozenset({"functools.partial"})
SKOPS = "skops"
PICKLED_FORMATS = ("pickle", "cloudpickle")
# Set to 1 to load pickled models, whose loading runs any code they carry: for the tests of
# deliberately misbehaving models only (tests/misbehaving.py), never in a deployment.
PICKLED_MODELS_VARIABLE = "ALLOW_PICKLED_MODELS"
logger = logging.getLogger(__name__)


def artifact_digest(folder: Path | str) -> str:
    """sha256 over every file of a model folder (relative path and content), in a fixed order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and path.name != REGISTRY_NOTE
    )
    if not files:
        raise SecurityError(f"{folder}: no model files to digest")
    for path in files:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def verify_artifacts(folder: Path | str, expected: str | None, what: str) -> None:
    """Raise SecurityError unless the folder's digest is the one recorded at registration."""
    if not expected:
        raise SecurityError(f"{what}: no model_sha256 was recorded; register the model again")
    found = artifact_digest(folder)
    if not hmac.compare_digest(found, expected):
        raise SecurityError(
            f"{what}: model files changed since registration (sha256 {found[:12]}..., "
            f"recorded {expected[:12]}...); refusing to load them"
        )


def untrusted(types: list[str]) -> list[str]:
    """The types of `types` outside TRUSTED_MODULES and TRUSTED_TYPES, which no model may hold."""
    return [
        name
        for name in types
        if name not in TRUSTED_TYPES and name.split(".", 1)[0] not in TRUSTED_MODULES
    ]


def pickled_models_allowed() -> bool:
    """The opt-in for pickled models, read here only: set for the tests that serve misbehaving ones."""
    return os.environ.get(PICKLED_MODELS_VARIABLE, "").strip() == "1"


def _sklearn_flavour(folder: Path, what: str) -> tuple[str, Path]:
    """The serialization format and the model file the MLmodel names, the file kept inside `folder`."""
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        flavour = meta["flavors"]["sklearn"]
        name = flavour["pickled_model"]
        format_ = flavour.get("serialization_format", "pickle")
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise SecurityError(f"{what}: not a scikit-learn MLflow model ({error!r})") from None
    path = (folder / str(name)).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise SecurityError(f"{what}: the model file {name!r} is not a file of the model folder")
    return str(format_), path


@dataclass(frozen=True)
class ModelFile:
    """A model file that passed every check: how to deserialise it, and the skops types to trust."""

    path: Path
    format: str
    trusted: list[str]


def checked_model_file(folder: Path | str, expected: str | None, what: str) -> ModelFile:
    """Everything `load_model` checks before deserialising: the model file and the types to trust.

    The digest first, so that nothing else is read from files changed since registration; then the
    format (skops, or pickled with ALLOW_PICKLED_MODELS=1) and skops' untrusted types, read from the
    file's schema without building any object.
    """
    folder = Path(folder)
    verify_artifacts(folder, expected, what)
    format_, path = _sklearn_flavour(folder, what)
    if format_ in PICKLED_FORMATS and pickled_models_allowed():
        logger.warning(
            "LOADING A PICKLED MODEL (%s, %s): %s=1 lets it run any code it carries. Only for "
            "tests of deliberately misbehaving models.",
            what,
            format_,
            PICKLED_MODELS_VARIABLE,
        )
        return ModelFile(path, format_, [])
    if format_ != SKOPS:
        raise SecurityError(
            f"{what}: the model is stored as {format_}, which can run code when loaded; only "
            f"skops models are loaded (log it with mlflow.sklearn's default format)"
        )
    from skops import io as skops_io

    try:
        types = skops_io.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, TypeError) as error:
        raise SecurityError(f"{what}: {path.name} is not a readable skops file ({error})") from None
    if refused := untrusted(types):
        raise SecurityError(
            f"{what}: the model holds types outside {', '.join(TRUSTED_MODULES)}: "
            f"{', '.join(refused)}; refusing to load it"
        )
    return ModelFile(path, SKOPS, types)


def load_model(folder: Path | str, expected: str | None, what: str) -> Any:
    """The scikit-learn model of an MLflow model folder whose digest must be `expected`.

    `what` names the model in errors (e.g. `name v3`). SecurityError before anything is
    deserialised when the files changed, the format is not skops, or a type is not trusted.
    """
    checked = checked_model_file(folder, expected, what)
    if checked.format != SKOPS:  # pickled, and allowed (loudly) by checked_model_file
        import pickle  # cloudpickle's payloads load with pickle once cloudpickle is installed

        with checked.path.open("rb") as file:
            return pickle.load(file)
    from skops import io as skops_io

    return skops_io.load(checked.path, trusted=checked.trusted)
