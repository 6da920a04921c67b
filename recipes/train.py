"""Train TD-MPC2 from TorchRL parts (the loop: tdmpc2_trl/run/trainer.py; every key: tdmpc2_trl/config/schema.py).

    python recipes/train.py                                  # the default 8m-h10 networks on Pendulum-v1
    python recipes/train.py task=cartpole-swingup model=5m steps=100000 num_envs=4
    python recipes/train.py resume=runs/Pendulum-v1/1m/seed1_2026-01-01_00-00-00

A mistyped or out-of-range setting is one line on stderr and exit code 2, before anything slow starts.
"""

from __future__ import annotations

import sys

from tdmpc2_trl.run.entry import recipe_main  # standard library only: signals are handled before torch loads


def main(argv: list[str]) -> int:
    return recipe_main("config", "tdmpc2_trl.run.trainer:train_app", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
