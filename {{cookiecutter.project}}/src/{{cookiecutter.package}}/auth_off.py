"""Serving without authentication is for a developer's own machine, never for what CI ships.

`serving.require_auth: false` is baked into the bento and would travel with it into the image and the
cluster. Under CI (the `CI` variable, as on GitHub Actions) or in a container (its marker files, or a
Kubernetes pod's variable), `build` and `serve` refuse it, and the service refuses to start with it,
unless OVERRIDE_VARIABLE says an open server is really meant (a benchmark, a test of the open server).
Imports nothing heavy: the serving process reads it before any worker starts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

OVERRIDE_VARIABLE = "ALLOW_UNAUTHENTICATED_SERVING"
# Docker writes the first, Podman the second, into every container they start.
CONTAINER_FILES = (Path("/.dockerenv"), Path("/run/.containerenv"))
KUBERNETES_VARIABLE = "KUBERNETES_SERVICE_HOST"  # set in every pod


def _set(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() not in {"", "0", "false"}


def shared_machine(
    environ: Mapping[str, str], container_files: Collection[Path] = CONTAINER_FILES
) -> str | None:
    """Why this is not a developer's own machine (CI, a container, a pod), or None when it is."""
    if _set(environ, "CI"):
        return "CI is set"
    if _set(environ, KUBERNETES_VARIABLE):
        return f"{KUBERNETES_VARIABLE} is set (a Kubernetes pod)"
    marker = next((path for path in container_files if path.exists()), None)
    return f"{marker} exists (a container)" if marker else None


def refusal(
    require_auth: bool,
    environ: Mapping[str, str],
    container_files: Collection[Path] = CONTAINER_FILES,
) -> str | None:
    """The error for authentication off where it is not allowed, naming the setting and the
    override; None when authentication is on, the machine is a developer's own, or it is overridden."""
    if require_auth or _set(environ, OVERRIDE_VARIABLE):
        return None
    where = shared_machine(environ, container_files)
    if where is None:
        return None
    return (
        f"serving.require_auth is false in params.yaml and {where}: a server without "
        "authentication is not built or run here. Set serving.require_auth: true, or "
        f"{OVERRIDE_VARIABLE}=1 if an open server is really meant"
    )
