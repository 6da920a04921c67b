"""tdmpc2-trl: TD-MPC2 as a composition of TorchRL primitives.

The library is grouped by concept, in layers (each imports only from the layers below it)::

    config/     typed configs, ConfigError, Hydra composition, model presets          (layer 1)
    networks/   layers, maths, the TensorDict networks and WorldModel, tasks, bounds  (layer 2)
    platform/   precision, compile wrapper, allocator, checkpoint files               (layer 2)
    data/ envs/ learning/ planning/   replay buffer, env factory, loss, planner       (layer 3)
    results/    plots against the published curves                                    (layer 4)
    run/        make_* functions, the trainers, collectors, evaluation, logs           (layer 5)

The public parts are importable from here; importing the package loads nothing heavy and changes nothing in the
process (the recipes call ``tdmpc2_trl.platform.process.tune_process()``)::

    >>> import tdmpc2_trl
    >>> sorted(tdmpc2_trl.__all__)[:3]
    ['ConfigError', 'EnvFactory', 'ModelConfig']
"""

from __future__ import annotations

import importlib

from tdmpc2_trl.config.schema import ConfigError, ModelConfig, TrainConfig

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use: torch and TorchRL load only when needed)
_PUBLIC = {
    "load_config": "tdmpc2_trl.config.compose",
    "load_model_config": "tdmpc2_trl.config.presets",
    "WorldModel": "tdmpc2_trl.networks.world_model",
    "QEnsemble": "tdmpc2_trl.networks.world_model",
    "TDMPC2Planner": "tdmpc2_trl.planning.planner",
    "TDMPC2Loss": "tdmpc2_trl.learning.loss",
    "TDMPC2Update": "tdmpc2_trl.learning.update",
    "make_optimizers": "tdmpc2_trl.learning.update",
    "make_replay_buffer": "tdmpc2_trl.data.replay_buffer",
    "EnvFactory": "tdmpc2_trl.envs.factory",
    "make_env": "tdmpc2_trl.envs.factory",
    "make_world_model": "tdmpc2_trl.run.make",
    "make_loss": "tdmpc2_trl.run.make",
    "make_updater": "tdmpc2_trl.run.make",
    "make_planner": "tdmpc2_trl.run.make",
    "make_env_factory": "tdmpc2_trl.run.make",
    "make_eval_env": "tdmpc2_trl.run.make",
    "make_buffer": "tdmpc2_trl.run.make",
    "make_logger": "tdmpc2_trl.run.make",
    "make_collector": "tdmpc2_trl.run.collectors",
    "train": "tdmpc2_trl.run.trainer",
}
__all__ = ["ConfigError", "ModelConfig", "TrainConfig", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
