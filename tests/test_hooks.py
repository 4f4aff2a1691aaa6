"""The pre-generation hook refuses bad answers, all at once, before a single file is left behind."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from helpers import TEMPLATE, bake


def load_hook(name: str):
    """Import a hook straight from the template: its one Jinja line only runs under __main__."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre = load_hook("pre_gen_project")


def refused(tmp_path: Path, capfd: pytest.CaptureFixture[str], **options: Any) -> str:
    """Bake with these answers, expect the hook to refuse, and return what it printed."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FailedHookException):
        bake(out, **options)
    assert list(out.iterdir()) == [], "a refused bake must leave nothing behind"
    printed = capfd.readouterr().err
    assert "nothing was generated" in printed
    assert "Traceback" not in printed and "SyntaxError" not in printed
    return printed


# One bad answer each, with the line the user must see for it.
BAD_ANSWERS = [
    ({"project": "My Project", "package": "pkg"}, "project: 'My Project' is not a valid slug"),
    ({"project": "1st-model", "package": "pkg"}, "project: '1st-model' is not a valid slug"),
    ({"project": "model-", "package": "pkg"}, "project: 'model-' is not a valid slug"),
    ({"project": "a" * 101, "package": "pkg"}, "is longer than 100 characters"),
    ({"package": "1abc"}, "package: '1abc' is not a valid Python identifier"),
    ({"package": "my-pkg"}, "package: 'my-pkg' is not a valid Python identifier"),
    ({"package": "MyPkg"}, "package: 'MyPkg' must be lowercase"),
    ({"package": "class"}, "package: 'class' is a Python keyword"),
    ({"package": "json"}, "package: 'json' shadows the standard library module"),
    ({"package": "test"}, "package: 'test' shadows"),
    ({"package": "mlflow"}, "package: 'mlflow' shadows a module the project depends on"),
    ({"package": "sklearn"}, "package: 'sklearn' shadows a module the project depends on"),
    ({"package": "yaml"}, "package: 'yaml' shadows a module the project depends on"),
    ({"primary_metric": "r2"}, "primary_metric: 'r2' is not a classification metric"),
    (
        {"task": "regression", "primary_metric": "f1"},
        "primary_metric: 'f1' is not a regression metric",
    ),
    ({"min_improvement": "-0.1"}, "min_improvement: '-0.1' is not a non-negative decimal number"),
    ({"min_improvement": "abc"}, "min_improvement: 'abc' is not a non-negative decimal number"),
    ({"min_improvement": "1e-3"}, "min_improvement: '1e-3' is not a non-negative decimal number"),
    ({"min_improvement": "nan"}, "min_improvement: 'nan' is not a non-negative decimal number"),
    ({"s3_bucket": "ab"}, "s3_bucket: 'ab' must be 3 to 63 characters long"),
    ({"s3_bucket": "x" * 64}, "must be 3 to 63 characters long"),
    ({"s3_bucket": "My_Bucket"}, "s3_bucket: 'My_Bucket' may only hold lowercase letters"),
    ({"s3_bucket": "-bucket"}, "must start and end with a letter or digit"),
    ({"s3_bucket": "my..bucket"}, "s3_bucket: 'my..bucket' must not contain two adjacent dots"),
    (
        {"s3_bucket": "192.168.5.4"},
        "s3_bucket: '192.168.5.4' must not be formatted as an IP address",
    ),
    ({"s3_bucket": "xn--bucket"}, "s3_bucket: 'xn--bucket' must not start with 'xn--'"),
    ({"s3_bucket": "bucket-s3alias"}, "s3_bucket: 'bucket-s3alias' must not end with '-s3alias'"),
    ({"aws_region": "us-east"}, "aws_region: 'us-east' is not an AWS region"),
    ({"aws_region": "US-EAST-1"}, "aws_region: 'US-EAST-1' is not an AWS region"),
    ({"github_owner": "-acme"}, "github_owner: '-acme' is not a valid GitHub login"),
    ({"github_owner": "acme--corp"}, "github_owner: 'acme--corp' is not a valid GitHub login"),
    ({"github_owner": "acme_corp"}, "github_owner: 'acme_corp' is not a valid GitHub login"),
    ({"github_owner": "a" * 40}, "is longer than 39 characters"),
    ({"description": ""}, "description: must not be empty"),
    ({"description": "two\nlines"}, "description: must be a single line"),
    ({"author": "   "}, "author: must not be empty"),
    ({"author": "tab\tseparated"}, "author: must be a single line without control characters"),
    ({"project_name": 'Ends with a quote"'}, "project_name: must not contain a backslash"),
]


@pytest.mark.parametrize(("options", "message"), BAD_ANSWERS, ids=lambda v: str(v)[:40])
def test_bad_answer_is_refused_with_its_message(tmp_path, capfd, options, message):
    printed = refused(tmp_path, capfd, **options)
    assert message in printed
    assert len(printed.strip().splitlines()) == 2, "exactly one problem line for one bad answer"


def test_injection_through_an_answer_runs_nothing(tmp_path, capfd):
    """Quotes, backslashes and triple quotes reach the hook as data: refused, never executed."""
    witness = tmp_path / "pwned"
    payload = f'x"""; import pathlib; pathlib.Path(r"{witness}").touch(); """ \' \\" \\\\ \\N{{x}} \'\'\''
    printed = refused(tmp_path, capfd, description=payload, author=payload + "'''")
    assert 'description: must not contain a backslash or """' in printed
    assert 'author: must not contain a backslash or """' in printed
    assert not witness.exists()


def test_all_problems_are_reported_together(tmp_path, capfd):
    printed = refused(
        tmp_path,
        capfd,
        package="1abc",
        task="regression",
        primary_metric="accuracy",
        s3_bucket="Bad..Bucket",
        aws_region="mars-1",
        github_owner="-x-",
    )
    problems = [line.strip() for line in printed.splitlines()[1:]]
    keys = [line.split(":")[0] for line in problems]
    assert keys == [
        "package",
        "github_owner",
        "s3_bucket",
        "s3_bucket",
        "aws_region",
        "primary_metric",
    ], problems


def test_replayed_answers_are_checked_too(tmp_path, capfd):
    """Cookiecutter checks choices only when it prompts or merges extra context, not on replay."""
    replay = tmp_path / "answers.json"
    context = dict(json.loads((TEMPLATE / "cookiecutter.json").read_text()))
    context.update(
        project="ml-service",
        package="ml_service",
        primary_metric="f1",
        python_version="2.7",
        task="classification",
        license="GPL",
        gate_requires_significance="false",
    )
    replay.write_text(json.dumps({"cookiecutter": context}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FailedHookException):
        cookiecutter(str(TEMPLATE), replay=str(replay), output_dir=str(out))
    printed = capfd.readouterr().err
    assert "python_version: '2.7' is not one of 3.11, 3.12, 3.13" in printed
    assert "license: 'GPL' is not one of MIT, Apache-2.0, BSD-3-Clause, Proprietary" in printed
    assert "gate_requires_significance: 'false' is not a boolean" in printed
    assert list(out.iterdir()) == []


def test_unusual_but_valid_answers_are_accepted(tmp_path):
    project = bake(
        tmp_path,
        project_name="X",
        project="x" * 100,
        package="model_2_go",
        description="Quotes \"inside\" and 'single' are fine; so is ünïcode.",
        author="O'Brien & <Partners>",
        github_owner="a" * 38 + "1",
        task="regression",
        primary_metric="rmse",
        min_improvement="12.5",
        gate_requires_significance=True,
        s3_bucket="a.b-c" + "d" * 58,
        aws_region="us-gov-west-1",
        license="Apache-2.0",
    )
    assert project.path.name == "x" * 100
    assert (project.path / "src" / "model_2_go").is_dir()


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("check_slug", "a"),
        ("check_slug", "ml-service-2"),
        ("check_package", "ml_service"),
        ("check_min_improvement", "0"),
        ("check_min_improvement", "0.005"),
        ("check_min_improvement", 0.25),
        ("check_bucket", ""),
        ("check_bucket", "abc"),
        ("check_bucket", "my.models.bucket"),
        ("check_bucket", "1.2.3.4.5"),
        ("check_region", "ap-southeast-2"),
        ("check_region", "cn-north-1"),
        ("check_github_login", "a"),
        ("check_github_login", "Acme-Corp-42"),
        ("check_text", "Ünïcode ✓"),
        ("check_docstring_text", "He said 'hi' and \"bye\" twice."),
        ("check_boolean", False),
    ],
)
def test_rule_accepts(rule, value):
    assert getattr(pre, rule)(value) == []


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("check_min_improvement", True),
        ("check_min_improvement", None),
        ("check_min_improvement", "010"),
        ("check_min_improvement", "inf"),
        ("check_bucket", "bucket."),
        ("check_bucket", "sthree-bucket"),
        ("check_bucket", "bucket--ol-s3"),
        ("check_package", "async"),
        ("check_package", "café"),
        ("check_package", None),
        ("check_boolean", "true"),
        ("check_boolean", 1),
        ("check_text", "line\u2028separator"),
        ("check_docstring_text", 'ends with "'),
    ],
)
def test_rule_refuses(rule, value):
    assert getattr(pre, rule)(value) != []


def test_validate_names_missing_answers():
    assert "license: missing" in pre.validate({})


def test_the_hook_allows_the_choices_of_cookiecutter_json():
    """The hook keeps its own copy of the choices, as replayed answers skip cookiecutter's check."""
    choices = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    hook = {
        "python_version": pre.PYTHON_VERSIONS,
        "task": pre.TASKS,
        "feature_store": pre.FEATURE_STORES,
        "license": pre.LICENSES,
    }
    assert {key: set(values) for key, values in hook.items()} == {key: set(choices[key]) for key in hook}


def assigned_literal(package: Path, name: str) -> Any:
    """The literal assigned to `name` in whichever module of the package assigns it (found by scanning
    them all, so that the table can move between modules)."""
    values = [
        node.value
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id == name
    ]
    assert len(values) == 1, f"{name} is assigned {len(values)} times under {package}"
    return ast.literal_eval(values[0])


def test_the_hook_allows_the_metrics_the_generated_project_knows(baked):
    """The hook checks primary_metric against its copy of the generated project's metric table."""
    project = baked("DEFAULT")
    table = assigned_literal(project.path / "src" / project.package, "METRIC_GREATER_IS_BETTER")
    assert {task: set(metrics) for task, metrics in pre.METRICS.items()} == {
        task: set(directions) for task, directions in table.items()
    }
