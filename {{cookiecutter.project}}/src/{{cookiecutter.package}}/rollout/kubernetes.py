"""The Kubernetes traffic target: two slots of the service behind one Gateway API HTTPRoute.

deploy/k8s holds the manifests: Deployments `<name>-blue` and `<name>-green`, each with its own
Service, and the HTTPRoute `<name>` in front of both. The champion runs in one slot; `prepare` puts the
candidate's image into the other, then `route` rewrites the route's rules at every step of the
rollout: weighted backendRefs for a canary, all weight on the champion plus a RequestMirror filter for
shadow, weight 100 moved from one slot to the other for blue-green. `measure` reads what each slot did
from Prometheus, which scrapes BentoML's /metrics in every pod and must label each series with its
`namespace` and `pod` (the Prometheus Operator's PodMonitor does; so does the usual kubernetes_sd
relabelling). Every change goes through `kubectl`, to whatever cluster its kubeconfig names.
`roll_out` is `rollout --target kubernetes`: prepare the candidate's slot, then walk the plan.

Shadow is judged on the candidate's errors and latency only: the gateway drops mirrored answers, so
there are no predictions to compare (the local target, nginx.py, compares them).
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..errors import KubernetesError
from ..params import RolloutParams
from . import CHAMPION_ONLY, Measurement, StepResult, Traffic, UpstreamStats, report, run

SLOTS = ("blue", "green")
PORT = 3000  # the Services' and BentoML's port
CONTAINER = "model-service"  # the container's name in deploy/k8s/base/slot/deployment.yaml
ROLLOUT_TIMEOUT_SECONDS = 600  # the candidate slot's pods must all be ready within this
# BentoML 1.4's metrics. They count the probes and /metadata too: only the model's endpoints are read.
REQUESTS_METRIC = "bentoml_service_request_total"
LATENCY_BUCKETS_METRIC = "bentoml_service_request_duration_seconds_bucket"
MODEL_ENDPOINTS = "/predict|/predict_batch|/predict_columns|/predict_arrow"
# Ours (serving/metrics.py): answers of the fallback model, which the canary's checks count as errors.
FALLBACK_METRIC = "model_fallback_answers_total"


def other_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise KubernetesError(f"unknown slot {slot!r}: choose one of {', '.join(SLOTS)}")
    return SLOTS[1 - SLOTS.index(slot)]


def _backend(name: str, weight: int | None = None) -> dict[str, Any]:
    backend: dict[str, Any] = {"name": name, "port": PORT}
    if weight is not None:
        backend["weight"] = weight
    return backend


def render_route(skeleton: dict[str, Any], traffic: Traffic, champion_slot: str) -> dict[str, Any]:
    """The HTTPRoute `skeleton` (from the overlay: names, parentRefs, hostnames) sending `traffic`.

    Both slots are always listed, with weight 0 for the one that gets nothing, so every state of the
    route reads the same way in `kubectl get httproute -o yaml`.
    """
    name = skeleton["metadata"]["name"]
    champion, candidate = f"{name}-{champion_slot}", f"{name}-{other_slot(champion_slot)}"
    percent = 0 if traffic.mirror else traffic.candidate_percent
    if not 0 <= percent <= 100:
        raise KubernetesError(f"candidate share {percent}% is not in 0..100")
    rule: dict[str, Any] = {
        "backendRefs": [_backend(champion, 100 - percent), _backend(candidate, percent)]
    }
    if traffic.mirror:
        rule["filters"] = [
            {"type": "RequestMirror", "requestMirror": {"backendRef": _backend(candidate)}}
        ]
    route = copy.deepcopy(skeleton)
    route["spec"]["rules"] = [rule]
    return route


def champion_slot_of(route: dict[str, Any]) -> str:
    """The slot that gets all client traffic on a live route; a route that splits traffic means a
    rollout did not finish, and a new one must not guess which side is the champion."""
    name = route["metadata"]["name"]
    weights = {slot: 0 for slot in SLOTS}
    for rule in route["spec"].get("rules", []):
        for backend in rule.get("backendRefs", []):
            slot = backend["name"].removeprefix(f"{name}-")
            if slot not in weights:
                raise KubernetesError(f"HTTPRoute {name} routes to {backend['name']}, not a slot")
            weights[slot] += backend.get("weight", 1)  # the Gateway API's default weight is 1
    serving = [slot for slot, weight in weights.items() if weight > 0]
    if len(serving) != 1:
        split = ", ".join(f"{slot} {weight}" for slot, weight in weights.items())
        raise KubernetesError(
            f"HTTPRoute {name} does not send all traffic to one slot ({split}); name the "
            "champion's slot explicitly to send everything back to it"
        )
    return serving[0]


def image_patch(image: str) -> dict[str, Any]:
    """The strategic merge patch that sets a slot's image (containers merge by name)."""
    return {"spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "image": image}]}}}}


def kubectl(*args: str, stdin: str | None = None) -> str:
    """Run kubectl and return its output; a failure names the command and kubectl's own message."""
    command = ["kubectl", *args]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KubernetesError("kubectl is not on PATH: install it, configure the cluster") from None
    if done.returncode != 0:
        raise KubernetesError(
            f"`{shlex.join(command)}` failed with exit code {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def overlay_route(overlay: Path | str) -> dict[str, Any]:
    """The HTTPRoute of a kustomize overlay (deploy/k8s/overlays/<environment>), rendered."""
    documents = yaml.safe_load_all(kubectl("kustomize", str(overlay)))
    routes = [doc for doc in documents if doc and doc.get("kind") == "HTTPRoute"]
    if len(routes) != 1:
        raise KubernetesError(f"{overlay}: expected one HTTPRoute, found {len(routes)}")
    return routes[0]


def _series(metric: str, *matchers: str) -> str:
    """`metric{matcher, ...}` in PromQL."""
    return metric + "{" + ", ".join(matchers) + "}"


def slot_queries(namespace: str, deployments: list[str], seconds: int) -> dict[str, str]:
    """PromQL for what the pods of `deployments` answered on the model's endpoints in the last
    `seconds`: requests, errors, and the 95th percentile latency in milliseconds. Errors are 5xx
    answers and answers of the fallback model (the image's model raised): a canary is judged on
    its own answers."""
    pods = "|".join(f"{deployment}-[a-z0-9]+-[a-z0-9]+" for deployment in deployments)
    selector = [f'namespace="{namespace}"', f'pod=~"{pods}"', f'endpoint=~"{MODEL_ENDPOINTS}"']
    window = f"[{max(seconds, 1)}s]"
    requests = _series(REQUESTS_METRIC, *selector)
    errors = _series(REQUESTS_METRIC, *selector, 'http_response_code=~"5.."')
    fallbacks = _series(FALLBACK_METRIC, *selector)
    buckets = _series(LATENCY_BUCKETS_METRIC, *selector)
    return {
        "requests": f"sum(increase({requests}{window}))",
        "errors": f"(sum(increase({errors}{window})) or vector(0))"
        f" + (sum(increase({fallbacks}{window})) or vector(0))",
        "p95_ms": f"1000 * histogram_quantile(0.95, sum by (le) (rate({buckets}{window})))",
    }


def prometheus_value(url: str, query: str, at: float) -> float | None:
    """The single value of an instant query; None when there is no data (no series, or NaN)."""
    try:
        answer = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query, "time": at})
        body = answer.json()
    except (httpx.HTTPError, ValueError) as error:
        raise KubernetesError(f"Prometheus at {url} failed on `{query}`: {error}") from error
    if answer.status_code != 200 or body.get("status") != "success":
        raise KubernetesError(
            f"Prometheus at {url} refused `{query}` (HTTP {answer.status_code}): "
            f"{body.get('error', answer.text)}"
        )
    result = body["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


class KubernetesTarget:
    """A `rollout.TrafficTarget` on a cluster: the route of one overlay, the champion in one slot."""

    def __init__(
        self,
        route: dict[str, Any],
        champion_slot: str,
        prometheus_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.skeleton = route
        self.champion_slot = champion_slot
        self.candidate_slot = other_slot(champion_slot)
        self.prometheus_url = prometheus_url
        self.clock = clock
        self.name = route["metadata"]["name"]
        self.namespace = route["metadata"].get("namespace", "default")
        self.traffic = CHAMPION_ONLY
        self.routed_at = clock()

    @classmethod
    def from_overlay(
        cls, overlay: Path | str, prometheus_url: str | None, champion_slot: str | None = None
    ) -> KubernetesTarget:
        """The target for an overlay; without `champion_slot`, the slot the live route serves from."""
        if not prometheus_url:
            raise KubernetesError(
                "PROMETHEUS_URL is not set: the rollout reads each step's requests, "
                "errors and latency from the Prometheus that scrapes the service's pods"
            )
        route = overlay_route(overlay)
        if champion_slot is None:
            name, namespace = route["metadata"]["name"], route["metadata"]["namespace"]
            live = json.loads(kubectl("get", "httproute", name, "-n", namespace, "-o", "json"))
            champion_slot = champion_slot_of(live)
        return cls(route, champion_slot, prometheus_url)

    def deployment(self, slot: str) -> str:
        return f"{self.name}-{slot}"

    def prepare(self, image: str) -> None:
        """Run `image` in the candidate slot and wait until all its pods are ready. The route first
        goes to the champion alone, so no client meets the candidate before the first step."""
        self.route(CHAMPION_ONLY)
        deployment = self.deployment(self.candidate_slot)
        kubectl(
            "patch",
            "deployment",
            deployment,
            "-n",
            self.namespace,
            "--type=strategic",
            f"--patch={json.dumps(image_patch(image))}",
        )
        kubectl(
            "rollout",
            "status",
            f"deployment/{deployment}",
            "-n",
            self.namespace,
            f"--timeout={ROLLOUT_TIMEOUT_SECONDS}s",
        )

    def route(self, traffic: Traffic) -> None:
        rendered = render_route(self.skeleton, traffic, self.champion_slot)
        kubectl("apply", "-f", "-", stdin=json.dumps(rendered))
        self.traffic = traffic
        self.routed_at = self.clock()

    def _stats(self, deployments: list[str], seconds: int, at: float) -> UpstreamStats:
        queries = slot_queries(self.namespace, deployments, seconds)
        values = {
            key: prometheus_value(self.prometheus_url, query, at) for key, query in queries.items()
        }
        return UpstreamStats(
            requests=round(values["requests"] or 0),
            errors=round(values["errors"] or 0),
            p95_ms=values["p95_ms"],
        )

    def measure(self) -> Measurement:
        """Each slot's requests, 5xx answers and p95 latency since the last `route`, from the
        service's own metrics (requests the gateway could not deliver at all are not counted)."""
        at = self.clock()
        seconds = math.ceil(at - self.routed_at)
        champion = self._stats([self.deployment(self.champion_slot)], seconds, at)
        candidate = self._stats([self.deployment(self.candidate_slot)], seconds, at)
        if self.traffic.mirror or self.traffic.candidate_percent == 0:
            clients = champion
        elif self.traffic.candidate_percent == 100:
            clients = candidate
        else:
            clients = self._stats([self.deployment(slot) for slot in SLOTS], seconds, at)
        return Measurement(champion=champion, candidate=candidate, clients=clients)


def roll_out(
    params: RolloutParams,
    champion: int,
    candidate: int,
    *,
    overlay: Path | str,
    image: str,
    prometheus_url: str | None,
    champion_slot: str | None = None,
    on_step: Callable[[StepResult], None] = lambda result: None,
) -> dict[str, Any]:
    """Roll `candidate`'s `image` out in the free slot of `overlay`; the rollout report."""
    target = KubernetesTarget.from_overlay(overlay, prometheus_url, champion_slot)
    target.prepare(image)
    outcome = run(params, target, on_step=on_step)
    return report(outcome, champion, candidate)
