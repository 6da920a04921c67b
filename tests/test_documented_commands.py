"""Every command that README.md, docs/ and results/README.md give still parses as written: a recipe's ``key=value``
arguments compose into a checked config (the check every run makes before anything slow), a grid's settings and its
train.py overrides pass the grid's own check, and a script's flags pass its argument parser. A renamed key, a removed
flag or a preset that no longer exists in any documented command fails here, not in a user's terminal.

Shell variables that a page sets in a code block (``L="..."``) are expanded, ``$HOME`` too. Commands with any other
variable (``$head_ip``), elided parts (``...``) or a synopsis's ``[--optional]`` brackets are not commands one could
paste, and are skipped. Paths the commands name are redirected
into the test's temporary directory: nothing outside it is written."""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tdmpc2_trl.config.compose import command_line_error, config_dir
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.run import summary

# running a module of an imported package as __main__ (runpy) warns; the flags are all this test reads from it
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
PROGRAM = re.compile(r"(?:^|\s)python (recipes/\w+\.py|-m [\w.]+|benchmarks/\w+\.py|examples/\w+\.py)(?=\s|$)(.*)")
RECIPE_CONFIGS = {"recipes/train.py": "config", "recipes/eval.py": "eval", "recipes/train_offline.py": "offline"}
NOT_PASTEABLE = re.compile(r"\$(?!HOME\b)|\.\.\.|…| \[--")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    program: str  # recipes/train.py, -m tdmpc2_trl.export, benchmarks/plan.py, ...
    args: str

    def __str__(self) -> str:
        return f"{self.where}: python {self.program} {self.args}"


ASSIGNMENT = re.compile(r'^(?:\$ )?([A-Z_]+)="([^"]*)"$')


def documented_commands() -> list[Command]:
    """The ``python ...`` commands inside the docs' code blocks (continuation lines joined, comments dropped, the
    shell variables that a block of the same page sets, ``NAME="..."``, expanded)."""
    found = []
    for path in DOCS:
        in_block, joined, first, variables = False, "", 0, {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.startswith("```"):
                in_block, joined = not in_block, ""
                continue
            if not in_block:
                continue
            first = number if not joined else first
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            text, joined = re.split(r"\s#", joined + line)[0], ""
            assignment = ASSIGNMENT.match(text.strip())
            if assignment:
                variables[assignment.group(1)] = " ".join(assignment.group(2).split())
                continue
            for name, value in variables.items():
                text = re.sub(rf"\${{?{name}\b}}?", lambda _, v=value: v, text)
            for part in re.split(r"&&|;|\|", text):
                match = PROGRAM.search(part)
                if match and match.group(1) != "-m pytest":
                    args = match.group(2).strip().rstrip("&)").strip()
                    found.append(Command(f"{path.relative_to(ROOT)}:{first}", match.group(1), args))
    return found


COMMANDS = documented_commands()
PASTEABLE = [c for c in COMMANDS if not NOT_PASTEABLE.search(c.args)]


def test_the_docs_give_commands_of_every_kind():
    programs = {c.program for c in PASTEABLE}
    assert {"recipes/train.py", "recipes/eval.py", "recipes/grid.py", "-m tdmpc2_trl.results.plot"} <= programs
    assert len(PASTEABLE) >= 60 and len(PASTEABLE) >= 0.8 * len(COMMANDS)


def redirected(argv: list[str], tmp_path: Path) -> list[str]:
    """``argv`` with the run directory and the files it must find moved into ``tmp_path``: ``hydra.run.dir`` and
    ``grid_dir`` there, and ``init_from`` (which the config check requires to exist) as an empty file or directory
    there."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "grid_dir"):
            arg = f"{key}={tmp_path / 'out' / Path(value).name}"
        elif key == "init_from":
            target = tmp_path / "given" / Path(value).name
            target.parent.mkdir(exist_ok=True)
            target.touch() if target.suffix else target.mkdir(exist_ok=True)
            arg = f"init_from={target}"
        out.append(arg)
    return out


class Parsed(Exception):
    """Raised right after a script's argument parser accepted the command line."""


def parse_only(program: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``program`` up to its ``parse_args`` (its imports and flag definitions run; nothing else)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        if program.startswith("-m "):
            monkeypatch.setattr(sys, "argv", [program[3:], *argv])
            runpy.run_module(program[3:], run_name="__main__", alter_sys=True)
        else:
            path = ROOT / program
            monkeypatch.syspath_prepend(str(path.parent))  # the benchmarks' `from _common import ...`
            monkeypatch.setattr(sys, "argv", [str(path), *argv])
            runpy.run_path(str(path), run_name="__main__")


def grid_error(argv: list[str]) -> None:
    """The checks ``recipes/grid.py`` makes before it starts any run (its settings, every task, train.py's
    overrides)."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import grid as grid_runner
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    own, passthrough = grid_runner.split_argv(argv)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("grid", overrides=[a for a in own if not a.startswith("hydra.")])
    values = OmegaConf.to_container(cfg, resolve=True)
    grid_runner.check_backend(values)
    grid_runner.make_grid(values, passthrough)


@pytest.mark.parametrize("command", PASTEABLE, ids=[c.where for c in PASTEABLE])
def test_a_documented_command_parses_as_written(
    command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # train.py probes ./runs; nothing lands in the work tree
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = redirected(shlex.split(os.path.expandvars(command.args)), tmp_path)
    if command.program in RECIPE_CONFIGS:
        assert command_line_error(RECIPE_CONFIGS[command.program], argv) is None, str(command)
    elif command.program == "recipes/grid.py":
        grid_error(argv)
    elif command.program == "-m tdmpc2_trl.run.summary":
        assert summary.main(argv) == 0, str(command)
    else:
        parse_only(command.program, argv, monkeypatch)


def test_a_stale_flag_key_or_task_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # argparse: "unrecognized arguments"
        parse_only("benchmarks/plan.py", ["--modle", "1m"], monkeypatch)
    assert "unknown key stepz" in command_line_error("config", ["stepz=10"])
    with pytest.raises(ConfigError, match="no-such-task"):
        grid_error(["tasks=[no-such-task]", "seeds=[1]"])
    with pytest.raises(ConfigError, match="for train.py: unknown key stepz"):
        grid_error(["tasks=[Pendulum-v1]", "stepz=10"])
