"""Learning curves of runs against the official TD-MPC2 curves, and a Markdown table of where they stand.

    python -m tdmpc2_trl.plot RUN_DIR [RUN_DIR ...] [--out FILE.png]

Each RUN_DIR is a training run directory (``config.yaml`` for task, model and seed; ``eval.csv`` with
``step,episode_reward``). Runs of the same task and model are one curve: the mean over seeds, shaded ± one sample
standard deviation. The x axis counts env frames: DMControl repeats each action twice (frames = 2 × agent steps),
gymnasium tasks do not (frames = steps). Each task's panel shows the official curve (``results/official/``, 5m
model, 3 seeds) where there is one, and random play (``results/random_play.csv``) where it was measured. The table
goes to stdout and next to the figure (``FILE.md``).
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from .config import ConfigError
from .envs import task_info

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
OFFICIAL_DIR = RESULTS_DIR / "official"
RANDOM_PLAY = RESULTS_DIR / "random_play.csv"
OFFICIAL_LABEL = "official TD-MPC2 (5m)"


@dataclass(frozen=True)
class Run:
    """One run directory's identity and evaluations (``frames`` ascending, one return per frame count)."""

    path: Path
    task: str
    model: str
    seed: int
    frames: list[int]
    returns: list[float]
    frames_per_step: int


@dataclass(frozen=True)
class Curve:
    """Mean, sample standard deviation and number of seeds at each logged frame count."""

    frames: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]

    def at_or_before(self, frames: int) -> int | None:
        """Index of the last logged point at or before ``frames`` (None if there is none)."""
        found = [i for i, f in enumerate(self.frames) if f <= frames]
        return found[-1] if found else None


def curve_from_points(points: dict[int, list[float]]) -> Curve:
    """Reduce ``{frames: [return per seed]}`` to a ``Curve``."""
    frames = sorted(points)
    values = [points[f] for f in frames]
    return Curve(frames, [statistics.fmean(v) for v in values], [_std(v) for v in values], [len(v) for v in values])


def _std(values: list[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- reading


def read_eval(path: Path) -> dict[int, float]:
    """``eval.csv`` → ``{step: episode_reward}``; a step logged twice (a resumed run) keeps its last row."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {int(float(r["step"])): float(r["episode_reward"]) for r in rows}
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path} is not an eval.csv with columns step,episode_reward ({err})") from None


def load_run(run_dir: str | Path) -> Run:
    """Read one run directory; ``ConfigError`` (one line) if it has no ``eval.csv`` or no ``config.yaml``."""
    path = Path(run_dir)
    if not (path / "eval.csv").is_file():
        raise ConfigError(f"{path} has no eval.csv (not a run directory, or no evaluation yet)")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} has no config.yaml (not a run directory of recipes/train.py)")
    evals = read_eval(path / "eval.csv")
    if not evals:
        raise ConfigError(f"{path}/eval.csv has no evaluations yet")
    cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    try:
        task, model, seed = str(cfg["task"]), str(cfg["model"]["name"]), int(cfg["seed"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}/config.yaml does not name the run's task, model.name and seed") from None
    repeat = task_info(task).action_repeat
    steps = sorted(evals)
    return Run(path, task, model, seed, [s * repeat for s in steps], [evals[s] for s in steps], repeat)


def load_official(task: str, directory: Path = OFFICIAL_DIR) -> Curve | None:
    """The official curve of ``task`` (``step`` in env frames, ``reward``, ``seed`` per row), or None."""
    path = directory / f"{task}.csv"
    if not path.is_file():
        return None
    points: dict[int, list[float]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            points[int(row["step"])].append(float(row["reward"]))
    return curve_from_points(points)


def load_random_play(path: Path = RANDOM_PLAY) -> dict[str, tuple[float, float]]:
    """``{task: (mean, std)}`` of measured random play (empty if the file is missing)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["task"]: (float(r["mean"]), float(r["std"])) for r in csv.DictReader(f)}


# ---------------------------------------------------------------- grouping and the table


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (task, model), in first-seen order; a seed given twice is an error (it would count twice)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        group = groups.setdefault((run.task, run.model), [])
        if any(other.seed == run.seed for other in group):
            raise ConfigError(f"{run.path} repeats seed {run.seed} of {run.task}/{run.model}; give each seed once")
        group.append(run)
    return groups


def seed_curve(runs: list[Run]) -> Curve:
    """Mean and spread across the runs at every frame count any of them logged."""
    points: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for frames, value in zip(run.frames, run.returns):
            points[frames].append(value)
    return curve_from_points(points)


def seed_list(runs: list[Run]) -> str:
    """The seeds of a group, ascending: ``"1,2,3"``."""
    return ",".join(str(seed) for seed in sorted(run.seed for run in runs))


def compared_frames(runs: list[Run]) -> int:
    """The frame count of the table: the furthest point every seed reached."""
    return min(run.frames[-1] for run in runs)


def table_row(task: str, model: str, runs: list[Run], official: Curve | None,
              random_play: tuple[float, float] | None) -> list[str]:
    """One Markdown row: each seed's last evaluation at or before the compared frames, against the official curve's
    last logged point at or before them."""
    frames = compared_frames(runs)
    ours = [run.returns[max(i for i, f in enumerate(run.frames) if f <= frames)] for run in runs]
    mean, std = statistics.fmean(ours), _std(ours)
    official_cells = ["—", "—", "—"]
    i = official.at_or_before(frames) if official is not None else None
    if i is not None:
        o_mean, o_std = official.mean[i], official.std[i]
        gap = f"{(mean - o_mean) / o_std:+.1f}" if o_std > 0 else "—"
        official_cells = [f"{o_mean:.1f} ± {o_std:.1f} (n={official.n[i]})", f"{official.frames[i]:,}", gap]
    seeds = seed_list(runs)
    rand = f"{random_play[0]:.1f} ± {random_play[1]:.1f}" if random_play else "—"
    ours_cell = f"{mean:.1f} ± {std:.1f}" if len(ours) > 1 else f"{mean:.1f} (one seed)"
    return [task, model, seeds, f"{frames:,}", ours_cell, *official_cells, rand]


TABLE_HEADER = ["task", "model", "seeds", "frames", "this project", f"{OFFICIAL_LABEL}", "official at frames",
                "gap (official std)", "random play"]
TABLE_NOTES = (
    "frames: env frames (DMControl: 2 per agent step, action repeat 2; gymnasium: 1 per step), the furthest point "
    "every seed of the row reached. This project: mean ± sample std over seeds of each run's last evaluation at or "
    "before `frames`. Official: mean ± sample std over its seeds at its nearest logged point at or before `frames` "
    "(logged every 100,000 frames; not interpolated), from `results/official/`. gap: (this project − official "
    "mean) / official std; below −1 is more than one official standard deviation below. Random play: "
    "`results/random_play.csv` (uniform random actions, measured with `results/random_play.py`)."
)


def markdown_table(groups: dict[tuple[str, str], list[Run]], official: dict[str, Curve | None],
                   random_play: dict[str, tuple[float, float]]) -> str:
    """The comparison table (one row per task and model) followed by a note on how each column is computed."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for (task, model), runs in sorted(groups.items()):
        lines.append("| " + " | ".join(table_row(task, model, runs, official[task], random_play.get(task))) + " |")
    return "\n".join(lines) + "\n\n" + TABLE_NOTES + "\n"


# ---------------------------------------------------------------- the figure


def x_label(frames_per_step: int) -> str:
    if frames_per_step > 1:
        return f"env frames (action repeat {frames_per_step}: {frames_per_step} frames per agent step)"
    return "env steps (= frames: no action repeat)"


def _band(ax, curve: Curve, color: str, label: str, style: str = "-") -> None:
    """A mean line with a ± std band."""
    low = [m - s for m, s in zip(curve.mean, curve.std)]
    high = [m + s for m, s in zip(curve.mean, curve.std)]
    ax.plot(curve.frames, curve.mean, style, color=color, label=label, marker="o", markersize=3)
    ax.fill_between(curve.frames, low, high, color=color, alpha=0.2, linewidth=0)


def _official_shown(official: Curve, right: int) -> Curve:
    """The official curve up to its first logged point at or after ``right`` frames (the one a run aims at)."""
    last = next((i for i, f in enumerate(official.frames) if f >= right), len(official.frames) - 1)
    keep = slice(0, last + 1)
    return Curve(official.frames[keep], official.mean[keep], official.std[keep], official.n[keep])


def draw_task(ax, task: str, groups: list[tuple[str, list[Run]]], official: Curve | None,
              random_play: tuple[float, float] | None) -> None:
    """One panel: every model's seed curve of ``task``, the official curve and random play."""
    right = max(run.frames[-1] for _, runs in groups for run in runs)
    if official is not None:
        shown = _official_shown(official, right)
        _band(ax, shown, "black", f"{OFFICIAL_LABEL}, {max(shown.n)} seeds", "--")
        right = max(right, shown.frames[-1])
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for k, (model, runs) in enumerate(groups):
        seeds = seed_list(runs)
        label = f"this project, {model}, seed{'s' if len(runs) > 1 else ''} {seeds}"
        _band(ax, seed_curve(runs), colors[k % len(colors)], label)
    if random_play is not None:
        ax.axhline(random_play[0], color="gray", linestyle=":", label=f"random play ({random_play[0]:.0f})")
    ax.set_xlim(0, right * 1.03 or 1)
    ax.set_title(task)
    ax.set_xlabel(x_label(groups[0][1][0].frames_per_step))
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def draw(groups: dict[tuple[str, str], list[Run]], official: dict[str, Curve | None],
         random_play: dict[str, tuple[float, float]], out: Path) -> None:
    """One panel per task (up to 3 per row), written as a PNG with the Agg backend."""
    by_task: dict[str, list[tuple[str, list[Run]]]] = defaultdict(list)
    for (task, model), runs in groups.items():
        by_task[task].append((model, runs))
    cols = min(3, len(by_task))
    rows = math.ceil(len(by_task) / cols)
    fig = Figure(figsize=(5.5 * cols, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (task, task_groups) in zip(axes, sorted(by_task.items())):
        draw_task(ax, task, task_groups, official[task], random_play.get(task))
    for ax in axes[len(by_task):]:
        ax.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


# ---------------------------------------------------------------- entry points


def report(run_dirs: list[str | Path], out: Path, official_dir: Path = OFFICIAL_DIR,
           random_play_path: Path = RANDOM_PLAY) -> str:
    """Plot ``run_dirs`` to ``out`` (PNG), write the table to ``out`` with suffix ``.md`` and return it."""
    groups = group_runs([load_run(d) for d in run_dirs])
    official = {task: load_official(task, official_dir) for task, _ in groups}
    random_play = load_random_play(random_play_path)
    table = markdown_table(groups, official, random_play)
    draw(groups, official, random_play, out)
    out.with_suffix(".md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdmpc2_trl.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (config.yaml + eval.csv)")
    parser.add_argument("--out", type=Path, default=Path("results.png"),
                        help="the figure (PNG); the table is written next to it with suffix .md (default results.png)")
    parser.add_argument("--official-dir", type=Path, default=OFFICIAL_DIR, help="official curves, TASK.csv each")
    parser.add_argument("--random-play", type=Path, default=RANDOM_PLAY, help="random-play returns (CSV)")
    args = parser.parse_args(argv)
    try:
        table = report(args.run_dirs, args.out, args.official_dir, args.random_play)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write {err.filename or args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(table, end="")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
