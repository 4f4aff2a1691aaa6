"""Static checks of every workflow the template ships or bakes: security audit, lint, schema, pins.

The same tools a security review would run, all offline: zizmor (audits), actionlint with shellcheck
on PATH (expressions, job graph, and the shell inside `run:`), check-jsonschema against GitHub's
workflow, action and dependabot schemas. Then one rule across all files: every remote action is
pinned by a full commit SHA with a version comment, and the same action has the same pin everywhere,
in the template's own workflow and in every baked project.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import COMBINATIONS
from helpers import TEMPLATE

USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<target>\S+)(?P<comment>.*)$")
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"^\s*#\s*v\d+(\.\d+)*\s*$")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: `make test` installs it from tests/requirements.txt")
    return path


def check(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} in {cwd}:\n{done.stdout}\n{done.stderr}"


def github_files(root: Path) -> dict[str, list[Path]]:
    folder = root / ".github"
    return {
        "workflows": sorted(folder.glob("workflows/*.yml")),
        "actions": sorted(folder.glob("actions/*/action.yml")),
        "dependabot": sorted(folder.glob("dependabot.yml")),
    }


@pytest.fixture(scope="module", params=["TEMPLATE", *COMBINATIONS])
def repository(request, baked) -> Path:
    """The template repository itself, then each baked project."""
    return TEMPLATE if request.param == "TEMPLATE" else baked(request.param).path


def test_there_are_workflows_to_check(repository):
    files = github_files(repository)
    assert files["workflows"], f"no workflows in {repository}/.github"
    if repository != TEMPLATE:
        names = {path.name for path in files["workflows"]}
        assert {"ci.yml", "cd.yml", "rollback.yml", "monitor.yml"} <= names
        assert files["actions"] and files["dependabot"]


def test_zizmor_finds_nothing(repository):
    check([tool("zizmor"), "--offline", "--min-severity", "low", ".github"], repository)


def test_zizmor_finds_nothing_at_the_auditor_persona(repository):
    """Every finding, whatever its confidence (e.g. a secret outside an environment: issue 18)."""
    done = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", "auditor", "--format", "plain", ".github"],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "No findings to report" in done.stdout, done.stdout + done.stderr


def test_actionlint_with_shellcheck_finds_nothing(repository):
    """actionlint, and jactionlint (a fork with more rules, such as a job output nobody reads)."""
    tool("shellcheck")  # both check `run:` scripts only when shellcheck is on PATH
    files = [str(path) for path in github_files(repository)["workflows"]]
    check([tool("actionlint"), *files], repository)
    check([tool("jactionlint"), *files], repository)


def test_files_match_githubs_schemas(repository):
    schemas = {
        "workflows": "vendor.github-workflows",
        "actions": "vendor.github-actions",
        "dependabot": "vendor.dependabot",
    }
    for kind, files in github_files(repository).items():
        if files:
            command = [tool("check-jsonschema"), "--builtin-schema", schemas[kind]]
            check([*command, *map(str, files)], repository)


def test_every_job_is_hardened(repository):
    """Least privilege by default, bounded run time, and no credentials left in the checkout."""
    for path in github_files(repository)["workflows"]:
        workflow = yaml.safe_load(path.read_text())
        assert workflow.get("permissions") == {}, f"{path}: top-level `permissions: {{}}` missing"
        assert "pull_request_target" not in (workflow.get(True) or workflow.get("on") or {})
        for name, job in workflow["jobs"].items():
            if "uses" in job:  # a reusable workflow call inherits the callee's limits
                continue
            assert "timeout-minutes" in job, f"{path}: job {name} has no timeout-minutes"
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    with_ = step.get("with") or {}
                    assert with_.get("persist-credentials") is False, (
                        f"{path}: job {name} checks out without persist-credentials: false"
                    )


def all_pins(root: Path) -> list[tuple[Path, str, str, str]]:
    """(file, action, sha, version comment) for every remote `uses:` under root/.github."""
    pins = []
    for path in sorted((root / ".github").rglob("*.yml")):
        for line in path.read_text().splitlines():
            match = USES.match(line)
            if not match or match["target"].startswith(("./", "docker://")):
                continue
            pinned = PINNED.match(match["target"])
            assert pinned, f"{path}: `{match['target']}` is not pinned by a full commit SHA"
            assert VERSION_COMMENT.match(match["comment"]), (
                f"{path}: `{match['target']}` has no `# vX.Y.Z` comment"
            )
            pins.append((path, pinned["action"], pinned["sha"], match["comment"].strip()))
    return pins


def test_each_action_has_one_pin_everywhere(baked):
    """The template's own workflow and every baked project use the same SHA for the same action."""
    seen: dict[str, tuple[str, str, Path]] = {}
    for root in [TEMPLATE, *(baked(name).path for name in COMBINATIONS)]:
        for path, action, sha, comment in all_pins(root):
            first = seen.setdefault(action, (sha, comment, path))
            assert (sha, comment) == first[:2], (
                f"{action}: {path} pins {sha} {comment}, {first[2]} pins {first[0]} {first[1]}"
            )
    assert "actions/checkout" in seen


def run_scripts(path: Path) -> list[str]:
    """Every `run:` script of a workflow file, in order."""
    workflow = yaml.safe_load(path.read_text())
    return [
        str(step["run"])
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "run" in step
    ]


@pytest.mark.parametrize("name", COMBINATIONS)
def test_deploys_promote_the_version_their_gate_approved(baked, name):
    """A promotion names the gated version (challenger may have moved since: issue 18), pull request
    runs move no alias, and a manual rollback never queues behind a deploy."""
    workflows = baked(name).path / ".github" / "workflows"
    promotions = [
        script
        for script in run_scripts(workflows / "cd.yml")
        if re.search(r'"\$CLI" promote\b|--promote\b', script)
    ]
    assert len(promotions) == 2, promotions  # the registry's promote, and the cluster's rollout
    assert all('--version "$VERSION"' in script for script in promotions), promotions
    trains = [s for s in run_scripts(workflows / "ci.yml") if re.search(r'"\$CLI" train\b', s)]
    assert trains and all("--no-alias" in script for script in trains), trains
    groups = {
        file: yaml.safe_load((workflows / file).read_text())["concurrency"]["group"]
        for file in ("cd.yml", "rollback.yml")
    }
    assert groups["cd.yml"] != groups["rollback.yml"], groups


@pytest.mark.parametrize("name", COMBINATIONS)
def test_jobs_that_ship_refuse_to_resolve_dependencies_afresh(baked, name, tmp_path):
    """cd.yml's build, staging and production install only a committed uv.lock: the setup action's
    install script, run here without a lock, fails and says why instead of resolving afresh."""
    project = baked(name).path
    jobs = yaml.safe_load((project / ".github" / "workflows" / "cd.yml").read_text())["jobs"]
    for job in ("build", "staging", "production"):
        setups = [s for s in jobs[job]["steps"] if s.get("uses") == "./.github/actions/setup"]
        assert [(s.get("with") or {}).get("require-lock") for s in setups] == ["true"], job
    action = yaml.safe_load((project / ".github" / "actions" / "setup" / "action.yml").read_text())
    install = next(s for s in action["runs"]["steps"] if s.get("name") == "Install the project into .venv")
    done = subprocess.run(
        ["bash", "-e", "-c", install["run"]],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "REQUIRE_LOCK": "true", "PYTHON_VERSION": "3.12"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "::error title=No uv.lock::" in done.stdout, done


def cd_jobs(project: Path) -> dict:
    return yaml.safe_load((project / ".github" / "workflows" / "cd.yml").read_text())["jobs"]


def step_named(job: dict, name: str) -> tuple[int, dict]:
    """(index, step) of the job's step called `name`."""
    names = [step.get("name") for step in job["steps"]]
    assert name in names, names
    return names.index(name), job["steps"][names.index(name)]


@pytest.mark.parametrize("name", COMBINATIONS)
def test_production_ships_the_digest_staging_tested_after_verifying_its_provenance(baked, name):
    """Issue 18, finding 9: staging runs `$IMAGE@$DIGEST` from the build job; production verifies that
    digest's attestation (signed by this repository's cd.yml) before the rollout, the promotion and the
    tags, then rolls out and tags that digest, never the mutable `model-vN` tag."""
    jobs = cd_jobs(baked(name).path)
    assert jobs["build"]["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    _, run_image = step_named(jobs["staging"], "Run the image")
    assert run_image["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    assert '"$IMAGE@$DIGEST"' in run_image["run"]
    production = jobs["production"]
    assert production["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    assert production["permissions"]["attestations"] == "read"
    login, _ = step_named(production, "Log in to GHCR")
    verify, verification = step_named(production, "Verify the image's provenance")
    rollout, rolling = step_named(production, "Roll out on Kubernetes")
    promote, _ = step_named(production, "Promote in the registry")
    retag, tagging = step_named(production, "Tag the image for production")
    assert login < verify < min(rollout, promote, retag)
    assert verification["if"] == tagging["if"] == "vars.SKIP_IMAGE != 'true'"
    assert re.search(
        r'gh attestation verify "oci://\$IMAGE@\$DIGEST" --repo "\$GITHUB_REPOSITORY"\s+'
        r'--signer-workflow "\$GITHUB_REPOSITORY/\.github/workflows/cd\.yml"',
        verification["run"],
    ), verification["run"]
    assert '--image "$IMAGE@${DIGEST:?' in rolling["run"], rolling["run"]
    assert tagging["with"]["digest"] == "${{ env.DIGEST }}"
    scripts = " ".join(str(step.get("run", "")) for step in production["steps"])
    assert "$IMAGE:$IMAGE_TAG" not in scripts and "$IMAGE:" not in scripts, scripts


# Where a model starts serving, and the steps of each job that serve it (its smoke test included).
SERVED_AFTER = {
    ("cd.yml", "staging"): (
        "Run the image",
        "Smoke and load test the image",
        "Smoke and load test the bento",
    ),
    ("cd.yml", "production"): ("Roll out on Kubernetes", "Promote in the registry", "Smoke test production"),
    ("rollback.yml", "rollback"): ("Build and smoke-test the new champion",),
}
LOAD_ONLINE_STORE = "Load the online store"


@pytest.mark.parametrize("name", COMBINATIONS)
def test_the_online_store_is_loaded_before_a_model_is_served(baked, name):
    """With Feast, the service fetches an entity's features from the online store: every job that
    serves a model runs `materialize` first, a change of feature_repo/ deploys, and materialize.yml
    loads it on a schedule with nothing but read access. Without a feature store, none of it."""
    project = baked(name)
    workflows = project.path / ".github" / "workflows"
    feast = project.answers["feature_store"] == "feast"
    assert (workflows / "materialize.yml").exists() is feast
    cd = yaml.safe_load((workflows / "cd.yml").read_text())
    assert ("feature_repo/**" in (cd.get(True) or cd["on"])["push"]["paths"]) is feast
    for (workflow, job_name), served in SERVED_AFTER.items():
        job = yaml.safe_load((workflows / workflow).read_text())["jobs"][job_name]
        loads = [i for i, step in enumerate(job["steps"]) if step.get("name") == LOAD_ONLINE_STORE]
        if not feast:
            assert loads == [] and "materialize" not in yaml.safe_dump(job), (workflow, job_name)
            continue
        assert len(loads) == 1, (workflow, job_name)
        assert job["steps"][loads[0]]["run"] == '"$CLI" materialize'
        assert loads[0] < min(step_named(job, step)[0] for step in served), (workflow, job_name)
    # The image in staging reads the repository the job loaded, not the build's path.
    run_image = step_named(cd["jobs"]["staging"], "Run the image")[1]["run"]
    mounted = '--volume "$PWD/feature_repo:/etc/feast:ro" --env FEATURE_REPO=/etc/feast'
    assert (mounted in " ".join(run_image.split())) is feast
    if feast:
        schedule = yaml.safe_load((workflows / "materialize.yml").read_text())
        assert {"schedule", "workflow_dispatch"} <= set(schedule.get(True) or schedule["on"])
        (job,) = schedule["jobs"].values()
        assert job["permissions"] == {"contents": "read"}
        assert [step["run"] for step in job["steps"] if "run" in step] == ['"$CLI" materialize']


def fake_docker(folder: Path) -> Path:
    """A `docker` that records its arguments: no container registry can be reached here."""
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$DOCKER_CALLS"\n')
    docker.chmod(0o755)
    return folder


@pytest.mark.parametrize("name", ["DEFAULT"])
def test_retag_points_the_model_tag_and_production_at_the_tested_digest(baked, name, tmp_path):
    """The retag action's script, run with a recording `docker` (a stand-in: no registry here): after
    a promotion both `model-vN` and `production` name the digest; after a rollback (no digest)
    `production` follows the model's tag, which its own promotion pinned."""
    action = yaml.safe_load((baked(name).path / ".github/actions/retag/action.yml").read_text())
    script = next(s for s in action["runs"]["steps"] if s.get("name") == "Tag the image for production")
    bin_dir, calls = fake_docker(tmp_path / "bin"), tmp_path / "calls"
    image, digest = "ghcr.io/owner/project", "sha256:" + "a" * 64
    for given in (digest, ""):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_CALLS": str(calls), "IMAGE": image}
        done = subprocess.run(
            ["bash", "-e", "-c", script["run"]],
            env={**env, "TAG": "model-v3", "DIGEST": given},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done
    assert calls.read_text().splitlines() == [
        f"buildx imagetools create --tag {image}:model-v3 --tag {image}:production {image}@{digest}",
        f"buildx imagetools create --tag {image}:production {image}:model-v3",
    ]


# Where each credential may be read (docs/setup.md, section 3; docs/security.md)
READ_ONLY, MAIN_ONLY = {"pull-request"}, {"registry", "staging", "production"}
ONLY_IN = {"KUBECONFIG": {"production"}, "SERVICE_API_TOKEN": {"production"}}
SECRET = re.compile(r"secrets\.(\w+)")


def jobs_of(project: Path) -> Iterator[tuple[str, str, dict]]:
    for path in sorted((project / ".github" / "workflows").glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            yield path.name, name, job


@pytest.mark.parametrize("name", COMBINATIONS)
def test_credentials_are_read_only_in_protected_environments(baked, name):
    """Every secret but the job's own GITHUB_TOKEN is read in an environment, never at repository
    level; pull requests get only the read-only `pull-request` environment, and the cluster's and the
    service's credentials exist only in production."""
    for workflow, job_name, job in jobs_of(baked(name).path):
        used = set(SECRET.findall(yaml.safe_dump(job))) - {"GITHUB_TOKEN"}
        environment = job.get("environment")
        where = f"{workflow} job {job_name}"
        if workflow == "ci.yml":
            assert environment in (None, *READ_ONLY), f"{where}: a pull request in {environment}"
        elif used:
            assert environment in MAIN_ONLY, f"{where} reads {sorted(used)} in {environment}"
        assert not used or environment, f"{where} reads {sorted(used)} outside any environment"
        for secret in used & set(ONLY_IN):
            assert environment in ONLY_IN[secret], f"{where} reads {secret} in {environment}"


@pytest.mark.parametrize("name", COMBINATIONS)
def test_a_pull_request_writes_only_to_its_own_store(baked, name):
    """ci.yml hands the registry's URL to `check-config` and `import-champion` only; every other step
    uses the job's local store. With S3, the pull request's role is the read-only one."""
    project = baked(name).path
    ci = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = ci["jobs"]["model"]["steps"]
    for step in steps:
        env = step.get("env") or {}
        reads_registry = {"vars.MLFLOW_TRACKING_URI", "steps.config.outputs.registry_uri"}
        if any(expression in str(env) for expression in reads_registry):
            allowed = r'"\$CLI" (check-config --for ci|import-champion --from \S+)'
            assert re.fullmatch(allowed, step["run"]), step
        if "MLFLOW_TRACKING_URI" in env and step.get("id") != "config":
            assert env["MLFLOW_TRACKING_URI"] == "${{ steps.config.outputs.tracking_uri }}", step
        if "MLFLOW_TRACKING_TOKEN" in env:
            assert "import-champion" in step["run"], step
    roles = [s["with"]["role-to-assume"] for s in steps if "configure-aws-credentials" in s.get("uses", "")]
    assert roles == (["${{ vars.AWS_READ_ROLE_ARN }}"] if baked(name).answers.get("s3_bucket") else [])
