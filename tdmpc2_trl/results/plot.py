"""Learning curves of runs against the official TD-MPC2 curves, and a Markdown table of where they stand.

    python -m tdmpc2_trl.results.plot RUN_DIR [RUN_DIR ...] [--out FILE.png]

Each RUN_DIR is a training run directory (``config.yaml`` for task, model and seed; ``eval.csv`` with
``step,episode_reward``). Runs of the same task and model are one curve: the mean over seeds, shaded ± one sample
standard deviation. The x axis counts env frames: DMControl repeats each action twice (frames = 2 × agent steps),
gymnasium tasks do not (frames = steps). Each task's panel shows the official curve (``results/official/``, 5m
model, 3 seeds) where there is one and published SAC/TD3 returns (``results/published/gym_mujoco.csv``) where there
are some, both as markers with ± one standard deviation at the points they logged only (nothing is drawn between
them), and random play (``results/random_play.csv``) where it was measured. Every legend entry and table row says
how many seeds and evaluation episodes per point it averages.

The table goes to stdout and next to the figure (``FILE.md``), followed by a second table of the published returns
when a run's task has some. Every comparison is at equal steps: the reference's last logged point at or before the
furthest step that every run of the task reached, against each run's last evaluation at or before that point; both
steps are columns of the table.
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

from omegaconf import OmegaConf

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.factory import task_info
from tdmpc2_trl.platform.extras import require
from tdmpc2_trl.results.stats import welch_test

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"
OFFICIAL_DIR = RESULTS_DIR / "official"
RANDOM_PLAY = RESULTS_DIR / "random_play.csv"
PUBLISHED = RESULTS_DIR / "published" / "gym_mujoco.csv"
OFFICIAL_LABEL = "official TD-MPC2 (5m)"
OFFICIAL_EPISODES = 10  # eval_episodes of the official config.yaml: each logged point averages 10 episodes


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
    episodes: int | None = None  # evaluation episodes per point (config eval.episodes); None: not recorded


@dataclass(frozen=True)
class Curve:
    """Mean, sample standard deviation and number of seeds at each logged frame count."""

    frames: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]
    episodes: int | None = None  # evaluation episodes behind each seed's value (None: not recorded)

    def at_or_before(self, frames: int) -> int | None:
        """Index of the last logged point at or before ``frames`` (None if there is none)."""
        found = [i for i, f in enumerate(self.frames) if f <= frames]
        return found[-1] if found else None

    def trained(self) -> Curve:
        """The points after training started: a point at 0 frames is the untrained agent, no reference."""
        keep = [i for i, f in enumerate(self.frames) if f > 0]
        return Curve(
            *([getattr(self, name)[i] for i in keep] for name in ("frames", "mean", "std", "n")), episodes=self.episodes
        )


@dataclass(frozen=True)
class Published:
    """Another algorithm's published returns on a task: mean ± std over its seeds at a few env step counts."""

    algorithm: str
    source: str
    env_version: str
    curve: Curve  # frames: env steps (the gymnasium tasks have no action repeat); n: the source's seeds

    @property
    def label(self) -> str:
        return f"{self.algorithm}, {self.source} ({self.env_version})"


def curve_from_points(points: dict[int, list[float]]) -> Curve:
    """Reduce ``{frames: [return per seed]}`` to a ``Curve``."""
    frames = sorted(points)
    values = [points[f] for f in frames]
    return Curve(frames, [statistics.fmean(v) for v in values], [_std(v) for v in values], [len(v) for v in values])


def _std(values: list[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def counts(seeds: int, episodes: int | str | None) -> str:
    """``"3 seeds × 10 episodes"``: what one plotted or tabulated value averages."""
    if episodes in (None, "not recorded"):
        per = "episodes not recorded"
    elif "," in str(episodes):  # seeds evaluated with different counts: list them
        per = f"({episodes}) episodes"
    else:
        per = f"{episodes} episode{'s' if str(episodes) != '1' else ''}"
    return f"{seeds} seed{'s' if seeds != 1 else ''} × {per}"


# ---------------------------------------------------------------- reading


def read_eval(path: Path) -> dict[str | None, dict[int, float]]:
    """``eval.csv`` → ``{task: {step: episode_reward}}`` (task ``None`` for a single-task run; a multitask run's
    rows carry a ``task`` column); a step logged twice (a resumed run) keeps its last row."""
    out: dict[str | None, dict[int, float]] = {}
    try:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                out.setdefault(r.get("task") or None, {})[int(float(r["step"]))] = float(r["episode_reward"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path} is not an eval.csv with columns step,episode_reward ({err})") from None
    return out


def load_run(run_dir: str | Path) -> Run:
    """Read one single-task run directory (``load_runs`` also reads multitask ones)."""
    return load_runs(run_dir)[0]


def load_runs(run_dir: str | Path, by: str | None = None) -> list[Run]:
    """Read one run directory: one ``Run`` per task (a multitask run's tasks are curves of their own);
    ``ConfigError`` (one line) if it has no ``eval.csv`` or no ``config.yaml``. ``by``: a dotted config key whose
    value joins the model's name (``"1m, buffer.episode_end_slices=true"``), so that runs differing in it (an A/B)
    are separate curves and rows instead of seeds of one."""
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
    # eval.episodes since the config got sections; eval_episodes in the older, flat layout
    episodes = OmegaConf.select(OmegaConf.create(cfg), "eval.episodes", default=None) or cfg.get("eval_episodes")
    if by:  # absent: the run's code predates the key
        value = OmegaConf.select(OmegaConf.create(cfg), by, default="(absent)")
        model = f"{model}, {by}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}"
    runs = []
    for row_task, by_step in evals.items():
        name = row_task or task
        repeat = task_info(name).action_repeat
        steps = sorted(by_step)
        runs.append(
            Run(
                path,
                name,
                model,
                seed,
                [s * repeat for s in steps],
                [by_step[s] for s in steps],
                repeat,
                None if episodes is None else int(episodes),
            )
        )
    return runs


def load_official(task: str, directory: Path = OFFICIAL_DIR) -> Curve | None:
    """The official curve of ``task`` (``step`` in env frames, ``reward``, ``seed`` per row), or None."""
    path = directory / f"{task}.csv"
    if not path.is_file():
        return None
    points: dict[int, list[float]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            points[int(row["step"])].append(float(row["reward"]))
    curve = curve_from_points(points)
    return Curve(curve.frames, curve.mean, curve.std, curve.n, OFFICIAL_EPISODES)


def load_random_play(path: Path = RANDOM_PLAY) -> dict[str, tuple[float, float]]:
    """``{task: (mean, std)}`` of measured random play (empty if the file is missing)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["task"]: (float(r["mean"]), float(r["std"])) for r in csv.DictReader(f)}


def load_published(path: Path = PUBLISHED) -> dict[str, list[Published]]:
    """``{task: [series]}`` from ``gym_mujoco.csv`` (one row per task, algorithm, source, env version and step, with
    ``mean``, ``std``, ``seeds`` and ``episodes`` per evaluation); empty if the file is missing."""
    if not path.is_file():
        return {}
    rows: dict[tuple[str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    published: dict[str, list[Published]] = defaultdict(list)
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[(row["task"], row["algorithm"], row["source"], row["env_version"])].append(row)
        for (task, algorithm, source, env_version), series in sorted(rows.items()):
            series.sort(key=lambda r: int(r["step"]))
            episodes = {int(r["episodes"]) for r in series}
            if len(episodes) != 1:
                raise ValueError(f"{task} {algorithm} ({source}) gives different episode counts {sorted(episodes)}")
            curve = Curve(
                [int(r["step"]) for r in series],
                [float(r["mean"]) for r in series],
                [float(r["std"]) for r in series],
                [int(r["seeds"]) for r in series],
                episodes.pop(),
            )
            published[task].append(Published(algorithm, source, env_version, curve))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{path} is not a CSV with columns task,algorithm,step,mean,std,seeds,episodes,env_version,source ({err!r})"
        ) from None
    return dict(published)


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
    """Mean and spread across the runs at every frame count they logged, except one that a run passed without
    evaluating there (seeds evaluated at different intervals): a mean there would be of fewer seeds, drawn as a
    zig-zag. Beyond a run's last evaluation (a run still in progress) the others' points stay."""
    points: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for frames, value in zip(run.frames, run.returns, strict=True):
            points[frames].append(value)
    skipped = {f for f in points for run in runs if f not in run.frames and f < run.frames[-1]}
    return curve_from_points({f: v for f, v in points.items() if f not in skipped})


def seed_list(runs: list[Run]) -> str:
    """The seeds of a group, ascending: ``"1,2,3"``."""
    return ",".join(str(seed) for seed in sorted(run.seed for run in runs))


def compared_frames(runs: list[Run]) -> int:
    """The furthest frame count that every run reached (its last evaluation)."""
    return min(run.frames[-1] for run in runs)


def task_frames(groups: dict[tuple[str, str], list[Run]]) -> dict[str, int]:
    """Per task, the furthest frame count that every run of every model reached, so that the rows of one task
    (an A/B) are compared at the same step."""
    reached: dict[str, int] = {}
    for (task, _), runs in groups.items():
        reached[task] = min(reached.get(task, compared_frames(runs)), compared_frames(runs))
    return reached


def episodes_cell(runs: list[Run]) -> str:
    """The evaluation episodes per point of a group's runs: one count, or ``"5, 10"`` if the seeds differ."""
    found = sorted({run.episodes for run in runs}, key=lambda e: (e is None, e or 0))
    return ", ".join("not recorded" if e is None else str(e) for e in found)


def runs_cell(runs: list[Run]) -> str:
    """``"3 seeds × 5 episodes"``: what this project's value in a row averages."""
    return counts(len(runs), episodes_cell(runs))


def ours_at(runs: list[Run], frames: int) -> tuple[str, list[float], str]:
    """Each run's last evaluation at or before ``frames``: the frame count(s) it was logged at, the value per run
    (empty if some run has none that early) and the cell of their mean ± std."""
    found = [max((i for i, f in enumerate(run.frames) if f <= frames), default=None) for run in runs]
    if None in found:
        return "—", [], f"— (no evaluation at or before {frames:,})"
    at = sorted({run.frames[i] for run, i in zip(runs, found, strict=True)})
    values = [run.returns[i] for run, i in zip(runs, found, strict=True)]
    mean = statistics.fmean(values)
    cell = f"{mean:.1f} ± {_std(values):.1f}" if len(values) > 1 else f"{mean:.1f} (one seed)"
    return " / ".join(f"{f:,}" for f in at), values, cell


def compare(runs: list[Run], reference: Curve | None, frames: int) -> list[str]:
    """``[this project at, this project, reference mean ± std (seeds × episodes), reference at, gap, Welch's
    test]``: the reference's last point after training started at or before ``frames``, against each run's last
    evaluation at or before that point (equal steps); without such a point, this project at ``frames`` and no
    comparison."""
    trained = reference.trained() if reference is not None else None
    i = trained.at_or_before(frames) if trained is not None else None
    if i is None:
        at, _, cell = ours_at(runs, frames)
        first = trained.frames[0] if trained is not None and trained.frames else None
        return [at, cell, "—" if first is None else f"— (first point: {first:,})", "—", "—", "—"]
    target = trained.frames[i]
    at, values, cell = ours_at(runs, target)
    r_mean, r_std, r_n = trained.mean[i], trained.std[i], trained.n[i]
    if not values:
        return [at, cell, f"{r_mean:.1f} ± {r_std:.1f} ({counts(r_n, trained.episodes)})", f"{target:,}", "—", "—"]
    mean = statistics.fmean(values)
    gap = f"{(mean - r_mean) / r_std:+.1f}" if r_std > 0 else "—"
    test = welch_test(mean, _std(values), len(values), r_mean, r_std, r_n)
    why_not = "— (one seed)" if len(values) < 2 else "—"
    return [
        at,
        cell,
        f"{r_mean:.1f} ± {r_std:.1f} ({counts(r_n, trained.episodes)})",
        f"{target:,}",
        gap,
        test.cell() if test else why_not,
    ]


def table_row(
    task: str,
    model: str,
    runs: list[Run],
    official: Curve | None,
    random_play: tuple[float, float] | None,
    frames: int | None = None,
) -> list[str]:
    """One Markdown row of ``runs`` against the official curve at equal frames (``compare``); ``frames``: the
    furthest frame count to compare at (default: the furthest every run reached)."""
    frames = compared_frames(runs) if frames is None else frames
    rand = f"{random_play[0]:.1f} ± {random_play[1]:.1f}" if random_play else "—"
    return [task, model, seed_list(runs), runs_cell(runs), *compare(runs, official, frames), rand]


def published_row(task: str, model: str, runs: list[Run], series: Published, frames: int | None = None) -> list[str]:
    """One Markdown row of the published table: ``runs`` against one published series at equal steps."""
    frames = compared_frames(runs) if frames is None else frames
    at, cell, *reference = compare(runs, series.curve, frames)
    return [task, model, seed_list(runs), runs_cell(runs), at, cell, series.label, *reference]


TABLE_HEADER = [
    "task",
    "model",
    "seeds",
    "seeds × episodes",
    "frames",
    "this project",
    f"{OFFICIAL_LABEL}",
    "official at frames",
    "gap (official std)",
    "Welch's t-test",
    "random play",
]
TABLE_NOTES = (
    "Every comparison is at equal frames: the official curve's last logged point at or before the furthest frame "
    "count that every run of the task reached (`official at frames`), against each run's last evaluation at or "
    "before that point (`frames`; several values if the seeds logged at different frames). Without an official "
    "point there, `frames` is that furthest frame count and nothing is compared. frames: env frames (DMControl: 2 "
    "per agent step, action repeat 2; gymnasium: 1 per step). seeds: the runs' seeds; seeds × episodes: how "
    "many runs and evaluation episodes per point (the runs' `eval.episodes`) each value averages. This project: "
    "mean ± sample std over seeds. Official: mean ± sample std over its seeds (seeds × evaluation episodes per "
    "point in brackets) at a point it logged (every 100,000 frames; not interpolated; its 0-frame point, the "
    "untrained agent, is not a reference), from `results/official/`. gap: (this project − official mean) / "
    "official std; below −1 is more than one official standard deviation below. Welch's t-test: two-sided, "
    "this project's seeds against the official seeds at those frames (t > 0: this project higher; df: "
    "Welch–Satterthwaite); p below 0.05 tells the two apart, a larger p does not show them equal (with 3 seeds "
    "a side and equal spreads, p < 0.05 needs an observed gap of about 2.3 stds). Random play: "
    "`results/random_play.csv` (uniform random actions, measured with `results/random_play.py`)."
)


PUBLISHED_HEADER = [
    "task",
    "model",
    "seeds",
    "seeds × episodes",
    "steps",
    "this project",
    "published (algorithm, source, env)",
    "published",
    "published at steps",
    "gap (published std)",
    "Welch's t-test",
]
PUBLISHED_NOTES = (
    "Published references, not this project's results: other algorithms' mean ± sample std over their seeds "
    "(seeds × evaluation episodes per point in brackets) at their last point at or before the furthest step that "
    "every run of the task reached (`published at steps`; env steps, random warm-up steps included; every 25,000; "
    "no point before the source's first update), against each run's last evaluation at or before that point "
    "(`steps`), from `results/published/gym_mujoco.csv` (sources, MuJoCo env versions and how the numbers were "
    "reduced: `results/published/README.md`). gap: (this project − published mean) / published std. Welch's "
    "t-test: two-sided, this project's seeds against the published seeds (needs two seeds or more on each side)."
)


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(
    groups: dict[tuple[str, str], list[Run]],
    official: dict[str, Curve | None],
    random_play: dict[str, tuple[float, float]],
    published: dict[str, list[Published]] | None = None,
) -> str:
    """The comparison table (one row per task and model) followed by a note on how each column is computed; then,
    if any task has published returns, their table (one row per task, model and published series) and its note."""
    reached = task_frames(groups)
    rows = [
        table_row(task, model, runs, official[task], random_play.get(task), reached[task])
        for (task, model), runs in sorted(groups.items())
    ]
    text = "\n".join(_markdown(TABLE_HEADER, rows)) + "\n\n" + TABLE_NOTES + "\n"
    published_rows = [
        published_row(task, model, runs, series, reached[task])
        for (task, model), runs in sorted(groups.items())
        for series in (published or {}).get(task, [])
    ]
    if published_rows:
        text += "\n" + "\n".join(_markdown(PUBLISHED_HEADER, published_rows)) + "\n\n" + PUBLISHED_NOTES + "\n"
    return text


# ---------------------------------------------------------------- the figure


def x_label(frames_per_step: int) -> str:
    if frames_per_step > 1:
        return f"env frames (action repeat {frames_per_step}: {frames_per_step} frames per agent step)"
    return "env steps (= frames: no action repeat)"


def _band(ax, curve: Curve, color: str, label: str) -> None:
    """This project's seeds: a mean line through the points they logged, with a ± std band."""
    low = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
    high = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
    ax.plot(curve.frames, curve.mean, "-", color=color, label=label, marker="o", markersize=3)
    ax.fill_between(curve.frames, low, high, color=color, alpha=0.2, linewidth=0)


def _curve_up_to(curve: Curve, right: int) -> Curve:
    """A reference's points after training started, up to its first point at or after ``right`` frames (the one a
    run aims at)."""
    curve = curve.trained()
    last = next((i for i, f in enumerate(curve.frames) if f >= right), len(curve.frames) - 1)
    keep = slice(0, last + 1)
    return Curve(curve.frames[keep], curve.mean[keep], curve.std[keep], curve.n[keep], curve.episodes)


OFFICIAL_STYLE = ("black", "o")
PUBLISHED_STYLES = [("tab:brown", "s"), ("tab:pink", "^"), ("tab:olive", "D"), ("tab:cyan", "v")]


def _reference_points(ax, curve: Curve, label: str, right: int, style: tuple[str, str]) -> int:
    """A reference as markers with ± std error bars at the points it logged, and no line: a line or band would show
    values between them that it never logged. Returns the furthest frame count drawn (``right`` if none)."""
    shown = _curve_up_to(curve, right)
    if not shown.frames:
        return right
    color, marker = style
    ax.errorbar(
        shown.frames,
        shown.mean,
        yerr=shown.std,
        fmt=marker,
        linestyle="none",
        color=color,
        capsize=3,
        markersize=5,
        alpha=0.8,
        label=f"{label}, {counts(max(shown.n), shown.episodes)}",
    )
    return shown.frames[-1]


def draw_task(
    ax,
    task: str,
    groups: list[tuple[str, list[Run]]],
    official: Curve | None,
    random_play: tuple[float, float] | None,
    published: list[Published] | None = None,
) -> None:
    """One panel: every model's seed curve of ``task``, the official and published points and random play."""
    right = max(run.frames[-1] for _, runs in groups for run in runs)
    furthest = [right]
    if official is not None:
        furthest.append(_reference_points(ax, official, OFFICIAL_LABEL, right, OFFICIAL_STYLE))
    furthest += [
        _reference_points(ax, series.curve, series.label, right, PUBLISHED_STYLES[k % len(PUBLISHED_STYLES)])
        for k, series in enumerate(published or [])
    ]
    right = max(furthest)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for k, (model, runs) in enumerate(groups):
        seeds = seed_list(runs)
        label = f"this project, {model}, seed{'s' if len(runs) > 1 else ''} {seeds} ({runs_cell(runs)})"
        _band(ax, seed_curve(runs), colors[k % len(colors)], label)
    if random_play is not None:
        ax.axhline(random_play[0], color="gray", linestyle=":", label=f"random play ({random_play[0]:.0f})")
    ax.set_xlim(0, right * 1.03 or 1)
    ax.set_title(task)
    ax.set_xlabel(x_label(groups[0][1][0].frames_per_step))
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def draw(
    groups: dict[tuple[str, str], list[Run]],
    official: dict[str, Curve | None],
    random_play: dict[str, tuple[float, float]],
    out: Path,
    published: dict[str, list[Published]] | None = None,
) -> None:
    """One panel per task (up to 3 per row), written as a PNG with the Agg backend."""
    by_task: dict[str, list[tuple[str, list[Run]]]] = defaultdict(list)
    for (task, model), runs in groups.items():
        by_task[task].append((model, runs))
    cols = min(3, len(by_task))
    rows = math.ceil(len(by_task) / cols)
    require("matplotlib", "plots", "plotting learning curves")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * cols, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (task, task_groups) in zip(axes, sorted(by_task.items())):
        draw_task(ax, task, task_groups, official[task], random_play.get(task), (published or {}).get(task))
    for ax in axes[len(by_task) :]:
        ax.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


# ---------------------------------------------------------------- entry points


def report(
    run_dirs: list[str | Path],
    out: Path,
    official_dir: Path = OFFICIAL_DIR,
    random_play_path: Path = RANDOM_PLAY,
    published_path: Path = PUBLISHED,
    by: str | None = None,
) -> str:
    """Plot ``run_dirs`` to ``out`` (PNG), write the table to ``out`` with suffix ``.md`` and return it (``by``:
    ``load_runs``)."""
    groups = group_runs([run for d in run_dirs for run in load_runs(d, by)])
    official = {task: load_official(task, official_dir) for task, _ in groups}
    random_play = load_random_play(random_play_path)
    published = load_published(published_path)
    table = markdown_table(groups, official, random_play, published)
    draw(groups, official, random_play, out, published)
    out.with_suffix(".md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdmpc2_trl.results.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (config.yaml + eval.csv)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results.png"),
        help="the figure (PNG); the table is written next to it with suffix .md (default results.png)",
    )
    parser.add_argument("--official-dir", type=Path, default=OFFICIAL_DIR, help="official curves, TASK.csv each")
    parser.add_argument("--random-play", type=Path, default=RANDOM_PLAY, help="random-play returns (CSV)")
    parser.add_argument(
        "--published",
        type=Path,
        default=PUBLISHED,
        help="published returns of other algorithms (CSV: task,algorithm,step,mean,std,seeds,...)",
    )
    parser.add_argument(
        "--by",
        metavar="KEY",
        help="a config key (e.g. buffer.episode_end_slices) whose value "
        "separates runs of one task and model into curves of their own, for an A/B",
    )
    args = parser.parse_args(argv)
    try:
        table = report(args.run_dirs, args.out, args.official_dir, args.random_play, args.published, args.by)
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
