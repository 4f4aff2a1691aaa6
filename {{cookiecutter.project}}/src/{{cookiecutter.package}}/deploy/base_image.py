"""The container's base image, pinned by digest: `pin-base-image` asks the image's registry.

A tag (`python:3.12-slim`) can name another image tomorrow; a digest names one image for good. The
template cannot ship a digest it could not check for your Python version, so the project pins its
own, once, from a machine that reaches the registry: the Docker Registry HTTP API (v2) answers a
manifest request with the digest in `Docker-Content-Digest`, anonymously for public images (a bearer
token from the realm the registry names). Dependabot then keeps the pinned digest current.
Standard library only: no docker client is needed.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeploymentError

DOCKER_HUB = "registry-1.docker.io"
# A multi-platform index first: its digest covers every platform, and is what `docker pull` pins.
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class ImageName:
    """An image reference taken apart: `python:3.12-slim` is Docker Hub's `library/python`."""

    registry: str
    repository: str
    tag: str
    named: str  # as the FROM line names it, without any digest

    @classmethod
    def parse(cls, reference: str) -> ImageName:
        named = reference.split("@", 1)[0]
        first, _, rest = named.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, named if rest else f"library/{named}"
        repository, _, tag = path.partition(":")
        if not repository or not tag:
            raise DeploymentError(
                f"{reference}: name the base image with a tag, e.g. python:3.12-slim"
            )
        return cls(registry, repository, tag, named)

    @property
    def manifest_url(self) -> str:
        local = self.registry.split(":")[0] in ("localhost", "127.0.0.1")
        scheme = "http" if local else "https"  # a registry on this machine speaks plain HTTP
        return f"{scheme}://{self.registry}/v2/{self.repository}/manifests/{self.tag}"


def _bearer_token(challenge: str) -> str:
    """The anonymous pull token of a `WWW-Authenticate: Bearer realm=...,service=...,scope=...`."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if not challenge.lower().startswith("bearer ") or "realm" not in fields:
        raise DeploymentError(
            f"the registry asks for credentials this command has not: {challenge}"
        )
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    with urllib.request.urlopen(f"{fields['realm']}?{query}", timeout=TIMEOUT_SECONDS) as answer:
        body = json.load(answer)
    return body.get("token") or body.get("access_token") or ""


def _manifest_digest(url: str, token: str | None) -> str:
    headers = {"Accept": MANIFEST_TYPES, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
        return answer.headers.get("Docker-Content-Digest", "")


def registry_digest(image: ImageName) -> str:
    """The digest the image's registry gives its tag today."""
    try:
        try:
            digest = _manifest_digest(image.manifest_url, None)
        except urllib.error.HTTPError as error:
            if error.code != 401:
                raise
            token = _bearer_token(error.headers.get("WWW-Authenticate", ""))
            digest = _manifest_digest(image.manifest_url, token)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DeploymentError(f"cannot read {image.named} from {image.registry}: {error}") from None
    if not DIGEST.fullmatch(digest):
        raise DeploymentError(
            f"{image.registry} gave no sha256 digest for {image.named}: {digest!r}"
        )
    return digest


def pin(dockerfile: Path) -> dict:
    """Rewrite the Dockerfile's one FROM line as `<image>:<tag>@<digest>`; what was done."""
    lines = dockerfile.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.strip().upper().startswith("FROM ")]
    if len(at) != 1:
        raise DeploymentError(f"{dockerfile}: expected exactly one FROM line, found {len(at)}")
    keyword, reference, *rest = lines[at[0]].split()
    image = ImageName.parse(reference)
    digest = registry_digest(image)
    pinned = f"{image.named}@{digest}"
    lines[at[0]] = " ".join([keyword, pinned, *rest]) + "\n"
    dockerfile.write_text("".join(lines))
    return {"file": str(dockerfile), "before": reference, "base_image": pinned, "digest": digest}
