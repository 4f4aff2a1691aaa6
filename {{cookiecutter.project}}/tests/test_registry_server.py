"""The registry a team runs: `mlflow server --workers 2` on PostgreSQL, behind deploy/mlflow's nginx.

Two CI runs evaluated two candidates against the same champion and promote at the same moment, each
through its own connection to a different worker of the server: the registry's lock lets exactly one
move the aliases; the other is refused by the compare-and-set. The token check of deploy/mlflow runs
in a real nginx in front of the same server (the Kubernetes pod itself needs a cluster: not here).
Needs PostgreSQL's binaries (initdb, pg_ctl) and nginx: skipped without PostgreSQL on a laptop,
failed under CI, where they must be installed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package }}.errors import RegistryError
from {{ cookiecutter.package }}.registry import CHAMPION, PREVIOUS, Registry
from {{ cookiecutter.package }}.registry_lock import lock_name
from {{ cookiecutter.package }}.rollout.nginx import find_nginx
from {{ cookiecutter.package }}.settings import load_settings

from . import postgres
from .conftest import PROJECT_DIR, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> str:
    if postgres.find_bin() is None and not os.environ.get("CI"):
        pytest.skip(f"PostgreSQL's initdb and pg_ctl not found ({postgres.INSTALL_HINT})")
    folder = tmp_path_factory.mktemp("tracking-server")
    with (
        postgres.cluster() as database,
        postgres.mlflow_server(database, str(folder / "artifacts"), folder, workers=2) as url,
    ):
        yield url


@pytest.fixture
def on_server(project, tracking_server, monkeypatch) -> str:
    """The scratch project pointed at the server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    return tracking_server


def three_versions(settings) -> None:
    """Versions 1 to 3 of the project's model: metadata only, as promotion reads nothing else."""
    client = Registry(settings).client
    experiment = client.get_experiment_by_name(settings.params.registry.experiment)
    run = client.create_run(experiment.experiment_id)
    client.create_registered_model(settings.params.registry.model_name)
    for _ in range(3):
        client.create_model_version(
            settings.params.registry.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id
        )


def test_two_promotions_at_the_same_moment_one_wins_the_other_is_refused(project, on_server):
    settings = load_settings(project / "params.yaml")
    three_versions(settings)
    Registry(settings).promote(1, expected_champion=None, why="first")
    start = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def promote(version: int) -> None:
        registry = Registry(settings)  # one per run, as each CI job makes its own
        registry.configure()
        start.wait()
        try:
            outcomes[version] = registry.promote(
                version, expected_champion=1, why="evaluated over v1"
            )
        except Exception as error:  # anything but a RegistryError fails the assertions below
            outcomes[version] = error

    threads = [threading.Thread(target=promote, args=(version,)) for version in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    won = [version for version, outcome in outcomes.items() if isinstance(outcome, dict)]
    refused = [outcome for outcome in outcomes.values() if isinstance(outcome, RegistryError)]
    assert len(won) == 1 and len(refused) == 1, outcomes
    assert "champion moved since the evaluation (expected v1, " in str(refused[0])
    assert "evaluate again before promoting" in str(refused[0])
    registry = Registry(settings)
    assert registry.alias_version(CHAMPION) == won[0]
    assert registry.alias_version(PREVIOUS) == 1
    history = registry.history()
    assert [entry["action"] for entry in history] == ["promote", "move", "promote"]
    assert [entry["sequence"] for entry in history] == [1, 2, 3]
    assert history[-1]["after"] == won[0]
    client = MlflowClient(tracking_uri=on_server, registry_uri=on_server)
    assert not [
        model
        for model in client.search_registered_models()
        if model.name == lock_name(registry.model_name)
    ]


WRITE_TOKEN, READ_TOKEN = "0123456789abcdef" * 4, "fedcba9876543210" * 4  # `openssl rand -hex 32`


def nginx_conf(tracking_server: str, port: int, runtime: Path) -> str:
    """deploy/mlflow's server block, filled in as the nginx image does, in a config for this machine."""
    server = (PROJECT_DIR / "deploy/mlflow/nginx.conf.template").read_text()
    server = server.replace("${MLFLOW_TRACKING_TOKEN}", WRITE_TOKEN)
    server = server.replace("${MLFLOW_READ_TOKEN}", READ_TOKEN)
    server = server.replace("127.0.0.1:5000", tracking_server.removeprefix("http://"))
    server = server.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would run as nobody
    temp = " ".join(f"{kind}_temp_path {runtime}/{kind};" for kind in ("client_body", "proxy"))
    head = (
        f"daemon off; worker_processes 1; pid {runtime}/nginx.pid; error_log {runtime}/error.log;"
    )
    return head + user + " events { } http { access_log off; " + temp + server + " }"


@pytest.fixture
def behind_nginx(tracking_server, tmp_path) -> str:
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_conf(tracking_server, port, tmp_path))
    nginx = subprocess.Popen(
        [find_nginx(), "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(50):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                assert nginx.poll() is None, (tmp_path / "error.log").read_text()
                threading.Event().wait(0.1)
        yield url
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def test_the_server_lets_the_write_token_write_the_read_token_read_and_nobody_else_in(
    behind_nginx, monkeypatch, tmp_path
):
    url = behind_nginx
    assert httpx.get(f"{url}/health").status_code == 200  # the probes need no token
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, headers={"Authorization": "Bearer wrong"}).status_code == 401
    monkeypatch.setenv(
        "MLFLOW_TRACKING_TOKEN", WRITE_TOKEN
    )  # what the workflows set: MLflow sends it
    writer = MlflowClient(url)
    run = writer.create_run(writer.create_experiment("behind-nginx"))
    writer.log_text(run.info.run_id, "through the proxy", "note.txt")  # artifacts are proxied too

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", READ_TOKEN)  # a pull request's: reads, searches
    reader = MlflowClient(url)
    assert [found.info.run_id for found in reader.search_runs([run.info.experiment_id])] == [
        run.info.run_id
    ]
    note = reader.download_artifacts(run.info.run_id, "note.txt", str(tmp_path))
    assert Path(note).read_text() == "through the proxy"
    with pytest.raises(MlflowException, match="403"):
        reader.set_tag(run.info.run_id, "written", "by a pull request")
    with pytest.raises(requests.HTTPError, match="403"):  # the artifact upload, through `requests`
        reader.log_text(run.info.run_id, "overwritten", "note.txt")
