"""Does a checkpoint's Q function see terminations? Q of the replay data against its discounted return-to-go.

    python results/q_vs_return.py ~/grids/gym-1m-100k/Hopper-v5/seed1/checkpoints/step_000020000.pt

For an episodic task it prints, on up to 3,000 stored transitions of episodes that ended by termination:
- the discounted Monte-Carlo return-to-go of the data (γ of the run), Q(encode(obs), a) of the data's actions (mean
  of all heads) and Q(encode(obs), π(obs));
- along slices of ``horizon`` transitions that end with the terminal transition, Q on the latent rollout (the
  latents the value loss trains) and on the encoded observation (the latents TD targets and the planner start
  from), position by position.

The return-to-go measures the data's (older) policies, so it is a scale, not the current policy's value; a Q that
stays near ``mean reward / (1 − γ)`` on the transition right before a termination ignores the termination.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch work: the allocator and OpenMP settings
from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.envs.factory import task_info
from tdmpc2_trl.networks.math import two_hot_inv
from tdmpc2_trl.platform.checkpoint import load_checkpoint
from tdmpc2_trl.run.make import make_discount, make_world_model

SAMPLE = 3000


def returns_to_go(
    reward: torch.Tensor, traj: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Discounted return-to-go of each transition, whether its episode ended by termination, and which
    transitions are those terminations (the data of one env column, in time order)."""
    n = len(reward)
    ret, complete, last = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool), terminated.clone()
    g, ended = 0.0, False
    for i in range(n - 1, -1, -1):
        if i == n - 1 or traj[i] != traj[i + 1]:
            g, ended = 0.0, bool(terminated[i])
        g = float(reward[i]) + gamma * g
        ret[i], complete[i] = g, ended
    return ret, complete, last & complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = load_checkpoint(args.checkpoint)
    cfg = to_dataclass(OmegaConf.create(state["config"]), TrainConfig)
    info = task_info(cfg.task)
    wm = make_world_model(cfg.model, info, torch.device("cpu"))
    wm.load_state_dict(state["world_model"])
    wm.eval()
    gamma, horizon = make_discount(cfg.loss, info), cfg.model.horizon
    data = state["replay_buffer"]["_storage"]["_storage"]
    n = min(int(state["step"]), data["observation"].shape[0])  # one env column, before the ring buffer wraps
    obs, act = data["observation"][:n, 0], data["action"][:n, 0]
    reward = data["next.reward"][:n, 0, 0].double()
    ret, complete, terminal = returns_to_go(
        reward, data["collector.traj_ids"][:n, 0], data["next.terminated"][:n, 0, 0], gamma
    )
    heads = torch.arange(cfg.model.num_q)

    def q(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return two_hot_inv(wm.q_logits(z, a, heads=heads), wm.bins).mean(0).squeeze(-1)

    print(
        f"{cfg.task} at step {state['step']}: γ {gamma}, {n} transitions, {int(terminal.sum())} terminations, "
        f"mean reward {reward.mean():.2f} (mean reward / (1 − γ) = {reward.mean() / (1 - gamma):.1f})"
    )
    with torch.no_grad():
        for name, mask in [("transitions of terminated episodes", complete), ("terminal transitions", terminal)]:
            idx = mask.nonzero().squeeze(-1)
            idx = idx[torch.randperm(len(idx))[:SAMPLE]]
            z = wm.encode(obs[idx])
            print(
                f"{name:36s} n={len(idx):5d}  return-to-go {ret[idx].mean():7.1f}  "
                f"Q(s, a_data) {q(z, act[idx]).mean():7.1f}  Q(s, π(s)) {q(z, wm.pi(z)[1]).mean():7.1f}"
            )
        first = terminal.nonzero().squeeze(-1) - (horizon - 1)
        first = first[first >= 0]
        same = data["collector.traj_ids"][:n, 0]
        first = first[same[first] == same[first + horizon - 1]]
        print(f"slices of {horizon} transitions ending with a termination (n={len(first)}):")
        z = wm.encode(obs[first])
        for t in range(horizon):
            i = first + t
            print(
                f"  position {t}: Q on the latent rollout {q(z, act[i]).mean():7.1f}   "
                f"Q on encode(obs) {q(wm.encode(obs[i]), act[i]).mean():7.1f}   return-to-go {ret[i].mean():6.1f}"
            )
            z = wm.next(z, act[i])


if __name__ == "__main__":
    main()
