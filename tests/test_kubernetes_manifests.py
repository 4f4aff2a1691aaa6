"""The baked Kubernetes manifests render with `kubectl kustomize` and validate offline.

Every object of both overlays is checked against the Kubernetes schemas that the kubernetes-validate
package carries (strict: unknown fields fail), and the HTTPRoute against the Gateway API's JSON schema
(tests/schemas/gateway-api). The routes the rollout applies at each step come from the baked project's
own `kubernetes.render_route`, and are validated and their weights asserted the same way. kubectl must
be on PATH (it renders kustomize offline; no cluster is involved): without it these tests fail.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
HTTPROUTE_SCHEMA = json.loads((SCHEMAS / "gateway-api/httproute_v1.json").read_text())
# The oldest Kubernetes release the manifests are meant for, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
OVERLAYS = ("staging", "production")
FEATURE_REPO = "/etc/feast"  # where a feast bake's slots mount feature_store.yaml
SLOT_KINDS = ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: these tests render the manifests with `kubectl kustomize`"
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(baked) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(combination, overlay) -> the objects `kubectl kustomize` renders for that overlay."""
    return {
        (name, overlay): kustomize(baked(name).path / "deploy/k8s/overlays" / overlay)
        for name in ("DEFAULT", "CUSTOM_NAMES", "FEAST")
        for overlay in OVERLAYS
    }


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in objects if doc["kind"] == kind]


def validate_route(route: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(HTTPROUTE_SCHEMA).validate(route)


def test_every_object_of_both_overlays_is_valid(rendered):
    for objects in rendered.values():
        kinds = sorted(doc["kind"] for doc in objects)
        assert kinds == sorted([*SLOT_KINDS, *SLOT_KINDS, "HTTPRoute"])
        for doc in objects:
            if doc["kind"] == "HTTPRoute":
                validate_route(doc)
                continue
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_an_invalid_object_is_caught(rendered):
    """The validators are not vacuous: a misspelt field and a negative weight fail."""
    objects = rendered["DEFAULT", "production"]
    deployment = json.loads(json.dumps(by_kind(objects, "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    route = json.loads(json.dumps(by_kind(objects, "HTTPRoute")[0]))
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -5
    with pytest.raises(jsonschema.ValidationError):
        validate_route(route)


def test_the_slots_are_locked_down_and_probed_on_bentomls_health_endpoints(rendered):
    for objects in rendered.values():
        for deployment in by_kind(objects, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            [container] = pod["containers"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 1034  # BentoML's `bentoml` user
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
            assert container["ports"] == [
                {"name": "http", "containerPort": 3000},
                {"name": "grpc", "containerPort": 3001},
            ]
            assert container["startupProbe"]["grpc"] == {"port": 3001}  # gRPC health: SERVING
            assert set(container["resources"]) == {"requests", "limits"}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert set(mounts) - {FEATURE_REPO} == {"/tmp", "/run/secrets/api"}
            assert mounts["/run/secrets/api"]["readOnly"] is True
            assert {"name": "BENTOML_HOME", "value": "/tmp/bentoml"} in container["env"]
            # API tokens from a Secret the service reads as a file; never a literal in the manifest.
            tokens = {"name": "SERVICE_API_TOKENS_FILE", "value": "/run/secrets/api/tokens"}
            assert tokens in container["env"]
            assert not any(e["name"] == "SERVICE_API_TOKENS" for e in container["env"])
            volumes = {v["name"]: v for v in pod["volumes"]}
            secret = volumes[mounts["/run/secrets/api"]["name"]]["secret"]
            assert secret["secretName"].endswith("-api-tokens")
            assert "replicas" not in deployment["spec"]  # the autoscaler's


def test_a_feast_bakes_slots_read_the_feature_store_config_they_mount(rendered):
    """The feast bake's pods open Feast where the ConfigMap is mounted ($FEATURE_REPO, read-only),
    its ${VARIABLES} from an optional Secret; the other bakes mount nothing of Feast's."""
    for (name, _), objects in rendered.items():
        for deployment in by_kind(objects, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            [container] = pod["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            if name != "FEAST":
                assert "FEATURE_REPO" not in env and FEATURE_REPO not in mounts
                assert "envFrom" not in container
                continue
            assert env["FEATURE_REPO"] == FEATURE_REPO
            assert mounts[FEATURE_REPO]["readOnly"] is True
            volumes = {v["name"]: v for v in pod["volumes"]}
            config = volumes[mounts[FEATURE_REPO]["name"]]["configMap"]["name"]
            assert config == "ml-service-feature-store"
            [secret] = container["envFrom"]
            assert secret["secretRef"] == {"name": config, "optional": True}


@pytest.mark.parametrize("name", ["DEFAULT", "CUSTOM_NAMES"])
def test_the_tracking_server_is_valid_and_reachable_only_through_the_token_check(baked, name):
    """deploy/mlflow: PostgreSQL from the Secret, S3 artifacts, no job runner, MLflow on loopback, and
    every port the cluster reaches is nginx's (the token check itself runs in the baked project's
    tests/test_registry_server.py)."""
    project = baked(name).path
    objects = kustomize(project / "deploy/mlflow")
    assert sorted(doc["kind"] for doc in objects) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    for doc in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    [deployment] = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    mlflow, auth = containers["mlflow"], containers["auth"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in mlflow["env"]}
    secret = {"secretKeyRef": {"name": "mlflow-server", "key": "backend-store-uri"}}
    assert env["MLFLOW_BACKEND_STORE_URI"] == secret
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_HOST"] == "127.0.0.1" and int(env["MLFLOW_WORKERS"]) >= 2
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    [port] = auth["ports"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert mlflow[probe]["httpGet"] == {"path": "/health", "port": port["containerPort"]}
    [service] = by_kind(objects, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    [config] = by_kind(objects, "ConfigMap")
    template = config["data"]["mlflow.conf.template"]
    assert '"Bearer ${MLFLOW_TRACKING_TOKEN}" write;' in template
    assert '"Bearer ${MLFLOW_READ_TOKEN}" read;' in template
    tokens = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in auth["env"] if "valueFrom" in e}
    assert {name: ref.get("optional", False) for name, ref in tokens.items()} == {
        "MLFLOW_TRACKING_TOKEN": False,  # an empty token would match an empty Authorization header
        "MLFLOW_READ_TOKEN": False,
    }
    assert f"listen {port['containerPort']};" in template
    assert f"proxy_pass http://127.0.0.1:{env['MLFLOW_PORT']};" in template
    for container in containers.values():
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsUser"] != 0
    # The image built from deploy/mlflow/Dockerfile carries the version of the official image it extends.
    dockerfile = (project / "deploy/mlflow/Dockerfile").read_text()
    base = dockerfile.split("FROM ghcr.io/mlflow/mlflow:v")[1].split()[0]
    assert mlflow["image"].endswith(f"-mlflow:{base}")


def test_each_slot_is_one_deployment_with_its_own_service_autoscaler_and_budget(rendered, baked):
    project = baked("CUSTOM_NAMES").path.name
    objects = rendered["CUSTOM_NAMES", "production"]
    for slot in ("blue", "green"):
        name = f"{project}-{slot}"
        selected = {"app.kubernetes.io/name": project, "slot": slot}
        [deployment] = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == name]
        [service] = [d for d in by_kind(objects, "Service") if d["metadata"]["name"] == name]
        [scaler] = [d for d in by_kind(objects, "HorizontalPodAutoscaler") if d["metadata"]["name"] == name]
        [budget] = [d for d in by_kind(objects, "PodDisruptionBudget") if d["metadata"]["name"] == name]
        assert deployment["spec"]["selector"]["matchLabels"] == selected
        assert deployment["spec"]["template"]["metadata"]["labels"].items() >= selected.items()
        assert service["spec"]["selector"] == selected
        assert budget["spec"]["selector"]["matchLabels"] == selected
        assert scaler["spec"]["scaleTargetRef"]["name"] == name
    [route] = by_kind(objects, "HTTPRoute")
    services = {service["metadata"]["name"] for service in by_kind(objects, "Service")}
    assert {ref["name"] for ref in route["spec"]["rules"][0]["backendRefs"]} == services


def test_the_overlays_set_namespace_bounds_hosts_and_image(rendered, baked):
    project = baked("DEFAULT").path.name
    seen = {}
    for overlay in OVERLAYS:
        objects = rendered["DEFAULT", overlay]
        assert {doc["metadata"]["namespace"] for doc in objects} == {f"{project}-{overlay}"}
        [route] = by_kind(objects, "HTTPRoute")
        scalers = [scaler["spec"] for scaler in by_kind(objects, "HorizontalPodAutoscaler")]
        bounds = {(spec["minReplicas"], spec["maxReplicas"]) for spec in scalers}
        pods = [deployment["spec"]["template"]["spec"] for deployment in by_kind(objects, "Deployment")]
        images = {pod["containers"][0]["image"] for pod in pods}
        assert images == {f"ghcr.io/your-github-user/{project}:production"}
        seen[overlay] = (bounds, route["spec"]["hostnames"], route["spec"]["parentRefs"])
    assert seen["staging"][0] == {(1, 3)} and seen["production"][0] == {(3, 12)}
    assert seen["staging"][1] != seen["production"][1] and seen["staging"][2] != seen["production"][2]


def test_the_route_starts_with_all_traffic_on_blue(rendered, baked):
    project = baked("DEFAULT").path.name
    [route] = by_kind(rendered["DEFAULT", "production"], "HTTPRoute")
    [rule] = route["spec"]["rules"]
    assert {ref["name"]: ref["weight"] for ref in rule["backendRefs"]} == {
        f"{project}-blue": 100,
        f"{project}-green": 0,
    }


@pytest.fixture(scope="module")
def baked_kubernetes(baked) -> Iterator[ModuleType]:
    """The baked project's kubernetes module, imported from its source tree (pure functions only)."""
    source = str(baked("DEFAULT").path / "src")
    sys.path.insert(0, source)
    try:
        yield importlib.import_module("ml_service.rollout.kubernetes")
    finally:
        sys.path.remove(source)
        for module in [name for name in sys.modules if name.partition(".")[0] == "ml_service"]:
            del sys.modules[module]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("champion", ["blue", "green"])
def test_the_route_of_every_rollout_step_is_valid_with_the_planned_weights(
    rendered, baked_kubernetes, overlay, champion
):
    kubernetes = baked_kubernetes
    rollout = importlib.import_module("ml_service.rollout")
    params = importlib.import_module("ml_service.params")
    [skeleton] = by_kind(rendered["DEFAULT", overlay], "HTTPRoute")
    champion_name = f"ml-service-{champion}"
    candidate_name = f"ml-service-{kubernetes.other_slot(champion)}"

    def render(traffic) -> tuple[dict[str, int], list[str]]:
        route = kubernetes.render_route(skeleton, traffic, champion)
        validate_route(route)
        assert route["spec"]["parentRefs"] == skeleton["spec"]["parentRefs"]
        [rule] = route["spec"]["rules"]
        mirrors = [f["requestMirror"]["backendRef"]["name"] for f in rule.get("filters", [])]
        return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}, mirrors

    canary = rollout.plan(params.RolloutParams(strategy="canary"))
    steps = [render(step.traffic) for step in canary]
    assert [weights[candidate_name] for weights, _ in steps] == [5, 25, 50, 100]
    assert [weights[champion_name] for weights, _ in steps] == [95, 75, 50, 0]
    assert all(mirrors == [] for _, mirrors in steps)

    [shadow] = rollout.plan(params.RolloutParams(strategy="shadow"))
    assert render(shadow.traffic) == ({champion_name: 100, candidate_name: 0}, [candidate_name])

    [switch] = rollout.plan(params.RolloutParams(strategy="blue-green"))
    assert render(switch.traffic) == ({champion_name: 0, candidate_name: 100}, [])
    assert render(rollout.CHAMPION_ONLY) == ({champion_name: 100, candidate_name: 0}, [])
