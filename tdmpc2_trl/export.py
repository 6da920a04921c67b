"""Export a checkpoint's planner as one file that runs with torch alone (no TorchRL, tensordict, Hydra or gymnasium).

    python -m tdmpc2_trl.export CHECKPOINT --out planner.pt2 [--task NAME] [--batch 1] [--no-warm-start] [--no-mpc]

The file is a ``torch.export`` program (``torch.export.save``) of one whole planner call, deterministic (no
exploration noise): encoder, policy prior, every MPPI iteration, the elite update and the choice of the action, with
all its random draws made inside the call from torch's global RNG, the warm start (the previous call's plan mean)
kept in a buffer of the program between calls, and the action mapped onto the env's own bounds. Load and run it::

    planner = torch.export.load("planner.pt2").module()
    action = planner(obs, reset)     # obs [batch, obs_dim] float32, reset [batch] bool (True at an episode's start)

``reset`` drops the warm start of those envs (TD-MPC2's ``t0``). ``--no-warm-start`` exports a planner that starts
every call from a zero mean (each call is then a ``t0`` call). A multitask checkpoint is exported for one of its
tasks (``--task``). ``examples/deploy.py`` runs one in a fixed-rate control loop.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DeployedPlanner", "StackedParams", "env_action_spec", "export_planner", "export_program"]


class StackedParams(nn.Module):
    """The Q heads' stacked parameters as plain module parameters, indexed as ``QEnsemble`` indexes its
    ``TensorDictParams`` (``params[layer][name]``, ``params[heads]``): ``torch.export`` lifts plain parameters,
    and cannot lift a TensorDict-valued submodule."""

    def __init__(self, params) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        for layer in params.keys():
            holder = nn.Module()
            for name, value in params[layer].items():
                holder.register_parameter(name, nn.Parameter(value.detach().clone(), requires_grad=False))
            self.layers[layer] = holder

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict(self.layers[key].named_parameters())
        return {layer: {name: p[key] for name, p in holder.named_parameters()} for layer, holder in self.layers.items()}


class DeployedPlanner(nn.Module):
    """A planner call as a module: ``forward(obs, reset) -> action`` in the env's units; the plan mean is a buffer.

    Wraps this project's ``TDMPC2Planner.act`` unchanged, so that the exported program computes exactly what the
    in-process planner does for the same observations and the same random draws.
    """

    def __init__(self, planner, batch: int, warm_start: bool = True, task: int | None = None) -> None:
        super().__init__()
        planner = copy.deepcopy(planner)
        ensemble = planner.world_model.q_ensemble
        ensemble.params = StackedParams(ensemble.params)
        self.planner, self.warm_start = planner, warm_start
        device = next(planner.world_model.parameters()).device
        self.register_buffer("mean", torch.zeros(batch, planner.horizon, planner.action_dim, device=device))
        self.register_buffer("task", None if task is None else torch.full((batch,), task, device=device))

    def forward(self, obs: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        keep = (~reset).to(obs.dtype).view(-1, 1, 1)
        prev = self.mean * keep if self.warm_start else torch.zeros_like(self.mean)
        action, mean = self.planner.act(obs, prev, explore=False, task=self.task)
        self.mean.copy_(mean)
        return action


def env_action_spec(task: str):
    """The env's own action spec (before this project's scaling to [-1, 1]): the deployed planner acts in its units."""
    from tdmpc2_trl.envs.factory import _raw_dmc_env, _raw_gym_env, _split_dmc

    dmc = _split_dmc(task)
    env = _raw_dmc_env(*dmc) if dmc is not None else _raw_gym_env(task, False)
    try:
        return env.action_spec.clone()
    finally:
        env.close()


def export_program(
    planner, batch: int = 1, warm_start: bool = True, task: int | None = None, source: str = "the checkpoint"
) -> torch.export.ExportedProgram:
    """``torch.export`` of one ``DeployedPlanner`` call of ``planner`` (fp32, no exploration noise); a planner that
    cannot be captured is a one-line ``ConfigError`` naming ``source`` and the reason."""
    from tdmpc2_trl.config.schema import ConfigError

    module = DeployedPlanner(planner, batch, warm_start, task).eval()
    example = (torch.zeros(batch, planner.world_model.obs_dim), torch.ones(batch, dtype=torch.bool))
    try:
        with torch.no_grad():
            return torch.export.export(module, example, strict=False)
    except Exception as err:  # an op or a control flow torch.export cannot capture
        lines = str(err).strip().splitlines()
        raise ConfigError(
            f"{source}: its planner cannot be exported ({type(err).__name__}: {lines[0] if lines else ''})"
        ) from None


def export_planner(
    checkpoint: str,
    out: Path,
    *,
    task: str | None = None,
    batch: int = 1,
    warm_start: bool = True,
    mpc: bool | None = None,
    official_tasks: list[str] | None = None,
) -> dict[str, Any]:
    """Write the exported planner of ``checkpoint`` to ``out``; returns what was exported (sizes, task, bounds)."""
    from tdmpc2_trl.config.schema import ConfigError
    from tdmpc2_trl.platform.checkpoint import atomic_file
    from tdmpc2_trl.run.load_agent import load_agent

    if batch < 1:
        raise ConfigError(f"--batch {batch} must be >= 1")
    overrides = {"compile": False} | ({} if mpc is None else {"mpc": mpc})
    agent = load_agent(
        checkpoint, task=task, official_tasks=official_tasks, precision="fp32", planner_overrides=overrides
    )
    wm = agent.planner.world_model
    if wm.pixels:
        raise ConfigError(
            f"{agent.path}: a pixel-observation world model cannot be exported (the deployed planner "
            f"takes state vectors; the frame stacking lives in the env)"
        )
    if agent.task_set is not None and len(agent.task_set) > 1:
        raise ConfigError(
            f"{agent.path} is multitask ({', '.join(agent.task_set.names)}): export one of its tasks with --task NAME"
        )
    planner = type(agent.planner)(  # the same planner, acting in the env's own units
        wm,
        env_action_spec(agent.trained.task if agent.task_set is None else agent.task_set.names[0]),
        discount=agent.planner.discount,
        horizon=agent.planner.horizon,
        num_samples=agent.planner.num_samples,
        num_pi_trajs=agent.planner.num_pi_trajs,
        num_elites=agent.planner.num_elites,
        iterations=agent.planner.iterations,
        temperature=agent.planner.temperature,
        min_std=agent.planner.min_std,
        max_std=agent.planner.max_std,
        mpc=agent.planner.mpc,
    )
    program = export_program(planner, batch, warm_start, None if agent.task_set is None else 0, str(agent.path))
    out = Path(out)
    with atomic_file(out) as f:
        torch.export.save(program, f)
    return {
        "out": str(out),
        "checkpoint": str(agent.path),
        "model": wm.cfg.name,
        "task": agent.trained.task if agent.task_set is None else agent.task_set.names[0],
        "batch": batch,
        "obs_dim": wm.obs_dim,
        "action_dim": wm.action_dim,
        "warm_start": warm_start,
        "mpc": planner.mpc,
        "action_low": planner.bounds.low.tolist(),
        "action_high": planner.bounds.high.tolist(),
        "note": agent.note,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdmpc2_trl.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a checkpoint file or run directory, or an official TD-MPC2 file")
    p.add_argument("--out", required=True, help="the file to write (torch.export program, .pt2)")
    p.add_argument("--task", default=None, help="the task (an official single-task file's; one of a multitask set)")
    p.add_argument("--official-tasks", default=None, help="an official multitask file's tasks, comma separated")
    p.add_argument("--batch", type=int, default=1, help="envs planned for per call")
    p.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="carry the plan mean between calls (TD-MPC2); --no-warm-start: every call starts at zero",
    )
    p.add_argument(
        "--mpc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="MPPI (default: as trained); --no-mpc: the policy prior's mean action only",
    )
    a = p.parse_args(argv)
    from tdmpc2_trl.run.entry import exit_code

    def run() -> None:
        import json

        info = export_planner(
            a.checkpoint,
            Path(a.out),
            task=a.task,
            batch=a.batch,
            warm_start=a.warm_start,
            mpc=a.mpc,
            official_tasks=a.official_tasks.split(",") if a.official_tasks else None,
        )
        if info.pop("note"):
            print(f"{a.checkpoint}: official TD-MPC2 checkpoint (networks only)")
        print(json.dumps(info))

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
