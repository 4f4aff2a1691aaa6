"""Drop the files that the chosen options do not use, from one table.

The template holds every optional file, rendered for every answer; this hook removes what the answers
leave out. It runs inside the new project, is idempotent (a missing file is already dropped), touches no
network and runs no git: the user decides when to `git init`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# (option, value) -> paths relative to the project root that this answer drops.
DROPS: dict[tuple[str, object], tuple[str, ...]] = {
    ("task", "classification"): (
        "data/diabetes.csv",
        "data/features/diabetes.parquet",
        "data/labels/diabetes.csv",
        "validation/diabetes.json",
    ),
    ("task", "regression"): (
        "data/breast_cancer.csv",
        "data/features/breast_cancer.parquet",
        "data/labels/breast_cancer.csv",
        "validation/breast_cancer.json",
    ),
    ("license", "Proprietary"): ("LICENSE",),
    # Features arrive with each row: no Feast repository, no entity data, nothing to materialise.
    ("feature_store", "none"): (
        "feature_repo",
        "data/features",
        "data/labels",
        "src/{{ cookiecutter.package }}/feature_store.py",
        "src/{{ cookiecutter.package }}/cli/features.py",
        "tests/test_feature_store.py",
        "tests/test_feature_store_serving.py",
        "src/{{ cookiecutter.package }}/serving/entities.py",
        "docs/feature-store.md",
        ".github/workflows/materialize.yml",
    ),
    # Batch scoring reads and writes S3; without a bucket there is nothing for a schedule to score.
    ("s3_bucket", ""): ("deploy/aws", ".github/workflows/batch.yml"),
}


def dropped_paths(answers: dict[str, object]) -> list[str]:
    """The paths to remove for these answers, in table order."""
    return [
        path for (option, value), paths in DROPS.items() if answers.get(option) == value for path in paths
    ]


def drop(root: Path, relative: str) -> None:
    """Remove a file or a folder; leave the parent folder alone even if it ends up empty."""
    path = root / relative
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prune_empty_parents(root: Path, relative: str) -> None:
    """A folder left empty by the drops (e.g. deploy/) is noise in the new repository."""
    parent = (root / relative).parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def main(answers: dict[str, object], root: Path) -> int:
    """Apply the table to the project in root."""
    for relative in dropped_paths(answers):
        drop(root, relative)
        prune_empty_parents(root, relative)
    return 0


if __name__ == "__main__":
    ANSWERS = json.loads({{ cookiecutter | tojson | tojson }})  # noqa: F821  # fmt: skip
    sys.exit(main(ANSWERS, Path.cwd()))
