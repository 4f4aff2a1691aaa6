"""Shadow, canary and blue-green rollouts.

The plan, the checks and nginx's config and logs are pure functions, tested directly. The rollouts
themselves run for real: the champion and each candidate are BentoML servers on 127.0.0.1, nginx is
in front, and a second process sends steady traffic and records every answer, which is how the tests
know what clients saw. Misbehaving candidates are real servers of the small test models in
tests/misbehaving.py. Steps last seconds here; minutes per step are a production setting.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package }} import cli, data, loadtest, registry, rollout, training
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.payloads import sample_rows
from {{ cookiecutter.package }}.deploy.server import Server, free_port, serve
from {{ cookiecutter.package }}.params import RolloutParams
from {{ cookiecutter.package }}.rollout import CHAMPION_ONLY, Measurement, Traffic, UpstreamStats, local, nginx
from {{ cookiecutter.package }}.settings import load_settings

from .conftest import approve, write_params
from .misbehaving import Misbehaving, allow_pickled_models, register
from .shared_bento import Built

FAST = {
    "step_seconds": 2.0,
    "shadow_seconds": 3.0,
    "checks": {"min_requests": 5, "max_p95_latency_ms": 250},
}


OTHER_MODEL = {
    "classification": {"hyperparameters": {"C": 0.01, "max_iter": 1000}},
    "regression": {"hyperparameters": {"alpha": 1.0}},
}


def fast_params(**changes) -> RolloutParams:
    return RolloutParams.model_validate({**FAST, **changes})


# The plan and the checks


def test_each_strategy_has_its_plan():
    canary = rollout.plan(fast_params(canary_steps=[10, 100]))
    assert [step.traffic.candidate_percent for step in canary] == [10, 100]
    (shadow,) = rollout.plan(fast_params(strategy="shadow"))
    assert shadow.traffic == Traffic(mirror=True) and shadow.seconds == 3.0
    (switch,) = rollout.plan(fast_params(strategy="blue-green"))
    assert switch.traffic == Traffic(candidate_percent=100)


@pytest.mark.parametrize("steps", [[5, 25, 50], [50, 25, 100], [0, 100], [5, 5, 100], [5, 120]])
def test_canary_steps_must_climb_to_100(steps):
    with pytest.raises(ValidationError, match="canary_steps"):
        fast_params(canary_steps=steps)


def test_breaches_name_what_is_wrong():
    params, step = fast_params(), rollout.plan(fast_params(strategy="shadow"))[0]
    healthy = Measurement(candidate=UpstreamStats(100, 0, 40.0), compared=100, disagreements=1)
    assert rollout.breaches(params, step, healthy) == []
    broken = Measurement(candidate=UpstreamStats(100, 20, 300.0), compared=100, disagreements=30)
    found = rollout.breaches(params, step, broken)
    assert len(found) == 3
    assert "error rate 20.0%" in found[0] and "p95 latency 300 ms" in found[1]
    assert "30.0% of 100" in found[2]
    too_few = rollout.breaches(params, step, Measurement(candidate=UpstreamStats(3, 0, 1.0)))
    assert len(too_few) == 1 and "3 requests, fewer than the 5" in too_few[0]
    slow_and_rare = rollout.breaches(
        params, step, Measurement(candidate=UpstreamStats(3, 0, 900.0))
    )
    assert len(slow_and_rare) == 2 and "p95 latency 900 ms" in slow_and_rare[1]
    canary = rollout.plan(params)[0]  # disagreement is judged in shadow only
    assert rollout.breaches(params, canary, broken)[-1].startswith("p95")


class Scripted:
    """A traffic target that replays given measurements: for the runner's logic alone."""

    def __init__(self, *measured: Measurement) -> None:
        self.measured, self.routes = list(measured), []

    def route(self, traffic: Traffic) -> None:
        self.routes.append(traffic)

    def measure(self) -> Measurement:
        return self.measured.pop(0)


def test_a_target_that_fails_mid_step_still_gets_traffic_back_to_the_champion():
    class Unreachable(Scripted):
        def measure(self) -> Measurement:
            raise RuntimeError("Prometheus is down")

    target = Unreachable()
    with pytest.raises(RuntimeError, match="Prometheus"):
        rollout.run(fast_params(), target, sleep=lambda seconds: None)
    assert target.routes == [Traffic(5), CHAMPION_ONLY]


def test_the_runner_stops_at_the_first_breach_and_sends_traffic_back():
    good, bad = (
        Measurement(candidate=UpstreamStats(50, 0, 10.0)),
        Measurement(candidate=UpstreamStats(50, 9, 10.0)),
    )
    target = Scripted(good, bad)
    outcome = rollout.run(fast_params(), target, sleep=lambda seconds: None)
    assert not outcome.passed and len(outcome.steps) == 2
    assert target.routes == [Traffic(5), Traffic(25), CHAMPION_ONLY]
    assert outcome.rollback_seconds is not None and outcome.final_traffic == CHAMPION_ONLY
    assert "ROLLED BACK" in rollout.markdown(rollout.report(outcome, 1, 2))

    target = Scripted(*[good] * 4)
    outcome = rollout.run(fast_params(), target, sleep=lambda seconds: None)
    assert outcome.passed and outcome.final_traffic == Traffic(100)
    assert target.routes == [Traffic(5), Traffic(25), Traffic(50), Traffic(100)]


# nginx's config and logs


def test_config_weights_follow_the_step(tmp_path):
    def servers(traffic: Traffic) -> list[str]:
        text = nginx.config(traffic, "127.0.0.1:1", "127.0.0.1:2", 8080, tmp_path, 1)
        live = text.split("upstream live {")[1].split("}")[0]
        return [
            line.split()[1] + " " + line.split()[2]
            for line in live.splitlines()
            if "server " in line
        ]

    assert servers(Traffic(5)) == ["127.0.0.1:1 weight=95", "127.0.0.1:2 weight=5"]
    assert servers(Traffic(100)) == ["127.0.0.1:2 weight=100"]
    assert servers(CHAMPION_ONLY) == servers(Traffic(mirror=True)) == ["127.0.0.1:1 weight=100"]
    shadow = nginx.config(Traffic(mirror=True), "127.0.0.1:1", "127.0.0.1:2", 8080, tmp_path, 1)
    assert f"mirror {nginx.SHADOW_LOCATION};" in shadow
    assert "mirror " not in nginx.config(
        Traffic(5), "127.0.0.1:1", "127.0.0.1:2", 8080, tmp_path, 1
    )


@pytest.mark.parametrize(
    "traffic", [CHAMPION_ONLY, Traffic(25), Traffic(100), Traffic(mirror=True)]
)
def test_nginx_accepts_every_config(tmp_path, traffic):
    (tmp_path / "temp").mkdir()
    path = tmp_path / "nginx.conf"
    path.write_text(nginx.config(traffic, "127.0.0.1:1", "127.0.0.1:2", 8080, tmp_path, 3))
    checked = subprocess.run(
        [nginx.find_nginx(), "-t", "-p", str(tmp_path), "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


def entry(
    id_: str, upstream: str, status: str, seconds: str, prediction: str = "", client: str = "200"
):
    return {
        "step": 1, "id": id_, "uri": "/predict", "status": client, "upstream": upstream,
        "upstream_status": status, "upstream_time": seconds, "request_time": "0.050",
        "prediction": prediction,
    }  # fmt: skip


def test_measure_counts_each_attempt_where_it_went():
    champion, candidate = "127.0.0.1:1", "127.0.0.1:2"
    lines = [
        entry("a", champion, "200", "0.010"),
        entry("b", candidate, "500", "0.020", client="500"),
        # nginx could not reach the candidate and retried on the champion: the client got a 200
        entry("c", f"{candidate}, {champion}", "502, 200", "0.000, 0.012"),
        entry("d", candidate, "-", "-", client="504"),
    ]
    measured = nginx.measure(lines, [], champion, candidate, None)
    assert measured.champion == UpstreamStats(2, 0, 11.9)  # p95 of 10 and 12 ms
    assert (measured.candidate.requests, measured.candidate.errors) == (3, 3)
    assert (measured.clients.requests, measured.clients.errors) == (4, 2)


def test_shadow_predictions_are_joined_by_request_id():
    champion, candidate = "127.0.0.1:1", "127.0.0.1:2"
    client = [entry(str(i), champion, "200", "0.01", f"[{i % 2}]") for i in range(4)]
    shadow = [entry(str(i), candidate, "200", "0.02", "[0]") for i in range(4)]
    measured = nginx.measure(client, shadow, champion, candidate, None)
    assert (measured.compared, measured.disagreements) == (4, 2)
    assert measured.candidate.requests == 4 and measured.champion.requests == 4
    numbers = nginx.measure(
        [entry("x", champion, "200", "0.01", "[100.0,0.5]")],
        [entry("x", candidate, "200", "0.01", "[104.0,0.53]")],
        champion, candidate, 0.05,
    )  # fmt: skip
    assert (numbers.compared, numbers.disagreements) == (1, 0)  # 4 <= 5% of 100; 0.03 <= 5% of 1.0
    assert nginx.agree("[100.0]", "[106.0]", 0.05) is False
    assert nginx.agree("", "[1]", None) is None


# Real rollouts: real servers, real nginx, traffic from a second process


@dataclass
class Candidates:
    champion: Server
    healthy: Server  # another good model; its predictions differ from the champion's
    flaky: Server  # the champion's model failing every 5th request
    slow: Server  # the champion's model, 400 ms per request
    versions: dict[str, int]


_STARTED: list[Candidates] = []


@pytest.fixture
def candidates(built: Built, server: Server, request, monkeypatch) -> Candidates:
    """The candidate servers, started by the first test that needs them and stopped at the end."""
    if _STARTED:
        return _STARTED[0]
    allow_pickled_models(monkeypatch)  # the misbehaving models, built and served
    settings = built.settings
    features, _ = data.split_features_target(data.training_table(settings), settings.params.data)
    champion_model = registry.Registry(settings).load_model(built.version)
    versions = {
        "healthy": built.other_version,
        "flaky": register(settings, Misbehaving(champion_model, fail_every=5), features),
        "slow": register(settings, Misbehaving(champion_model, delay_seconds=0.4), features),
    }
    # The slow one queues without bound: shedding would turn its slowness into 503s, and these
    # tests are about a rollout seeing the latency (tests/test_fallback.py sheds).
    unbounded = settings.params.serving.model_copy(update={"queue_deadline_ms": None})
    patient = settings.model_copy(
        update={"params": settings.params.model_copy(update={"serving": unbounded})}
    )
    models = registry.Registry(settings)
    bentos = {
        name: build(patient if name == "slow" else settings, models, version)
        for name, version in versions.items()
    }
    with ThreadPoolExecutor(3) as starting:
        futures = {name: starting.submit(serve, settings, b) for name, b in bentos.items()}
    for future in futures.values():  # every server that started stops, even if another did not
        if future.exception() is None:
            request.config.add_cleanup(future.result().stop)
    running = {name: future.result() for name, future in futures.items()}
    _STARTED.append(
        Candidates(server, running["healthy"], running["flaky"], running["slow"], versions)
    )
    return _STARTED[0]


@dataclass
class Answer:
    time: float
    status: int | None
    version: int | None
    error: str | None = None  # what the client saw instead of an answer: shown when a test fails


@contextmanager
def traffic_through(built: Built, url: str, record: Path) -> Iterator[list[Answer]]:
    """A second process sending /predict to `url`; on exit, the answers it recorded, in order."""
    answers: list[Answer] = []
    params = built.project / "params.yaml"
    with loadtest.traffic_from_another_process(params, url, record, seconds=120):
        yield answers
    for line in record.read_text().splitlines():
        got = json.loads(line)
        answers.append(Answer(got["time"], got["status"], got["version"], got["error"]))
    answers.sort(key=lambda answer: answer.time)


@contextmanager
def rolling(built, candidates, candidate: Server, tmp_path):
    """nginx in front of the champion and `candidate`, and traffic through it: (proxy, answers)."""
    tolerance = local.tolerance(built.settings)
    target = nginx.Proxy(
        candidates.champion.url,
        candidate.url,
        free_port(),
        tmp_path / "nginx",
        tolerance,
    )
    with (
        target.start(),
        traffic_through(built, target.url, tmp_path / "traffic.jsonl") as answers,
    ):
        yield target, answers


@pytest.mark.integration
@pytest.mark.rollout
def test_a_healthy_canary_climbs_to_100(built, candidates, tmp_path):
    with rolling(built, candidates, candidates.healthy, tmp_path) as (target, answers):
        outcome = rollout.run(fast_params(), target)
    assert outcome.passed, rollout.markdown(
        rollout.report(outcome, built.version, built.other_version)
    )
    assert [done.step.traffic.candidate_percent for done in outcome.steps] == [5, 25, 50, 100]
    for done in outcome.steps:
        measured, percent = done.measured, done.step.traffic.candidate_percent
        share = measured.candidate.requests / (
            measured.candidate.requests + measured.champion.requests
        )
        assert abs(share - percent / 100) <= 0.05, (done.step.name, measured)
    last = outcome.steps[-1]
    during_last = [a for a in answers if a.time > last.started_at + 0.5]
    assert during_last and {a.version for a in during_last} == {built.other_version}
    assert all(a.status == 200 for a in answers)


@pytest.mark.integration
@pytest.mark.rollout
def test_a_failing_canary_is_rolled_back_at_the_first_step(built, candidates, tmp_path):
    with rolling(built, candidates, candidates.flaky, tmp_path) as (target, answers):
        outcome = rollout.run(fast_params(), target)
        time.sleep(1.5)  # the champion alone, after the rollback
    assert not outcome.passed and len(outcome.steps) == 1
    (first,) = outcome.steps
    first_step = 2  # nginx started on step 1, all traffic on the champion
    assert "error rate" in first.breaches[0] and first.measured.candidate.errors >= 1
    # Clients saw the failures of that step and no others (nginx logs each answer with its step,
    # including those between the measurement and the rollback); the champion answered the rest.
    logged = [json.loads(line) for line in (target.runtime / "access.log").read_text().splitlines()]
    failed_by_step = Counter(line["step"] for line in logged if int(line["status"]) >= 500)
    failed = [a for a in answers if a.status != 200]
    assert set(failed_by_step) == {first_step} and len(failed) == failed_by_step[first_step] > 0
    assert all(a.time <= outcome.rolled_back_at + 0.5 for a in failed)
    after = [a for a in answers if a.time > outcome.rolled_back_at + 0.5]
    assert after and all((a.status, a.version) == (200, built.version) for a in after)
    assert outcome.rollback_seconds < 5


@pytest.mark.integration
@pytest.mark.rollout
def test_a_slow_canary_is_rolled_back(built, candidates, tmp_path):
    with rolling(built, candidates, candidates.slow, tmp_path) as (target, answers):
        outcome = rollout.run(fast_params(), target)
    assert not outcome.passed and len(outcome.steps) == 1
    assert any("p95 latency" in breach for breach in outcome.steps[0].breaches), outcome.steps[0]
    assert all(a.status == 200 for a in answers)


@pytest.mark.integration
@pytest.mark.rollout
def test_shadow_compares_without_clients_ever_seeing_the_candidate(built, candidates, tmp_path):
    with rolling(built, candidates, candidates.healthy, tmp_path) as (target, answers):
        outcome = rollout.run(
            fast_params(
                strategy="shadow", checks={"min_requests": 5, "max_disagreement_rate": 1.0}
            ),
            target,
        )
    candidate_answers = [a for a in answers if (a.status, a.version) != (200, built.version)]
    assert answers and not candidate_answers, candidate_answers[:5]
    (shadow,) = outcome.steps
    measured = shadow.measured
    assert outcome.passed and outcome.final_traffic == CHAMPION_ONLY
    assert measured.compared >= 0.9 * measured.clients.requests > 0
    assert measured.candidate.p95_ms is not None and measured.champion.p95_ms is not None
    # The disagreement nginx's logs show is the one the two registered models have on those rows.
    settings = built.settings
    rows = sample_rows(settings, rows=200)
    models = registry.Registry(settings)
    ours = models.load_model(built.version).predict(rows)
    theirs = models.load_model(built.other_version).predict(rows)
    offline = float((ours != theirs).mean()) if settings.params.task == "classification" else None
    if offline is not None:
        assert abs(measured.disagreement_rate - offline) <= 0.1, (measured, offline)
    assert "| shadow |" in rollout.markdown(
        rollout.report(outcome, built.version, built.other_version)
    )


@pytest.mark.integration
@pytest.mark.rollout
def test_blue_green_switches_and_rolls_back_without_a_failed_request(built, candidates, tmp_path):
    with rolling(built, candidates, candidates.healthy, tmp_path) as (target, answers):
        outcome = rollout.run(fast_params(strategy="blue-green"), target)
        switched_back = time.time()
        target.route(CHAMPION_ONLY)  # and back, as a rollback would
        time.sleep(1.5)
    assert outcome.passed and outcome.final_traffic == Traffic(100)
    assert len(answers) > 100 and all(a.status == 200 for a in answers), [
        a for a in answers if a.status != 200
    ][:3]
    versions = [a.version for a in answers]
    assert versions[0] == built.version and versions[-1] == built.version
    assert built.other_version in versions
    assert all(
        a.version == built.other_version
        for a in answers
        if outcome.steps[0].started_at + 0.5 < a.time < switched_back
    )


@pytest.mark.integration
@pytest.mark.rollout
def test_the_rollout_command_promotes_only_after_a_passing_canary(
    project, settings, frame, capsys, monkeypatch
):
    allow_pickled_models(monkeypatch)  # the flaky candidate, built and served
    assert cli.main(["rollout"]) == cli.EXIT_ERROR
    assert "needs a champion and another candidate" in capsys.readouterr().err
    write_params(project, rollout={**FAST, "canary_steps": [50, 100], "proxy_port": free_port()})
    models = registry.Registry(settings)
    training.train(settings, models, frame)
    models.promote(1, None, why="first model")
    features, _ = data.split_features_target(frame, settings.params.data)
    flaky = register(settings, Misbehaving(models.load_model(1), fail_every=5), features)

    # A candidate that fails: exit 1, the report says why, and the registry is as it was.
    approve(settings, models, flaky, champion=1)
    history = models.history()
    assert cli.main(["rollout", "--version", str(flaky), "--promote"]) == cli.EXIT_CHECK_FAILED
    assert "rolled back: error rate" in capsys.readouterr().err
    report = json.loads((project / "reports" / "rollout.json").read_text())
    assert not report["passed"] and "promotion" not in report
    assert models.alias_version(registry.CHAMPION) == 1
    assert models.history() == history
    assert "ROLLED BACK" in (project / "reports" / "rollout.md").read_text()

    # A healthy one: every step passes, then it is promoted.
    write_params(project, model=OTHER_MODEL[settings.params.task])
    changed = load_settings(project / "params.yaml")
    healthy = training.train(changed, registry.Registry(changed), frame).model_version
    approve(settings, models, healthy, champion=1)
    assert cli.main(["rollout", "--version", str(healthy), "--promote"]) == cli.EXIT_OK, (
        capsys.readouterr()
    )
    report = json.loads((project / "reports" / "rollout.json").read_text())
    assert report["passed"] and report["candidate_version"] == healthy
    assert [s["step"]["traffic"]["candidate_percent"] for s in report["steps"]] == [50, 100]
    assert models.alias_version(registry.CHAMPION) == healthy
    promoted = json.loads((project / "reports" / "promote.json").read_text())
    assert (promoted["champion"], promoted["previous"]) == (healthy, 1)
    answers = [json.loads(line) for line in Path(report["traffic_record"]).read_text().splitlines()]
    assert answers and all(answer["status"] == 200 for answer in answers)
