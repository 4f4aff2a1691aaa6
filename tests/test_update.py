"""A baked project stays updatable: its recorded answers link it to the template for `cruft update`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter
from helpers import TEMPLATE, commit_all, git

cruft = pytest.importorskip("cruft")

IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache")


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI machines have no git config; cruft and the test both commit."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Template Tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@example.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")


@pytest.mark.slow
def test_cruft_link_then_update_keeps_the_answers(tmp_path, git_identity):
    template = shutil.copytree(TEMPLATE, tmp_path / "template", ignore=IGNORE)
    git(template, "init", "--quiet")
    commit_all(template, "template v1")

    options = {"task": "regression", "s3_bucket": "my-models-bucket", "license": "Proprietary"}
    project = Path(
        cookiecutter(str(template), no_input=True, extra_context=options, output_dir=str(tmp_path))
    )
    git(project, "init", "--quiet")
    commit_all(project, "baked")

    recorded = json.loads((project / ".cookiecutter.json").read_text())
    assert cruft.link(str(template), project_dir=project, no_input=True, extra_context=recorded)
    commit_all(project, "linked")

    params = template / "{{cookiecutter.project}}" / "params.yaml"
    params.write_text(params.read_text() + "# changed upstream\n")
    commit_all(template, "template v2")

    assert cruft.update(project_dir=project, skip_apply_ask=True)
    assert (project / "params.yaml").read_text().endswith("# changed upstream\n")
    linked = json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]
    assert {key: linked[key] for key in options} == options
    assert not (project / "data" / "breast_cancer.csv").exists()
    assert not (project / "LICENSE").exists()
    assert (project / "deploy" / "aws" / "s3-policy.json").is_file()
