"""Progressive delivery of a candidate beside the champion: shadow, canary and blue-green.

A rollout is a list of steps. Each step sends traffic somewhere (`Traffic`), waits, measures what the
candidate did (`Measurement`, from the proxy's own records, never from the candidate's word), and judges
it against the checks in params.yaml (`rollout.checks`). Any breach sends all traffic back to the
champion at once and ends the rollout; the registry is only touched by the caller, after a rollout that
passed. Where traffic goes is a `TrafficTarget`: nginx on this machine (`rollout/nginx.py`, started
with both servers by `rollout/local.py`), or a Gateway API HTTPRoute on Kubernetes
(`rollout/kubernetes.py`); this module knows neither.

- shadow: every request is also copied to the candidate; clients only ever get the champion's answers;
  the candidate is judged on errors, latency and how often its predictions disagree with the champion's.
- canary: the candidate answers a growing share of requests (5, 25, 50, 100 by default), judged at
  every step on its own errors and latency.
- blue-green: all traffic switches to the candidate at once and is watched for one step; a breach
  switches it back as fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..params import RolloutParams
from ..reports import markdown_table


@dataclass(frozen=True)
class Traffic:
    """Where client requests go during one step."""

    candidate_percent: int = 0  # share of client requests the candidate answers, 0-100
    mirror: bool = (
        False  # shadow: a copy of every request also goes to the candidate, answer dropped
    )

    def describe(self) -> str:
        if self.mirror:
            return "champion answers, candidate shadows 100%"
        return f"candidate {self.candidate_percent}%, champion {100 - self.candidate_percent}%"


CHAMPION_ONLY = Traffic()


@dataclass(frozen=True)
class Step:
    name: str
    traffic: Traffic
    seconds: float


@dataclass(frozen=True)
class UpstreamStats:
    """What one party did in a step: requests it handled, how many failed, their latency."""

    requests: int = 0
    errors: int = 0  # 5xx answers and requests that got no answer at all
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Measurement:
    """One step, as the traffic target recorded it."""

    champion: UpstreamStats = UpstreamStats()
    candidate: UpstreamStats = UpstreamStats()
    clients: UpstreamStats = UpstreamStats()  # what clients received, whoever answered
    compared: int = 0  # shadow: predictions of both compared
    disagreements: int = 0

    @property
    def disagreement_rate(self) -> float:
        return self.disagreements / self.compared if self.compared else 0.0


class TrafficTarget(Protocol):
    """Where the rollout moves traffic and reads what happened; see nginx.py and kubernetes.py."""

    def route(self, traffic: Traffic) -> None:
        """Send traffic as given; returns once new requests follow it."""

    def measure(self) -> Measurement:
        """What happened since the last `route` call."""


def plan(params: RolloutParams) -> list[Step]:
    """The steps of the configured strategy."""
    if params.strategy == "shadow":
        return [Step("shadow", Traffic(mirror=True), params.shadow_seconds)]
    if params.strategy == "blue-green":
        return [Step("switch", Traffic(candidate_percent=100), params.step_seconds)]
    return [
        Step(f"canary {percent}%", Traffic(candidate_percent=percent), params.step_seconds)
        for percent in params.canary_steps
    ]


def breaches(params: RolloutParams, step: Step, measured: Measurement) -> list[str]:
    """Why the candidate fails this step; empty when it passes. Too little traffic is a failure too
    (a step that saw nothing proves nothing), and often a symptom: a slow candidate gets few requests."""
    checks, candidate = params.checks, measured.candidate
    found = []
    if candidate.requests < checks.min_requests:
        found.append(
            f"the candidate handled {candidate.requests} requests, fewer than the "
            f"{checks.min_requests} needed to judge it"
        )
    if candidate.error_rate > checks.max_error_rate:
        found.append(
            f"error rate {candidate.error_rate:.1%} ({candidate.errors}/{candidate.requests}) "
            f"above {checks.max_error_rate:.1%}"
        )
    if candidate.p95_ms is not None and candidate.p95_ms > checks.max_p95_latency_ms:
        found.append(
            f"p95 latency {candidate.p95_ms:.0f} ms above {checks.max_p95_latency_ms:g} ms"
        )
    if step.traffic.mirror and measured.disagreement_rate > checks.max_disagreement_rate:
        found.append(
            f"disagrees with the champion on {measured.disagreement_rate:.1%} of "
            f"{measured.compared} predictions, above {checks.max_disagreement_rate:.1%}"
        )
    return found


@dataclass
class StepResult:
    step: Step
    measured: Measurement
    breaches: list[str]
    started_at: float  # wall clock, to line up with what clients recorded
    seconds: float = 0.0


@dataclass
class Outcome:
    strategy: str
    passed: bool
    steps: list[StepResult] = field(default_factory=list)
    final_traffic: Traffic = CHAMPION_ONLY
    seconds: float = 0.0
    rollback_seconds: float | None = None  # breach detected -> champion serving everything again
    rolled_back_at: float | None = None  # wall clock

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        for step, done in zip(result["steps"], self.steps, strict=True):
            step["measured"]["disagreement_rate"] = done.measured.disagreement_rate
            for party in ("champion", "candidate", "clients"):
                step["measured"][party]["error_rate"] = getattr(done.measured, party).error_rate
        return result


def run(
    params: RolloutParams,
    target: TrafficTarget,
    sleep: Callable[[float], None] = time.sleep,
    on_step: Callable[[StepResult], None] = lambda result: None,
) -> Outcome:
    """Walk the plan; on the first breach send everything back to the champion and stop.

    Shadow never moves client traffic: it ends back on the champion alone, passed or not. A canary or
    blue-green rollout that passes ends with the candidate answering everything. If the target
    itself fails mid-step (a proxy, kubectl or Prometheus error), traffic goes back to the champion
    before the error is raised.
    """
    started = time.monotonic()
    outcome = Outcome(strategy=params.strategy, passed=False)
    try:
        for step in plan(params):
            step_started, started_at = time.monotonic(), time.time()
            target.route(step.traffic)
            sleep(step.seconds)
            measured = target.measure()
            result = StepResult(step, measured, breaches(params, step, measured), started_at)
            result.seconds = time.monotonic() - step_started
            outcome.steps.append(result)
            on_step(result)
            if result.breaches:
                breached = time.monotonic()
                target.route(CHAMPION_ONLY)
                outcome.rollback_seconds = time.monotonic() - breached
                outcome.rolled_back_at = time.time()
                outcome.seconds = time.monotonic() - started
                return outcome
    except BaseException:
        target.route(CHAMPION_ONLY)
        raise
    if params.strategy == "shadow":
        target.route(CHAMPION_ONLY)
    else:
        outcome.final_traffic = outcome.steps[-1].step.traffic
    outcome.passed = True
    outcome.seconds = time.monotonic() - started
    return outcome


def report(outcome: Outcome, champion: int, candidate: int) -> dict[str, Any]:
    """The rollout's JSON report: what `markdown` and the workflow summaries render."""
    return {"champion_version": champion, "candidate_version": candidate, **outcome.to_dict()}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def markdown(result: Mapping[str, Any]) -> str:
    """A rollout report (see `report`) for people: one row per step, then what became of traffic,
    then the A/B test of the same two versions when the `rollout` command found one."""
    champion, candidate = result["champion_version"], result["candidate_version"]
    verdict = "passed" if result["passed"] else "**ROLLED BACK**"
    lines = [
        f"### Rollout ({result['strategy']}) of v{candidate} beside v{champion}: {verdict}",
        "",
    ]
    rows = []
    for done in result["steps"]:
        measured, traffic = done["measured"], Traffic(**done["step"]["traffic"])
        rows.append(
            [
                done["step"]["name"],
                traffic.describe(),
                measured["candidate"]["requests"],
                f"{measured['candidate']['error_rate']:.1%}",
                _ms(measured["candidate"]["p95_ms"]),
                _ms(measured["champion"]["p95_ms"]),
                f"{measured['disagreement_rate']:.1%}" if traffic.mirror else "-",
                "; ".join(done["breaches"]) or "pass",
            ]
        )
    header = [
        "step",
        "traffic",
        "candidate requests",
        "candidate errors",
        "candidate p95",
        "champion p95",
        "disagreement",
        "verdict",
    ]
    lines += [markdown_table(header, rows), ""]
    if result["passed"] and result["strategy"] != "shadow":
        lines.append(f"Candidate v{candidate} now answers all traffic ({result['seconds']:.0f} s).")
    elif result["passed"]:
        lines.append(f"Shadow passed; clients were answered by v{champion} throughout.")
    else:
        lines.append(
            f"All traffic went back to v{champion} {result['rollback_seconds']:.2f} s after the "
            "breach; the registry was not changed."
        )
    if result.get("ab_test"):
        from ..monitoring import ab_test

        lines += ["", ab_test.markdown(result["ab_test"])]
    return "\n".join(lines)
