"""Every named option combination bakes a complete, consistent project and nothing it does not need."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import COMBINATIONS
from cookiecutter.hooks import run_script_with_context
from helpers import TEMPLATE, bake, find_python, promtool

NAMES = list(COMBINATIONS)
# Left-over template syntax; GitHub's `${{ }}` and shell's `${#var}` are not Jinja.
UNRENDERED = re.compile(r"\{\{-?\s*cookiecutter|\{%|(?<!\$)\{#")


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def text_files(root: Path):
    """(path, text) for every file that decodes as UTF-8."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def expected_tree(resolved: dict) -> tuple[set[str], set[str]]:
    """(must exist, must not exist) for these answers, written independently of the hook's table."""
    datasets = {"classification": "breast_cancer", "regression": "diabetes"}
    kept = datasets[resolved["task"]]
    dropped = datasets["regression" if resolved["task"] == "classification" else "classification"]
    present = {
        "pyproject.toml",
        "params.yaml",
        ".cookiecutter.json",
        f"src/{resolved['package']}/__init__.py",
        f"data/{kept}.csv",
        f"validation/{kept}.json",
    }
    absent = {f"data/{dropped}.csv", f"validation/{dropped}.json"}
    (absent if resolved["license"] == "Proprietary" else present).add("LICENSE")
    (present if resolved["s3_bucket"] else absent).update(
        {"deploy/aws/s3-policy.json", "deploy/aws/s3-read-policy.json"}
    )
    # GitHub Actions: every bake deploys; only a bake with a bucket has something to batch-score on S3.
    present |= {
        ".github/actions/setup/action.yml",
        ".github/workflows/ci.yml",
        ".github/workflows/cd.yml",
        ".github/workflows/rollback.yml",
        ".github/dependabot.yml",
        ".github/zizmor.yml",
        "deploy/docker/Dockerfile",
        "deploy/docker/hadolint.yaml",
        "docs/setup.md",
        "docs/security.md",
        "docs/architecture.md",
    }
    # Rollouts: nginx locally, two slots and an HTTPRoute on Kubernetes, for every bake.
    present |= {
        f"src/{resolved['package']}/rollout/__init__.py",
        f"src/{resolved['package']}/rollout/nginx.py",
        f"src/{resolved['package']}/rollout/kubernetes.py",
        "deploy/k8s/base/kustomization.yaml",
        "deploy/k8s/overlays/staging/kustomization.yaml",
        "deploy/k8s/overlays/production/kustomization.yaml",
        "benchmarks/rollout.py",
        "benchmarks/serving.py",
        "benchmarks/baseline_fastapi.py",
        "benchmarks/README.md",
    }
    # The team's MLflow server (PostgreSQL, S3 artifacts, nginx's token check), for every bake.
    present |= {
        "deploy/mlflow/kustomization.yaml",
        "deploy/mlflow/Dockerfile",
        "deploy/mlflow/nginx.conf.template",
        f"src/{resolved['package']}/registry_lock.py",
        "tests/postgres.py",
        "tests/test_registry_server.py",
    }
    # Monitoring: alert rules with their unit tests, a dashboard, the runbook, for every bake.
    present |= {
        "deploy/monitoring/alerts.yml",
        "deploy/monitoring/alerts.test.yml",
        "deploy/monitoring/dashboard.json",
        "docs/monitoring.md",
        "tests/test_monitoring_files.py",
    }
    (present if resolved["s3_bucket"] else absent).add(".github/workflows/batch.yml")
    if not resolved["s3_bucket"]:
        absent.add("deploy/aws")
    # Feast: its repository, the entity data of the bake's task only, the module, the command, and
    # the schedule that keeps the online store loaded.
    feast = {
        "feature_repo/feature_store.yaml",
        "feature_repo/features.py",
        f"src/{resolved['package']}/feature_store.py",
        f"src/{resolved['package']}/cli/features.py",
        ".github/workflows/materialize.yml",
        "tests/test_feature_store.py",
        "docs/feature-store.md",
    }
    absent |= {f"data/features/{dropped}.parquet", f"data/labels/{dropped}.csv"}
    if resolved["feature_store"] == "feast":
        present |= feast | {f"data/features/{kept}.parquet", f"data/labels/{kept}.csv"}
    else:
        absent |= feast | {"feature_repo", "data/features", "data/labels"}
    return present, absent


@pytest.mark.parametrize("name", NAMES)
def test_tree_follows_the_options(baked, name):
    project = baked(name)
    present, absent = expected_tree(project.answers)
    assert project.path.name == project.answers["project"]
    assert sorted(p for p in present if not (project.path / p).exists()) == []
    assert sorted(p for p in absent if (project.path / p).exists()) == []


@pytest.mark.parametrize("name", NAMES)
def test_nothing_left_unrendered(baked, name):
    project = baked(name).path
    leftovers = [
        f"{path.relative_to(project)}:{number}: {line.strip()}"
        for path, text in text_files(project)
        for number, line in enumerate(text.splitlines(), 1)
        if UNRENDERED.search(line)
    ]
    assert leftovers == []
    assert not [p for p in project.rglob("*") if "cookiecutter" in p.name and p.name != ".cookiecutter.json"]


@pytest.mark.parametrize("name", NAMES)
def test_pyproject_names_the_project(baked, name):
    project = baked(name)
    resolved = project.answers
    package = resolved["package"]
    meta = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert meta["project"]["name"] == resolved["project"]
    assert meta["project"]["description"] == resolved["description"]
    assert meta["project"]["authors"] == [{"name": resolved["author"]}]
    assert meta["project"]["requires-python"] == f">={resolved['python_version']}"
    assert meta["project"]["scripts"][package] == f"{package}.cli:main"
    assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{package}"]


@pytest.mark.parametrize("name", NAMES)
def test_structured_files_parse(baked, name):
    project = baked(name).path
    parsers = {
        ".json": json.loads,
        ".yaml": yaml.safe_load,
        ".yml": yaml.safe_load,
        ".toml": tomllib.loads,
    }
    checked = []
    for path, text in text_files(project):
        parse = parsers.get(path.suffix)
        if parse:
            try:
                parse(text)
            except Exception as error:
                pytest.fail(f"{path.relative_to(project)} does not parse: {error}")
            checked.append(path.name)
    assert {"params.yaml", ".cookiecutter.json", "pyproject.toml"} <= set(checked)


@pytest.mark.parametrize("name", NAMES)
def test_params_carry_the_gate_answers(baked, name):
    project = baked(name)
    resolved = project.answers
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    assert params["task"] == resolved["task"]
    assert params["gate"]["primary_metric"] == resolved["primary_metric"]
    assert params["gate"]["min_improvement"] == float(resolved["min_improvement"])
    assert params["gate"]["require_significance"] is resolved["gate_requires_significance"]
    assert params["aws"]["region"] == resolved["aws_region"]
    if resolved["s3_bucket"]:
        assert params["batch"]["output"].startswith(f"s3://{resolved['s3_bucket']}/")
    else:
        assert "s3://" not in json.dumps(params)


@pytest.mark.parametrize("name", NAMES)
def test_license_matches_the_choice(baked, name):
    project = baked(name)
    resolved = project.answers
    license_file = project.path / "LICENSE"
    if resolved["license"] == "Proprietary":
        return  # dropped, checked by the tree test
    text = license_file.read_text()
    title = {
        "MIT": "MIT License",
        "Apache-2.0": "Apache License",
        "BSD-3-Clause": "BSD 3-Clause License",
    }
    assert title[resolved["license"]] in text.splitlines()[0] + text.splitlines()[1]
    assert f"{datetime.datetime.now(datetime.UTC).year}" in text
    assert resolved["author"] in text


def test_the_read_only_s3_policy_reads_data_and_models_and_writes_nothing(baked):
    """The role of pull requests and staging (issue 18): no Put, no predictions, decrypt only."""
    policy = json.loads((baked("WITH_S3").path / "deploy/aws/s3-read-policy.json").read_text())
    actions = set()
    for statement in policy["Statement"]:
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    assert actions == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}
    objects = next(s for s in policy["Statement"] if s["Action"] == "s3:GetObject")["Resource"]
    assert objects == [f"arn:aws:s3:::my-models-bucket/{prefix}/*" for prefix in ("data", "mlflow")]


def test_s3_policy_grants_only_the_project_prefixes(baked):
    policy = json.loads((baked("WITH_S3").path / "deploy/aws/s3-policy.json").read_text())
    list_bucket, read_write, kms = policy["Statement"]
    assert list_bucket["Action"] == "s3:ListBucket"
    assert list_bucket["Resource"] == "arn:aws:s3:::my-models-bucket"
    assert set(read_write["Action"]) == {"s3:GetObject", "s3:PutObject"}
    assert read_write["Resource"] == [
        f"arn:aws:s3:::my-models-bucket/{prefix}/*" for prefix in ("data", "predictions", "mlflow")
    ]
    assert "*" not in json.dumps([s["Action"] for s in policy["Statement"]])
    # SSE-KMS: the key may be used only by S3, in that region, for objects of this bucket.
    assert set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert kms["Condition"]["StringEquals"] == {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}
    assert kms["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"] == [
        "arn:aws:s3:::my-models-bucket",
        "arn:aws:s3:::my-models-bucket/*",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_answers_are_recorded(baked, name):
    """Every answer is recorded: each option as given, the rest at cookiecutter.json's defaults (a
    choice's first; the templated ones as they resolve for the default project name and the task)."""
    options = COMBINATIONS[name]
    defaults = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    expected = {
        key: value[0] if isinstance(value, list) else value
        for key, value in defaults.items()
        if not key.startswith("_")
    }
    default_metric = {"classification": "f1", "regression": "r2"}
    expected |= {"project": "ml-service", "package": "ml_service"}
    expected["primary_metric"] = default_metric[options.get("task", expected["task"])]
    expected |= options
    recorded = baked(name).answers
    assert recorded.pop("_template") == str(TEMPLATE)
    assert recorded == expected


@pytest.mark.parametrize("name", ["DEFAULT", "PROPRIETARY", "CUSTOM_NAMES"])
def test_recorded_answers_bake_the_same_project(baked, tmp_path, name):
    """What `cruft update` relies on: the record alone reproduces the project."""
    project = baked(name)
    recorded = project.answers
    recorded.pop("_template")
    assert files(bake(tmp_path, **recorded).path) == files(project.path)


@pytest.mark.parametrize("name", NAMES)
def test_post_hook_is_idempotent(baked, tmp_path, name):
    project = shutil.copytree(baked(name).path, tmp_path / "copy")
    before = files(project)
    context = {"cookiecutter": baked(name).answers}
    run_script_with_context(TEMPLATE / "hooks" / "post_gen_project.py", project, context)
    assert files(project) == before


def test_post_hook_tolerates_missing_files(baked, tmp_path):
    recorded = baked("DEFAULT").answers
    recorded.pop("_template")
    context = {"cookiecutter": {**recorded, "s3_bucket": "", "license": "Proprietary"}}
    run_script_with_context(TEMPLATE / "hooks" / "post_gen_project.py", tmp_path, context)
    assert list(tmp_path.iterdir()) == []


def test_project_and_package_derive_from_the_name(tmp_path):
    """Cookiecutter's slugify drops accents: the record, the folder and the package agree on it."""
    project = bake(tmp_path, project_name="Fraud Détection v2")
    recorded = project.answers
    assert (recorded["project"], recorded["package"]) == ("fraud-detection-v2", "fraud_detection_v2")
    assert project.path.name == "fraud-detection-v2"
    assert (project.path / "src" / "fraud_detection_v2" / "__init__.py").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_alerts_name_the_project_and_pass_their_unit_tests(baked, name):
    """Runbook links go to this repository's docs/monitoring.md; the rules' unit tests (whose
    series differ per task) pass under promtool when it is installed (the baked suites check the
    rest of deploy/monitoring, tests/test_generated.py)."""
    project = baked(name)
    resolved = project.answers
    groups = yaml.safe_load((project.path / "deploy/monitoring/alerts.yml").read_text())["groups"]
    repository = f"https://github.com/{resolved['github_owner']}/{resolved['project']}/blob/main/"
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["labels"]["service"] == resolved["project"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"{repository}docs/monitoring.md#{rule['alert'].lower()}"
    rules_tester = promtool()
    if rules_tester is None:
        return  # tests/test_generated.py insists on it under CI
    done = subprocess.run(
        [rules_tester, "test", "rules", "deploy/monitoring/alerts.test.yml"],
        cwd=project.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def python_sources(project: Path) -> dict[str, str]:
    return {str(p.relative_to(project)): p.read_text(encoding="utf-8") for p in sorted(project.rglob("*.py"))}


@pytest.mark.parametrize("name", NAMES)
def test_python_files_compile(baked, name):
    project = baked(name).path
    sources = python_sources(project)
    assert sources
    for path, source in sources.items():
        compile(source, path, "exec", dont_inherit=True)


@pytest.mark.parametrize("name", NAMES)
def test_python_files_pass_the_projects_linters(baked, name):
    """ruff's checks and formatting on the folders `make lint` names (LINTED in the Makefile): names
    and options change the code (import order follows the package's name, a line's length its values),
    so every bake."""
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not on PATH: `make test` installs it from tests/requirements.txt"
    project = baked(name).path
    (linted,) = re.findall(r"^LINTED := (.+)$", (project / "Makefile").read_text(), re.MULTILINE)
    folders = linted.split()
    assert {"src", "tests"} <= set(folders), folders
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run([ruff, *command, *folders], cwd=project, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(command)} in {name}:\n{done.stdout}{done.stderr}"


COMPILE_ALL = """
import json, sys
for path, source in json.load(sys.stdin).items():
    compile(source, path, "exec", dont_inherit=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PY311", "DEFAULT", "PY313"])
def test_python_files_compile_on_the_chosen_python(baked, name):
    """requires-python promises the chosen version: the code must at least parse there."""
    project = baked(name)
    version = project.answers["python_version"]
    try:
        python = find_python(version)
    except LookupError:
        if version != f"{sys.version_info.major}.{sys.version_info.minor}":
            pytest.skip(f"no Python {version} on this machine")
        python = sys.executable
    sources = json.dumps(python_sources(project.path))
    run = subprocess.run(
        [python, "-c", COMPILE_ALL], input=sources, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
