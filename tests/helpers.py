"""What the template's tests and the demo share about a baked project, each piece written once.

A bake records its resolved answers in the project's `.cookiecutter.json`, so nothing here works out
cookiecutter's defaults again: `BakedProject.answers` reads them back. The demo script
(tests/demo.py), the fixtures (tests/conftest.py) and the act world (tests/test_workflows_act.py) all
build on `BakedProject`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]


@dataclass
class BakedProject:
    """A project baked from the template, and optionally an environment holding its stack."""

    path: Path
    venv: Path | None = None
    # Where the CLI writes its reports (passed on as REPORTS_DIR); None: the project's own reports/.
    reports_dir: Path | None = None

    @property
    def answers(self) -> dict[str, Any]:
        """The answers the bake resolved, as cookiecutter recorded them (`_template` included)."""
        return json.loads((self.path / ".cookiecutter.json").read_text())

    @property
    def package(self) -> str:
        return self.answers["package"]

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        timeout: float = 900,
        merge_stderr: bool = False,
    ) -> subprocess.CompletedProcess:
        """The project's console script from its environment, run in the project (env: the whole
        environment, os.environ by default); check: fail unless it exits 0; merge_stderr: both
        streams in stdout, in the order they were written."""
        assert self.venv is not None, f"{self.path.name} is not installed in an environment"
        environment = dict(os.environ if env is None else env)
        if self.reports_dir is not None:
            environment["REPORTS_DIR"] = str(self.reports_dir)
        done = subprocess.run(
            [str(self.venv / "bin" / self.package), *args],
            cwd=self.path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        assert not check or done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def report(self, stage: str) -> dict:
        """The JSON report the CLI's last `stage` command wrote."""
        reports = self.reports_dir or self.path / "reports"
        return json.loads((reports / f"{stage}.json").read_text())


def bake(output_dir: Path, **options: Any) -> BakedProject:
    """Bake the template without prompts, with these answers (the rest default), into output_dir.

    Cookiecutter's Python API, not its CLI: a bake takes a fraction of a second, and the hooks still run
    as real subprocesses, as they do for users.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = cookiecutter(str(TEMPLATE), no_input=True, extra_context=options, output_dir=str(output_dir))
    return BakedProject(Path(path))


def install_editable(project: BakedProject, venv: Path) -> None:
    """Put the project into an environment that already holds its stack (`--no-deps`): a second."""
    python = str(venv / "bin" / "python")
    command = ["uv", "pip", "install", "--quiet", "--no-deps", "--python", python, "-e", str(project.path)]
    subprocess.run(command, check=True)


def find_python(version: str) -> str:
    """A local CPython of exactly this minor version (uv may not download one here): pyenv's newest,
    else PATH's. Every candidate is asked for its version, as a pyenv shim may point elsewhere."""
    pyenv = shutil.which("pyenv")
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip() if pyenv else ""
    versions = Path(root or os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = versions.glob(f"{version}.*/bin/python{version}")
    newest_first = sorted(installed, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parts[-3])])[::-1]
    candidates = [*map(str, newest_first), shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise LookupError(f"no Python {version} on this machine (pyenv or PATH)")


def git(repo: Path, *args: str) -> str:
    """git in repo; its output, stripped. Fails with git's own message."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)} failed in {repo}:\n{done.stderr}"
    return done.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in repo (no git hooks run); returns the new commit's sha."""
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def promtool() -> str | None:
    """The promtool the baked suites find, as their tests/test_monitoring_files.py looks for it."""
    return os.environ.get("PROMTOOL") or shutil.which("promtool")
