"""python -m tdmpc2_trl.plot on hand-written run directories (no training)."""
from __future__ import annotations

import csv
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tdmpc2_trl import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, task: str, seed: int, evals: list[tuple[int, float]], model: str = "1m") -> Path:
    """A run directory as recipes/train.py leaves it, reduced to what the plot reads."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"task: {task}\nseed: {seed}\nsteps: 50000\nmodel:\n  name: {model}\n")
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
    assert cartpole["official TD-MPC2 (5m)"] == f"{mean:.1f} ± {std:.1f} (n=3)"
    assert cartpole["official at frames"] == "100,000"
    assert cartpole["gap (official std)"] == f"{(750.0 - mean) / std:+.1f}"
    assert cartpole["random play"] == "74.0 ± 12.0"

    pendulum = rows[("Pendulum-v1", "1m")]  # gymnasium: frames = steps; no official curve
    assert pendulum["frames"] == "10,000" and pendulum["this project"] == "-150.0 (one seed)"
    assert pendulum["official TD-MPC2 (5m)"] == "—" and pendulum["random play"] == "—"


def test_official_point_is_the_last_logged_at_or_before_the_frames(tmp_path: Path):
    run = make_run(tmp_path, "r", "cheetah-run", 1, [(40_000, 300.0), (90_000, 600.0)])
    official = plot.load_official("cheetah-run")
    assert official.frames[:3] == [0, 100_000, 200_000]
    row = plot.table_row("cheetah-run", "1m", [plot.load_run(run)], official, None)
    assert row[3] == "180,000" and row[6] == "100,000"  # 90k steps = 180k frames: the official 100k point
    early = make_run(tmp_path, "early", "cheetah-run", 2, [(40_000, 300.0)])
    row = plot.table_row("cheetah-run", "1m", [plot.load_run(early)], official, None)
    assert row[6] == "0" and row[5].startswith(f"{official.mean[0]:.1f} ± ")


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


@pytest.mark.parametrize("content,message", [
    (None, "has no eval.csv"),
    ("step,episode_reward\n", "has no evaluations yet"),
    ("step,return\n1,2\n", "not an eval.csv with columns step,episode_reward"),
])
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


def test_module_entry_point(tmp_path: Path):
    run = make_run(tmp_path, "r", "Pendulum-v1", 3, [(1000, -800.0)])
    proc = subprocess.run([sys.executable, "-m", "tdmpc2_trl.plot", str(run), "--out", str(tmp_path / "p.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| Pendulum-v1 | 1m | 3 | 1,000 |" in proc.stdout and (tmp_path / "p.png").is_file()


def test_config_without_task_is_a_one_line_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "Pendulum-v1", 1, [(100, -900.0)])
    (run / "config.yaml").write_text("seed: 1\n")
    assert plot.main([str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not name the run's task, model.name and seed" in capsys.readouterr().err
