"""Refuse a bake before any file is written when an answer would produce a broken project.

Every rule is a small pure function: value in, list of problems out. All problems are reported together,
one line each, so a user fixes everything in one go. Cookiecutter renders this file with Jinja; the
answers arrive as one JSON string literal (tojson applied twice), so no answer can end the literal or
inject code, whatever quotes or backslashes it holds.
"""

from __future__ import annotations

import ipaddress
import json
import keyword
import math
import re
import sys
import unicodedata
from collections.abc import Callable

# Copies (the hook runs alone, before the project exists) of cookiecutter.json's choices and of the
# generated METRIC_GREATER_IS_BETTER's metrics: tests/test_hooks.py fails when they drift apart.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
TASKS = ("classification", "regression")
METRICS = {
    "classification": ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"),
    "regression": ("r2", "rmse", "mae"),
}
LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary")
FEATURE_STORES = ("none", "feast")

# Import names the generated project depends on (or tests with): a package of the same name would
# shadow them on sys.path and fail in confusing ways.
DEPENDENCY_MODULES = frozenset(
    {
        "bentoml", "boto3", "botocore", "click", "fastapi", "feast", "flask", "great_expectations",
        "hatchling", "jinja2", "joblib", "matplotlib", "mlflow", "moto", "numpy", "opentelemetry",
        "pandas", "pip", "pyarrow", "pydantic", "pytest", "ruff", "s3transfer", "scipy",
        "setuptools", "skops", "sklearn", "starlette", "uvicorn", "yaml",
        "src", "test", "tests",
    }
)  # fmt: skip
STDLIB_MODULES = frozenset(getattr(sys, "stdlib_module_names", ()))

SLUG = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
# Plain decimals only: YAML 1.1 reads 1e-3 as a string and 010 as octal.
DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
GITHUB_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*")
AWS_REGION = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-[0-9]{1,2}")
BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
# Prefixes and suffixes AWS reserves for access points, aliases and directory buckets.
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

Problems = list[str]


def check_text(value: object) -> Problems:
    """Free text (names, descriptions) lands in TOML, YAML comments and docstrings: one printable line."""
    if not isinstance(value, str) or not value.strip():
        return ["must not be empty"]
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in value):
        return ["must be a single line without control characters"]
    return []


def check_docstring_text(value: object) -> Problems:
    """Text that also becomes a Python docstring must not be able to end it early or start an escape."""
    problems = check_text(value)
    if problems:
        return problems
    assert isinstance(value, str)
    if "\\" in value or '"""' in value or value.endswith('"'):
        return ['must not contain a backslash or """, nor end with ": it becomes a Python docstring']
    return []


def check_slug(value: object) -> Problems:
    """The project name is a directory, a repository and the distribution name on PyPI."""
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        return [
            f"{value!r} is not a valid slug: use lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
        ]
    if len(value) > 100:
        return [f"{value!r} is longer than 100 characters"]
    return []


def check_package(value: object) -> Problems:
    """The import name must be importable and must not hide a module the project itself imports."""
    if not isinstance(value, str) or not value.isidentifier() or not value.isascii():
        return [f"{value!r} is not a valid Python identifier"]
    if not IDENTIFIER.fullmatch(value):
        return [f"{value!r} must be lowercase ASCII letters, digits and underscores, starting with a letter"]
    if keyword.iskeyword(value):
        return [f"{value!r} is a Python keyword"]
    if value in STDLIB_MODULES:
        return [f"{value!r} shadows the standard library module of the same name"]
    if value in DEPENDENCY_MODULES:
        return [f"{value!r} shadows a module the project depends on"]
    return []


def check_choice(choices: tuple[str, ...]) -> Callable[[object], Problems]:
    """Cookiecutter checks choices itself, but not for replayed answers."""

    def check(value: object) -> Problems:
        if value not in choices:
            return [f"{value!r} is not one of {', '.join(choices)}"]
        return []

    return check


def check_metric(metric: object, task: object) -> Problems:
    """The gate can only compare a metric that the chosen task computes."""
    if task not in METRICS:
        return []  # the task's own rule reports it
    if metric not in METRICS[task]:  # type: ignore[index]
        return [f"{metric!r} is not a {task} metric; choose one of {', '.join(METRICS[task])}"]  # type: ignore[index]
    return []


def check_min_improvement(value: object) -> Problems:
    """The gate's margin is written verbatim into params.yaml, so it must read back as a number."""
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    if isinstance(value, bool) or not DECIMAL.fullmatch(text) or not math.isfinite(float(text)):
        return [f"{value!r} is not a non-negative decimal number such as 0.005"]
    return []


def check_boolean(value: object) -> Problems:
    """A string such as "false" would be truthy in the generated code."""
    if not isinstance(value, bool):
        return [f"{value!r} is not a boolean (true or false)"]
    return []


def check_bucket(value: object) -> Problems:
    """Empty means local files only; otherwise the AWS general purpose bucket naming rules."""
    if value == "":
        return []
    if not isinstance(value, str):
        return [f"{value!r} is not a bucket name"]
    problems = []
    if not 3 <= len(value) <= 63:
        problems.append(f"{value!r} must be 3 to 63 characters long")
    if not BUCKET_CHARS.fullmatch(value):
        problems.append(
            f"{value!r} may only hold lowercase letters, digits, dots and hyphens, "
            "and must start and end with a letter or digit"
        )
    if ".." in value:
        problems.append(f"{value!r} must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(value)
        problems.append(f"{value!r} must not be formatted as an IP address")
    except ValueError:
        pass
    problems += [
        f"{value!r} must not start with {p!r}" for p in BUCKET_RESERVED_PREFIXES if value.startswith(p)
    ]
    problems += [f"{value!r} must not end with {s!r}" for s in BUCKET_RESERVED_SUFFIXES if value.endswith(s)]
    return problems


def check_region(value: object) -> Problems:
    """Catch typos such as us-east or US-EAST-1 before they reach boto3 at deploy time."""
    if not isinstance(value, str) or not AWS_REGION.fullmatch(value):
        return [f"{value!r} is not an AWS region such as us-east-1 or eu-central-1"]
    return []


def check_github_login(value: object) -> Problems:
    """GitHub's own rules for user and organisation names (the owner of images on ghcr.io)."""
    if not isinstance(value, str) or not GITHUB_LOGIN.fullmatch(value):
        return [
            f"{value!r} is not a valid GitHub login: letters, digits and single hyphens, "
            "not starting or ending with a hyphen"
        ]
    if len(value) > 39:
        return [f"{value!r} is longer than 39 characters"]
    return []


RULES: dict[str, Callable[[object], Problems]] = {
    "project_name": check_docstring_text,
    "project": check_slug,
    "package": check_package,
    "description": check_docstring_text,
    "author": check_docstring_text,
    "github_owner": check_github_login,
    "python_version": check_choice(PYTHON_VERSIONS),
    "task": check_choice(TASKS),
    "min_improvement": check_min_improvement,
    "gate_requires_significance": check_boolean,
    "s3_bucket": check_bucket,
    "aws_region": check_region,
    "feature_store": check_choice(FEATURE_STORES),
    "license": check_choice(LICENSES),
}


def validate(answers: dict[str, object]) -> Problems:
    """Every problem with the answers, each prefixed with the key it concerns."""
    problems = []
    for key, rule in RULES.items():
        if key not in answers:
            problems.append(f"{key}: missing")
            continue
        problems += [f"{key}: {problem}" for problem in rule(answers[key])]
    problems += [
        f"primary_metric: {problem}"
        for problem in check_metric(answers.get("primary_metric"), answers.get("task"))
    ]
    return problems


def main(answers: dict[str, object]) -> int:
    """Print the problems to stderr and fail, so cookiecutter removes the half-made project."""
    problems = validate(answers)
    if not problems:
        return 0
    print(
        "ERROR: the answers below would bake a broken project; nothing was generated.",
        file=sys.stderr,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    ANSWERS = json.loads({{ cookiecutter | tojson | tojson }})  # noqa: F821  # fmt: skip
    sys.exit(main(ANSWERS))
