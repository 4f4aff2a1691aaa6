"""Graceful degradation: the fallback model, 503 instead of a 500, and load shedding.

The pure parts (which version a bento falls back on, which model answers, the burst log, the shedder)
run here in milliseconds. The served behaviour runs against real `bentoml serve` processes of a
model that raises on every call (tests/misbehaving.py), built while a healthy champion is in the
registry: one bento answers by the fallback, the other (on_model_error: unavailable) with 503.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.svm import LinearSVC

from {{ cookiecutter.package }} import data, training
from {{ cookiecutter.package }}.deploy import payloads
from {{ cookiecutter.package }}.deploy.bento import build, fallback_version
from {{ cookiecutter.package }}.deploy.server import Server, serve
from {{ cookiecutter.package }}.errors import Overloaded, Unavailable
from {{ cookiecutter.package }}.registry import CHAMPION, Registry
from {{ cookiecutter.package }}.serving.fallback import Answering, BurstLog, Loaded, fallback_fits
from {{ cookiecutter.package }}.serving.grpc.client import ModelClient
from {{ cookiecutter.package }}.serving.shedding import LoadShedder
from {{ cookiecutter.package }}.settings import Settings, load_settings

from .conftest import probe_livez, write_params
from .misbehaving import Misbehaving, allow_pickled_models, register


def test_a_bento_falls_back_on_the_version_it_replaces():
    assert fallback_version(5, champion=4, previous=3) == 4  # CD builds before promoting
    assert fallback_version(5, champion=5, previous=4) == 4  # the pipeline promotes first
    assert fallback_version(1, champion=None, previous=None) is None  # the first deploy
    assert fallback_version(2, champion=2, previous=None) is None


def fitted() -> LogisticRegression:
    rows = np.array([[0.0], [1.0], [2.0], [3.0]])
    return LogisticRegression().fit(rows, [0, 0, 1, 1])


def test_the_fallback_answers_when_the_model_raises_and_503_when_none_can():
    healthy, rows = fitted(), np.array([[0.5], [2.5]])
    raising = Misbehaving(healthy, fail_every=1)
    answering = Answering(Loaded(raising, 7), Loaded(healthy, 6), "fallback", True)
    scored = answering.scores(rows)
    assert scored.model_version == 6 and scored.predictions == [0, 1]
    assert np.allclose(scored.probabilities, healthy.predict_proba(rows))
    assert (
        Answering(Loaded(healthy, 7), Loaded(raising, 6), "fallback", True)
        .scores(rows)
        .model_version
        == 7
    )
    cases = {
        "on_model_error is unavailable": Answering(
            Loaded(raising, 7), Loaded(healthy, 6), "unavailable", True
        ),
        "no fallback is packed": Answering(Loaded(raising, 7), None, "fallback", True),
        "fallback v6 raised": Answering(Loaded(raising, 7), Loaded(raising, 6), "fallback", True),
    }
    for why, refusing in cases.items():
        with pytest.raises(Unavailable, match=f"model v7 (raised and )?(and )?{why}"):
            refusing.scores(rows)


def test_a_fallback_that_cannot_answer_for_the_model_is_refused_at_start():
    import pandas as pd

    healthy = fitted()
    assert fallback_fits(healthy, fitted(), ["x"], True) is None
    other_classes = LogisticRegression().fit([[0.0], [1.0], [2.0]], [0, 1, 2])
    assert "classes differ" in fallback_fits(healthy, other_classes, ["x"], True)
    other_features = LogisticRegression().fit(pd.DataFrame({"y": [0.0, 1.0]}), [0, 1])
    assert "features ['y'] differ" in fallback_fits(healthy, other_features, ["x"], True)
    no_probabilities = LinearSVC().fit([[0.0], [1.0]], [0, 1])
    assert "no predict_proba" in fallback_fits(healthy, no_probabilities, ["x"], True)
    # a regression answers no probabilities: a fallback without them fits, whatever the served has
    regressor = Ridge().fit([[0.0], [1.0]], [0.0, 1.0])
    assert fallback_fits(Ridge().fit([[0.0], [1.0]], [1.0, 0.0]), regressor, ["x"], False) is None


def test_a_burst_of_errors_is_logged_once(caplog):
    now = [0.0]
    burst = BurstLog(quiet_seconds=60, clock=lambda: now[0])
    error = RuntimeError("boom")
    logged = []
    for at in (0, 1, 30, 89, 200, 201):
        now[0] = at
        logged.append(burst.error("model v7 raised", error))
    assert logged == [True, False, False, False, True, False]
    assert "3 more in the previous burst" in caplog.text
    assert burst.error("fallback v6 raised too", error)  # another source has its own bursts


def test_the_shedder_refuses_what_would_wait_past_the_deadline():
    shed: list[str] = []
    shedder = LoadShedder(deadline_ms=1000, count_shed=shed.append)
    with shedder.admitted(500):  # nothing measured yet: nothing is shed
        shedder.measured(100, 1.0)  # 10 ms a row: 500 rows queued are 5 s of waiting
        with pytest.raises(Overloaded) as refused, shedder.admitted(1):
            pass
        assert refused.value.retry_after == 5
        answer = asyncio.run(shedder.answer("predict", 1, lambda: asyncio.sleep(0, "scored")))
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert shedder.queued_rows == 0 and shed == ["predict"]
    assert asyncio.run(shedder.answer("predict", 1, lambda: asyncio.sleep(0, "scored"))) == "scored"
    unbounded = LoadShedder(deadline_ms=None, count_shed=shed.append)
    unbounded.measured(1, 60.0)
    with unbounded.admitted(1), unbounded.admitted(1000):
        assert unbounded.expected_wait() > 60


@dataclass(frozen=True)
class Degraded:
    """A healthy champion and two servers of a slow model that raises on every call."""

    settings: Settings
    champion: int
    fallback: Server  # on_model_error: fallback
    unavailable: Server  # on_model_error: unavailable


_STARTED: list[Degraded] = []


@pytest.fixture
def degraded(project, settings, frame, monkeypatch, request) -> Degraded:
    """Built and started by the first test that needs them, stopped when the session ends."""
    if _STARTED:
        return _STARTED[0]
    allow_pickled_models(monkeypatch)
    registry = Registry(settings)
    champion = training.train(settings, registry, frame).model_version
    registry.move_alias(CHAMPION, champion, why="the healthy champion a raising model replaces")
    features, _ = data.split_features_target(frame, settings.params.data)
    raising = Misbehaving(registry.load_model(champion), fail_every=1, delay_seconds=0.2)
    version = register(settings, raising, features)
    bentos = [build(settings, registry, version)]
    write_params(project, serving={"on_model_error": "unavailable"})
    strict = load_settings(project / "params.yaml")
    bentos.append(build(strict, Registry(strict), version))
    with ThreadPoolExecutor(2) as starting:
        futures = [starting.submit(serve, settings, bento) for bento in bentos]
    for future in futures:  # every server that started stops, even if the other did not
        if future.exception() is None:
            request.config.add_cleanup(future.result().stop)
    servers = [future.result() for future in futures]
    _STARTED.append(Degraded(settings, champion, *servers))
    return _STARTED[0]


def series(server: Server, name: str, endpoint: str) -> float:
    """A counter of `endpoint` on the server's /metrics page."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").raise_for_status().text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.integration
def test_a_raising_model_is_answered_by_the_fallback_or_with_503(degraded: Degraded):
    rows = payloads.sample_rows(degraded.settings, rows=5)
    records = payloads.as_records(rows)
    headers = degraded.settings.client_headers()
    with httpx.Client(base_url=degraded.fallback.url, headers=headers, timeout=30) as http:
        singles = [http.post("/predict", json=record) for record in records]
        batch = http.post("/predict_batch", json={"rows": records})
    for answer in [*singles, batch]:
        assert answer.status_code == 200, answer.text
        assert answer.json()["fallback"] is True
        assert answer.json()["model_version"] == degraded.champion
        assert answer.headers["x-model-version"] == str(degraded.champion)
    expected = Registry(degraded.settings).load_model(degraded.champion).predict(rows).tolist()
    if degraded.settings.params.task == "regression":
        assert np.allclose(batch.json()["predictions"], expected)
    else:
        assert batch.json()["predictions"] == expected
    assert series(degraded.fallback, "model_fallback_answers_total", "/predict") == 5
    assert series(degraded.fallback, "model_fallback_answers_total", "/predict_batch") == 1
    token = degraded.settings.api_token()
    with ModelClient(degraded.fallback.grpc_address, token) as client:  # gRPC: marked the same
        reply = client.predict(records[0])
    assert (reply.fallback, reply.model_version) == (True, degraded.champion)
    log = degraded.fallback.log_path.read_text()
    assert log.count("raised: RuntimeError") == 1, log[-3000:]  # once per burst

    refused = httpx.post(
        f"{degraded.unavailable.url}/predict", json=records[0], headers=headers, timeout=30
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    assert "Traceback" not in refused.text
    with (
        ModelClient(degraded.unavailable.grpc_address, token) as client,
        pytest.raises(grpc.RpcError) as unavailable,
    ):
        client.predict(records[0])
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert series(degraded.unavailable, "model_fallback_answers_total", "/predict") == 0


@pytest.mark.integration
def test_a_flood_beyond_the_queue_gets_fast_503s_while_livez_stays_quick(degraded: Degraded):
    """Each call takes 0.2 s and more: past 1 s of rows queued ahead, the rest is refused at once."""
    url, headers = degraded.fallback.url, degraded.settings.client_headers()
    body = {"rows": payloads.as_records(payloads.sample_rows(degraded.settings, rows=20))}
    httpx.post(f"{url}/predict_batch", json=body, headers=headers, timeout=30).raise_for_status()
    before = series(degraded.fallback, "model_shed_requests_total", "/predict_batch")
    probes: list[float] = []
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as prober:
        prober.submit(probe_livez, url, probes, done, 0.02)
        answers = asyncio.run(flood(url, headers, body, requests=40))
        done.set()
    shed = [(seconds, answer) for seconds, answer in answers if answer.status_code == 503]
    served = [seconds for seconds, answer in answers if answer.status_code == 200]
    assert len(shed) + len(served) == len(answers), [a.status_code for _, a in answers]
    assert served and len(shed) >= 20, (len(served), len(shed))
    assert all(int(answer.headers["retry-after"]) >= 1 for _, answer in shed)
    assert max(seconds for seconds, _ in shed) < 1.0, sorted(seconds for seconds, _ in shed)
    assert probes and max(probes) < 1.0, probes
    after = series(degraded.fallback, "model_shed_requests_total", "/predict_batch")
    assert after - before == len(shed)


async def flood(url: str, headers: dict, body: dict, requests: int) -> list:
    """`requests` requests at once; each answer with the seconds it took."""
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:

        async def timed() -> tuple[float, httpx.Response]:
            started = time.perf_counter()
            answer = await http.post("/predict_batch", json=body)
            return time.perf_counter() - started, answer

        return await asyncio.gather(*(timed() for _ in range(requests)))
