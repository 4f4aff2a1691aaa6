"""A lock on a registered model's aliases, made of what the MLflow API does atomically.

MLflow has no compare-and-set on aliases, and a tracking server with several workers (or several
servers on one database) serves two CI runs at the same moment. Creating a registered model is
atomic, though: of two runs creating the same name, one fails with RESOURCE_ALREADY_EXISTS. So the
lock is a registered model named `<model>.alias-lock` (a name no project model can have: model
names are letters, digits and underscores), described and tagged as a lock, deleted on release. A
run that crashed while holding it leaves it behind: it expires `expiry_seconds` after its claim, and
the first run to find it expired takes it over (again through an atomic creation, so only one does).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .errors import RegistryError

LOCK_SUFFIX = ".alias-lock"
POLL_SECONDS = 0.2


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _taken(error: MlflowException) -> bool:
    """The creation lost to another run's. The server answers RESOURCE_DOES_NOT_EXIST too when the
    winner released the lock before the server looked up what it lost to (its SQL store does so)."""
    return error.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")


def claim(
    client: MlflowClient, name: str, model_name: str, holder: str, expiry: float
) -> str | None:
    """Create the lock model `name`: our claim (when it expires), or None when someone holds it."""
    expires_at = time.time() + expiry
    try:
        client.create_registered_model(
            name,
            tags={"lock_for": model_name, "holder": holder, "expires_at": str(expires_at)},
            description=(
                f"Not a model: the lock on {model_name}'s aliases, held by {holder} while it moves "
                f"them, deleted after. Left by a crashed run, it expires at {_stamp(expires_at)}."
            ),
        )
    except MlflowException as error:
        if _taken(error):
            return None
        raise
    return str(expires_at)


def _holder(client: MlflowClient, name: str) -> dict[str, str] | None:
    """The tags of the lock model (who holds it, until when), or None once it is gone.

    A lock being deleted can be read without its tags (the server reads the model, then its tags).
    """
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return None
    return tags if "expires_at" in tags else None


def _take_over(client: MlflowClient, name: str, stale: dict[str, str]) -> bool:
    """Delete the expired lock `stale`, if this run is the one that claims its takeover.

    The takeover marker is named after the stale claim, so of several runs that found the same
    expired lock only one creates it; it deletes the lock only if that is still the stale claim.
    """
    marker = f"{name}.takeover.{stale['expires_at'].replace('.', '-')}"
    if claim(client, marker, stale["lock_for"], "the takeover of an expired lock", 0) is None:
        return False
    if (_holder(client, name) or {}).get("expires_at") == stale["expires_at"]:
        client.delete_registered_model(name)
    client.delete_registered_model(marker)
    return True


@contextmanager
def held(
    client: MlflowClient, model_name: str, holder: str, wait_seconds: float, expiry_seconds: float
) -> Iterator[None]:
    """Hold the lock on `model_name`'s aliases: wait up to `wait_seconds` for it, release it after.

    RegistryError, naming the holder and when its claim expires, when it stays taken.
    """
    name = lock_name(model_name)
    deadline = time.monotonic() + wait_seconds
    while (ours := claim(client, name, model_name, holder, expiry_seconds)) is None:
        current = _holder(client, name)
        if current is None:
            continue  # released between our attempt and the look
        if float(current["expires_at"]) < time.time() and _take_over(client, name, current):
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"the aliases of {model_name} are locked by {current['holder']} (registered model "
                f"{name}); waited {wait_seconds:g} s. If that run crashed, its lock expires at "
                f"{_stamp(float(current['expires_at']))}: try again then; nothing changed"
            )
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        # Held past its expiry, the lock may be another run's by now: delete only our own claim.
        if (_holder(client, name) or {}).get("expires_at") == ours:
            client.delete_registered_model(name)
