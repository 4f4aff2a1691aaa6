"""Serving the champion: build, import, serve and smoke-test its bento, roll a candidate out beside it,
and the traffic and token that local servers need."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .. import auth_off, pipeline, reports
from ..errors import CheckFailed, SettingsError
from ..settings import Settings

if TYPE_CHECKING:
    from ..registry import Registry
    from ..rollout import StepResult

from .command import PROG, VERSION, Command, argument, open_registry, say


def refuse_open_serving(settings: Settings) -> None:
    """Authentication off only on a developer's own machine: never under CI or in a container,
    unless overridden (see `auth_off`)."""
    problem = auth_off.refusal(settings.params.serving.require_auth, os.environ)
    if problem:
        raise SettingsError(problem)


def build(settings: Settings, version: int | None, export: str | None) -> dict:
    from ..github import actions

    refuse_open_serving(settings)
    registry = open_registry(settings)
    result = pipeline.build(
        settings, registry, registry.version_or_champion(version), say, export=export
    )
    if "unpinned_base_image" in result:
        message = (
            f"the image's base {result['unpinned_base_image']} is named by tag only, which can name "
            f"another image tomorrow; pin it by digest: `{PROG} pin-base-image`, then commit the Dockerfile"
        )
        print(actions.warning("Base image not pinned", message, settings.env.github), flush=True)
    return result


def import_bento(settings: Settings, archive: str) -> dict:
    """Put a bento archive from `build --export` in the local store, as if `build` had run here."""
    from ..deploy import bento

    tag, version = bento.import_bento(settings, archive)
    result = {"bento": tag, "model_version": version, "archive": str(archive)}
    reports.write_report(settings.reports_dir, "build", result)
    say(f"imported bento {tag} with model v{version}")
    return result


def serve(settings: Settings, port: int | None) -> NoReturn:
    from ..deploy import server

    refuse_open_serving(settings)
    built = reports.read_report(settings.reports_dir, "build")
    serving = settings.params.serving
    command = server.serve_command(built["bento"], serving.host, port or serving.port)
    say(f"serving {built['bento']} on http://{serving.host}:{port or serving.port}")
    if serving.require_auth:
        say(
            "clients send 'Authorization: Bearer <token>': $SERVICE_API_TOKEN or .runtime/api-token"
        )
    # The server takes over this process, as a container would: nothing after this line runs.
    os.execvpe(command[0], command, server.server_environment(settings))


def smoke(
    settings: Settings,
    url: str | None,
    version: int | None,
    wait_seconds: float,
    load_seconds: float,
    load_concurrency: int,
) -> dict:
    """Smoke-test a running server (--url), or start the last built bento, test it and stop it."""
    from ..deploy.smoke import LoadTest

    # A running server with a given version needs no build report (e.g. a production URL).
    built = {} if url and version else reports.read_report(settings.reports_dir, "build")
    return pipeline.smoke(
        settings,
        open_registry(settings),
        version or built["model_version"],
        say,
        bento=built.get("bento"),
        url=url,
        wait_seconds=wait_seconds,
        # With --load-seconds, a bounded load test follows the checks (only if they passed).
        load=LoadTest(load_seconds, load_concurrency) if load_seconds else None,
    )


def rollout(
    settings: Settings,
    version: int | None,
    target: str,
    overlay: str | None,
    image: str | None,
    champion_slot: str | None,
    strategy: str | None,
    traffic: int,
    promote: bool,
) -> dict:
    """Roll the candidate (challenger, or --version) out beside the champion, step by step.

    `--target local` (default) rehearses the plan on this machine: both models on local servers,
    nginx in front, steady traffic from a second process. `--target kubernetes` runs it on a cluster:
    the candidate's `--image` goes into the free slot of `--overlay`, and the route's weights move.
    With --promote (and --version: the version the gate approved, checked before any traffic moves),
    a canary or blue-green that passed makes it the champion (compare-and-set); a breach sends
    traffic back and changes nothing in the registry.
    """
    params = settings.params.rollout
    if strategy:
        params = params.model_copy(update={"strategy": strategy})
    registry = open_registry(settings)
    if promote:
        if version is None:
            raise SettingsError("rollout --promote needs --version: the version the gate approved")
        pipeline.approved_version(
            registry, reports.read_report(settings.reports_dir, "evaluate"), version
        )
    champion, candidate = registry.rollout_pair(version)
    say(f"rollout ({params.strategy}) of v{candidate} beside v{champion} on {target}")
    if target == "kubernetes":
        from ..rollout import kubernetes

        if not image or not overlay:
            raise SettingsError("--target kubernetes needs --image and --overlay")
        result = kubernetes.roll_out(
            params,
            champion,
            candidate,
            overlay=overlay,
            image=image,
            prometheus_url=settings.env.prometheus_url,
            champion_slot=champion_slot,
            on_step=_say_step,
        )
    else:
        from ..rollout import local

        result = local.roll_out(
            settings,
            registry,
            params,
            champion,
            candidate,
            traffic_threads=traffic,
            on_step=_say_step,
        )
    return _conclude(settings, registry, result, promote, (champion, candidate))


def _conclude(
    settings: Settings, registry: Registry, result: dict, promote: bool, pair: tuple[int, int]
) -> dict:
    """Promote a passed canary or blue-green when asked (compare-and-set), and report, with the
    A/B test of the same two versions when `ab-test` wrote one (reports/ab_test.json)."""
    from .. import rollout as rollouts
    from ..monitoring import ab_test

    champion, candidate = pair
    found = reports.load_reports(settings.reports_dir, (ab_test.REPORT,))[ab_test.REPORT]
    if compared := ab_test.for_versions(found, pair):  # `ab-test` ran on these two versions
        result["ab_test"] = compared
    strategy = result["strategy"]
    if result["passed"] and promote and strategy != "shadow":
        why = f"{strategy} rollout passed"
        result["promotion"] = registry.promote(candidate, champion, why=why)
        reports.write_report(settings.reports_dir, "promote", result["promotion"])
    reports.write_report(settings.reports_dir, "rollout", result, rollouts.markdown(result))
    if not result["passed"]:
        raise CheckFailed(
            f"rollout of v{candidate} rolled back: {result['steps'][-1]['breaches'][0]}"
        )
    say(f"rollout of v{candidate} passed" + (" and promoted" if "promotion" in result else ""))
    return result


def _say_step(done: StepResult) -> None:
    say(f"{done.step.name}: " + ("; ".join(done.breaches) or "pass"))


def traffic(settings: Settings, url: str, seconds: float, concurrency: int, record: str) -> dict:
    """Steady client traffic to a server or proxy, every answer recorded (for local rollouts)."""
    from .. import loadtest
    from ..deploy import payloads

    records = payloads.as_records(payloads.sample_rows(settings, rows=200))
    sent = loadtest.steady_traffic(
        url, records, seconds, Path(record), concurrency, headers=settings.client_headers()
    )
    return {"url": url, "requests": sent, "record": str(Path(record))}


def api_token(settings: Settings) -> dict:
    """Print the token this machine's clients send, for a server started by hand or in a container:
    `SERVICE_API_TOKENS="$(<cli> api-token)" docker run --env SERVICE_API_TOKENS ...`, or
    `curl -H "Authorization: Bearer $(<cli> api-token)" ...`.
    """
    print(settings.api_token())
    return {}


def pin_base_image(settings: Settings) -> dict:
    """Pin the Dockerfile's base image to the digest its registry gives the tag today."""
    from ..deploy import base_image, bento

    result = base_image.pin(settings.project_dir / bento.BASE_IMAGE_FILE)
    say(f"{bento.BASE_IMAGE_FILE}: FROM {result['base_image']} (was {result['before']})")
    return result


COMMANDS = (
    Command(
        "build",
        "build the BentoML bento for the champion (or --version)",
        build,
        (VERSION, argument("--export", help="also write the bento archive to this file")),
    ),
    Command(
        "serve",
        "serve the last built bento in the foreground",
        serve,
        (argument("--port", type=int, help="default: serving.port in params"),),
    ),
    Command(
        "smoke",
        "smoke-test a server (--url) or the last built bento",
        smoke,
        (
            VERSION,
            argument("--url", help="a running server; default: start the built bento"),
            argument(
                "--wait-seconds",
                type=float,
                default=0,
                help="with --url: first wait up to this long for the server to serve the version",
            ),
            argument(
                "--load-seconds",
                type=float,
                default=0,
                help="then load-test /predict for this long (default 0: no load test)",
            ),
            argument("--load-concurrency", type=int, default=4, help="client threads"),
        ),
    ),
    Command(
        "rollout",
        "shadow, canary or blue-green rollout of the candidate, with rollback",
        rollout,
        (
            VERSION,
            argument(
                "--target",
                choices=["local", "kubernetes"],
                default="local",
                help="local: both models behind nginx here; kubernetes: the cluster of $KUBECONFIG",
            ),
            argument("--overlay", help="kubernetes: e.g. deploy/k8s/overlays/production"),
            argument("--image", help="kubernetes: the candidate's container image"),
            argument(
                "--champion-slot",
                choices=["blue", "green"],
                help="kubernetes: default, the slot the live route serves from",
            ),
            argument(
                "--strategy",
                choices=["canary", "shadow", "blue-green"],
                help="default: rollout.strategy in params",
            ),
            argument(
                "--traffic",
                type=int,
                default=4,
                help="client threads sending traffic through the proxy (0: bring your own)",
            ),
            argument(
                "--promote", action="store_true", help="promote the candidate if the rollout passed"
            ),
        ),
    ),
    Command(
        "traffic",
        "send steady /predict traffic to a URL and record every answer",
        traffic,
        (
            argument("--url", required=True, help="server or proxy to send to"),
            argument("--seconds", type=float, required=True, help="how long at most"),
            argument("--concurrency", type=int, default=4, help="client threads"),
            argument("--record", required=True, help="JSON lines file of every answer"),
        ),
    ),
    Command(
        "import-bento",
        "put a bento archive from `build --export` in the store",
        import_bento,
        (argument("archive", help="a file written by `build --export`"),),
    ),
    Command(
        "pin-base-image",
        "pin deploy/docker/Dockerfile's base image by the digest its registry gives the tag",
        pin_base_image,
    ),
    Command(
        "api-token",
        "print the API token clients send ($SERVICE_API_TOKEN or local)",
        api_token,
    ),
)
