"""The local rollout: the champion and the candidate on servers of this machine, nginx in front.

`local_target` starts both servers and the proxy (`nginx.Proxy`, which only routes and records);
`roll_out` builds both versions' bentos and walks the plan through that target, with steady client
traffic from a second process if asked, as `rollout --target local` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import loadtest
from ..deploy import bento, server
from ..params import RolloutParams
from ..registry import Registry
from ..settings import Settings
from . import StepResult, plan, report, run
from .nginx import Proxy

TRAFFIC_RECORD = "rollout-traffic.jsonl"  # in the reports folder: every answer the clients got


def tolerance(settings: Settings) -> float | None:
    """How close two predictions must be to agree: labels exactly, numbers within a share."""
    if settings.params.task == "classification":
        return None
    return settings.params.rollout.regression_tolerance


@contextlib.contextmanager
def local_target(settings: Settings, champion_bento: str, candidate_bento: str) -> Iterator[Proxy]:
    """Both bentos served on free ports of 127.0.0.1, nginx in front on `rollout.proxy_port`, all
    traffic on the champion; everything stops on exit. nginx's files go to `.runtime/nginx`."""
    bentos = (champion_bento, candidate_bento)
    with ThreadPoolExecutor(2) as starting:  # each server takes seconds to get ready
        futures = [starting.submit(server.serve, settings, tag) for tag in bentos]
    with contextlib.ExitStack() as running:
        for future in futures:  # a server that did start stops, even when the other did not
            if future.exception() is None:
                running.enter_context(future.result())
        for future in futures:
            if future.exception() is not None:
                raise future.exception()
        champion, candidate = (future.result() for future in futures)
        proxy = Proxy(
            champion.url,
            candidate.url,
            settings.params.rollout.proxy_port,
            settings.project_dir / ".runtime" / "nginx",
            tolerance(settings),
        )
        yield running.enter_context(proxy.start())


def roll_out(
    settings: Settings,
    registry: Registry,
    params: RolloutParams,
    champion: int,
    candidate: int,
    *,
    traffic_threads: int = 0,
    on_step: Callable[[StepResult], None] = lambda result: None,
) -> dict[str, Any]:
    """Roll registered `candidate` out beside `champion` on this machine; the rollout report.

    With `traffic_threads`, a second process (`traffic`, reading the same params file) sends steady traffic
    through the proxy for the whole plan and records every answer; with 0, bring your own clients.
    """
    # The candidate without a fallback: a canary is judged on its own answers, the champion is beside it.
    bentos = [
        bento.build(settings, registry, champion),
        bento.build(settings, registry, candidate, with_fallback=False),
    ]
    record = settings.reports_dir / TRAFFIC_RECORD
    with local_target(settings, *bentos) as target:
        traffic: contextlib.AbstractContextManager = contextlib.nullcontext()
        if traffic_threads:
            seconds = sum(step.seconds for step in plan(params)) + 60
            traffic = loadtest.traffic_from_another_process(
                settings.params_file, target.url, record, seconds, traffic_threads
            )
        with traffic:
            outcome = run(params, target, on_step=on_step)
    result = report(outcome, champion, candidate)
    result["traffic_record"] = str(record) if traffic_threads else None
    return result
