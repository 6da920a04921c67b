"""TD-MPC2 on Pendulum-v1 from plain TorchRL parts and this project's modules: no recipe, no factory, no Hydra.

A TorchRL ``GymEnv`` (torque in [-2, 2], its own action spec), a TorchRL ``Collector`` whose policy is the
``TDMPC2Planner``, the slice replay buffer, ``TDMPC2Loss`` and ``TDMPC2Update``. The planner acts in the env's units
(it is given the env's action spec); the world model learns in [-1, 1] (the loss gets the same spec).

    python examples/pendulum_torchrl.py                                   # 5,000 steps, the 1m networks
    python examples/pendulum_torchrl.py --steps 300 --seed-steps 100 --eval-steps 50 --num-samples 64

It prints the largest |torque| the planner chose (Pendulum's optimum often needs more than 1) and the return of
deterministic evaluation episodes.
"""

from __future__ import annotations

import argparse
import time

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them (optional)
import torch
from torchrl.collectors import Collector
from torchrl.envs import Compose, EnvBase, ExplorationType, GymEnv, InitTracker, TransformedEnv, set_exploration_type

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, sample_batch
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.math import discount_from_episode_length
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner

EPISODE_STEPS = 200  # Pendulum-v1's time limit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000, help="env steps in total, seed steps included")
    p.add_argument("--seed-steps", type=int, default=1000, help="random steps first, then as many updates at once")
    p.add_argument("--model", default="1m", help="model preset (configs/model/*.yaml)")
    p.add_argument(
        "--horizon", type=int, default=None, help="planning horizon = training slice length (default: the preset's)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--num-samples", type=int, default=512, help="MPPI candidate trajectories")
    p.add_argument("--iterations", type=int, default=6, help="MPPI iterations")
    p.add_argument("--compile", action="store_true", help="torch.compile the planner (30-90 s at the first plan)")
    p.add_argument("--eval-episodes", type=int, default=2)
    p.add_argument("--eval-steps", type=int, default=EPISODE_STEPS, help="steps per evaluation episode (at most)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def make_env(planner: TDMPC2Planner, seed: int) -> EnvBase:
    """Pendulum as TorchRL wraps it, plus what the planner reads: ``is_init`` and its warm start (``primer``)."""
    env = TransformedEnv(GymEnv("Pendulum-v1"), Compose(InitTracker(), planner.primer()))
    env.set_seed(seed)
    return env


def evaluate(env: EnvBase, planner: TDMPC2Planner, episodes: int, max_steps: int) -> tuple[float, float]:
    """Mean return of deterministic episodes and the largest |action| in them."""
    returns, max_abs = [], 0.0
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            episode = env.rollout(max_steps, policy=planner)
            returns.append(float(episode["next", "reward"].sum()))
            max_abs = max(max_abs, float(episode["action"].abs().max()))
    return sum(returns) / len(returns), max_abs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    spec_env = GymEnv("Pendulum-v1")
    action_spec = spec_env.action_spec  # Bounded, [-2, 2]
    obs_dim, action_dim = spec_env.observation_spec["observation"].shape[-1], action_spec.shape[-1]
    spec_env.close()
    discount = discount_from_episode_length(EPISODE_STEPS)

    model_cfg = load_model_config(args.model)
    horizon = args.horizon or model_cfg.horizon
    world_model = WorldModel(model_cfg, obs_dim, action_dim)
    loss = TDMPC2Loss(world_model, discount, action_spec=action_spec)  # replayed actions are in env units
    wm_optim, pi_optim = make_optimizers(loss, lr=args.lr, enc_lr_scale=0.3)  # TD-MPC2's encoder lr scale
    updater = TDMPC2Update(loss, wm_optim, pi_optim)
    # TD-MPC2's 64 elites and 24 policy trajectories out of 512 samples, scaled down with --num-samples
    planner = TDMPC2Planner(
        world_model,
        action_spec,
        discount=discount,
        horizon=horizon,
        num_samples=args.num_samples,
        num_elites=min(64, args.num_samples // 4),
        num_pi_trajs=min(24, args.num_samples // 8),
        iterations=args.iterations,
        compile_plan=args.compile,
    )
    buffer = make_replay_buffer(capacity=args.steps, batch_size=args.batch_size, horizon=horizon)
    collector = Collector(
        make_env(planner, args.seed),
        planner,
        frames_per_batch=1,
        total_frames=args.steps,
        init_random_frames=args.seed_steps,
    )

    start, step, planner_max, metrics = time.perf_counter(), 0, 0.0, None
    for data in collector:  # one env step per batch; the planner shares its world model with the loss
        add(buffer, data)
        step += data.numel()
        if step > args.seed_steps:
            planner_max = max(planner_max, float(data["action"].abs().max()))
        if step >= args.seed_steps and len(buffer) >= horizon:
            for _ in range(args.seed_steps if step == args.seed_steps else 1):  # TD-MPC2's initial burst, then 1
                metrics = updater(sample_batch(buffer))
        if step % EPISODE_STEPS == 0 and metrics is not None:
            print(
                f"step {step}: total_loss {float(metrics['total_loss']):.3f}, "
                f"{step / (time.perf_counter() - start):.1f} steps/s",
                flush=True,
            )
    collector.shutdown()

    eval_return, eval_max = evaluate(make_env(planner, args.seed + 100), planner, args.eval_episodes, args.eval_steps)
    print(
        f"max |torque| from the planner: {max(planner_max, eval_max):.3f} (the env allows "
        f"{float(action_spec.space.high.max()):.1f})"
    )
    print(f"eval return: {eval_return:.1f} over {args.eval_episodes} episode(s) of up to {args.eval_steps} steps")


if __name__ == "__main__":
    main()
