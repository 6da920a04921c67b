"""python -m tdmpc2_trl.results.plot on hand-written run directories (no training)."""

from __future__ import annotations

import csv
import importlib.util
import math
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from matplotlib.figure import Figure

from tdmpc2_trl.results import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path,
    name: str,
    task: str,
    seed: int,
    evals: list[tuple[int, float]],
    model: str = "1m",
    extra: str = "",
    episodes: int = 5,
) -> Path:
    """A run directory as recipes/train.py leaves it, reduced to what the plot reads (``extra``: more YAML)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"task: {task}\nseed: {seed}\nsteps: 50000\nmodel:\n  name: {model}\neval:\n  episodes: {episodes}\n{extra}"
    )
    with open(run / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "episode_reward"])
        writer.writerows(evals)
    return run


def table_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The Markdown table's rows by (task, model), as {column: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]
    return {(r["task"], r["model"]): r for r in rows}


def official_at(task: str, frames: int) -> tuple[float, float]:
    with open(plot.OFFICIAL_DIR / f"{task}.csv", newline="") as f:
        values = [float(r["reward"]) for r in csv.DictReader(f) if int(r["step"]) == frames]
    return statistics.fmean(values), statistics.stdev(values)


@pytest.fixture
def random_play(tmp_path: Path) -> Path:
    path = tmp_path / "random_play.csv"
    path.write_text("task,episodes,mean,std,source\ncartpole-swingup,10,74.0,12.0,test\n")
    return path


def test_runs_against_the_official_curve(tmp_path: Path, random_play: Path, capsys):
    runs = [
        make_run(tmp_path, "cp1", "cartpole-swingup", 1, [(25_000, 300.0), (50_000, 800.0)]),
        make_run(tmp_path, "cp2", "cartpole-swingup", 2, [(25_000, 500.0), (50_000, 700.0), (60_000, 900.0)]),
        make_run(tmp_path, "pend", "Pendulum-v1", 1, [(5_000, -400.0), (10_000, -150.0)]),
    ]
    out = tmp_path / "figs" / "cmp.png"
    assert plot.main([*map(str, runs), "--out", str(out), "--random-play", str(random_play)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert out.with_suffix(".md").read_text() in printed
    rows = table_rows(printed)

    cartpole = rows[("cartpole-swingup", "1m")]  # DMControl: 50,000 agent steps = 100,000 frames, both seeds there
    assert (cartpole["seeds"], cartpole["frames"]) == ("1,2", "100,000")
    assert cartpole["this project"] == f"750.0 ± {statistics.stdev([800.0, 700.0]):.1f}"
    mean, std = official_at("cartpole-swingup", 100_000)
    assert cartpole["official TD-MPC2 (5m)"] == f"{mean:.1f} ± {std:.1f} (3 seeds × 10 episodes)"
    assert cartpole["seeds × episodes"] == "2 seeds × 5 episodes"
    assert cartpole["official at frames"] == "100,000"
    assert cartpole["gap (official std)"] == f"{(750.0 - mean) / std:+.1f}"
    va, vb = statistics.variance([800.0, 700.0]) / 2, std**2 / 3  # Welch's t of the 2 seeds against the official 3
    t = (750.0 - mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    assert cartpole["Welch's t-test"].startswith(f"t = {t:+.2f}, df = {df:.1f}, p = 0.")
    assert cartpole["random play"] == "74.0 ± 12.0"

    pendulum = rows[("Pendulum-v1", "1m")]  # gymnasium: frames = steps; no official curve
    assert pendulum["frames"] == "10,000" and pendulum["this project"] == "-150.0 (one seed)"
    assert pendulum["official TD-MPC2 (5m)"] == "—" and pendulum["random play"] == "—"
    assert pendulum["Welch's t-test"] == "—"


def test_official_point_is_the_last_logged_at_or_before_the_frames(tmp_path: Path):
    run = make_run(tmp_path, "r", "cheetah-run", 1, [(40_000, 300.0), (90_000, 600.0)])
    official = plot.load_official("cheetah-run")
    assert official.frames[:3] == [0, 100_000, 200_000]
    row = dict(
        zip(plot.TABLE_HEADER, plot.table_row("cheetah-run", "1m", [plot.load_run(run)], official, None), strict=True)
    )
    # the run reached 180k frames; the official curve's last point before that is 100k, and the run's last
    # evaluation at or before 100k frames is at 80k (40k agent steps): both sides at equal steps, both stated
    assert (row["frames"], row["official at frames"]) == ("80,000", "100,000")
    mean, std = official_at("cheetah-run", 100_000)
    assert row["this project"] == "300.0 (one seed)" and row["gap (official std)"] == f"{(300.0 - mean) / std:+.1f}"
    early = make_run(tmp_path, "early", "cheetah-run", 2, [(40_000, 300.0)])
    row = plot.table_row("cheetah-run", "1m", [plot.load_run(early)], official, None)
    assert row[6:9] == ["— (first point: 100,000)", "—", "—"]  # the 0-frame point is the untrained agent
    assert row[4:6] == ["80,000", "300.0 (one seed)"]


def test_seed_curve_spread_and_resumed_duplicates(tmp_path: Path):
    a = make_run(tmp_path, "a", "Pendulum-v1", 1, [(100, -900.0), (200, -500.0), (200, -300.0)])  # 200 logged twice
    b = make_run(tmp_path, "b", "Pendulum-v1", 2, [(100, -700.0)])
    runs = [plot.load_run(a), plot.load_run(b)]
    assert runs[0].returns == [-900.0, -300.0]  # the later row of a repeated step wins
    curve = plot.seed_curve(runs)
    assert curve.frames == [100, 200] and curve.n == [2, 1]
    assert curve.mean == [-800.0, -300.0]
    assert curve.std == [pytest.approx(statistics.stdev([-900.0, -700.0])), 0.0]
    assert plot.compared_frames(runs) == 100


def test_seed_curve_leaves_out_points_a_seed_passed_without_evaluating(tmp_path: Path):
    every_5k = make_run(tmp_path, "a", "Pendulum-v1", 1, [(5, 1.0), (10, 2.0), (15, 3.0), (20, 4.0), (25, 5.0)])
    every_10k = make_run(tmp_path, "b", "Pendulum-v1", 2, [(10, 4.0), (20, 8.0)])
    curve = plot.seed_curve([plot.load_run(every_5k), plot.load_run(every_10k)])
    # 5 and 15: seed 2 went past them without an evaluation; 25: seed 2 has not got there yet
    assert curve.frames == [10, 20, 25] and curve.n == [2, 2, 1] and curve.mean == [3.0, 6.0, 5.0]


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "has no eval.csv"),
        ("step,episode_reward\n", "has no evaluations yet"),
        ("step,return\n1,2\n", "not an eval.csv with columns step,episode_reward"),
    ],
)
def test_one_line_errors(tmp_path: Path, capsys, content: str | None, message: str):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: Pendulum-v1\nseed: 1\nmodel:\n  name: 1m\n")
    if content is not None:
        (run / "eval.csv").write_text(content)
    assert plot.main([str(run), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_a_seed_given_twice_is_an_error(tmp_path: Path, capsys):
    a = make_run(tmp_path, "a", "Pendulum-v1", 1, [(100, -900.0)])
    b = make_run(tmp_path, "b", "Pendulum-v1", 1, [(100, -700.0)])
    assert plot.main([str(a), str(b), "--out", str(tmp_path / "x.png")]) == 2
    assert "repeats seed 1" in capsys.readouterr().err


def test_by_a_config_key_separates_an_ab_of_the_same_seed(tmp_path: Path, capsys):
    runs = [
        make_run(
            tmp_path,
            "on",
            "Hopper-v5",
            1,
            [(12_500, 90.0), (25_000, 200.0), (37_500, 330.0)],
            extra="buffer:\n  episode_end_slices: true\n",
        ),
        make_run(tmp_path, "old", "Hopper-v5", 1, [(12_500, 30.0), (25_000, 75.0)]),
    ]  # predates the key
    assert plot.main([*map(str, runs), "--out", str(tmp_path / "ab.png"), "--by", "buffer.episode_end_slices"]) == 0
    rows = table_rows(capsys.readouterr().out)
    # the A/B's rows at the same step: the arm that ran on to 37,500 is compared at the other's 25,000
    on = rows[("Hopper-v5", "1m, buffer.episode_end_slices=true")]
    old = rows[("Hopper-v5", "1m, buffer.episode_end_slices=(absent)")]
    assert (on["frames"], on["this project"]) == ("25,000", "200.0 (one seed)")
    assert (old["frames"], old["this project"]) == ("25,000", "75.0 (one seed)")


def test_module_entry_point(tmp_path: Path):
    run = make_run(tmp_path, "r", "Pendulum-v1", 3, [(1000, -800.0)])
    proc = subprocess.run(
        [sys.executable, "-m", "tdmpc2_trl.results.plot", str(run), "--out", str(tmp_path / "p.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| Pendulum-v1 | 1m | 3 | 1 seed × 5 episodes | 1,000 |" in proc.stdout and (tmp_path / "p.png").is_file()


def test_config_without_task_is_a_one_line_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "Pendulum-v1", 1, [(100, -900.0)])
    (run / "config.yaml").write_text("seed: 1\n")
    assert plot.main([str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not name the run's task, model.name and seed" in capsys.readouterr().err


# ---------------------------------------------------------------- published SAC/TD3 references (gymnasium tasks)


def published_csv(path: Path) -> Path:
    """Two published series for Hopper-v5 (one with three points, one with one) and one for Walker2d-v5."""
    path.write_text(
        "task,algorithm,step,mean,std,seeds,episodes,env_version,source,reference\n"
        "Hopper-v5,SAC,50000,1000.0,400.0,10,10,Hopper-v3,Lib A,https://example.org/a\n"
        "Hopper-v5,SAC,100000,1800.0,1000.0,10,10,Hopper-v3,Lib A,https://example.org/a\n"
        "Hopper-v5,SAC,150000,2700.0,900.0,10,10,Hopper-v3,Lib A,https://example.org/a\n"
        "Hopper-v5,TD3,100000,660.0,800.0,5,20,Hopper-v1,Paper B,https://example.org/b\n"
        "Walker2d-v5,TD3,100000,770.0,620.0,10,10,Walker2d-v1,Paper B,https://example.org/b\n"
    )
    return path


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``text`` (blocks of lines starting with '|'), as lists of {column: cell}."""
    blocks, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("| "):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif not line.startswith("|---") and current:
            blocks.append([dict(zip(current[0], row)) for row in current[1:]])
            current = []
    return blocks


def test_gymnasium_runs_against_published_points(tmp_path: Path, capsys):
    runs = [
        make_run(tmp_path, "h1", "Hopper-v5", 1, [(50_000, 800.0), (100_000, 2000.0)]),
        make_run(tmp_path, "h2", "Hopper-v5", 2, [(50_000, 600.0), (100_000, 1600.0), (110_000, 2500.0)]),
        make_run(tmp_path, "w1", "Walker2d-v5", 1, [(40_000, 300.0)]),  # before every published point
        make_run(tmp_path, "cp", "cartpole-swingup", 1, [(50_000, 800.0)]),
    ]
    out = tmp_path / "gym.png"
    published = published_csv(tmp_path / "published.csv")
    assert plot.main([*map(str, runs), "--out", str(out), "--published", str(published)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    main_table, published_table = tables(capsys.readouterr().out)

    hopper = {r["task"]: r for r in main_table}["Hopper-v5"]  # gymnasium: steps = frames, no official curve
    assert (hopper["frames"], hopper["this project"]) == ("100,000", f"1800.0 ± {statistics.stdev([2000, 1600]):.1f}")
    assert hopper["official TD-MPC2 (5m)"] == "—"

    rows = {(r["task"], r["published (algorithm, source, env)"]): r for r in published_table}
    assert set(rows) == {
        ("Hopper-v5", "SAC, Lib A (Hopper-v3)"),
        ("Hopper-v5", "TD3, Paper B (Hopper-v1)"),
        ("Walker2d-v5", "TD3, Paper B (Walker2d-v1)"),
    }  # cartpole: no published row
    sac = rows[("Hopper-v5", "SAC, Lib A (Hopper-v3)")]
    assert (sac["model"], sac["seeds"], sac["steps"]) == ("1m", "1,2", "100,000")
    assert sac["seeds × episodes"] == "2 seeds × 5 episodes"
    assert sac["this project"] == hopper["this project"]
    assert (sac["published"], sac["published at steps"]) == ("1800.0 ± 1000.0 (10 seeds × 10 episodes)", "100,000")
    assert sac["gap (published std)"] == "+0.0"
    td3 = rows[("Hopper-v5", "TD3, Paper B (Hopper-v1)")]
    assert (td3["published"], td3["gap (published std)"]) == (
        "660.0 ± 800.0 (5 seeds × 20 episodes)",
        f"{(1800 - 660) / 800:+.1f}",
    )
    walker = rows[("Walker2d-v5", "TD3, Paper B (Walker2d-v1)")]
    assert walker["steps"] == "40,000" and walker["published"] == "— (first point: 100,000)"
    assert walker["published at steps"] == walker["gap (published std)"] == "—"


def test_published_point_is_the_last_at_or_before_the_steps(tmp_path: Path):
    series = {s.algorithm: s for s in plot.load_published(published_csv(tmp_path / "p.csv"))["Hopper-v5"]}
    assert series["SAC"].curve.frames == [50_000, 100_000, 150_000] and series["SAC"].curve.n == [10, 10, 10]
    run = plot.load_run(make_run(tmp_path, "r", "Hopper-v5", 1, [(90_000, 1400.0), (149_000, 2000.0)]))
    row = dict(zip(plot.PUBLISHED_HEADER, plot.published_row("Hopper-v5", "1m", [run], series["SAC"]), strict=True))
    # the run reached 149k; SAC's last point before that is 100k; the run's last evaluation before 100k is 90k
    assert (row["steps"], row["this project"]) == ("90,000", "1400.0 (one seed)")
    assert (row["published"], row["published at steps"]) == ("1800.0 ± 1000.0 (10 seeds × 10 episodes)", "100,000")
    assert row["gap (published std)"] == f"{(1400 - 1800) / 1000:+.1f}"
    late = plot.load_run(make_run(tmp_path, "late", "Hopper-v5", 2, [(120_000, 2000.0)]))
    row = dict(zip(plot.PUBLISHED_HEADER, plot.published_row("Hopper-v5", "1m", [late], series["TD3"]), strict=True))
    assert (row["steps"], row["this project"]) == ("—", "— (no evaluation at or before 100,000)")
    assert (row["published at steps"], row["gap (published std)"]) == ("100,000", "—")


def test_published_points_are_drawn_up_to_the_run(tmp_path: Path):
    published = plot.load_published(published_csv(tmp_path / "p.csv"))["Hopper-v5"]
    run = plot.load_run(make_run(tmp_path, "r", "Hopper-v5", 1, [(20_000, 300.0), (60_000, 900.0)]))
    ax = Figure().subplots()
    plot.draw_task(ax, "Hopper-v5", [("1m", [run])], None, None, published)
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {
        "SAC, Lib A (Hopper-v3), 10 seeds × 10 episodes",
        "TD3, Paper B (Hopper-v1), 5 seeds × 20 episodes",
    }
    sac_x = bars["SAC, Lib A (Hopper-v3), 10 seeds × 10 episodes"].lines[0].get_xdata()
    assert list(sac_x) == [50_000, 100_000]  # up to the first point at or after the run's 60k steps
    assert ax.get_xlim()[1] >= 100_000 and "no action repeat" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "TD3, Paper B (Hopper-v1), 5 seeds × 20 episodes" in legend
    assert "this project, 1m, seed 1 (1 seed × 5 episodes)" in legend


def test_a_malformed_published_csv_is_a_one_line_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "Hopper-v5", 1, [(1000, 30.0)])
    bad = tmp_path / "bad.csv"
    bad.write_text("task,algorithm,step,mean,std,seeds\nHopper-v5,SAC,100000,1800,900,10\n")  # no episodes
    assert plot.main([str(run), "--out", str(tmp_path / "x.png"), "--published", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a CSV with columns task,algorithm" in err and err.count("\n") == 1


def test_shipped_published_figures_and_dmcontrol_unchanged(tmp_path: Path):
    published = plot.load_published()
    assert set(published) == {"Hopper-v5", "Walker2d-v5"}
    for task, series in published.items():
        assert {s.algorithm for s in series} == {"SAC", "TD3"}
        for s in series:
            assert 100_000 in s.curve.frames and s.env_version.split("-")[0] == task.split("-")[0]
            assert min(s.curve.n) >= 5 and all(std > 0 for std in s.curve.std) and s.curve.episodes == 10
        # no untrained policy among the references: Tianshou TD3's 25k point ends its 25k random warm-up steps
        tianshou_td3 = next(s for s in series if (s.algorithm, s.source) == ("TD3", "Tianshou benchmark"))
        assert tianshou_td3.curve.frames[0] == 50_000
    groups = plot.group_runs([plot.load_run(make_run(tmp_path, "cp", "cartpole-swingup", 1, [(50_000, 800.0)]))])
    official = {"cartpole-swingup": plot.load_official("cartpole-swingup")}
    assert plot.markdown_table(groups, official, {}, published) == plot.markdown_table(groups, official, {})


def load_reducer(monkeypatch) -> ModuleType:
    """results/published/reduce_gym_mujoco.py as a module (a script, not part of the package)."""
    path = plot.RESULTS_DIR / "published" / "reduce_gym_mujoco.py"
    spec = importlib.util.spec_from_file_location("reduce_gym_mujoco", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks the module up while being built
    spec.loader.exec_module(module)
    return module


def test_reducer_counts_total_env_steps(tmp_path: Path, monkeypatch):
    """TD3 paper arrays: index i = i * 5000 steps; Tianshou's env_step leaves out its random warm-up steps."""
    reducer = load_reducer(monkeypatch)
    for env, folder in (("Hopper", "Hopper"), ("Walker2d", "Walker")):
        (tmp_path / "td3/learning_curves" / folder).mkdir(parents=True)
        for seed in range(3):
            np.save(
                tmp_path / "td3/learning_curves" / folder / f"TD3_{env}-v1_{seed}.npy",
                np.arange(201, dtype=float) * 10 + seed,
            )
        for algo in ("sac", "td3"):
            bench = tmp_path / "ts/examples/mujoco/benchmark" / f"{env}-v3" / algo
            bench.mkdir(parents=True)
            with open(bench / "test_rew_10seeds.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["env_step", "rew", "rew:shaded", "rew:seed_0_a/test_rew.csv", "rew:seed_1_b/x.csv"])
                writer.writerows([s, 0, 0, s / 100, s / 100 + 2] for s in range(0, 200_001, 5_000))
    out = tmp_path / "out.csv"
    assert reducer.main(["--td3", str(tmp_path / "td3"), "--tianshou", str(tmp_path / "ts"), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = {(r["task"], r["algorithm"], r["source"], int(r["step"])): r for r in csv.DictReader(f)}
    td3 = rows[("Hopper-v5", "TD3", reducer.TD3_PAPER, 100_000)]  # index 20: 200 + seed 0, 1, 2
    assert (td3["mean"], td3["std"], td3["seeds"], td3["env_version"]) == ("201.0", "1.0", "3", "Hopper-v1")
    sac = rows[("Walker2d-v5", "SAC", reducer.TIANSHOU, 100_000)]  # env_step 90,000 + 10,000 warm-up
    assert (sac["mean"], sac["std"], sac["seeds"]) == ("901.0", f"{statistics.stdev([900, 902]):.1f}", "2")
    td3 = rows[("Hopper-v5", "TD3", reducer.TIANSHOU, 100_000)]  # env_step 75,000 + 25,000 warm-up
    assert td3["mean"] == "751.0" and td3["env_version"] == "Hopper-v3" and td3["episodes"] == "10"
    # env_step 0 (total 25,000 for TD3) is the untrained policy: not a row; the TD3 paper's 25k point is trained
    assert ("Hopper-v5", "TD3", reducer.TIANSHOU, 25_000) not in rows
    assert ("Hopper-v5", "TD3", reducer.TD3_PAPER, 25_000) in rows
    assert ("Walker2d-v5", "SAC", reducer.TIANSHOU, 25_000) in rows  # env_step 15,000: trained


def test_a_multitask_run_gives_one_curve_per_task(tmp_path: Path, random_play: Path, capsys):
    run = tmp_path / "mt"
    run.mkdir()
    (run / "config.yaml").write_text(
        "task: Pendulum-v1\ntasks: [cartpole-swingup, Pendulum-v1]\nseed: 3\nmodel:\n  name: 1m\n"
    )
    (run / "eval.csv").write_text(
        "step,episode_reward,task\n5000,300,cartpole-swingup\n5000,-400,Pendulum-v1\n"
        "10000,600,cartpole-swingup\n10000,-200,Pendulum-v1\n"
    )
    runs = plot.load_runs(run)
    assert [(r.task, r.frames, r.returns) for r in runs] == [
        ("cartpole-swingup", [10_000, 20_000], [300.0, 600.0]),  # DMControl: 2 frames per step
        ("Pendulum-v1", [5_000, 10_000], [-400.0, -200.0]),
    ]
    assert plot.main([str(run), "--out", str(tmp_path / "mt.png"), "--random-play", str(random_play)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[("cartpole-swingup", "1m")]["this project"] == "600.0 (one seed)"
    assert rows[("Pendulum-v1", "1m")]["this project"] == "-200.0 (one seed)"


# ---------------------------------------------------------------- honest references (issue 30)


def test_the_official_curve_is_markers_at_its_logged_points_only(tmp_path: Path):
    """No line or band through frames the official runs never logged, and no untrained (0-frame) point."""
    runs = [
        plot.load_run(
            make_run(tmp_path, f"s{seed}", "cheetah-run", seed, [(30_000, 200.0 + seed), (125_000, 500.0 + seed)])
        )
        for seed in (1, 2)
    ]
    official = plot.load_official("cheetah-run")
    ax = Figure().subplots()
    plot.draw_task(ax, "cheetah-run", [("1m", runs)], official, (1.0, 0.5))
    label = "official TD-MPC2 (5m), 3 seeds × 10 episodes"
    (bars,) = [c for c in ax.containers if c.get_label() == label]
    data_line = bars.lines[0]
    # the runs reach 250k frames: the official points 100k, 200k and the first after, 300k; not the 0-frame one
    assert list(data_line.get_xdata()) == [100_000, 200_000, 300_000]
    assert list(data_line.get_ydata()) == pytest.approx(
        [official_at("cheetah-run", f)[0] for f in (100_000, 200_000, 300_000)]
    )
    assert data_line.get_linestyle() == "None" and data_line.get_marker() == "o"
    # the only filled band is this project's (one per model); no other line carries the official's label
    bands = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bands) == 1
    assert [line.get_label() for line in ax.lines if line.get_label() == label] == []
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend.count(label) == 1 and "this project, 1m, seeds 1,2 (2 seeds × 5 episodes)" in legend


def test_episode_counts_of_older_configs_and_mixed_seeds(tmp_path: Path, capsys):
    old = make_run(tmp_path, "old", "Pendulum-v1", 1, [(1000, -800.0)])
    (old / "config.yaml").write_text("task: Pendulum-v1\nseed: 1\nmodel:\n  name: 1m\neval_episodes: 10\n")  # flat
    new = make_run(tmp_path, "new", "Pendulum-v1", 2, [(1000, -600.0)], episodes=5)
    bare = make_run(tmp_path, "bare", "Pendulum-v1", 3, [(1000, -700.0)])
    (bare / "config.yaml").write_text("task: Pendulum-v1\nseed: 3\nmodel:\n  name: 1m\n")
    assert [plot.load_run(r).episodes for r in (old, new, bare)] == [10, 5, None]
    assert plot.main([str(old), str(new), str(bare), "--out", str(tmp_path / "p.png")]) == 0
    row = table_rows(capsys.readouterr().out)[("Pendulum-v1", "1m")]
    assert row["seeds"] == "1,2,3" and row["seeds × episodes"] == "3 seeds × (5, 10, not recorded) episodes"


def test_a_published_series_with_two_episode_counts_is_a_one_line_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "Hopper-v5", 1, [(1000, 30.0)])
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "task,algorithm,step,mean,std,seeds,episodes,env_version,source,reference\n"
        "Hopper-v5,SAC,50000,1000,400,10,10,Hopper-v3,Lib A,x\n"
        "Hopper-v5,SAC,100000,1800,900,10,5,Hopper-v3,Lib A,x\n"
    )
    assert plot.main([str(run), "--out", str(tmp_path / "x.png"), "--published", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different episode counts [5, 10]" in err and err.count("\n") == 1


def committed_plot_commands() -> list[list[str]]:
    """The plotting commands of docs/results.md that regenerate the committed figures from ``results/runs/``, as
    argument lists (continuation lines joined, globs expanded from the repository root as a shell would)."""
    root = plot.RESULTS_DIR.parent
    text = (root / "docs" / "results.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if line.startswith("python -m tdmpc2_trl.results.plot results/runs/"):
            args = []
            for word in line.split()[3:]:
                args += sorted(str(p.relative_to(root)) for p in root.glob(word)) if "*" in word else [word]
            commands.append(args)
    return commands


def test_committed_tables_reproduce_from_the_committed_csvs(tmp_path: Path, monkeypatch, capsys):
    """Every committed results/*.md is what its documented command writes from results/runs/ today."""
    monkeypatch.chdir(plot.RESULTS_DIR.parent)
    commands = committed_plot_commands()
    outs = sorted(args[args.index("--out") + 1] for args in commands)
    assert outs == sorted(f"results/{p.name}" for p in plot.RESULTS_DIR.glob("*.png"))  # every figure has one
    for args in commands:
        committed = Path(args[args.index("--out") + 1])
        args[args.index("--out") + 1] = str(tmp_path / committed.name)
        assert plot.main(args) == 0
        assert (tmp_path / committed.name).with_suffix(".md").read_text() == committed.with_suffix(".md").read_text()
    capsys.readouterr()
