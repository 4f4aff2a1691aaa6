"""The baked project's GitHub workflows, executed with `act` in host mode (no Docker), on a real git
repository, with every remote action replaced by a small documented stand-in (tests/act/stand-ins).

One project is baked (defaults, with a committed uv.lock) and made a git repository whose `origin` is
github.com/<owner>/<project>; one MLflow tracking server plays the team's registry for the whole
module, since every act job gets a fresh workspace: `mlflow server --workers 2` on PostgreSQL, as a team
runs it (deploy/mlflow), started by the baked project's tests/postgres.py (PostgreSQL's initdb and
pg_ctl must be installed). Scenarios:

1. a pull request (ci.yml, server mode): the registry's champion copied into the job's own store,
   the candidate trained and evaluated there, nothing written to the registry;
2. the first push to main (cd.yml): v1 promoted through staging and production;
3. a push whose model is worse: the gate rejects, nothing after it runs, the run is green;
4. a push whose deployment fails after promotion (a broken production service): rolled back;
5. rollback.yml dispatched: the champion returns to `previous`;
6. monitor.yml dispatched on a prediction log without drift (no issue), then with drift (one issue
   labelled model-monitoring, cd.yml dispatched to retrain);
7. a bake with an S3 bucket, a moto server standing in for AWS (its own bake, registry and moto
   server: it shares nothing with 1 to 6): the first push trains on the bucket's data and the registry
   keeps the model there; batch.yml scores the bucket's rows into it on the runner, then, with
   `batch.emr_serverless` set, submits the champion to EMR Serverless;
8. the first push to main on a bake with feature_store=feast (cd.yml): the online store loaded
   (`materialize`) in staging before the bento is served and in production before the promotion, v1
   promoted with its feature service recorded (its own bake and registry, like 7);
9. materialize.yml dispatched on that bake;
10. production on Kubernetes, in 7's bake after its scenarios (the KUBECONFIG secret set: cd.yml's
    production job rolls out and promotes with `rollout --target kubernetes`): a push whose canary is
    healthy walks its steps and promotes, then one whose canary breaches a check sends traffic back and
    promotes nothing. kubectl, Prometheus and the image's digest are stand-ins (no cluster, no image).

2 to 6 build on each other through module fixtures (so `-k test_4` runs 2 and 3 first), and 10 on 7's
first push. Scenario 1 runs from a clone of the repository in the background once the first push made
a champion, while the later pushes run, and is asserted last. ci.yml's zero-configuration baseline (the
base branch trained in the job) is not run here: `check-config` and `baseline-params` are tested in the
generated project. Each is asserted from act's JSON log (job and step results, outputs, job
summaries), from what the stand-ins recorded (the pull request comment, docker calls, kubectl calls)
and from the registry through the project's own `history` command. `pytest -s` prints how long each
run and job took.

The stand-in checks at the top are fast; the scenarios are `slow`. Each world's scenarios share an
xdist group (act-main, act-s3, act-feast): a world's tests stay in one worker, and the worlds spread
over both.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest
import yaml
from act_runner import (
    STAND_INS,
    Act,
    ActRun,
    find_act,
    init_repository,
    local_repository_args,
    mlflow_server,
    moto_server,
    precompiled_uv_cache,
    remote_actions,
)
from conftest import COMBINATIONS, run
from helpers import BakedProject, bake, commit_all, find_python, git, promtool

# Long dummy secrets: act masks every occurrence of a secret's value in its log, so short ones would
# mask random substrings.
SECRETS = {
    "GITHUB_TOKEN": "ghs_act-tests-dummy-github-token-0123456789abcdef",
    "MLFLOW_TRACKING_TOKEN": "act-tests-dummy-mlflow-tracking-token-0123456789abcdef",
}


# The stand-ins against the workflows of every baked option combination (fast)


def _remote_steps(project: Path) -> Iterator[tuple[str, dict, str]]:
    """(action, step, text of its job or action file) for every remote action step of the project."""
    files = [*project.glob(".github/workflows/*.yml"), *project.glob(".github/actions/*/action.yml")]
    for path in files:
        document = yaml.safe_load(path.read_text())
        # Where `steps.<id>` is visible: its job (steps, outputs), or the whole composite action.
        scopes = [(job, job.get("steps") or []) for job in (document.get("jobs") or {}).values()]
        scopes.append((document, (document.get("runs") or {}).get("steps") or []))
        for scope, steps in scopes:
            for step in steps:
                if "uses" in step and not step["uses"].startswith("./"):
                    yield step["uses"].split("@")[0], step, yaml.safe_dump(scope)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_every_remote_action_has_a_stand_in_that_accepts_its_inputs(name, baked):
    """Same input names (`with:`) and output names (`steps.<id>.outputs.<name>`) as used."""
    project = baked(name).path
    assert remote_actions(project), "the baked workflows use no remote action at all?"
    local_repository_args(project)  # raises for a missing stand-in
    for action, step, scope in _remote_steps(project):
        owner, repo, *subpath = action.split("/")
        spec = yaml.safe_load((STAND_INS / owner / repo).joinpath(*subpath, "action.yml").read_text())
        unknown = set(step.get("with") or {}) - set(spec.get("inputs") or {})
        assert not unknown, f"{action}: the stand-in does not declare inputs {sorted(unknown)}"
        if "id" in step:
            used = set(re.findall(rf"steps\.{re.escape(step['id'])}\.outputs\.([\w-]+)", scope))
            unknown = used - set(spec.get("outputs") or {})
            assert not unknown, f"{action}: the stand-in does not declare outputs {sorted(unknown)}"


def test_every_stand_in_is_documented_and_used(baked):
    used = set()
    for name in COMBINATIONS:
        used |= {"/".join(action.split("/")[:2]) for action in remote_actions(baked(name).path)}
    for path in sorted(STAND_INS.glob("*/*/action.yml")):
        action = f"{path.parent.parent.name}/{path.parent.name}"
        text = path.read_text()
        assert text.startswith(f"# Stand-in for {action} ("), f"{path}: header names another action"
        assert "# Real action:" in text and "# This stand-in:" in text, f"{path}: undocumented"
        assert action in used, f"{action}: no baked workflow uses it any more; delete the stand-in"


def _comment_script(project: Path) -> str:
    """The github-script body of ci.yml's comment job."""
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    steps = workflow["jobs"]["comment"]["steps"]
    return next(s["with"]["script"] for s in steps if s.get("uses", "").startswith("actions/github-script@"))


def test_the_pull_request_comment_is_created_once_then_updated_in_place(baked, tmp_path):
    """ci.yml's own comment script, run twice through the github-script stand-in's fake API: the second
    push edits the first comment (found by its hidden marker) instead of adding one; other comments on
    the pull request, a human's that quotes the marker included, are left alone."""
    project = baked("DEFAULT").path
    slug = "octo/ml-service"
    state, work = tmp_path / "state", tmp_path / "work"
    (state / "github").mkdir(parents=True)
    (work / "comment").mkdir(parents=True)
    human = {"id": 1, "body": "<!-- ml_service:model-report -->\nquoted by hand", "user": {"type": "User"}}
    (state / "github" / "comments-7.json").write_text(json.dumps([human]))
    event = work / "event.json"
    event.write_text(json.dumps({"number": 7, "pull_request": {"number": 7}, "repository": repository(slug)}))

    def post(body: str) -> subprocess.CompletedProcess:
        (work / "comment" / "comment.md").write_text(body)
        env = {
            **os.environ,
            "ACT_STANDIN_STATE": str(state),
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REPOSITORY": slug,
            "GITHUB_OUTPUT": str(work / "output"),
            "INPUT_SCRIPT": _comment_script(project),
        }
        fake = STAND_INS / "actions" / "github-script" / "fake.js"
        return subprocess.run(["node", str(fake)], cwd=work, env=env, capture_output=True, text=True)

    first = post("<!-- ml_service:model-report -->\n## first push")
    assert first.returncode == 0 and "created comment" in first.stdout, first.stdout + first.stderr
    second = post("<!-- ml_service:model-report -->\n## second push")
    assert second.returncode == 0 and "updated comment" in second.stdout, second.stdout + second.stderr
    comments = json.loads((state / "github" / "comments-7.json").read_text())
    second_body = "<!-- ml_service:model-report -->\n## second push"
    assert [c["body"] for c in comments] == [human["body"], second_body]
    unmarked = post("## no marker")
    assert unmarked.returncode != 0 and "hidden marker" in unmarked.stdout
    assert len(json.loads((state / "github" / "comments-7.json").read_text())) == 2


def _monitor_script(project: Path, job: str) -> str:
    """The github-script body of a job of monitor.yml."""
    workflow = yaml.safe_load((project / ".github/workflows/monitor.yml").read_text())
    steps = workflow["jobs"][job]["steps"]
    return next(s["with"]["script"] for s in steps if s.get("uses", "").startswith("actions/github-script@"))


def test_the_monitoring_issue_is_opened_once_updated_then_closed_and_retraining_dispatched(baked, tmp_path):
    """monitor.yml's own scripts through the fake API: an alert opens ONE labelled issue, a second
    alert edits it, recovery comments and closes it; a healthy run with nothing open does nothing. The
    retrain job dispatches cd.yml on the default branch."""
    project = baked("DEFAULT").path
    slug = "octo/ml-service"
    state, work = tmp_path / "state", tmp_path / "work"
    (work / "monitoring-run" / "monitoring").mkdir(parents=True)
    event = work / "event.json"
    event.write_text(json.dumps({"repository": repository(slug)}))

    def run(job: str, env: dict[str, str], body: str = "") -> subprocess.CompletedProcess:
        (work / "monitoring-run" / "monitoring" / "issue.md").write_text(body)
        script = _monitor_script(project, job)
        environment = {
            **os.environ,
            "ACT_STANDIN_STATE": str(state),
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REPOSITORY": slug,
            "GITHUB_OUTPUT": str(work / "output"),
            "INPUT_SCRIPT": script,
            **env,
        }
        fake = STAND_INS / "actions" / "github-script" / "fake.js"
        done = subprocess.run(["node", str(fake)], cwd=work, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def issues() -> list[dict]:
        path = state / "github" / "issues.json"
        return json.loads(path.read_text()) if path.exists() else []

    marker = "<!-- ml_service:model-monitoring -->"
    healthy = f"{marker}\n## Model monitoring: healthy\n- no data drift and no decay"
    assert "healthy, and no monitoring issue is open" in run("issue", {"ALERT": "false"}, healthy).stdout
    assert issues() == []
    run("issue", {"ALERT": "true"}, f"{marker}\n## Model monitoring: data drift\nfirst")
    run("issue", {"ALERT": "true"}, f"{marker}\n## Model monitoring: data drift and decay\nsecond")
    (issue,) = issues()
    assert issue["state"] == "open" and [label["name"] for label in issue["labels"]] == ["model-monitoring"]
    assert issue["title"] == "Model monitoring: data drift and decay" and issue["body"].endswith("second")
    closed = run("issue", {"ALERT": "false"}, healthy)
    assert "closed issue #1: recovered" in closed.stdout
    (issue,) = issues()
    assert issue["state"] == "closed"
    assert json.loads((state / "github" / "comments-1.json").read_text())[0]["body"] == healthy

    run("retrain", {"DEFAULT_BRANCH": "main"})
    calls = [json.loads(line) for line in (state / "github" / "calls.jsonl").read_text().splitlines()]
    dispatches = [c["params"] for c in calls if c["call"] == "actions.createWorkflowDispatch"]
    assert dispatches == [{"owner": "octo", "repo": "ml-service", "workflow_id": "cd.yml", "ref": "main"}]


# The scenarios (slow)

# Hyperparameters of the logistic regression: each step up in C fits the bundled data better.
WORSE, WEAK, BETTER, BEST = 0.0001, 0.001, 0.01, 1.0


def world_params(project: Path, c: float) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["model"]["hyperparameters"] = {"C": c, "max_iter": 1000}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass(kw_only=True)
class World(BakedProject):
    """The baked repository (its reports outside it, under act's state), act with its stand-ins, the
    registry server, and what has happened so far."""

    act: Act
    # On a clone of the repository, so that scenario 1 can run while the pushes to main do (none for 8).
    pr_act: Act | None
    tracking_uri: str
    slug: str  # owner/name on GitHub
    done: dict[str, ActRun] = field(default_factory=dict)
    setup: dict[str, float] = field(default_factory=dict)  # seconds each preparation took

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The project's CLI against the shared registry."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return super().cli(*args, env=env, check=check, timeout=300)

    def registry(self) -> dict:
        """`history` of the shared registry: {"aliases": {...}, "history": [...]}."""
        self.cli("history")
        return self.report("history")


def laps() -> tuple[dict[str, float], Callable[[str], None]]:
    """(seconds per preparation, lap(name): the time since the last lap, recorded under name)."""
    setup, started = {}, [time.perf_counter()]

    def lap(name: str) -> None:
        setup[name], started[0] = time.perf_counter() - started[0], time.perf_counter()

    return setup, lap


@pytest.fixture(scope="module")
def world(tmp_path_factory, stack) -> World:
    root = tmp_path_factory.mktemp("act")
    setup, lap = laps()
    baked = bake(root / "bake")
    venv = stack(baked)  # the project's stack, once; it also fills uv's cache the jobs install from
    lap("stack")
    project, answers = baked.path, baked.answers
    slug = f"{answers['github_owner']}/{answers['project']}"
    # A committed lock, as the setup action's notice asks: every job's `uv sync --locked` links the
    # environment from uv's cache in about a second instead of resolving it again.
    run(["uv", "lock", "--quiet", "--python", str(venv / "bin" / "python")], project)
    lap("uv lock")
    world_params(project, WEAK)  # a weak first model, so that better ones can win the gate later
    init_repository(project, slug)
    # The pull request's repository: a clone, with origin on GitHub like the main one.
    pr_repo = root / "pull-request" / project.name
    git(root, "clone", "--quiet", str(project), str(pr_repo))
    git(pr_repo, "remote", "set-url", "origin", f"https://github.com/{slug}.git")
    git(pr_repo, "config", "user.name", "act tests")
    git(pr_repo, "config", "user.email", "act-tests@example.com")
    git(pr_repo, "checkout", "--quiet", "-b", PR_BRANCH)
    world_params(pr_repo, BETTER)
    commit_all(pr_repo, "Weaker regularisation")
    env = {
        "ACT_STANDIN_PYTHONS": str(Path(find_python(answers["python_version"])).parent),
        # Each job's `uv sync` links its .venv from this copy, bytecode included.
        "UV_CACHE_DIR": str(precompiled_uv_cache(venv, root)),
        # The pull request's `make test` leaves out the rollouts through nginx (minutes), which
        # test_generated.py runs on this bake; it runs nothing else of this bake's suite.
        "PYTEST_ADDOPTS": "-m 'not rollout'",
    }
    lap("repositories, bytecode in uv's cache")
    act = Act(find_act(), project, state=root / "state", cache=root / "act-cache", env=env)
    pr_act = Act(find_act(), pr_repo, state=root / "pr-state", cache=root / "pr-act-cache", env=env)
    with registry_world(project, venv, root, act, pr_act, slug, laps_of=(setup, lap)) as world:
        yield world


@contextlib.contextmanager
def registry_world(
    project: Path,
    venv: Path,
    root: Path,
    act: Act,
    pr_act: Act | None,
    slug: str,
    laps_of: tuple[dict[str, float], Callable[[str], None]],
    make: Callable[..., World] = World,
    artifacts: str | None = None,
    server_env: dict[str, str] | None = None,
) -> Iterator[World]:
    """The world (`make`'s) of `project`'s act runs around a shared MLflow server (on PostgreSQL) as
    their registry, its artifacts in `artifacts` (default: a local folder); the timings reported when
    it ends."""
    setup, lap = laps_of
    with mlflow_server(venv, project, root / "registry", artifacts, server_env) as tracking_uri:
        lap("mlflow server")
        world = make(
            path=project,
            venv=venv,
            reports_dir=act.state / "cli-reports",
            act=act,
            pr_act=pr_act,
            tracking_uri=tracking_uri,
            slug=slug,
            setup=setup,
        )
        yield world
    report_timings(world)


def report_timings(world: World) -> None:
    """How long the setup, each run and each job took: shown with `pytest -s`, kept next to act's logs."""
    lines = [
        f"{name}: {done.seconds:.0f} s ("
        + ", ".join(f"{job} {seconds:.0f} s" for job, seconds in done.job_seconds().items())
        + ")"
        for name, done in world.done.items()
    ]
    lines.insert(0, "setup: " + ", ".join(f"{name} {s:.0f} s" for name, s in world.setup.items()))
    (world.act.state / "timings.txt").write_text("\n".join(lines) + "\n")
    print("\nact runs:\n  " + "\n  ".join(lines))


def repository(slug: str) -> dict:
    owner, name = slug.split("/")
    return {"full_name": slug, "name": name, "owner": {"login": owner}, "default_branch": "main"}


def pull_request_payload(repo: Path, slug: str, number: int, base: str, head: str) -> dict:
    """A `pull_request` event from `head` into `base`, both branches of the same repository."""

    def side(branch: str) -> dict:
        return {"ref": branch, "sha": git(repo, "rev-parse", branch), "repo": repository(slug)}

    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {"number": number, "head": side(head), "base": side(base)},
        "repository": repository(slug),
    }


def assert_ok(run: ActRun, jobs: set[str]) -> None:
    assert run.returncode == 0, run.explain()
    assert set(run.jobs) == jobs, run.explain()
    assert all(result == "success" for result in run.jobs.values()), run.explain()


# Pushes to main and the manual rollback, against the shared registry


def pushed(
    world: World,
    scenario: str,
    c: float | None,
    message: str,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> tuple[ActRun, dict]:
    """Commit (new hyperparameters, or nothing) on main and run cd.yml for the push (`secrets` added
    to SECRETS).

    Returns the run (also kept in `world.done` under `scenario`) and the registry after it.
    """
    before = git(world.path, "rev-parse", "HEAD")
    if c is not None:
        world_params(world.path, c)
        after = commit_all(world.path, message)
    else:
        before, after = "0" * 40, before  # the repository's first push
    payload = {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "head_commit": {"id": after, "message": message},
        "repository": repository(world.slug),
    }
    variables = {"MLFLOW_TRACKING_URI": world.tracking_uri, "SKIP_IMAGE": "true", **(variables or {})}
    secrets = {**SECRETS, **(secrets or {})}
    run = world.act.run("push", "cd.yml", payload=payload, variables=variables, secrets=secrets)
    world.done[scenario] = run
    return run, world.registry()


def entries(registry: dict, action: str) -> list[tuple]:
    """(alias, before, after, why) of the audit trail's moves of one kind, oldest first."""
    return [
        (e["alias"], e["before"], e["after"], e["why"]) for e in registry["history"] if e["action"] == action
    ]


DEPLOY_JOBS = {"gate", "build", "staging", "production"}
IMAGE_STEPS = {
    "Set up Docker Buildx",
    "Log in to GHCR",
    "Image tags and labels",
    "Build and push the image",
    "SBOM of the image",
    "Provenance attestation",
    "Verify the image's provenance",
    "Run the image",
    "Smoke and load test the image",
    "Tag the image for production",
}


def assert_deployed(
    world: World, run: ActRun, version: int, promoted_by: str = "Promote in the registry"
) -> None:
    """gate -> build -> staging -> production all green for `version`, without any image step;
    `promoted_by`: the production step that promoted it."""
    assert_ok(run, DEPLOY_JOBS)
    gate = run.outputs["gate"]
    assert (gate["decision"], gate["candidate_version"]) == ("promote", str(version)), gate
    assert run.steps["build"]["Build the bento"] == "success"
    assert run.steps["staging"]["Import the bento"] == "success"
    assert run.steps["staging"]["Smoke and load test the bento"] == "success"
    assert run.steps["production"][promoted_by] == "success"
    # SKIP_IMAGE: no image step ran, and no docker, SBOM or attestation stand-in was called.
    ran = {step for steps in run.steps.values() for step in steps}
    assert not ran & IMAGE_STEPS, ran & IMAGE_STEPS
    assert [call for call in world.act.calls() if call["action"] != AWS_CREDENTIALS] == []
    # Staging smoke-tested the bento on a local server, load test included; production promoted it.
    staging = run.summaries["staging"]
    assert "### Smoke test: passed" in staging and "| load_test | pass |" in staging, staging
    assert f"Model v{version} served at http://127.0.0.1:" in staging, staging
    assert f"### Promotion: champion is now v{version}" in run.summaries["production"]


@pytest.fixture(scope="module")
def first_push(world) -> tuple[ActRun, dict]:
    return pushed(world, "first push", None, "Initial commit from the template")


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_2_first_push_promotes_v1_through_staging_and_production(world, first_push):
    run, registry = first_push
    assert_deployed(world, run, 1)
    assert "rollback" not in run.jobs
    aliases = registry["aliases"]
    assert aliases["champion"] == 1 and "previous" not in aliases, aliases
    promoted = [e for e in registry["history"] if e["action"] == "promote"]
    assert [(e["before"], e["after"], e["by"]) for e in promoted] == [(None, 1, world.act.actor)]


@pytest.fixture(scope="module")
def worse_push(world, first_push, pull_request) -> tuple[ActRun, dict]:
    return pushed(world, "worse push", WORSE, "Much stronger regularisation")


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_3_a_worse_model_is_rejected_and_nothing_after_the_gate_runs(world, worse_push):
    run, registry = worse_push
    assert_ok(run, {"gate"})  # green, and build, staging, production, rollback never started
    assert (run.outputs["gate"]["decision"], run.outputs["gate"]["candidate_version"]) == ("reject", "2")
    gate = run.summaries["gate"]
    assert "## Gate: **REJECT** v2" in gate and "Candidate v2 against champion v1" in gate, gate
    assert "- f1 changes by -" in gate, gate  # the reason
    assert registry["aliases"]["champion"] == 1 and registry["aliases"]["challenger"] == 2, registry
    assert [entry[2] for entry in entries(registry, "promote")] == [1]


@pytest.fixture(scope="module")
def better_push(world, worse_push) -> dict:
    """A second promotion, so that there is a `previous` to roll back to: committed on main, but
    trained, evaluated and promoted by the CLI, as on a laptop. cd.yml's path for a winning push
    runs in the first push (through production) and in the failed deployment (through the
    promotion); a third run of it here would take minutes and test nothing new. The registry."""
    world_params(world.path, BETTER)
    commit_all(world.path, "Weaker regularisation")
    for stage in ("train", "evaluate", "promote"):
        world.cli(stage)
    return world.registry()


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Answers JSON (`answer`), and logs nothing: the stand-in servers' handlers."""

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class LocalServer:
    """An HTTP server on a free port of 127.0.0.1 (`url`), serving `handler` in a thread while entered."""

    def __init__(self, handler: type[JsonHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrokenProduction(LocalServer):
    """A production service that rolled out the newest registered model and is broken: it says it is
    ready and serves the challenger's version, but every prediction fails (HTTP 503)."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                outer.requests.append(f"GET {self.path}")
                self.answer(200, {"status": "ok"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(f"POST {self.path}")
                if self.path == "/metadata":
                    query = urllib.parse.urlencode({"name": model_name, "alias": "challenger"})
                    url = f"{tracking_uri}/api/2.0/mlflow/registered-models/alias?{query}"
                    with urllib.request.urlopen(url, timeout=10) as found:
                        version = int(json.load(found)["model_version"]["version"])
                    self.answer(200, {"model_name": model_name, "model_version": version})
                else:
                    self.answer(503, {"error": "the model failed to load"})

        super().__init__(Handler)


@pytest.fixture(scope="module")
def failed_deployment(world, better_push) -> tuple[ActRun, dict, BrokenProduction]:
    """v4 wins the gate and is promoted, but the production service it rolls out to is broken."""
    with BrokenProduction(world.tracking_uri, world.package) as production:
        variables = {"PRODUCTION_URL": production.url}
        run, registry = pushed(world, "failed deployment", BEST, "No regularisation to speak of", variables)
    return run, registry, production


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_4_a_failure_after_promotion_rolls_the_champion_back(world, better_push, failed_deployment):
    before = better_push
    assert (before["aliases"]["champion"], before["aliases"]["previous"]) == (3, 1), before

    run, registry, production = failed_deployment
    assert run.returncode != 0, run.explain()
    expected = {"gate": "success", "build": "success", "staging": "success"}
    assert run.jobs == {**expected, "production": "failure", "rollback": "success"}, run.explain()
    assert run.outputs["gate"]["candidate_version"] == "4"
    steps = run.steps["production"]
    assert steps["Promote in the registry"] == "success"
    assert steps["Smoke test production"] == "failure"
    assert "POST /predict" in production.requests  # the smoke test reached the broken service
    summary = run.summaries["production"]
    assert "### Promotion: champion is now v4" in summary, summary
    assert "### Smoke test: **FAILED**" in summary and "| predict_matches_registry | **FAIL** |" in summary
    assert run.steps["rollback"]["Undo the promotion in the registry"] == "success"
    assert "### Rollback: champion is now v3" in run.summaries["rollback"]
    # The champion is what it was before this push.
    assert (registry["aliases"]["champion"], registry["aliases"]["previous"]) == (3, 1), registry
    assert [entry[2] for entry in entries(registry, "promote")] == [1, 3, 4]
    alias, before, after, why = entries(registry, "rollback")[-1]
    assert (alias, before, after) == ("champion", 4, 3) and "deployment failed" in why


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_5_rollback_workflow_returns_the_champion_to_previous(world, failed_deployment):
    assert failed_deployment[1]["aliases"]["champion"] == 3
    run = world.act.run(
        "workflow_dispatch",
        "rollback.yml",
        inputs={"to_version": "", "reason": "act test: back to previous"},
        variables={"MLFLOW_TRACKING_URI": world.tracking_uri, "SKIP_IMAGE": "true"},
        secrets=SECRETS,
    )
    world.done["rollback"] = run
    assert_ok(run, {"rollback"})
    steps = run.steps["rollback"]
    assert steps["Move the champion back"] == "success"
    assert steps["Build and smoke-test the new champion"] == "success"
    assert run.outputs["rollback"]["champion"] == "1"
    summary = run.summaries["rollback"]
    assert "### Rollback: champion is now v1" in summary and "### Smoke test: passed" in summary
    registry = world.registry()
    assert registry["aliases"]["champion"] == 1
    alias, before, after, why = entries(registry, "rollback")[-1]
    assert (alias, before, after) == ("champion", 3, 1) and "act test: back to previous" in why
    assert world.act.calls() == []


# Monitoring: monitor.yml dispatched on a prediction log written by the project's own writer

# Writes `sys.argv[1]` as the service would have: every training row, the first `sys.argv[2]` features
# moved by two standard deviations, predicted by the champion's version `sys.argv[3]`.
SERVED_TRAFFIC = """
import sys
import numpy as np
from {package} import data, prediction_log
from {package}.settings import load_settings

settings = load_settings()
frame = data.read_table(settings.resolve(settings.params.data.source))
features, target = data.split_features_target(frame, settings.params.data)
for column in features.columns[: int(sys.argv[2])]:
    features[column] += 2 * features[column].std()
log = prediction_log.PredictionLog(
    sys.argv[1], list(features.columns), int(sys.argv[3]), 1.0, 3600, classes=("0", "1")
)
for index, row in enumerate(features.to_numpy()):
    label = int(target.iloc[index])
    every_class = np.array([[0.1, 0.9] if label else [0.9, 0.1]])  # the label's is the greater
    log.record(f"served-{{index}}", "predict", row[None, :], [label], every_class)
log.close()
"""


def monitored(world: World, scenario: str, shifted_features: int) -> ActRun:
    """monitor.yml, dispatched, on a fresh prediction log with `shifted_features` moved features."""
    served = world.act.state / f"served-shifted-{shifted_features}"
    labels = world.act.state / "labels"
    labels.mkdir(exist_ok=True)  # no ground truth yet: performance is not judged
    script = SERVED_TRAFFIC.format(package=world.package)
    champion = str(world.registry()["aliases"]["champion"])
    for_repo = [str(world.venv / "bin" / "python"), "-c", script, str(served), str(shifted_features)]
    run([*for_repo, champion], world.path)
    path = world.path / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["monitoring"] = {
        **params.get("monitoring", {}),
        "prediction_log": str(served),
        "labels": str(labels),
        "retrain_after_windows": 1,
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(world.path, f"Monitor the traffic of {scenario}")
    done = world.act.run(
        "workflow_dispatch",
        "monitor.yml",
        payload={"repository": repository(world.slug)},
        variables={"MLFLOW_TRACKING_URI": world.tracking_uri},
        secrets=SECRETS,
    )
    world.done[scenario] = done
    return done


def github_calls(world: World) -> list[dict]:
    path = world.act.state / "github" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_6_monitoring_raises_no_issue_without_drift_then_one_issue_and_a_retraining(world, failed_deployment):
    """Persistence is one window here (retrain_after_windows: 1), so the drifted run also retrains."""
    before = len(github_calls(world))
    healthy = monitored(world, "monitor, no drift", shifted_features=0)
    assert_ok(healthy, {"judge", "issue"})
    assert healthy.outputs["judge"]["alert"] == "false", healthy.explain()
    assert "## Model monitoring: healthy" in healthy.summaries["judge"]
    calls = [call["call"] for call in github_calls(world)[before:]]
    assert calls == ["issues.listForRepo"], calls  # looked, found nothing open, opened nothing

    drifted = monitored(world, "monitor, drift", shifted_features=20)
    assert_ok(drifted, {"judge", "issue", "retrain"})
    assert (drifted.outputs["judge"]["alert"], drifted.outputs["judge"]["retrain"]) == ("true", "true")
    calls = github_calls(world)[before + 1 :]
    made = [call["params"] for call in calls if call["call"] == "issues.create"]
    assert len(made) == 1 and made[0]["labels"] == ["model-monitoring"]
    assert made[0]["title"] == "Model monitoring: data drift"
    assert "20 of 30 features drifted" in made[0]["body"]  # the drift report, in the issue
    dispatches = [call["params"] for call in calls if call["call"] == "actions.createWorkflowDispatch"]
    assert [d["workflow_id"] for d in dispatches] == ["cd.yml"]


# Scenario 1 runs from its own clone while the pushes after the first run (this machine has cores to
# spare while the deploy jobs wait on servers), so its assertions come last.

PR_BRANCH = "weaker-regularisation"


@pytest.fixture(scope="module")
def pull_request(request, world, first_push):
    """(event payload, the running act) of scenario 1, against the registry of the first push (champion
    v1); started only if scenario 1 was selected."""
    if not any(item.name.startswith("test_1_") for item in request.session.items):
        yield None
        return
    payload = pull_request_payload(world.pr_act.repo, world.slug, 1, "main", PR_BRANCH)
    variables = {"MLFLOW_TRACKING_URI": world.tracking_uri}
    running = world.pr_act.start(
        "pull_request", "ci.yml", payload=payload, variables=variables, secrets=SECRETS
    )
    yield payload, running
    running.stop()


def assert_whole_suite_passed(log: str) -> None:
    """The `test` job ran the default bake's suite but its rollouts (which tests/test_generated.py runs
    on this bake, and nothing else of it): real servers included, nothing failed, and with promtool
    on this machine the alert rules' unit tests were not skipped."""
    outcome = [line for line in log.splitlines() if re.search(r"\d+ passed.* in [\d.]+s", line)]
    assert outcome, log[-3000:]
    assert not re.search(r"failed|error", outcome[-1]), outcome[-1]
    if promtool() is not None:
        skipped = [line for line in log.splitlines() if "SKIPPED" in line]
        assert not [line for line in skipped if "test_monitoring_files" in line], skipped


def run_on_server(tracking_uri: str, run_id: str) -> bool:
    """Whether the MLflow server knows the run (its REST API answers 404 for an unknown one)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{tracking_uri}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


@pytest.mark.slow
@pytest.mark.xdist_group("act-main")
def test_1_pull_request_reports_the_candidate_against_the_registrys_champion(world, pull_request):
    """Server mode: the registry's champion (v1) copied, digest checked, into the job's own store, where
    the candidate is trained and evaluated; the team's registry gets nothing of the pull request."""
    payload, running = pull_request
    run = running.wait()
    world.done["pull request"] = run

    assert_ok(run, {"lint", "test", "model", "comment"})
    assert_whole_suite_passed(run.log("test"))
    model = run.steps["model"]
    for step in (
        "Copy the registry's champion",
        "Validate the data",
        "Train the candidate",
        "Evaluate the candidate against the champion",
        "Write the comment and the job summary",
    ):
        assert model.get(step) == "success", f"{step}: {model.get(step)}\n{run.explain()}"
    assert "Train the base branch's model as the champion" not in {
        step for step, result in model.items() if result != "skipped"
    }
    # A throwaway store in the job's workspace: nothing of a pull request reaches the team's registry.
    assert run.outputs["model"]["mode"] == "server"
    assert run.outputs["model"]["tracking_uri"].startswith(f"sqlite:///{world.pr_act.cache}/")
    reports = world.pr_act.artifact("model-report")
    imported = json.loads((reports / "import-champion.json").read_text())
    assert (imported["registry_version"], imported["champion"]) == (1, 1), imported
    trained = json.loads((reports / "train.json").read_text())
    assert not run_on_server(world.tracking_uri, trained["run_id"]), trained  # trained in its own store

    # ONE comment, created through the (fake) GitHub API by the comment job, with the metric table.
    created = [c for c in world.pr_act.api_calls() if c["call"] == "issues.createComment"]
    assert len(created) == 1 and created[0]["params"]["issue_number"] == 1
    body = created[0]["params"]["body"]
    assert [comment["body"] for comment in world.pr_act.comments(1)] == [body]
    assert body.startswith("<!--") and "-->" in body.splitlines()[0]  # the hidden marker
    assert f"commit `{payload['pull_request']['head']['sha'][:12]}`" in body
    # The champion is the registry's v1, copied (C 0.001 against the pull request's 0.01).
    copied = "the registry's champion v1, copied into this job's own store"
    assert f"Candidate v2 against champion v1 ({copied}" in body
    assert "### Gate verdict: **PROMOTE** candidate v2" in body
    assert "| metric | candidate | champion | delta | change |" in body
    evaluated = json.loads((world.pr_act.artifact("model-report") / "evaluate.json").read_text())
    f1 = evaluated["candidate_metrics"]["f1"], evaluated["champion_metrics"]["f1"]
    assert f1[0] > f1[1]
    assert f"| **f1** (gate) | {f1[0]:.4f} | {f1[1]:.4f} | {f1[0] - f1[1]:+.4f} | better |" in body
    assert "### Data validation: passed" in body
    # The same report in the model job's summary.
    assert "| metric | candidate | champion | delta | change |" in run.summaries["model"]

    # Nothing was deployed: no docker, attestation or AWS call.
    assert world.pr_act.calls() == []


# Scenario 7: a bake with an S3 bucket, against a moto server standing in for AWS. The training data is
# in the bucket and so are the registry's artifacts (the MLflow server proxies them there, as
# docs/setup.md runs it); every AWS step's stand-in points its job's boto3 at moto. A first push goes
# through production; batch.yml then scores on the runner into the bucket, and, once
# `batch.emr_serverless` is set, submits the champion to EMR Serverless (moto ends every job run
# SUCCESS at once: nothing runs Spark; what is checked is the workflow's path through the CLI).

S3_BUCKET = "act-s3-bucket"
EMR_ROLE = "arn:aws:iam::123456789012:role/emr-batch"
GITHUB_ROLE = "arn:aws:iam::123456789012:role/github-deploy"
READ_ROLE = "arn:aws:iam::123456789012:role/github-read"
ROLES = {"AWS_ROLE_ARN": GITHUB_ROLE, "AWS_READ_ROLE_ARN": READ_ROLE}  # what the S3 world's pushes set
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials"

# Run with the stack's Python: the bucket, the files put in it (key=path arguments), and an EMR
# Serverless application, whose id it prints.
PREPARE_AWS = """
import sys
import boto3

bucket, *files = sys.argv[1:]
s3 = boto3.client("s3")
s3.create_bucket(Bucket=bucket)
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
for item in files:
    key, path = item.split("=", 1)
    s3.upload_file(path, bucket, key)
made = boto3.client("emr-serverless").create_application(name="batch", releaseLabel="emr-7.5.0", type="SPARK")
print(made["applicationId"])
"""

# The application's job runs, the bucket's keys, the current version of one object and the rows of one
# Parquet object in it, as JSON.
INSPECT_AWS = """
import io, json, sys
import boto3
import pandas as pd

bucket, application, versioned, parquet = sys.argv[1:5]
emr = boto3.client("emr-serverless")
try:
    listed = emr.list_job_runs(applicationId=application)["jobRuns"]
except emr.exceptions.ResourceNotFoundException:  # moto's answer for an application without runs
    listed = []
runs = [emr.get_job_run(applicationId=application, jobRunId=item["id"])["jobRun"] for item in listed]
s3 = boto3.client("s3")
keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])]
rows = None
if parquet in keys:
    frame = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=parquet)["Body"].read()))
    rows = frame.to_dict(orient="list")
version = s3.head_object(Bucket=bucket, Key=versioned)["VersionId"]
print(json.dumps({"runs": runs, "keys": keys, "version": version, "rows": rows}, default=str))
"""


@dataclass(kw_only=True)
class S3World(World):
    aws: str  # the moto server's URL
    data_key: str  # where the training data is in the bucket (and the rows batch.yml scores)
    application: str = ""  # the EMR Serverless application's id

    def in_stack(self, script: str, *args: str) -> str:
        """A script run by the stack's Python against moto; its output."""
        env = {**os.environ, **aws_env(self.aws, self.answers["aws_region"])}
        return run([str(self.venv / "bin" / "python"), "-c", script, *args], self.path, **env).stdout

    def inspect(self, parquet: str = "") -> dict:
        """moto's EMR job runs, the bucket's keys, the training data's version, and the rows of the
        object `parquet` (if any)."""
        found = self.in_stack(INSPECT_AWS, S3_BUCKET, self.application, self.data_key, parquet)
        return json.loads(found)


def aws_env(endpoint: str, region: str) -> dict[str, str]:
    """What the configure-aws-credentials stand-in exports, for the test's own clients and servers."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "act-tests-access-key",
        "AWS_SECRET_ACCESS_KEY": "act-tests-secret-key",
        "AWS_DEFAULT_REGION": region,
    }


@pytest.fixture(scope="module")
def s3_world(tmp_path_factory, stack) -> Iterator[S3World]:
    root = tmp_path_factory.mktemp("act-s3")
    setup, lap = laps()
    baked = bake(root / "bake", s3_bucket=S3_BUCKET)
    venv = stack(baked)
    lap("stack")
    project, answers = baked.path, baked.answers
    slug = f"{answers['github_owner']}/{answers['project']}"
    run(["uv", "lock", "--quiet", "--python", str(venv / "bin" / "python")], project)
    env = {
        "ACT_STANDIN_PYTHONS": str(Path(find_python(answers["python_version"])).parent),
        "UV_CACHE_DIR": str(precompiled_uv_cache(venv, root)),
    }
    lap("uv lock, bytecode in uv's cache")
    with moto_server(venv, root / "moto") as aws:
        env["ACT_STANDIN_AWS_ENDPOINT"] = aws  # the credentials step's stand-in exports it
        params = yaml.safe_load((project / "params.yaml").read_text())
        local = params["data"]["source"]
        params["data"]["source"] = f"s3://{S3_BUCKET}/{local}"
        params["batch"]["input"] = f"s3://{S3_BUCKET}/{local}"
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        world_params(project, WEAK)  # a weak first model, so that better ones win the gate in scenario 10
        init_repository(project, slug)
        act = Act(find_act(), project, state=root / "state", cache=root / "act-cache", env=env)
        with registry_world(
            project,
            venv,
            root,
            act,
            None,
            slug,
            laps_of=(setup, lap),
            make=functools.partial(S3World, aws=aws, data_key=local),
            artifacts=f"s3://{S3_BUCKET}/mlflow",
            server_env=aws_env(aws, answers["aws_region"]),
        ) as world:
            world.application = world.in_stack(PREPARE_AWS, S3_BUCKET, f"{local}={project / local}").strip()
            lap("bucket, data and EMR application in moto")
            yield world


@pytest.fixture(scope="module")
def s3_first_push(s3_world) -> tuple[ActRun, dict]:
    return pushed(s3_world, "s3 first push", None, "Initial commit from the template", ROLES)


@pytest.mark.slow
@pytest.mark.xdist_group("act-s3")
def test_7_an_s3_bake_trains_on_the_bucket_and_keeps_the_registry_s_model_there(s3_world, s3_first_push):
    world, (run_, registry) = s3_world, s3_first_push
    assert_deployed(world, run_, 1)
    assert registry["aliases"]["champion"] == 1, registry
    # Every AWS step ran, with the deploying role where the job writes and the read role where it reads.
    roles = [
        (call["inputs"]["role-session-name"].split("-")[0], call["inputs"]["role-to-assume"])
        for call in world.act.calls()
        if call["action"] == AWS_CREDENTIALS
    ]
    assert ("cd", GITHUB_ROLE) in roles and ("cd", READ_ROLE) in roles, roles
    # v1 was trained on the bucket's object, at the version the bucket holds, and lives in the bucket.
    seen, tags = world.inspect(), model_version_tags(world, 1)
    assert tags["data_source"] == f"s3://{S3_BUCKET}/{world.data_key}", tags
    assert tags["data_s3_version_id"] == seen["version"], (tags, seen["version"])
    model_files = [key for key in seen["keys"] if key.startswith("mlflow/") and key.endswith("/MLmodel")]
    assert model_files, seen["keys"]


@pytest.fixture(scope="module")
def s3_batch(s3_world, s3_first_push) -> ActRun:
    """batch.yml dispatched with its params' input (in the bucket) and an output there."""
    done = s3_world.act.run(
        "workflow_dispatch",
        "batch.yml",
        inputs={"input": "", "output": f"s3://{S3_BUCKET}/predictions/act.parquet"},
        variables={"MLFLOW_TRACKING_URI": s3_world.tracking_uri, "AWS_ROLE_ARN": GITHUB_ROLE},
        secrets=SECRETS,
    )
    s3_world.done["batch.yml"] = done
    return done


@pytest.mark.slow
@pytest.mark.xdist_group("act-s3")
def test_7_batch_yml_scores_the_bucket_s_rows_with_the_champion_into_the_bucket(s3_world, s3_batch):
    world, done = s3_world, s3_batch
    assert_ok(done, {"batch"})
    steps = done.steps["batch"]
    assert steps["Score with the champion"] == "success", done.explain()
    assert steps.get("Score on EMR Serverless") in (None, "skipped"), steps
    scored = world.inspect("predictions/act.parquet")["rows"]
    assert scored is not None, "no predictions/act.parquet in the bucket"
    rows = len((world.path / world.data_key).read_text().splitlines()) - 1
    assert len(scored["prediction"]) == rows
    assert set(scored["model_version"]) == {1}, set(scored["model_version"])
    assert "v1" in done.summaries["batch"], done.summaries["batch"]


@pytest.mark.slow
@pytest.mark.xdist_group("act-s3")
def test_7_batch_yml_submits_the_champion_to_emr_serverless(s3_world, s3_batch):
    """moto stands in for AWS (S3 and EMR Serverless) and nothing runs Spark: moto reports the run
    SUCCESS at once. Scoring on the runner is skipped; the job run carries the champion's version."""
    world = s3_world
    params = yaml.safe_load((world.path / "params.yaml").read_text())
    source = params["batch"]["input"]
    params["batch"]["emr_serverless"] = {
        "application_id": world.application,
        "execution_role_arn": EMR_ROLE,
        "code": f"s3://{S3_BUCKET}/emr/code",
        "logs": f"s3://{S3_BUCKET}/emr/logs",
        "python": f"/usr/bin/python{world.answers['python_version']}",
    }
    (world.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(world.path, "Batch scoring on EMR Serverless")
    calls_before = len(world.act.calls())
    done = world.act.run(
        "workflow_dispatch",
        "batch.yml",
        inputs={"input": source, "output": ""},
        variables={"MLFLOW_TRACKING_URI": world.tracking_uri, "AWS_ROLE_ARN": GITHUB_ROLE},
        secrets=SECRETS,
    )
    world.done["batch.yml on EMR"] = done
    assert_ok(done, {"batch"})
    steps = done.steps["batch"]
    assert steps["Score on EMR Serverless"] == "success", done.explain()
    assert steps.get("Score with the champion") in (None, "skipped"), steps
    assert done.outputs["batch"]["emr_serverless"] == "true"
    (call,) = world.act.calls()[calls_before:]
    assert call["inputs"]["role-to-assume"] == GITHUB_ROLE

    seen = world.inspect()
    (job,) = seen["runs"]
    assert (job["state"], job["executionRole"]) == ("SUCCESS", EMR_ROLE)
    submitted = job["jobDriver"]["sparkSubmit"]
    flags = submitted["entryPointArguments"]
    arguments = dict(zip(flags[::2], flags[1::2], strict=True))
    assert (arguments["--version"], arguments["--input"]) == ("1", source), arguments
    assert arguments["--output"] == f"s3://{S3_BUCKET}/predictions/predictions.parquet"
    driver_env = f"spark.emr-serverless.driverEnv.MLFLOW_TRACKING_URI={world.tracking_uri}"
    assert driver_env in submitted["sparkSubmitParameters"]
    entry_point = submitted["entryPoint"]
    assert entry_point.startswith(f"s3://{S3_BUCKET}/emr/code/spark_submit-"), entry_point
    assert entry_point.removeprefix(f"s3://{S3_BUCKET}/") in seen["keys"], seen["keys"]

    summary = done.summaries["batch"]
    assert "### Batch scoring on EMR Serverless: SUCCESS with v1" in summary, summary
    assert f"job run `{job['jobRunId']}`" in summary, summary


# Scenario 10: production on Kubernetes, in the S3 world after scenario 7 (a bake and a registry already
# there, and nothing after 7 depends on its champion). With the KUBECONFIG secret set, cd.yml's
# production job promotes through `rollout --target kubernetes --promote` instead of "Promote in the
# registry": the candidate's image goes into the free slot, the HTTPRoute's weights move step by step,
# each step is judged on Prometheus, and a breach sends all traffic back to the champion.

# The digest the build job would have pushed (pin_production_digest says why it is written in cd.yml).
PUSHED_DIGEST = "sha256:" + "d1" * 32
KUBECONFIG = "act-tests-dummy-kubeconfig-the-kubectl-stand-in-never-reads-0123456789abcdef"
# What a slot's pods answered on the model's endpoints during a step, as Prometheus reports it. The
# failing slot's errors are 10%, above rollout.checks.max_error_rate (1%).
HEALTHY = {"requests": 400, "errors": 0, "p95_ms": 40}
FAILING = {"requests": 400, "errors": 40, "p95_ms": 40}
# Each query of `slot_queries`, known by a part only it has (the errors' query reads the requests'
# metric too, so it comes first).
QUERY_KINDS = (
    ("p95_ms", "histogram_quantile(0.95, "),
    ("errors", 'http_response_code=~"5.."'),
    ("requests", "bentoml_service_request_total{"),
)


def pin_production_digest(project: Path, digest: str) -> None:
    """Write `digest` where cd.yml's production job takes the build job's `digest` output.

    The image steps stay skipped in every scenario (SKIP_IMAGE: no Docker engine and no container
    registry here, tests/act/README.md), so the build job pushes nothing and outputs no digest, and the
    rollout step refuses to run without one (`${DIGEST:?}`). This one line, committed in the world's
    own repository, stands in for that output; the rest of cd.yml is the baked file. A template whose
    production job no longer takes DIGEST from the build job fails here.
    """
    path = project / ".github/workflows/cd.yml"
    built = "\n      DIGEST: ${{ needs.build.outputs.digest }}"  # the job's env (staging's is a step's)
    text = path.read_text()
    assert text.count(built) == 1, f"{path}: the production job no longer takes DIGEST from the build job"
    path.write_text(text.replace(built, f"\n      DIGEST: {digest}"))
    assert yaml.safe_load(path.read_text())["jobs"]["production"]["env"]["DIGEST"] == digest


def kubectl_stand_in(project: Path) -> str:
    """The recording kubectl stand-in of the baked project's own tests (`STAND_IN` in
    tests/test_kubernetes.py), read from the bake so that the template holds one copy of it."""
    module = ast.parse((project / "tests" / "test_kubernetes.py").read_text())
    (script,) = [
        ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["STAND_IN"]
    ]
    return script


class Prometheus(LocalServer):
    """Stands in for the Prometheus that scrapes the slots' pods: answers the instant queries of the
    baked rollout/kubernetes.py (`slot_queries`) with what `slots` says each deployment's pods did,
    summed over the deployments whose pods the query's `pod=~` matches (p95: the slowest). A query
    of another shape gets Prometheus' error answer, so that a changed query fails loudly."""

    def __init__(self) -> None:
        self.slots: dict[str, dict[str, float]] = {}  # deployment -> requests, errors, p95_ms
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                form = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                query, at = form["query"][0], float(form["time"][0])
                try:
                    value = outer.value(query)
                except LookupError as unknown:
                    status, body = 400, {"status": "error", "errorType": "bad_data", "error": str(unknown)}
                else:
                    vector = [] if value is None else [{"metric": {}, "value": [at, str(value)]}]
                    data = {"resultType": "vector", "result": vector}
                    status, body = 200, {"status": "success", "data": data}
                self.answer(status, body)

        super().__init__(Handler)

    def value(self, query: str) -> float | None:
        """The query's value; None (no series) when it names no deployment of `slots`."""
        pods = re.search(r'pod=~"([^"]+)"', query)
        kind = next((kind for kind, part in QUERY_KINDS if part in query), None)
        if pods is None or kind is None:
            raise LookupError(f"the stand-in does not know this query: {query}")
        # A deployment's pods are named <deployment>-<its replica set's hash>-<suffix>.
        named = [name for name in self.slots if re.fullmatch(pods[1], f"{name}-5d9c7b8f6d-x2k4q")]
        values = [self.slots[name][kind] for name in named]
        if not values:
            return None
        return max(values) if kind == "p95_ms" else sum(values)


@dataclass
class Cluster:
    """The production cluster as scenario 10's jobs see it: the `kubectl` first on their PATH is the
    recording stand-in (every call in calls.jsonl; `kustomize` and `get` answered from answers.json),
    and their PROMETHEUS_URL is `prometheus`."""

    folder: Path  # bin/kubectl, calls.jsonl, answers.json
    route: dict  # the production overlay's HTTPRoute, as `kubectl kustomize` renders it
    prometheus: Prometheus

    def deployment(self, slot: str) -> str:
        return f"{self.route['metadata']['name']}-{slot}"

    def answer(self, subcommand: str, stdout: str) -> None:
        path = self.folder / "answers.json"
        answers = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**answers, subcommand: {"stdout": stdout}}))

    def calls(self) -> list[dict]:
        path = self.folder / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def applied_routes(calls: list[dict]) -> list[dict]:
    """The routes `kubectl apply -f -` received, in order."""
    return [json.loads(call["stdin"]) for call in calls if call["args"][:3] == ["apply", "-f", "-"]]


def weights(route: dict) -> dict[str, int]:
    """slot -> its weight on the route."""
    name = route["metadata"]["name"]
    (rule,) = route["spec"]["rules"]
    return {backend["name"].removeprefix(f"{name}-"): backend["weight"] for backend in rule["backendRefs"]}


def assert_slot_given_the_pushed_image(world: World, cluster: Cluster, calls: list[dict], slot: str) -> None:
    """One `kubectl patch` put cd.yml's image at PUSHED_DIGEST into `slot`'s deployment."""
    image = yaml.safe_load((world.path / ".github/workflows/cd.yml").read_text())["env"]["IMAGE"]
    (patch,) = [call["args"] for call in calls if call["args"][:2] == ["patch", "deployment"]]
    assert patch[2] == cluster.deployment(slot), patch
    (container,) = json.loads(patch[-1].removeprefix("--patch="))["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image}@{PUSHED_DIGEST}", container


@pytest.fixture(scope="module")
def cluster(s3_world, s3_first_push) -> Iterator[Cluster]:
    """The S3 world's production on the cluster: the kubectl stand-in first on the jobs' PATH, the
    Prometheus stand-in serving, and one commit: the pushed digest in cd.yml (pin_production_digest)
    and one-second rollout steps (rollout.step_seconds, 300 by default)."""
    world = s3_world
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: scenario 10 renders the production overlay with it (offline)"
    rendered = run([kubectl, "kustomize", "deploy/k8s/overlays/production"], world.path).stdout
    (route,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "HTTPRoute"]
    folder = world.act.state / "kubectl"
    (folder / "bin").mkdir(parents=True)
    stand_in = folder / "bin" / "kubectl"
    stand_in.write_text(f"#!{sys.executable}\n{kubectl_stand_in(world.path)}")
    stand_in.chmod(0o755)
    with Prometheus() as prometheus:
        cluster = Cluster(folder, route, prometheus)
        cluster.answer("kustomize", rendered)
        cluster.answer("get", json.dumps(route))  # as `kubectl apply -k` of the overlay left it: blue serves
        world.act.env |= {
            "PATH": f"{folder / 'bin'}{os.pathsep}{world.act.environment()['PATH']}",
            "KUBECTL_RECORD": str(folder / "calls.jsonl"),
            "KUBECTL_ANSWERS": str(folder / "answers.json"),
        }
        pin_production_digest(world.path, PUSHED_DIGEST)
        path = world.path / "params.yaml"
        params = yaml.safe_load(path.read_text())
        params["rollout"]["step_seconds"] = 1
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        commit_all(world.path, "Production on Kubernetes")
        yield cluster


def rolled_out(
    world: World, cluster: Cluster, scenario: str, c: float, message: str
) -> tuple[ActRun, dict, list]:
    """`pushed` with the cluster configured (KUBECONFIG, PROMETHEUS_URL): the run, the registry after
    it, and the kubectl calls it made."""
    before = len(cluster.calls())
    variables = {**ROLES, "PROMETHEUS_URL": cluster.prometheus.url}
    run_, registry = pushed(world, scenario, c, message, variables, {"KUBECONFIG": KUBECONFIG})
    return run_, registry, cluster.calls()[before:]


@pytest.fixture(scope="module")
def healthy_canary(s3_world, cluster) -> tuple[ActRun, dict, list]:
    """v2 (C 0.01) wins the gate against v1 (C 0.001), and both slots answer healthily."""
    cluster.prometheus.slots = {cluster.deployment(slot): HEALTHY for slot in ("blue", "green")}
    return rolled_out(s3_world, cluster, "kubernetes canary", BETTER, "Weaker regularisation")


@pytest.fixture(scope="module")
def breached_canary(s3_world, cluster, healthy_canary) -> tuple[ActRun, dict, list]:
    """v3 (C 1.0) wins the gate against v2; the live route is where v2's rollout left it (green serves
    everything), and blue, the slot v3 goes into, answers 10% errors."""
    cluster.answer("get", json.dumps(applied_routes(healthy_canary[2])[-1]))
    cluster.prometheus.slots[cluster.deployment("blue")] = FAILING
    return rolled_out(s3_world, cluster, "kubernetes breach", BEST, "No regularisation to speak of")


@pytest.mark.slow
@pytest.mark.xdist_group("act-s3")
def test_10_kubernetes_a_healthy_canary_walks_its_steps_then_promotes(s3_world, cluster, healthy_canary):
    """cd.yml's "Roll out on Kubernetes", through a real push. Real: the MLflow server and registry,
    training, the gate, the bento built and smoke-tested in staging, the rollout code. Stand-ins, as
    no cluster and no image can exist here: kubectl (the baked tests' recording one), Prometheus (a
    server in this test) and the image's digest (written into cd.yml: pin_production_digest)."""
    world, (run_, registry, calls) = s3_world, healthy_canary
    assert_deployed(world, run_, 2, promoted_by="Roll out on Kubernetes")
    # The rollout promoted: "Promote in the registry", which the first push ran, was skipped (act logs
    # no skipped step).
    assert world.done["s3 first push"].steps["production"]["Promote in the registry"] == "success"
    assert "Promote in the registry" not in run_.steps["production"], run_.steps["production"]
    assert (registry["aliases"]["champion"], registry["aliases"]["previous"]) == (2, 1), registry
    alias, before, after, why = entries(registry, "promote")[-1]
    assert (alias, before, after) == ("champion", 1, 2) and "canary rollout passed" in why, why
    # The overlay rendered, the live route read (blue serves), green given the pushed image and waited
    # for, then the route: all to the champion before the first step, then 5, 25, 50, 100% to green.
    subcommands = [call["args"][0] for call in calls]
    assert subcommands == ["kustomize", "get", "apply", "patch", "rollout", *["apply"] * 4], subcommands
    assert calls[0]["args"] == ["kustomize", "deploy/k8s/overlays/production"]
    assert_slot_given_the_pushed_image(world, cluster, calls, "green")
    assert [weights(route) for route in applied_routes(calls)] == [
        {"blue": 100 - percent, "green": percent} for percent in (0, 5, 25, 50, 100)
    ]
    summary = run_.summaries["production"]
    assert "### Rollout (canary) of v2 beside v1: passed" in summary, summary


@pytest.mark.slow
@pytest.mark.xdist_group("act-s3")
def test_10_kubernetes_a_breach_sends_traffic_back_and_promotes_nothing(s3_world, cluster, breached_canary):
    """At the first canary step, v3's slot breaches the error rate: all traffic goes back to v2's, the
    production job fails before any promotion, and the rollback job's guard (--if-champion) changes
    nothing. The same stand-ins as the healthy canary."""
    world, (run_, registry, calls) = s3_world, breached_canary
    assert run_.returncode != 0, run_.explain()
    expected = {"gate": "success", "build": "success", "staging": "success"}
    assert run_.jobs == {**expected, "production": "failure", "rollback": "success"}, run_.explain()
    assert (run_.outputs["gate"]["decision"], run_.outputs["gate"]["candidate_version"]) == ("promote", "3")
    steps = run_.steps["production"]
    assert steps["Roll out on Kubernetes"] == "failure" and "Promote in the registry" not in steps, steps
    # The live route named green the champion's slot: v3 went into blue, met 5% of traffic, then none.
    subcommands = [call["args"][0] for call in calls]
    assert subcommands == ["kustomize", "get", "apply", "patch", "rollout", "apply", "apply"], subcommands
    assert_slot_given_the_pushed_image(world, cluster, calls, "blue")
    assert [weights(route) for route in applied_routes(calls)] == [
        {"blue": 0, "green": 100},
        {"blue": 5, "green": 95},
        {"blue": 0, "green": 100},
    ]
    summary = run_.summaries["production"]
    assert "### Rollout (canary) of v3 beside v2: **ROLLED BACK**" in summary, summary
    assert "error rate 10.0% (40/400) above 1.0%" in summary, summary
    # The registry as v2's rollout left it: no promotion, and nothing for the rollback job to undo.
    assert (registry["aliases"]["champion"], registry["aliases"]["previous"]) == (2, 1), registry
    assert [entry[2] for entry in entries(registry, "promote")] == [1, 2]
    assert entries(registry, "rollback") == []
    assert run_.outputs["rollback"]["skipped"] == "true", run_.explain()
    assert "### Rollback: nothing to do" in run_.summaries["rollback"]


# Scenario 8: the feature store. The service of a feast bake fetches an entity's features from Feast's
# online store, which every act job would find empty in its fresh workspace (a SQLite file under
# feature_repo/data/ by default): the jobs that serve a model load it themselves, and so does the
# scheduled materialize.yml. Its own bake and registry (a feast stack is another venv); no pull request.


@pytest.fixture(scope="module")
def feast_world(tmp_path_factory, stack) -> Iterator[World]:
    root = tmp_path_factory.mktemp("act-feast")
    setup, lap = laps()
    baked = bake(root / "bake", **COMBINATIONS["FEAST"])
    venv = stack(baked)
    lap("stack")
    project, answers = baked.path, baked.answers
    run(["uv", "lock", "--quiet", "--python", str(venv / "bin" / "python")], project)
    slug = f"{answers['github_owner']}/{answers['project']}"
    init_repository(project, slug)
    env = {
        "ACT_STANDIN_PYTHONS": str(Path(find_python(answers["python_version"])).parent),
        "UV_CACHE_DIR": str(precompiled_uv_cache(venv, root)),
    }
    lap("uv lock, repository, bytecode in uv's cache")
    act = Act(find_act(), project, state=root / "state", cache=root / "act-cache", env=env)
    with registry_world(project, venv, root, act, None, slug, laps_of=(setup, lap)) as world:
        yield world


def model_version_tags(world: World, version: int) -> dict[str, str]:
    """The registered version's tags, from the MLflow server's REST API."""
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"name": world.package, "version": version})
    url = f"{world.tracking_uri}/api/2.0/mlflow/model-versions/get?{query}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        found = json.load(answer)["model_version"]
    return {tag["key"]: tag["value"] for tag in found.get("tags", [])}


@pytest.mark.slow
@pytest.mark.xdist_group("act-feast")
def test_8_feast_first_push_loads_the_online_store_before_serving_and_promotes_v1(feast_world):
    world = feast_world
    run, registry = pushed(world, "feast first push", None, "Initial commit from the template")
    assert_deployed(world, run, 1)
    for job in ("staging", "production"):
        assert run.steps[job]["Load the online store"] == "success", run.explain()
        # A fresh workspace: its online store was never loaded, so every view loads from the start.
        assert "materialized measurements: 1970-01-01T00:00:00+00:00 .. " in run.log(job), run.log(job)
    assert "Load the online store" not in run.steps["gate"]  # training reads the offline store
    assert registry["aliases"]["champion"] == 1, registry
    tags = model_version_tags(world, 1)
    assert tags.get("feast_feature_service") == "model_features", tags
    assert tags.get("feast_feature_views", "").startswith("measurements@"), tags


@pytest.mark.slow
@pytest.mark.xdist_group("act-feast")
def test_9_materialize_yml_loads_the_online_store_with_read_access_only(feast_world):
    """The schedule's workflow, dispatched: it needs no variable, no secret and no registry."""
    world = feast_world
    done = world.act.run(
        "workflow_dispatch", "materialize.yml", payload={"repository": repository(world.slug)}
    )
    world.done["materialize.yml"] = done
    assert_ok(done, {"materialize"})
    assert done.steps["materialize"]["Load the online store"] == "success", done.explain()
    assert "materialized measurements: 1970-01-01T00:00:00+00:00 .. " in done.log("materialize")
