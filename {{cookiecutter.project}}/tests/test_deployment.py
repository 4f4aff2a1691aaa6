"""Build, serve and smoke-test a bento with real parts: MLflow registry, BentoML store, HTTP server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid

import numpy as np
import psutil
import pytest
import yaml

from {{ cookiecutter.package }} import auth_off, registry
from {{ cookiecutter.package }}.deploy import smoke
from {{ cookiecutter.package }}.deploy.bento import (
    BASE_IMAGE_FILE,
    build,
    docker_options,
    export_bento,
    import_bento,
    pinned_by_digest,
    runtime_requirements,
)
from {{ cookiecutter.package }}.deploy.payloads import sample_rows
from {{ cookiecutter.package }}.deploy.server import (
    LAUNCH_VARIABLE,
    Server,
    free_port,
    serve,
    serve_command,
    server_environment,
)
from {{ cookiecutter.package }}.errors import DeploymentError
from {{ cookiecutter.package }}.settings import Settings

from .shared_bento import Built


def bento_dir(built: Built):
    name, version = built.bento.split(":")
    return built.settings.bentoml_home / "bentos" / name / version


def test_build_packs_model_source_and_pinned_packages(built: Built):
    info = yaml.safe_load((bento_dir(built) / "bento.yaml").read_text())
    assert info["labels"]["model_version"] == str(built.version)
    assert info["args"]["serving"]["max_batch_rows"] == built.settings.params.serving.max_batch_rows
    model_tag = info["args"]["model_tag"]
    assert [model["tag"] for model in info["services"][0]["models"]] == [model_tag]
    package = "{{ cookiecutter.package }}"
    assert (bento_dir(built) / "src" / package / "serving" / "service.py").is_file()
    requirements = (bento_dir(built) / "env" / "python" / "requirements.txt").read_text().split()
    for pinned in runtime_requirements():
        assert pinned in requirements
    name, version = model_tag.split(":")
    stored = built.settings.bentoml_home / "models" / name / version / "model.yaml"
    labels = yaml.safe_load(stored.read_text())["labels"]
    assert labels["registered_version"] == str(built.version)


def test_building_an_unknown_version_fails_naming_it(built: Built):
    with pytest.raises(DeploymentError, match=r"models:/\w+/999"):
        build(built.settings, registry.Registry(built.settings), 999)


def test_serve_runs_this_bentoml_in_the_project_home_with_the_local_token(built: Built):
    no_tokens = {"service_tokens": None, "service_tokens_file": None}
    settings = built.settings.model_copy(
        update={"env": built.settings.env.model_copy(update=no_tokens)}
    )
    command = serve_command(built.bento, "0.0.0.0", 3000)
    env = server_environment(settings)
    assert command[-6:] == ["serve", built.bento, "--host", "0.0.0.0", "--port", "3000"]
    assert env["BENTOML_HOME"] == str(settings.bentoml_home)
    assert env["SERVICE_API_TOKENS"] == settings.api_token()
    assert len(settings.api_token()) >= 32


def test_servers_accept_the_tokens_of_the_environment_they_were_configured_with(built: Built):
    """A token file wins over this machine's token; listed tokens win over both, as in the service."""

    def env_with(**tokens: str | None) -> dict[str, str]:
        given = built.settings.env.model_copy(update=tokens)
        return server_environment(built.settings.model_copy(update={"env": given}))

    from_file = env_with(service_tokens=None, service_tokens_file="/run/secrets/tokens")
    assert from_file["SERVICE_API_TOKENS_FILE"] == "/run/secrets/tokens"
    assert not from_file.get("SERVICE_API_TOKENS")
    listed = env_with(service_tokens="a" * 32, service_tokens_file="/run/secrets/tokens")
    assert listed["SERVICE_API_TOKENS"] == "a" * 32


@pytest.mark.integration
def test_smoke_passes_against_the_served_version(built: Built, server: Server):
    models = registry.Registry(built.settings)
    report = smoke.run(
        built.settings, models, server.url, built.version, grpc_address=server.grpc_address
    )
    assert report["passed"], smoke.markdown(report)
    assert {check["name"] for check in report["checks"]} >= {
        "ready",
        "metadata_version",
        "rejects_missing_feature",
        "rejects_wrong_type",
        "predict_matches_registry",
        "predict_batch_matches_registry",
        "predict_columns_matches_registry",
        "predict_arrow_matches_registry",
        "grpc_health",
        "grpc_predict_matches_registry",
        "responses_carry_version",
    }
    assert "### Smoke test: passed" in smoke.markdown(report)


def test_smoke_always_checks_that_a_request_without_a_token_is_refused():
    names = [check.name for check in smoke.checks()]
    assert names[:3] == ["ready", "refuses_without_token", "metadata_version"]
    assert names[-1] == "responses_carry_version"  # it reads what the prediction checks saw


def test_auth_off_is_refused_on_ci_and_in_containers_unless_overridden(tmp_path):
    marker = tmp_path / ".dockerenv"
    laptop: tuple = ()
    assert auth_off.refusal(False, {}, laptop) is None
    assert auth_off.refusal(False, {"CI": "false"}, laptop) is None
    assert auth_off.refusal(False, {"CI": "false"}, [marker]) is None  # no marker file yet
    marker.touch()
    refused = auth_off.refusal(False, {}, [marker])
    assert refused and f"{marker} exists (a container)" in refused
    assert "serving.require_auth is false" in refused and auth_off.OVERRIDE_VARIABLE in refused
    assert "CI is set" in (auth_off.refusal(False, {"CI": "1"}, laptop) or "")
    assert (
        auth_off.refusal(False, {"CI": "true", auth_off.OVERRIDE_VARIABLE: "1"}, [marker]) is None
    )
    assert auth_off.refusal(True, {"CI": "true"}, [marker]) is None


@pytest.fixture
def auth_off_bento(built: Built) -> tuple[Settings, str]:
    """A bento of `built.version` built with serving.require_auth: false."""
    params = built.settings.params
    serving = params.serving.model_copy(update={"require_auth": False})
    settings = built.settings.model_copy(
        update={"params": params.model_copy(update={"serving": serving})}
    )
    return settings, build(settings, registry.Registry(settings), built.version)


@pytest.mark.integration
def test_smoke_fails_against_a_server_without_authentication(
    built: Built, auth_off_bento, monkeypatch
):
    """The open server starts only with the override, and even then the smoke test fails it: a
    request without a token must be refused by whatever staging or production runs."""
    settings, bento = auth_off_bento
    monkeypatch.setenv("CI", "true")  # as on GitHub Actions (this machine may be a container too)
    monkeypatch.delenv(auth_off.OVERRIDE_VARIABLE, raising=False)
    with pytest.raises(DeploymentError, match=auth_off.OVERRIDE_VARIABLE):
        serve(settings, bento)
    monkeypatch.setenv(auth_off.OVERRIDE_VARIABLE, "1")  # this test needs the open server
    with serve(settings, bento) as running:
        report = smoke.run(settings, registry.Registry(settings), running.url, built.version)
    checks = {check["name"]: check for check in report["checks"]}
    assert not report["passed"] and not checks["refuses_without_token"]["passed"], checks
    assert "without authentication" in checks["refuses_without_token"]["detail"]
    assert all(check["passed"] for name, check in checks.items() if name != "refuses_without_token")


@pytest.mark.integration
def test_the_load_test_runs_last_and_only_when_every_other_check_passed(
    built: Built, server: Server
):
    load = smoke.LoadTest(seconds=1, concurrency=2)
    models = registry.Registry(built.settings)
    report = smoke.run(built.settings, models, server.url, built.version, load)
    assert report["passed"], smoke.markdown(report)
    assert report["checks"][-1]["name"] == "load_test"
    assert report["load"]["requests"] > 0
    failed = smoke.run(built.settings, models, server.url, built.other_version, load)
    assert not failed["passed"] and "load" not in failed
    assert "load_test" not in {check["name"] for check in failed["checks"]}


@pytest.mark.integration
def test_smoke_fails_when_the_server_runs_another_version(built: Built, server: Server):
    rows = sample_rows(built.settings)
    models = registry.Registry(built.settings)
    served = models.load_model(built.version).predict(rows)
    other = models.load_model(built.other_version).predict(rows)
    assert not np.allclose(served, other), "the two versions must predict differently for this test"

    report = smoke.run(
        built.settings, registry.Registry(built.settings), server.url, built.other_version
    )
    failed = {check["name"] for check in report["checks"] if not check["passed"]}
    assert not report["passed"]
    assert {
        "predict_matches_registry",
        "predict_batch_matches_registry",
        "predict_columns_matches_registry",
        "predict_arrow_matches_registry",
    } <= failed
    assert {"metadata_version", "responses_carry_version"} <= failed
    assert "**FAILED**" in smoke.markdown(report)


@pytest.mark.integration
def test_a_bento_that_cannot_start_raises_with_its_log(built: Built):
    started = time.monotonic()
    with pytest.raises(DeploymentError) as error:
        serve(built.settings, "no_such_bento:v0")
    assert "exited with code" in str(error.value)
    assert "no_such_bento" in str(error.value) and "not found" in str(error.value)
    assert time.monotonic() - started < 60


def ended(pid: int, within: float = 5) -> bool:
    """Whether process `pid` is gone (or a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_stop_ends_the_server_and_what_it_started(tmp_path):
    # A stand-in for `bentoml serve` and a worker that outlives it: a shell with a child process.
    process = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
    child = int(process.stdout.readline())
    server = Server("stand-in", "http://unused", process, tmp_path / "log", 0.0)
    server.stop(timeout=5)
    process.stdout.close()
    assert process.returncode is not None
    assert ended(child), "the server's child process survived stop()"


def test_stop_ends_what_the_server_started_even_after_the_server_died(tmp_path):
    """A worker outlives a killed server (or is spawned while it shuts down) as nobody's child:
    `stop` finds it by the launch id in its environment."""
    launch_id = uuid.uuid4().hex
    orphaning = (
        "sleep 60 >/dev/null 2>&1 & echo $!"  # the shell exits at once: its child is orphaned
    )
    env = {**os.environ, LAUNCH_VARIABLE: launch_id}
    process = subprocess.Popen(["sh", "-c", orphaning], stdout=subprocess.PIPE, env=env)
    orphan = int(process.stdout.readline())
    process.stdout.close()
    process.wait()
    assert psutil.Process(orphan).ppid() != process.pid
    server = Server("stand-in", "http://unused", process, tmp_path / "log", 0.0, launch_id)
    server.stop(timeout=5)
    assert ended(orphan)


@pytest.mark.integration
def test_stop_ends_the_workers_of_a_server_that_was_killed(built: Built):
    """A server killed outright (as when it ignores SIGTERM past the timeout) leaves its workers to
    nobody; `stop` still ends them."""
    with serve(built.settings, built.bento) as server:
        workers = [worker.pid for worker in psutil.Process(server.process.pid).children()]
        assert workers, "a ready server runs at least one worker"
        server.process.kill()
        server.process.wait()
    assert [pid for pid in workers if not ended(pid)] == []


@pytest.mark.integration
def test_a_server_not_ready_in_time_raises(built: Built):
    serving = built.settings.params.serving.model_copy(update={"ready_timeout_seconds": 0.5})
    params = built.settings.params.model_copy(update={"serving": serving})
    impatient = built.settings.model_copy(update={"params": params})
    with pytest.raises(DeploymentError, match="not ready after"):
        serve(impatient, built.bento)


def test_a_taken_port_is_refused_before_starting(built: Built):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"127.0.0.1:{port}"):
            serve(built.settings, built.bento, port=port)


def test_a_handed_out_port_stays_ours_until_the_process_ends():
    """Parallel test workers pick ports independently: a port handed out here must look taken to
    another process, while a server of ours, binding with SO_REUSEADDR as BentoML does, still gets it."""
    port = free_port()
    bind_elsewhere = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
    other = subprocess.run([sys.executable, "-c", bind_elsewhere], capture_output=True, text=True)
    assert other.returncode != 0 and "Address already in use" in other.stderr
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
    assert free_port() != port


def test_an_exported_bento_imports_into_another_store(built: Built, tmp_path):
    """CD builds in one job and smoke-tests in another: the archive carries the bento and its model."""
    archive = export_bento(built.settings, built.bento, tmp_path / "bento.bento")
    elsewhere = built.settings.model_copy(
        update={
            "params_file": tmp_path / "elsewhere" / "params.yaml",
            "env": built.settings.env.model_copy(update={"bentoml_home": None}),
        }
    )
    assert import_bento(elsewhere, archive) == (built.bento, built.version)
    assert import_bento(elsewhere, archive) == (built.bento, built.version)  # idempotent
    models = tmp_path / "elsewhere" / ".bentoml" / "models"
    assert any(models.rglob("MLmodel")), "the model travels inside the archive"
    with tarfile.open(archive) as bundle:
        assert "./env/docker/Dockerfile" in bundle.getnames()  # the image's build context


def test_docker_base_image_comes_from_the_project_file(settings):
    path = settings.project_dir / BASE_IMAGE_FILE
    path.parent.mkdir(parents=True)
    path.write_text("# comment\nFROM python:3.11-slim@sha256:abc\n")
    assert docker_options(settings) == {"base_image": "python:3.11-slim@sha256:abc"}
    path.write_text("FROM a\nFROM b\n")
    with pytest.raises(DeploymentError, match="exactly one FROM"):
        docker_options(settings)


def test_only_a_base_image_named_by_its_digest_counts_as_pinned():
    """`build` warns about a base named by tag (issue 18, finding 12): a tag can move, a digest not."""
    digest = "sha256:" + "0123456789abcdef" * 4
    assert pinned_by_digest(f"python:3.12-slim@{digest}") and pinned_by_digest(
        f"ghcr.io/org/base@{digest}"
    )
    for image in ("python:3.12-slim", "python:3.12-slim@sha256:abc", f"python@{digest} x"):
        assert not pinned_by_digest(image), image


class StandInRegistry:
    """A container registry's manifest endpoint and token realm on 127.0.0.1 (Docker Registry HTTP API
    v2, as Docker Hub answers it): a stand-in, since no real registry can be reached here."""

    DIGEST = "sha256:" + "5e" * 32

    def __init__(self) -> None:
        import http.server
        import threading

        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the token realm
                body = b'{"token": "pull-token"}' if "scope=repository" in self.path else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:  # the manifest, with its digest, for a bearer of the token
                if self.headers.get("Authorization") != "Bearer pull-token":
                    self.send_response(401)
                    realm = f"http://127.0.0.1:{registry.port}/token"
                    challenge = f'Bearer realm="{realm}",service="test",scope="repository:x:pull"'
                    self.send_header("WWW-Authenticate", challenge)
                elif self.path == "/v2/library/python/manifests/3.12-slim":
                    self.send_response(200)
                    self.send_header("Docker-Content-Digest", registry.DIGEST)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_pin_base_image_writes_the_digest_the_registry_gives_the_tag(settings, capsys):
    """Issue 18, finding 12: the FROM line names its image by digest, asked of the registry with an
    anonymous pull token; asked again, the pin follows the tag's new digest; an unknown tag is exit 2
    with the file untouched."""
    from {{ cookiecutter.package }} import cli
    from {{ cookiecutter.package }}.deploy.base_image import ImageName

    assert ImageName.parse("python:3.12-slim").manifest_url == (
        "https://registry-1.docker.io/v2/library/python/manifests/3.12-slim"
    )
    assert ImageName.parse("ghcr.io/org/base:1@sha256:ab").repository == "org/base"
    registry = StandInRegistry()
    try:
        path = settings.project_dir / BASE_IMAGE_FILE
        path.parent.mkdir(parents=True)
        image = f"127.0.0.1:{registry.port}/library/python:3.12-slim"
        path.write_text(f"# the base\nFROM {image}\n")
        assert cli.main(["pin-base-image"]) == cli.EXIT_OK
        assert path.read_text() == f"# the base\nFROM {image}@{registry.DIGEST}\n"
        assert docker_options(settings)["base_image"] == f"{image}@{registry.DIGEST}"
        assert pinned_by_digest(docker_options(settings)["base_image"])
        registry.DIGEST = "sha256:" + "7f" * 32  # the tag moved: pin again
        assert cli.main(["pin-base-image"]) == cli.EXIT_OK
        assert path.read_text().endswith(f"FROM {image}@{registry.DIGEST}\n")

        before = path.read_text().replace("3.12-slim", "no-such-tag")
        path.write_text(before)
        assert cli.main(["pin-base-image"]) == cli.EXIT_ERROR
        assert "cannot read" in capsys.readouterr().err and path.read_text() == before
    finally:
        registry.close()
