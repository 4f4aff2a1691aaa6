"""A throwaway PostgreSQL cluster and a real `mlflow server` on it, for tests: the registry a team runs.

Standard library only, so the template's act scenarios start the same server from the baked project
(tests/act_runner.py). PostgreSQL refuses to run as root: as root (CI, containers) the cluster is
made and started as the `postgres` user the Debian package creates. `fsync=off` because the data
is thrown away; the cluster starts in about a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from glob import glob
from pathlib import Path

INSTALL_HINT = "Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql"


def find_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else where Debian installs them."""
    found = shutil.which("initdb") or next(
        iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(command: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (PostgreSQL refuses root), else as ourselves."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def cluster(timeout: float = 30) -> Iterator[str]:
    """A fresh cluster on 127.0.0.1 and a free port; yields its SQLAlchemy URI (psycopg2 driver)."""
    bin_dir = find_bin()
    if bin_dir is None:
        raise FileNotFoundError(f"PostgreSQL's initdb not found ({INSTALL_HINT})")
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # not under pytest's root-only tmp_path
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    run = {"check": True, "capture_output": True, "timeout": timeout}
    subprocess.run(
        _as_owner(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        **run,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
    subprocess.run(_as_owner([*pg_ctl, "-o", options, "-w", "start"]), **run)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True, timeout=timeout
        )
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts: str,
    log_folder: Path,
    workers: int = 2,
    python: str = sys.executable,
    timeout: float = 90,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """`mlflow server` on `backend_store_uri`, proxying `artifacts`; yields its URL once /health answers.
    `env`: more environment for the server (AWS_* settings of an s3:// `artifacts`).

    The job runner (GenAI scorers: seven processes, seconds of CPU) is off, as in deploy/mlflow.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_folder.mkdir(parents=True, exist_ok=True)
    log_path = log_folder / "mlflow-server.log"
    command = [python, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri]
    command += ["--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(port)]
    environment = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **(env or {}),
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # its workers in one process group, stopped together
        )
        try:
            wait_healthy(url, process, log_path, timeout)
            yield url
        finally:
            stop_group(process)


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    """Until `url`/health answers 200; RuntimeError with the log's end if the server exits or is late."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its workers too), SIGKILL what is left after 15 s; a group
    already gone (the server died) is no error."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
