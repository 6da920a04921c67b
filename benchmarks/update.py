"""Time one full TD-MPC2 update (TDMPC2Update: world-model step, policy step, target lerp); print one JSON line.

Example: python benchmarks/update.py --model 8m-h10 --horizon 10 --batch 256 --iters 10 --warmup 2
GFLOP/s counts the matmul FLOPs of one update (torch.utils.flop_counter, counted once) over its median time.
"""

from __future__ import annotations

import argparse
import json
import warnings

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch
from _common import count_flops, memory_fields, time_calls, timing_fields, warmup_fields
from tensordict import TensorDict

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.platform.precision import PRECISIONS, precision_name, resolve_precision
from tdmpc2_trl.run.make import make_autocast_dtype  # as a run: TF32 for fp32 matmuls on CUDA


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="8m-h10", help="model preset (8m-h10, 1m, 5m, 19m, 48m, 317m)")
    p.add_argument("--horizon", type=int, default=10, help="training slice length H")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--obs-dim", type=int, default=18)
    p.add_argument("--action-dim", type=int, default=4)
    p.add_argument("--iters", type=int, default=10, help="timed updates")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--episodic", action="store_true", help="train the termination head too")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16: matmuls under autocast; auto: bf16 where it is fast here (precision.py)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="optim.compile: the loss terms through torch.compile (default on, as the recipe)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[TDMPC2Update, TensorDict]:
    torch.manual_seed(args.seed)
    cfg = load_model_config(args.model)
    wm = WorldModel(cfg, args.obs_dim, args.action_dim, episodic=args.episodic).to(args.device)
    loss = TDMPC2Loss(wm, discount=0.99).compile_terms(args.compile)
    with warnings.catch_warnings():  # SoftUpdate reads the target before it registers itself (TorchRL quirk)
        warnings.simplefilter("ignore")
        updater = TDMPC2Update(
            loss, *make_optimizers(loss), autocast_dtype=make_autocast_dtype(args.precision, torch.device(args.device))
        )
    B, H, D, A = args.batch, args.horizon, args.obs_dim, args.action_dim
    batch = TensorDict(
        observation=torch.randn(B, H, D),
        action=torch.rand(B, H, A) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(B, H, D),
            reward=torch.randn(B, H, 1),
            terminated=torch.zeros(B, H, 1, dtype=torch.bool),
            batch_size=[B, H],
        ),
        batch_size=[B, H],
    ).to(args.device)
    return updater, batch


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    updater, batch = build(args)
    warmup_ms = time_calls(lambda: updater(batch), max(args.warmup, 3 if args.compile else 1), args.device)
    ms = time_calls(lambda: updater(batch), args.iters, args.device)
    flops = count_flops(lambda: updater(batch))
    result = {
        "benchmark": "update",
        "model": args.model,
        "horizon": args.horizon,
        "batch": args.batch,
        "obs_dim": args.obs_dim,
        "action_dim": args.action_dim,
        "episodic": args.episodic,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "precision": precision_name(resolve_precision(args.precision, torch.device(args.device))),
        "compile": args.compile,
        "iters": args.iters,
        "warmup": args.warmup,
        **timing_fields(ms, flops, "update"),
        **warmup_fields(warmup_ms),
        **memory_fields(args.device),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
