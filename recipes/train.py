"""Train TD-MPC2 from TorchRL parts (the loop: tdmpc2_trl/trainer.py; every key: tdmpc2_trl/config.py).

    python recipes/train.py                                  # the default 8m-h10 networks on Pendulum-v1
    python recipes/train.py task=cartpole-swingup model=5m steps=100000 num_envs=4
    python recipes/train.py resume=runs/Pendulum-v1/1m/seed1_2026-01-01_00-00-00

A mistyped or out-of-range setting is one line on stderr and exit code 2, before anything slow starts.
"""
from __future__ import annotations

import sys

from tdmpc2_trl import interrupts  # standard library only


def main(argv: list[str]) -> int:
    """Check the command line's config, then run the Hydra app (which composes it again and trains)."""
    interrupts.install()  # before the slow imports: from here on SIGINT/SIGTERM stop the run cleanly
    from tdmpc2_trl.compose import command_line_error  # Hydra, not yet torch

    if error := command_line_error("config", argv):
        print(f"error: {error}", file=sys.stderr)
        return 2
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path="../configs", config_name="config", version_base=None)
    def app(cfg) -> None:
        from tdmpc2_trl.trainer import train_app  # torch, TorchRL

        sys.exit(train_app(cfg, HydraConfig.get().runtime.output_dir))

    app()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
