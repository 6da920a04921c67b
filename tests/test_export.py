"""The exported planner (``python -m tdmpc2_trl.export``): the in-process planner's actions for the same observations
and draws, the warm start carried in the program, the env's bounds, and a process that imports torch alone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdmpc2_trl import export
from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import PlannerConfig, TrainConfig
from tdmpc2_trl.networks.tasks import TaskSet, TaskSpec
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.run.finetune import TASK_SET_KEY, task_set_state

ROOT = Path(__file__).resolve().parents[1]
PLANNER = PlannerConfig(num_samples=32, num_pi_trajs=4, num_elites=8, iterations=2, compile=False)


def tiny_checkpoint(path: Path, task_set: TaskSet | None = None) -> WorldModel:
    """A project checkpoint of small 1m-shaped networks for Pendulum-v1 (3 observations, 1 action in [-2, 2])."""
    torch.manual_seed(0)
    model = load_model_config("1m", latent_dim=16, enc_dim=16, mlp_dim=16, num_q=2)
    obs, act = (3, 1) if task_set is None else (task_set.obs_dim, task_set.action_dim)
    wm = WorldModel(model, obs, act, task_set=task_set)
    with torch.no_grad():
        for p in wm.parameters():
            p.normal_(0, 0.5)
    cfg = TrainConfig(task="Pendulum-v1", model=model, planner=PLANNER, tasks=task_set.names if task_set else [])
    torch.save(
        {
            "step": 7,
            "config": dataclasses.asdict(cfg),
            "task": {"obs_dim": obs, "action_dim": act},
            "world_model": wm.state_dict(),
            TASK_SET_KEY: task_set_state(task_set) if task_set is not None else None,
        },
        path,
    )
    return wm


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    tiny_checkpoint(tmp / "ckpt.pt")
    assert export.main([str(tmp / "ckpt.pt"), "--out", str(tmp / "planner.pt2")]) == 0
    return tmp / "ckpt.pt", tmp / "planner.pt2"


@pytest.mark.slow
def test_exported_actions_equal_the_in_process_planner_for_100_steps(exported):
    from tdmpc2_trl.planning.planner import TDMPC2Planner
    from tdmpc2_trl.run.load_agent import load_agent

    ckpt, program = exported
    agent = load_agent(str(ckpt), precision="fp32", planner_overrides={"compile": False})
    p = agent.planner
    planner = TDMPC2Planner(
        p.world_model,
        export.env_action_spec("Pendulum-v1"),
        discount=p.discount,
        horizon=p.horizon,
        num_samples=p.num_samples,
        num_pi_trajs=p.num_pi_trajs,
        num_elites=p.num_elites,
        iterations=p.iterations,
        temperature=p.temperature,
        min_std=p.min_std,
        max_std=p.max_std,
    )
    deployed = torch.export.load(program).module()
    torch.manual_seed(1)
    observations = torch.randn(100, 1, 3) * 2
    prev, reached_bound = None, False
    for t in range(100):
        reset = t in (0, 60)  # an episode starts: the warm start is dropped
        torch.manual_seed(1000 + t)
        with torch.no_grad():
            ours, mean = planner.act(observations[t], None if reset else prev, explore=False)
        torch.manual_seed(1000 + t)
        with torch.inference_mode():
            theirs = deployed(observations[t], torch.tensor([reset]))
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5, msg=f"step {t}")
        prev = mean
        reached_bound |= bool(ours.abs().max() > 1.0)
    assert reached_bound  # actions are in the env's units ([-2, 2]), not [-1, 1]
    assert ours.abs().max() <= 2.0


@pytest.mark.slow
def test_the_exported_file_runs_with_torch_alone(exported):
    _, program = exported
    code = (
        "import json, sys, torch\n"
        f"planner = torch.export.load({str(program)!r}).module()\n"
        "with torch.inference_mode():\n"
        "    a = [planner(torch.ones(1, 3), torch.tensor([t == 0])).tolist() for t in range(3)]\n"
        "print(json.dumps({'actions': a, 'loaded': [m for m in ('torchrl', 'tensordict', 'hydra', 'gymnasium',"
        " 'tdmpc2_trl') if m in sys.modules]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert len(out["actions"]) == 3 and all(len(a) == 1 and -2 <= a[0][0] <= 2 for a in out["actions"])


def test_export_mistakes_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    torch.save({"x": 1}, junk)
    assert export.main([str(junk), "--out", str(tmp_path / "a.pt2")]) == 2
    assert capsys.readouterr().err == f"error: {junk} is neither a tdmpc2-trl checkpoint nor an official TD-MPC2 one\n"
    tiny_checkpoint(tmp_path / "ckpt.pt")
    assert export.main([str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "a.pt2"), "--batch", "0"]) == 2
    assert capsys.readouterr().err == "error: --batch 0 must be >= 1\n"
    mt = TaskSet((TaskSpec("Pendulum-v1", 3, 1, 200), TaskSpec("Reacher-v5", 10, 2, 50)), task_dim=8)
    tiny_checkpoint(tmp_path / "mt.pt", mt)
    assert export.main([str(tmp_path / "mt.pt"), "--out", str(tmp_path / "a.pt2")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'mt.pt'} is multitask (Pendulum-v1, Reacher-v5): "
        f"export one of its tasks with --task NAME\n"
    )
    assert export.main([str(tmp_path / "mt.pt"), "--out", str(tmp_path / "a.pt2"), "--task", "Hopper-v5"]) == 2
    assert "task 'Hopper-v5' is not in the task set ['Pendulum-v1', 'Reacher-v5']" in capsys.readouterr().err
    assert not (tmp_path / "a.pt2").exists()


@pytest.mark.slow
def test_deploy_example_runs_a_fixed_rate_loop(exported):
    _, program = exported
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "deploy.py"),
            str(program),
            "--env",
            "Pendulum-v1",
            "--rate",
            "1000",
            "--steps",
            "205",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == 205 and len(out["episode_returns"]) == 1  # Pendulum's episodes end after 200 steps
    assert -2000 < out["episode_returns"][0] <= 0
    lat = out["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert 0 <= out["deadline_misses"] <= 205  # a 1 ms period: the loaded test machine misses most
