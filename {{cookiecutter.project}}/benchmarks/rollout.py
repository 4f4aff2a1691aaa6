"""How long rollouts take on this machine: a healthy canary from its first step to 100%, a blue-green
switch, and a failing canary from the breach to the champion serving everything again.

Real parts, as in tests/test_rollout.py: a scratch registry with a champion, a healthy candidate and
one that fails every 5th request (tests/misbehaving.py), each served by BentoML on 127.0.0.1, nginx in
front, steady traffic from a second process. Steps last 2 s (the test settings; production steps last
minutes, which adds to the first column and nothing to the others). Prints a table; `make
bench-rollout`. Not part of `make test`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.misbehaving import Misbehaving, register

from {{ cookiecutter.package }} import data, loadtest, registry, rollout, training
from {{ cookiecutter.package }}.deploy.bento import build
from {{ cookiecutter.package }}.deploy.server import free_port, serve
from {{ cookiecutter.package }}.params import RolloutParams
from {{ cookiecutter.package }}.reports import markdown_table
from {{ cookiecutter.package }}.rollout import local, nginx
from {{ cookiecutter.package }}.settings import Settings, load_settings

PROJECT = Path(__file__).resolve().parents[1]
PARAMS = RolloutParams.model_validate(
    {"step_seconds": 2.0, "checks": {"min_requests": 5, "max_p95_latency_ms": 250}}
)
REPEAT = 3


class Timed:
    """A traffic target that times every `route` (rewrite, reload, confirmed by the proxy)."""

    def __init__(self, target: nginx.Proxy) -> None:
        self.target, self.routes = target, []

    def route(self, traffic: rollout.Traffic) -> None:
        started = time.monotonic()
        self.target.route(traffic)
        self.routes.append(time.monotonic() - started)

    def measure(self) -> rollout.Measurement:
        return self.target.measure()


def scratch_settings(folder: Path) -> Settings:
    for name in ("data", "validation"):
        shutil.copytree(PROJECT / name, folder / name)
    shutil.copy(PROJECT / "params.yaml", folder / "params.yaml")
    # Its own store and reports, whatever the environment says: MLflow's set_tracking_uri writes
    # MLFLOW_TRACKING_URI into os.environ, so the next scratch project would read the last one's.
    own = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "REPORTS_DIR": str(folder / "reports"),
    }
    return load_settings(folder / "params.yaml", environ={**os.environ, **own})


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = scratch_settings(Path(folder))
        frame = data.read_table(settings.resolve(settings.params.data.source))
        features, _ = data.split_features_target(frame, settings.params.data)
        models = registry.Registry(settings)
        champion = training.train(settings, models, frame).model_version
        healthy = training.train(
            settings, models, frame.sample(frac=0.9, random_state=1)
        ).model_version
        flaky = register(settings, Misbehaving(models.load_model(champion), fail_every=5), features)
        scenarios = [
            ("canary 5-25-50-100, healthy", healthy, PARAMS, "first step to 100%"),
            ("blue-green, healthy", healthy, PARAMS.model_copy(update={"strategy": "blue-green"}), "switch and watch"),
            ("canary, fails 20%", flaky, PARAMS, "breach to champion only"),
        ]  # fmt: skip
        rows = []
        with contextlib.ExitStack() as running:
            servers = {
                version: running.enter_context(serve(settings, build(settings, models, version)))
                for version in (champion, healthy, flaky)
            }
            for name, candidate, params, measured in scenarios:
                target = nginx.Proxy(
                    servers[champion].url,
                    servers[candidate].url,
                    free_port(),
                    Path(folder) / "nginx" / str(candidate),
                    local.tolerance(settings),
                )
                timed = Timed(target)
                outcomes = []
                with (
                    target.start(),
                    loadtest.traffic_from_another_process(
                        settings.project_dir / "params.yaml",
                        target.url,
                        settings.reports_dir / "bench-traffic.jsonl",
                        seconds=600,
                    ),
                ):
                    for _ in range(REPEAT):
                        outcomes.append(rollout.run(params, timed))
                rows.append(row(name, measured, outcomes, timed.routes))
    print(f"Rollouts through nginx, {PARAMS.step_seconds:g} s steps, median of {REPEAT} runs")
    header = ["scenario", "measured", "time", "outcome", "one traffic move"]
    print(markdown_table(header, rows))


def row(name: str, measured: str, outcomes: list[rollout.Outcome], routes: list[float]) -> list:
    rollbacks = [o.rollback_seconds for o in outcomes if o.rollback_seconds is not None]
    if rollbacks:
        reasons = {o.steps[-1].breaches[0] for o in outcomes if not o.passed}
        time_taken = f"{statistics.median(rollbacks):.2f} s"
        outcome = f"rolled back {len(rollbacks)}/{len(outcomes)}: {'; '.join(sorted(reasons))}"
    else:
        time_taken = f"{statistics.median(o.seconds for o in outcomes):.1f} s"
        outcome = f"passed {len(outcomes)}/{len(outcomes)}"
    return [name, measured, time_taken, outcome, f"{statistics.median(routes) * 1000:.0f} ms"]


if __name__ == "__main__":
    main()
