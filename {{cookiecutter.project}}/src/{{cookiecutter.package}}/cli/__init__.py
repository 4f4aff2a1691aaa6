"""The command line: one subcommand per stage, and `pipeline` to run them in order.

Every command prints a short summary, writes `reports/<command>.json` (and `.md` for people), and exits
0 on success, 1 when a check it ran failed (invalid data, failed smoke test, a gate rejection under
`--fail-on-reject`), 2 on bad input or configuration. CI workflows call these commands and nothing else.

Each module here declares its commands (`COMMANDS`) with their arguments beside their handlers; a
handler turns its options into typed calls. Stage modules are imported inside the handlers, so a
command loads only the stack it needs (MLflow, great-expectations and BentoML each take seconds).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import CheckFailed, PipelineError
from ..settings import load_settings
{%- if cookiecutter.feature_store == "feast" %}
from . import deploy, features, monitor, stages, workflows
{%- else %}
from . import deploy, monitor, stages, workflows
{%- endif %}
from .command import EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_OK, PROG, Command

COMMANDS: dict[str, Command] = {
    command.name: command
{%- if cookiecutter.feature_store == "feast" %}
    for group in (stages, features, deploy, monitor, workflows)
{%- else %}
    for group in (stages, deploy, monitor, workflows)
{%- endif %}
    for command in group.COMMANDS
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    root.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    subcommands = root.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_to(subcommands)
    return root


def main(argv: list[str] | None = None) -> int:
    options = vars(parser().parse_args(argv))
    command = COMMANDS[options.pop("command")]
    try:
        settings = load_settings(options.pop("params"))
        command.run(settings, **options)
    except CheckFailed as failure:
        print(f"{PROG}: FAILED: {failure}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except (PipelineError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


__all__ = ["EXIT_CHECK_FAILED", "EXIT_ERROR", "EXIT_OK", "main", "parser"]
