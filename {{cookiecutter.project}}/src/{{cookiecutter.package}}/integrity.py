"""Model artifact integrity: the digest recorded at registration, checked before a model is served.

Registration records `artifact_digest` of the model's files as a registry tag (DIGEST_TAG); the
bento build checks it before packing the model and the service before loading it, so files changed
anywhere between the registry and the server are refused. Imports nothing heavy: the serving process
loads it before any worker starts.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .errors import SecurityError

MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
# The registry tag (and stored-model label) holding the digest recorded at registration.
DIGEST_TAG = "model_sha256"
# The file MLflow adds next to a model when it is downloaded through the registry: not the model.
_NOT_ARTIFACTS = frozenset({"registered_model_meta"})


def artifact_digest(folder: Path | str) -> str:
    """sha256 over every file of a model folder (relative path and content), in a fixed order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and path.name not in _NOT_ARTIFACTS
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
            f"recorded {expected[:12]}...); refusing to serve them"
        )
