"""The demo story: bake the template with its defaults and walk the generated project's whole loop.

    make demo                      # bakes into .demo/, runs `make install` there, tells the story
    python tests/demo.py --venv V  # reuse an environment that already holds the stack (the tests do)

Each step runs the generated project's own CLI, exactly as a user or a workflow would, and checks the
outcome from the JSON reports it writes; the demo stops with an error at the first surprise.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from helpers import TEMPLATE, BakedProject, bake, find_python, install_editable

# A weak baseline first, so that a better model can visibly win the gate later.
BASELINE, BETTER, BEST = {"C": 0.001}, {"C": 0.01}, {"C": 1.0}


class StoryError(AssertionError):
    """A step did not end the way the story says it should."""


class Project(BakedProject):
    """The baked project the story runs, its CLI's output shown as it goes."""

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        """The CLI, expected to exit with `code`. Shown: its output without MLflow's chatter; when
        the exit code is a surprise, all of it. Both streams, in the order they were written."""
        done = super().cli(*args, merge_stderr=True)
        if done.returncode == code:
            print(indent(own_lines(done.stdout)), flush=True)
        else:
            print(indent(done.stdout), flush=True)
            raise StoryError(f"{list(args)} exited {done.returncode}, expected {code}")
        return done

    def aliases(self) -> dict[str, int]:
        """Where the aliases point now (from `history`'s report; its table is not shown)."""
        super().cli("history", check=True)
        return self.report("history")["aliases"]

    def set_params(self, **sections: dict) -> None:
        path = self.path / "params.yaml"
        params = yaml.safe_load(path.read_text())
        for section, values in sections.items():
            params[section] = {**params[section], **values}
        path.write_text(yaml.safe_dump(params, sort_keys=False))


# What MLflow writes whatever happens: its log records, and the registry's print()s.
LIBRARY_CHATTER = re.compile(
    r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) mlflow"
    r"|^(Successfully registered model|Registered model '.*' already exists|Created version)"
)


def own_lines(output: str) -> str:
    """The output without MLflow's chatter: the CLI's results and the reasons for them, in order."""
    return "\n".join(line for line in output.splitlines() if not LIBRARY_CHATTER.match(line))


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines() if line.strip())


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StoryError(message)


def install(project: BakedProject, venv: Path | None) -> Path:
    """`make install` in the project, or put the project into an existing environment."""
    if venv is None:
        python = find_python(project.answers["python_version"])
        subprocess.run(["make", "install", f"PYTHON={python}"], cwd=project.path, check=True)
        return project.path / ".venv"
    install_editable(project, venv)
    return venv


# The story. Each step returns a one-line outcome for the summary table.


def step_first_pipeline(p: Project) -> str:
    p.set_params(model={"hyperparameters": {**BASELINE, "max_iter": 1000}})
    p.run("pipeline")
    run = p.report("pipeline")
    check(run["decision"] == "promote" and run["deployed"], f"v1 was not deployed: {run}")
    check(p.report("smoke")["passed"], "the smoke test of v1 did not pass")
    check(p.aliases().get("champion") == 1, "v1 is not the champion")
    return "v1 trained, no champion yet: promoted, bento built and served, smoke test passed"


def step_same_params(p: Project) -> str:
    p.run("pipeline")
    evaluated = p.report("evaluate")
    check(evaluated["decision"] == "reject", f"v2 should be rejected: {evaluated['reasons']}")
    check(p.aliases()["champion"] == 1, "the champion moved although the gate rejected")
    return f"v2 rejected: {evaluated['reasons'][0]}"


def step_better_params(p: Project) -> str:
    p.set_params(model={"hyperparameters": {**BETTER, "max_iter": 1000}})
    p.run("pipeline")
    check(p.report("pipeline")["deployed"], "v3 was not deployed")
    aliases = p.aliases()
    check((aliases["champion"], aliases["previous"]) == (3, 1), f"unexpected aliases {aliases}")
    return f"v3 promoted: {p.report('evaluate')['reasons'][0]}; previous = v1"


def step_failure_after_promotion(p: Project) -> str:
    """v4 wins the gate, but its server cannot become ready within the readiness budget."""
    timeout = yaml.safe_load((p.path / "params.yaml").read_text())["serving"]["ready_timeout_seconds"]
    p.set_params(
        model={"hyperparameters": {**BEST, "max_iter": 1000}},
        serving={"ready_timeout_seconds": 1},
    )
    try:
        p.run("pipeline", code=1)
    finally:
        p.set_params(serving={"ready_timeout_seconds": timeout})
    run = p.report("pipeline")
    check(run["rolled_back"] and run["champion"] == 3, f"v4 was not rolled back: {run}")
    aliases = p.aliases()
    check((aliases["champion"], aliases["previous"]) == (3, 1), f"unexpected aliases {aliases}")
    return "v4 promoted, its server never became ready: rolled back automatically, champion v3"


def step_corrupted_data(p: Project) -> str:
    params = yaml.safe_load((p.path / "params.yaml").read_text())
    source = p.path / params["data"]["source"]
    broken = p.path / "data" / "corrupted.csv"
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows[:10]:
        row[1] = ""  # nulls in the second column
    for row in rows[10:15]:
        row[2] = "-1e9"  # values far outside the range of the third
    keep = [i for i in range(len(header)) if i != 0]  # and the first column is gone
    broken.write_text("\n".join(",".join(r[i] for i in keep) for r in [header, *rows]) + "\n")
    history_before = p.aliases(), len(p.report("history")["history"])
    p.set_params(data={"source": "data/corrupted.csv"})
    try:
        p.run("pipeline", code=1)
    finally:
        p.set_params(data={"source": params["data"]["source"]})
    report = (p.reports_dir or p.path / "reports") / "validate.md"
    print(indent("\n".join(line for line in report.read_text().splitlines() if line.startswith("|"))))
    failures = p.report("validate")["failures"]
    named = {failure["column"] for failure in failures}
    check({header[0], header[1], header[2]} <= named, f"validation missed a problem: {failures}")
    check(
        (p.aliases(), len(p.report("history")["history"])) == history_before,
        "the registry changed although the data was invalid",
    )
    return f"corrupted data stopped before training: {len(failures)} failed expectations, nothing registered"


def step_rollback(p: Project) -> str:
    p.run("rollback", "--reason", "demo")
    check(p.aliases()["champion"] == 1, "rollback did not return to v1")
    return "rollback: champion v3 -> v1 (previous)"


def step_batch(p: Project) -> str:
    p.run("batch")
    scored = p.report("batch")
    check(scored["model_version"] == 1 and scored["rows"] > 0, f"unexpected batch result {scored}")
    return f"batch: {scored['rows']} rows scored with v1 -> {scored['output']}"


STORY: list[tuple[str, Callable[[Project], str]]] = [
    ("1. first pipeline", step_first_pipeline),
    ("2. same params again", step_same_params),
    ("3. better params", step_better_params),
    ("4. failure after promotion", step_failure_after_promotion),
    ("5. corrupted data", step_corrupted_data),
    ("6. rollback", step_rollback),
    ("7. batch scoring", step_batch),
]


def tell(project: Project) -> list[tuple[str, str, float]]:
    """Run every step in order; returns (step, outcome, seconds)."""
    outcomes = []
    for title, step in STORY:
        print(f"\n== {title}", flush=True)
        started = time.perf_counter()
        outcome = step(project)
        outcomes.append((title, outcome, time.perf_counter() - started))
        print(f"   -> {outcome}", flush=True)
    return outcomes


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output", type=Path, default=TEMPLATE / ".demo", help="where to bake")
    cli.add_argument("--venv", type=Path, help="an environment that already holds the stack")
    args = cli.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    baked = bake(args.output)
    print(f"baked {baked.path}", flush=True)
    project = Project(baked.path, install(baked, args.venv))
    started = time.perf_counter()
    try:
        outcomes = tell(project)
    except StoryError as error:
        print(f"\nDEMO FAILED: {error}", file=sys.stderr)
        return 1
    print("\n| step | outcome | seconds |\n|---|---|---|")
    for title, outcome, seconds in outcomes:
        print(f"| {title} | {outcome} | {seconds:.0f} |")
    print(
        f"\ndemo story done in {time.perf_counter() - started:.0f} s (after install); "
        f"explore it: cd {project.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
