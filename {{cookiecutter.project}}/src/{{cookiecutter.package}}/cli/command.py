"""How a command is declared: its name, its help, its arguments and its handler, side by side.

A handler takes the settings and its own options as keyword arguments (argparse's `dest` names) and
returns its result dict; it never sees an `argparse.Namespace`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..registry import Registry
    from ..settings import Settings

PROG = __package__.split(".")[0]
EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2


def say(message: str) -> None:
    """One line of the command's story, as people read it in a CI log."""
    print(f"{PROG}: {message}", flush=True)


def open_registry(settings: Settings) -> Registry:
    """The command's one Registry. MLflow is imported here, not with the CLI: it takes seconds,
    and the workflows' small commands (`outputs`, `comment`, `check-config`) must not pay for it."""
    from ..registry import Registry

    return Registry(settings)


@dataclass(frozen=True)
class Argument:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def argument(*flags: str, **options: Any) -> Argument:
    """An argument as `argparse.ArgumentParser.add_argument` takes it."""
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[..., dict]  # run(settings, **options) -> the result dict
    arguments: tuple[Argument, ...] = ()
    more_help: str = ""  # said after `help` in the command's own --help

    def add_to(self, subcommands: argparse._SubParsersAction) -> None:
        parser = subcommands.add_parser(
            self.name, help=self.help, description=self.help + self.more_help
        )
        for item in self.arguments:
            parser.add_argument(*item.flags, **item.options)


def optional_int(text: str) -> int | None:
    """An int, or None for an empty string: workflow inputs pass "" when left blank."""
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None


VERSION = argument("--version", type=int, help="registered model version")
FAIL_ON_REJECT = argument(
    "--fail-on-reject", action="store_true", help="exit 1 when the gate rejects"
)
