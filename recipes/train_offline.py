"""Train a (multitask) TD-MPC2 agent offline from a dataset (the loop: tdmpc2_trl/run/offline.py; keys: OfflineConfig
in tdmpc2_trl/config/schema.py; datasets: python -m tdmpc2_trl.data.offline_dataset).

    python -m tdmpc2_trl.data.offline_dataset export runs/cartpole-swingup/1m/seed1_* runs/reacher-easy/1m/seed1_* \
        --out data/two
    python recipes/train_offline.py dataset=data/two model=1m steps=20000 eval.freq=5000
    python recipes/train_offline.py dataset=data/two resume=runs/offline/1m/seed1_2026-01-01_00-00-00

A mistyped or out-of-range setting is one line on stderr and exit code 2, before anything slow starts.
"""

from __future__ import annotations

import sys

from tdmpc2_trl.run.entry import recipe_main  # standard library only: signals are handled before torch loads


def main(argv: list[str]) -> int:
    return recipe_main("offline", "tdmpc2_trl.run.offline:train_offline_app", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
